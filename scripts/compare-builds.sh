#!/usr/bin/env bash
# Measures whether a change to the request path helps: runs two builds of `hanse` in
# alternation, each run on a fresh secure 3-node cluster whose data shard is led by node
# 2 (ap-china, no ingest actor), and prints ops/s and CPU ms per 1,000 operations of the
# three servers for each run. Alternating keeps a drift of this shared machine from
# favouring one build.
#
#   scripts/compare-builds.sh DIR_A DIR_B [ROUNDS]
#
# DIR_A and DIR_B each hold a release `hanse` binary (copy target/release/hanse aside
# before rebuilding). Environment: WORKLOAD (write, read, mixed; default write), CLIENTS
# (32), RUN_SECONDS (15), RATE (an open loop at this many ops/s instead of closed-loop
# clients), COUNT=1 (also count the servers' fdatasync, futex and context switches per
# operation with `perf stat` from 4 s to 10 s into each run; needs linux-perf and root),
# SCRAPE=1 (fetch every node's /metrics every 5 s during each run, as Prometheus would, on
# builds whose nodes serve HTTP).
set -euo pipefail

dir_a=${1:?usage: compare-builds.sh DIR_A DIR_B [ROUNDS]}
dir_b=${2:?usage: compare-builds.sh DIR_A DIR_B [ROUNDS]}
rounds=${3:-3}
workload=${WORKLOAD:-write}
clients=${CLIENTS:-32}
seconds=${RUN_SECONDS:-15}
if [[ ${COUNT:-0} == 1 && $seconds -lt 11 ]]; then
    echo "COUNT=1 counts from 4 s to 10 s into each run: give RUN_SECONDS=11 or more" >&2
    exit 2
fi
port=7800
endpoints=127.0.0.11:$port,127.0.0.12:$port,127.0.0.13:$port
scratch=$(mktemp -d)
trap 'for d in "$dir_a" "$dir_b"; do "$d/hanse" cluster down --dir "$scratch/cluster" >/dev/null 2>&1 || true; done; rm -rf "$scratch"' EXIT

run_once() {
    local bin=$1/hanse cluster=$scratch/cluster
    rm -rf "$cluster"
    "$bin" cluster up --nodes 3 --port $port --dir "$cluster" >"$scratch/up.log" 2>&1
    export HANSE_CERTS_DIR=$cluster/certs
    "$bin" admin transfer-leader --endpoints $endpoints --shard 1 --to 2 >/dev/null || true
    "$bin" bench run --endpoints $endpoints --cluster-dir "$cluster" --workload "$workload" \
        --clients "$clients" ${RATE:+--rate "$RATE"} --ops 100000000 --duration "$seconds" \
        >"$scratch/bench.out" 2>&1 &
    local bench=$!
    local scraping=""
    if [[ ${SCRAPE:-0} == 1 ]]; then
        (
            c=$cluster/certs
            while kill -0 $bench 2>/dev/null; do
                for n in 1 2 3; do
                    curl -s --cacert "$c/ca.crt" --cert "$c/client-root.crt" --key "$c/client-root.key" \
                        "https://127.0.0.1$n:$((port + 80))/metrics" >/dev/null || true
                done
                sleep 5
            done
        ) &
        scraping=$!
    fi
    local counts=""
    if [[ ${COUNT:-0} == 1 ]]; then
        sleep 4
        local pids
        pids=$(for n in 1 2 3; do cat "$cluster/node$n.pid"; echo; done | paste -sd,)
        perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_futex,context-switches \
            -p "$pids" -- sleep 6 2>"$scratch/perf.out"
    fi
    wait $bench
    [[ -n $scraping ]] && wait "$scraping"
    local ops cpu
    ops=$(grep -oE '\(([0-9]+) ops/s\)' "$scratch/bench.out" | grep -oE '[0-9]+')
    cpu=$(grep -oE 'CPU [0-9.]+' "$scratch/bench.out" | cut -d' ' -f2)
    if [[ ${COUNT:-0} == 1 ]]; then
        counts=$(awk -F, -v secs=6 -v ops="$ops" '$1 ~ /^[0-9]/ {
            n = $3; sub(/.*:/, "", n); sub(/sys_enter_/, "", n);
            printf " %s/op=%.2f", n, $1 / secs / ops }' "$scratch/perf.out")
    fi
    echo "$1 $workload ops/s=$ops cpu_ms_per_kop=$cpu$counts"
    "$bin" cluster down --dir "$cluster" >/dev/null 2>&1 || true
}

for _ in $(seq "$rounds"); do
    run_once "$dir_a"
    run_once "$dir_b"
done
