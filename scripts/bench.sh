#!/usr/bin/env bash
# Runs every certgate benchmark workload and prints markdown tables.
#
#   scripts/bench.sh                      # about 6 minutes on 2 cores
#   BENCH_CLIENTS=200000 scripts/bench.sh # smaller memory / snapshot runs
#
# Environment (defaults in brackets):
#   BENCH_CONNECTIONS [32]   BENCH_WARMUP [2s]   BENCH_DURATION [10s]
#   BENCH_CLIENTS [1000000]  BENCH_SMALL_CLIENTS [100000]  (memory and snapshot sizes)
#   BENCH_OUT [target/bench/results-<time>.jsonl]  (raw JSON lines, one per run)
#   BENCH_POSTGRES_URL [a throwaway cluster]        (shared-store workloads; written to)
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

# The shared-store workloads need PostgreSQL: BENCH_POSTGRES_URL, or a throwaway cluster
# started here when Debian's postgresql is installed (initdb + pg_ctl, as the postgres user
# when run as root; fsync on, as in production). Skipped otherwise.
pg_url=${BENCH_POSTGRES_URL:-}
pg_dir=""
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ -z "$pg_url" ] && [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ]; then
    pg_dir=$(mktemp -d /tmp/certgate-bench-pg-XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
    pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 >/dev/null
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    trap 'as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$pg_dir"' EXIT
    pg_url="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
fi
run register "${load[@]}"
run read-rotate "${load[@]}"
run token "${load[@]}"
run introspect "${load[@]}"
run handshake-register "${load[@]}"
run durable-register "${load[@]}"
run discovery "${load[@]}"
# A route to a local upstream, against real nginx doing mTLS and proxy_pass to it.
if command -v nginx >/dev/null 2>&1; then
    run route "${load[@]}"
    run route-upload
else
    echo "bench: nginx not installed, route skipped (apt-get install -y nginx)" >&2
fi
# Two nodes on one PostgreSQL registry, against one memory-store node.
if [ -n "$pg_url" ]; then
    run shared-register "${load[@]}" --postgres-url "$pg_url"
    run shared-read-rotate "${load[@]}" --postgres-url "$pg_url"
else
    echo "bench: no PostgreSQL, shared-store workloads skipped (apt-get install -y postgresql)" >&2
fi
# The same two hot paths without the access log, for comparison (SPEC §10 is with it on).
run token "${load[@]}" --log off
run introspect "${load[@]}" --log off
run micro
for n in $(printf '%s\n' "$small" "$clients" | sort -nu); do
    run memory --clients "$n"
    run snapshot --clients "$n"
done
# The same registry when each client holds a certificate of its own (one more quota entry
# per client).
run memory --clients "$clients" --certificate-per-client

echo "bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); raw results in $out" >&2
"$bench" report "$out"
