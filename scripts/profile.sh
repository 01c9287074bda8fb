#!/usr/bin/env bash
# Where a 3-node cluster's CPU goes, per request type: a local cluster in a release build
# under CLIENTS closed-loop clients, `perf record` (DWARF call graphs) on the first
# shard's leader and on one follower while the load runs, for durable writes and for
# linearizable reads. Writes, into $OUT (default docs/profile/):
#   - a flame graph per request type and role (write-leader.svg, read-follower.svg, ...),
#   - categories.md: each profile's samples by where they were spent (gRPC/HTTP/2,
#     protobuf, TLS, actors, openraft, RocksDB, fsync, allocation, ...).
# Usage: scripts/profile.sh [CLIENTS] [SECONDS]. Needs root or perf_event_paranoid <= 1
# for perf; installs Debian's linux-perf and the inferno flame graph tools if missing.
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

clients=${1:-32}
seconds=${2:-15}
out=${OUT:-docs/profile}
log() { printf 'profile: %s\n' "$*" >&2; }

if ! command -v perf >/dev/null; then
  log "installing Debian's linux-perf"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq linux-perf >/dev/null
fi
tools=target/tools
if [ ! -x "$tools/bin/inferno-flamegraph" ]; then
  log "installing inferno (flame graphs) into $tools"
  cargo install --quiet --locked --root "$tools" inferno@^0.12
fi

cargo build --release --quiet -p hanse-cli -p hanse-bench
hanse=target/release/hanse
work=$(mktemp -d)
cluster="$work/cluster"
export HANSE_CERTS_DIR="$cluster/certs"
trap '"$hanse" cluster down --dir "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$out"

"$hanse" cluster up --dir "$cluster" --nodes 3 --port 7631 >/dev/null
endpoints=$("$hanse" cluster status --dir "$cluster" --json |
  python3 -c 'import json,sys; print(",".join(json.loads(l)["addr"] for l in sys.stdin))')

# The pid of the node that leads the first shard (leader) or of another node (follower).
pid_of() {
  local role=$1
  "$hanse" admin shards --json --endpoints "$endpoints" | python3 -c '
import json, sys
role, cluster = sys.argv[1], sys.argv[2]
leader = next(s["leader_node"] for s in json.load(sys.stdin)["shards"] if s["id"] == 1)
node = leader if role == "leader" else next(n for n in (1, 2, 3) if n != leader)
print(open(f"{cluster}/node{node}.pid").read().strip())' "$role" "$cluster"
}

# profile NAME BENCH-ARGS...: the load for SECONDS + 10 s, perf on the leader and on a
# follower for SECONDS of it.
profile() {
  local name=$1
  shift
  log "$name: $clients clients, perf for ${seconds}s on the leader and a follower"
  "$hanse" bench run --endpoints "$endpoints" --cluster-dir "$cluster" --clients "$clients" \
    --duration $((seconds + 10)) --ops 100000000 --json "$@" >"$out/$name.json" &
  local load=$!
  # Past the read workloads' preload of their keys.
  sleep 5
  local role perfs=()
  for role in leader follower; do
    perf record --quiet -F 499 --call-graph dwarf,16384 -p "$(pid_of "$role")" \
      -o "$work/$name-$role.data" -- sleep "$seconds" >/dev/null 2>&1 &
    perfs+=($!)
  done
  wait "${perfs[@]}"
  wait "$load"
  for role in leader follower; do
    perf script -i "$work/$name-$role.data" 2>/dev/null |
      "$tools/bin/inferno-collapse-perf" >"$work/$name-$role.folded"
    "$tools/bin/inferno-flamegraph" --minwidth 0.5 --title "$name, $role ($clients clients)" \
      <"$work/$name-$role.folded" >"$out/$name-$role.svg"
  done
}

profile write --workload write
profile read --workload read
python3 scripts/profile_categories.py "$work"/*.folded >"$out/categories.md"
log "flame graphs and $out/categories.md written"
cat "$out/categories.md"
