#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate (unit, property,
# integration, the SIGKILL durability test, and each benchmark run once).
# Installs what is missing first; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

step() { printf '\n== %s\n' "$*" >&2; }
# The test build carries the hooks that break a node on purpose (the chaos checker's own
# test needs one); the demo's and any release build do not.
features=(--features hanse-node/failpoints)
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets "${features[@]}" --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Tests run the binaries of other crates too (`hanse planner train` execs hanse-planner-train),
# which `cargo test` alone builds only for the crate whose tests name them. All targets, so
# the dependencies' features (dev-dependencies' included) are those `cargo test` builds.
step "cargo build --all-targets"
cargo build --workspace --all-targets "${features[@]}"
step "cargo test (unit, property, integration, crash; benchmarks once each)"
cargo test --workspace --all-targets "${features[@]}" 2>&1 | tee "$log"
step "cargo test --doc"
cargo test --workspace --doc "${features[@]}" 2>&1 | tee -a "$log"

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsummary: %d passed, %d failed\n", p, f }' "$log"
