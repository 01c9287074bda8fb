#!/usr/bin/env bash
# The main job: builds Hanse and runs `hanse demo`. Installs what is missing first; safe
# to re-run. Arguments are passed on to `hanse demo` (see `hanse demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo build --quiet -p hanse-cli --bin hanse -p hanse-bench --bin hanse-bench -p hanse-tests --bin hanse-chaos
exec target/debug/hanse demo "$@"
