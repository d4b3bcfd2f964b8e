#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for SECONDS (default 60) each, one after another,
# one job, and prints the executions per target. Exits non-zero if any target crashed.
#
#   scripts/fuzz.sh 300                 # five minutes per target
#   FUZZ_TARGETS="dn codec" scripts/fuzz.sh 60
#
# Works on the stable toolchain: cargo-fuzz passes -Z flags to rustc, which stable accepts
# with RUSTC_BOOTSTRAP=1. AddressSanitizer is used when it builds (FUZZ_SANITIZER=none to
# skip it); otherwise the script falls back to no sanitizer.
#
# Corpora grow in fuzz/corpus/<target> (git-ignored); seeds are generated from certs/ and
# config/ into fuzz/target/seeds/<target> on every run; fuzz/regressions/<target> (crashes
# found earlier) is replayed first. Crashing inputs land in fuzz/artifacts/<target>.
set -euo pipefail

duration=${1:-60}
if ! [[ $duration =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz=$root/fuzz
cd "$root"

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$fuzz" | tr '\n' ' ')}"

logs=$fuzz/target/logs
mkdir -p "$logs"

sanitizer=${FUZZ_SANITIZER:-address}
for t in "${targets[@]}"; do
    echo "== building $t (sanitizer: $sanitizer)"
    if ! cargo fuzz build --fuzz-dir "$fuzz" -s "$sanitizer" "$t" >"$logs/build-$t.log" 2>&1; then
        tail -n 20 "$logs/build-$t.log"
        [[ $sanitizer == none ]] && exit 1
        echo "== $t does not build with -s $sanitizer; falling back to -s none"
        sanitizer=none
        cargo fuzz build --fuzz-dir "$fuzz" -s none "$t"
    fi
done

echo "== generating seed corpora"
seeds=$fuzz/target/seeds
rm -rf "$seeds"
cargo run --quiet --manifest-path "$fuzz/Cargo.toml" --example seed_corpus -- "$root" "$seeds"

summary=()
failed=0
for t in "${targets[@]}"; do
    corpus=$fuzz/corpus/$t
    mkdir -p "$corpus" "$seeds/$t"
    dirs=("$corpus" "$seeds/$t")
    [[ -d $fuzz/regressions/$t ]] && dirs+=("$fuzz/regressions/$t")
    log=$logs/$t.log
    echo "== fuzzing $t for ${duration}s (log: $log)"
    if cargo fuzz run --fuzz-dir "$fuzz" -s "$sanitizer" "$t" "${dirs[@]}" -- \
        -max_total_time="$duration" -timeout=30 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed=1
        grep -E -m1 -A3 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" || true
        grep -E -m1 'Test unit written to|artifacts/' "$log" || true
    fi
    execs=$(grep -E -o 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -n1 | grep -E -o '[0-9]+$' || true)
    if [[ -z $execs ]]; then
        execs=$(grep -E -o '^Done [0-9]+ runs' "$log" | tail -n1 | grep -E -o '[0-9]+' || true)
    fi
    secs=$(grep -E -o 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1 | grep -E -o '[0-9]+ second' | grep -E -o '[0-9]+' || true)
    line=$(printf '%-14s %-6s %12s executions in %ss' "$t" "$status" "${execs:-?}" "${secs:-?}")
    echo "$line"
    summary+=("$line")
done

echo "== summary (sanitizer: $sanitizer, ${duration}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
