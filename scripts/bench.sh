#!/usr/bin/env bash
# Runs every certgate benchmark workload and prints markdown tables.
#
#   scripts/bench.sh                      # about 4 minutes on 2 cores
#   BENCH_CLIENTS=200000 scripts/bench.sh # smaller memory / snapshot runs
#
# Environment (defaults in brackets):
#   BENCH_CONNECTIONS [32]   BENCH_WARMUP [2s]   BENCH_DURATION [10s]
#   BENCH_CLIENTS [1000000]  BENCH_SMALL_CLIENTS [100000]  (memory and snapshot sizes)
#   BENCH_OUT [target/bench/results-<time>.jsonl]  (raw JSON lines, one per run)
#
# Each HTTP workload starts certgate and its baseline (the ceiling; memory-only certgate
# for durable-register) in child processes and alternates the load between them in 1 s
# slices, so both see the same background load. Method: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${BENCH_CONNECTIONS:-32}
warmup=${BENCH_WARMUP:-2s}
duration=${BENCH_DURATION:-10s}
clients=${BENCH_CLIENTS:-1000000}
small=${BENCH_SMALL_CLIENTS:-100000}
mkdir -p target/bench
out=${BENCH_OUT:-target/bench/results-$(date +%Y%m%d-%H%M%S).jsonl}

cargo build --release -p certgate-bench >&2
bench=target/release/bench

run() {
    echo "bench: $*" >&2
    "$bench" "$@" --json >>"$out"
}

load=(-c "$connections" --warmup "$warmup" -d "$duration")
run register "${load[@]}"
run read-rotate "${load[@]}"
run token "${load[@]}"
run introspect "${load[@]}"
run handshake-register "${load[@]}"
run durable-register "${load[@]}"
run discovery "${load[@]}"
# The same two hot paths without the access log, for comparison (SPEC §10 is with it on).
run token "${load[@]}" --log off
run introspect "${load[@]}" --log off
run micro
for n in $(printf '%s\n' "$small" "$clients" | sort -nu); do
    run memory --clients "$n"
    run snapshot --clients "$n"
done

echo "bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); raw results in $out" >&2
"$bench" report "$out"
