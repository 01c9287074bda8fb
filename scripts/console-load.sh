#!/usr/bin/env bash
# Measures how long the web console takes to load with N shards: a secure local 3-node
# cluster (release build) split into N shards, then headless Chromium opening node 2's
# console five times (scripts/console_load.py).
#
#   scripts/console-load.sh [SHARDS]     (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${1:-1000}
source scripts/env.sh
cargo build --release -q -p hanse-cli
hanse=target/release/hanse
dir=$(mktemp -d)
trap '"$hanse" cluster down --dir "$dir/c" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
# The balancer stays still: the shards stay as split.
"$hanse" cluster up --dir "$dir/c" --port 7900 --balance-cool-down 86400 >/dev/null
export HANSE_CERTS_DIR=$dir/c/certs
e=127.0.0.11:7900
started=$(date +%s)
for i in $(seq 1 $((shards - 2))); do
    "$hanse" admin split "$(printf 'key%06d' "$i")" --endpoints $e >/dev/null
    if (( i % 100 == 0 )); then echo "split $i of $((shards - 2)) ($(( $(date +%s) - started )) s)" >&2; fi
done
"$hanse" user add viewer --endpoints $e >/dev/null
"$hanse" user grant viewer monitor --endpoints $e >/dev/null
HANSE_PASSWORD=measuring "$hanse" user passwd viewer --endpoints $e >/dev/null
token=$(HANSE_PASSWORD=measuring "$hanse" user login viewer --endpoints $e 2>/dev/null)
sleep 5
.venv-ops/bin/python scripts/console_load.py --url "https://127.0.0.12:7980/#token=$token" --shards "$shards"
