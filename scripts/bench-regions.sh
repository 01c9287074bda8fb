#!/usr/bin/env bash
# The regions benchmark: Hamburg-origin writes against local clusters on 127.0.0.x, in a
# release build.
#   1. the ingest actor on and off (3 nodes, Hamburg leads, no injected latency);
#   2. with the latency matrix, the shard's leader in Hamburg and in China (4 nodes:
#      Hamburg, China, Sydney, Hamburg).
# Prints one markdown table; each run's JSON goes to $OUT (default bench-regions/).
# Usage: scripts/bench-regions.sh [OPS] [CLIENTS]. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

ops=${1:-20000}
clients=${2:-32}
out=${OUT:-bench-regions}
matrix="eu-hamburg:ap-china=250ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=150ms"
mkdir -p "$out"
cargo build --release --quiet -p hanse -p hanse-bench
hanse=target/release/hanse
work=$(mktemp -d)
cluster="$work/cluster"
trap '"$hanse" cluster down --dir "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# Runs one scenario: NAME OPS NODES LEADER-REGION CLUSTER-UP-ARGS...
scenario() {
  local name=$1 n=$2 nodes=$3 want=$4
  shift 4
  "$hanse" cluster up --dir "$cluster" --nodes "$nodes" --port 7611 \
    --balance-cool-down 2 --preferred-leader-region "$want" "$@" >/dev/null
  local endpoints
  endpoints=$("$hanse" cluster status --dir "$cluster" --json |
    python3 -c 'import json,sys; print(",".join(json.loads(l)["addr"] for l in sys.stdin))')
  # The preferred region draws the first shard's leader within a few balancing rounds.
  local leader=""
  for _ in $(seq 60); do
    leader=$("$hanse" admin shards --json --endpoints "$endpoints" | python3 -c '
import json, sys
shards = json.load(sys.stdin)["shards"]
print(next(s["leader_region"] for s in shards if s["id"] == 1))' 2>/dev/null || true)
    [[ "$leader" == "$want" ]] && break
    sleep 1
  done
  echo "$name: first shard led from $leader" >&2
  "$hanse" bench run --endpoints "$endpoints" --workload write --region eu-hamburg \
    --clients "$clients" --ops "$n" --duration 120 --json >"$out/$name.json"
  "$hanse" admin status --json --endpoints "${endpoints%%,*}" |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["ingest"]))' \
      >"$out/$name.ingest.json"
  "$hanse" cluster down --dir "$cluster" >/dev/null
  rm -rf "$cluster"
}

scenario ingest-on "$ops" 3 eu-hamburg
scenario ingest-off "$ops" 3 eu-hamburg --ingest enabled=false
# Writes across 250 ms take long: fewer of them.
scenario far-leader-hamburg $((ops / 10)) 4 eu-hamburg --latency "$matrix"
scenario far-leader-china $((ops / 100)) 4 ap-china --latency "$matrix"

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
print("| run | ops/s | p50 ms | p99 ms | writes per log entry (ingest) |")
print("| --- | --- | --- | --- | --- |")
for name in ["ingest-on", "ingest-off", "far-leader-hamburg", "far-leader-china"]:
    run = json.load(open(f"{out}/{name}.json"))
    ingest = json.load(open(f"{out}/{name}.ingest.json"))
    per_entry = "-"
    if ingest and ingest["batches"]:
        per_entry = f'{ingest["writes"] / ingest["batches"]:.1f} (max {ingest["largest_batch"]})'
    print(f'| {name} | {run["ops_per_sec"]:,.0f} | {run["p50_ms"]:.1f} | {run["p99_ms"]:.1f} | {per_entry} |')
EOF
