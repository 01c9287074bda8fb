#!/usr/bin/env bash
# Measures what the planner's simulator charges for its actions (planner/src/knobs.rs:
# TRANSFER_STALL_MS, SPLIT_STALL_MS, MERGE_STALL_MS) on a local 3-region cluster with the demo's injected
# round trips (Hamburg-China 250 ms, Hamburg-Sydney 300 ms, China-Sydney 150 ms): eight
# clients in Hamburg write for 20 s, and 8 s in the first data shard's leadership moves to
# another region, or the shard splits, or the shard (split before the load) merges
# again, or nothing happens. Prints one JSON line per run
# (failover_ms: the longest gap between acknowledgements after the step; max_ms: the
# slowest write). Usage: [STEPS="merge ..."] scripts/calibrate-planner.sh [RUNS] (default
# 3 runs of each of none, transfer, split and merge).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
runs=${1:-3}
cargo build --release -p hanse-cli -p hanse-bench --quiet
bin=$PWD/target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
matrix="eu-hamburg:ap-china=250ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=150ms"
port=29600
for step in ${STEPS:-none transfer split merge}; do
  for run in $(seq "$runs"); do
    port=$((port + 10))
    dir=$work/$step-$run
    "$bin/hanse" cluster up --dir "$dir" --nodes 3 --port "$port" --latency "$matrix" > /dev/null
    case $step in
      transfer) fault=(--transfer-leader-after 8) ;;
      split) fault=(--split-after 8) ;;
      merge) fault=(--merge-after 8) ;;
      *) fault=() ;;
    esac
    printf '%s %s: ' "$step" "$run"
    HANSE_CERTS_DIR=$dir/certs "$bin/hanse-bench" run --endpoints "127.0.0.11:$port,127.0.0.12:$port,127.0.0.13:$port" \
      --cluster-dir "$dir" --workload write --clients 8 --ops 100000 --duration 20 \
      --region eu-hamburg "${fault[@]}" --json 2> /dev/null || echo '{"failed": true}'
    "$bin/hanse" cluster down --dir "$dir" > /dev/null
  done
done
