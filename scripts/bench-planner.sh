#!/usr/bin/env bash
# The planner's A/B on a real cluster (issue 20, point 7), in a release build: the
# moving-hotspot, diurnal and sequential loads against fresh local 3-region clusters
# (Hamburg-China 250 ms, Hamburg-Sydney 300 ms, China-Sydney 150 ms round trips), once
# per planner mode (model, heuristic, off) and run, open loop at 70 % of what the cluster
# served with the planner off. Writes planner-ab.md/.json and two charts into $OUT
# (default bench-planner/) and prints the table. Extra arguments go to
# `hanse bench planner` (e.g. --runs 3 --duration 60s --loads demo,ycsb-a,ycsb-c).
# About 80 minutes with the defaults (45 runs of 75 s, each with its own start). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet -p hanse-cli -p hanse-bench
target/release/hanse bench planner --out "${OUT:-bench-planner}" "$@"
