#!/usr/bin/env bash
# The regions benchmark, against local clusters on 127.0.0.x in a release build:
#   1. Hamburg-origin writes with the ingest actor on and off (3 nodes, the leader in
#      Hamburg, no injected latency);
#   2. with the latency matrix (4 nodes: Hamburg, China, Sydney, Hamburg), Hamburg-origin
#      writes with the first shard's leader in Hamburg and in China, and reads from
#      Sydney and China, linearizable (the leader serves) and follower reads (the
#      region's own replica serves within a 1 s staleness bound).
# Prints one markdown table; each run's JSON goes to $OUT (default bench-regions/).
# Usage: scripts/bench-regions.sh [WRITES] [CLIENTS]. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

writes=${1:-20000}
clients=${2:-32}
out=${OUT:-bench-regions}
matrix="eu-hamburg:ap-china=250ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=150ms"
mkdir -p "$out"
rm -f "$out"/*.json
cargo build --release --quiet -p hanse-cli -p hanse-bench
hanse=target/release/hanse
work=$(mktemp -d)
cluster="$work/cluster"
# The clusters run secure: every command reaches them as root with the certificates `up`
# makes in the cluster's directory.
export HANSE_CERTS_DIR="$cluster/certs"
trap '"$hanse" cluster down --dir "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# up NODES LEADER-REGION CLUSTER-UP-ARGS...: a new cluster whose first shard is led from
# LEADER-REGION; sets $endpoints (node 1 first).
up() {
  local nodes=$1 want=$2
  shift 2
  "$hanse" cluster up --dir "$cluster" --nodes "$nodes" --port 7611 \
    --balance-cool-down 2 --preferred-leader-region "$want" "$@" >/dev/null
  endpoints=$("$hanse" cluster status --dir "$cluster" --json |
    python3 -c 'import json,sys; print(",".join(json.loads(l)["addr"] for l in sys.stdin))')
  local leader=""
  for _ in $(seq 60); do
    leader=$("$hanse" admin shards --json --endpoints "$endpoints" | python3 -c '
import json, sys
shards = json.load(sys.stdin)["shards"]
print(next(s["leader_region"] for s in shards if s["id"] == 1))' 2>/dev/null || true)
    [[ "$leader" == "$want" ]] && break
    sleep 1
  done
  echo "first shard led from ${leader:-nowhere}" >&2
}

# measure NAME NEAREST-NODE REGION BENCH-ARGS...: one load run from REGION, its node
# NEAREST-NODE asked first.
measure() {
  local name=$1 nearest=$2 region=$3
  shift 3
  local first
  first=$(cut -d, -f"$nearest" <<<"$endpoints")
  echo "$name" >&2
  "$hanse" bench run --endpoints "$first,$endpoints" --region "$region" \
    --clients "$clients" --duration 120 --json "$@" >"$out/$name.json"
  "$hanse" admin status --json --endpoints "$first" |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["ingest"]))' \
      >"$out/$name.ingest.json"
}

down() {
  "$hanse" cluster down --dir "$cluster" >/dev/null
  rm -rf "$cluster"
}

up 3 eu-hamburg
measure write-ingest-on 1 eu-hamburg --workload write --ops "$writes"
down
up 3 eu-hamburg --ingest enabled=false
measure write-ingest-off 1 eu-hamburg --workload write --ops "$writes"
down
# Across 150-300 ms round trips operations take long: fewer of them.
up 4 eu-hamburg --latency "$matrix"
measure far-write-leader-hamburg 1 eu-hamburg --workload write --ops $((writes / 10))
for region in 2:ap-china 3:au-sydney; do
  node=${region%%:*} name=${region#*:}
  measure "far-read-$name-leader" "$node" "$name" --workload read --key-count 200 \
    --ops 1000
  measure "far-read-$name-follower" "$node" "$name" --workload read --key-count 200 \
    --ops $((writes / 2)) --max-staleness 1s
done
down
up 4 ap-china --latency "$matrix"
measure far-write-leader-china 1 eu-hamburg --workload write --ops $((writes / 100))
down

python3 - "$out" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
print("| run | ops/s | p50 ms | p99 ms | writes per log entry (ingest) |")
print("| --- | --- | --- | --- | --- |")
for path in sorted(glob.glob(f"{out}/*.json")):
    if path.endswith(".ingest.json"):
        continue
    name = os.path.basename(path)[:-5]
    run = json.load(open(path))
    ingest = json.load(open(f"{out}/{name}.ingest.json"))
    per_entry = "-"
    if ingest and ingest["batches"] and run["workload"] == "write":
        per_entry = f'{ingest["writes"] / ingest["batches"]:.1f} (max {ingest["largest_batch"]})'
    print(f'| {name} | {run["ops_per_sec"]:,.0f} | {run["p50_ms"]:.1f} | {run["p99_ms"]:.1f} | {per_entry} |')
EOF
