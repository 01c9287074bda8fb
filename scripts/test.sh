#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate (unit, property,
# integration, the SIGKILL durability test, and each benchmark run once).
# Installs what is missing first; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

step() { printf '\n== %s\n' "$*" >&2; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step "cargo test (unit, property, integration, crash; benchmarks once each)"
cargo test --workspace --all-targets 2>&1 | tee "$log"
step "cargo test --doc"
cargo test --workspace --doc 2>&1 | tee -a "$log"

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsummary: %d passed, %d failed\n", p, f }' "$log"
