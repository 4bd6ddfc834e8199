#!/usr/bin/env bash
# Run every fuzz target (or the ones named) with atheris for SECONDS each.
#
#   bash tests/fuzz/run.sh 20                 CI smoke run (tests/test_fuzz_smoke.py does this)
#   bash tests/fuzz/run.sh 3600 kdump elf     an hour each on two readers
#
# Seeds are regenerated from kdumper's own writers into $KDUMPER_CACHE/fuzz/seeds/<target>; the
# growing corpus is kept in $KDUMPER_CACHE/fuzz/corpus/<target> between runs; a crashing input is
# saved as $KDUMPER_CACHE/fuzz/crashes/<target>-crash-<sha1> (replay it: python
# tests/fuzz/fuzz_<target>.py FILE). Exits non-zero when any target found a crash.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
ROOT=$PWD
SECONDS_EACH=${1:-20}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(elf kdump flattened vmcoreinfo notes)
PYTHON=${PYTHON:-python3}
OUT=${KDUMPER_CACHE:-$HOME/.cache/kdumper}/fuzz
export PYTHONPATH="$ROOT:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" -m tests.fuzz.make_seeds "$OUT/seeds" || exit 1
mkdir -p "$OUT/crashes"
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/corpus/$t"
    start=$SECONDS
    # -rss_limit_mb: a header claiming terabytes must be refused, not allocated
    "$PYTHON" "tests/fuzz/fuzz_$t.py" \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -artifact_prefix="$OUT/crashes/$t-" -print_final_stats=1 \
        "$OUT/corpus/$t" "$OUT/seeds/$t" >"$OUT/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/$t.log" | grep -o '[0-9]*$')
    if ((rc != 0)); then
        failed+=("$t")
        printf 'fuzz %-11s FAILED after %ds (exit %d, %s runs); log: %s\n' \
            "$t" $((SECONDS - start)) "$rc" "${execs:-?}" "$OUT/$t.log"
        grep -E '^(=+ Uncaught|Traceback|[A-Za-z]+Error|  File|== ERROR|artifact_prefix|Test unit written)' \
            "$OUT/$t.log" | tail -n 25
    else
        printf 'fuzz %-11s ok     %ds, %s runs, corpus %s files\n' \
            "$t" $((SECONDS - start)) "${execs:-?}" "$(find "$OUT/corpus/$t" -type f | wc -l)"
    fi
done
if ((${#failed[@]})); then
    echo "fuzz targets with crashes: ${failed[*]} (inputs in $OUT/crashes)"
    exit 1
fi
