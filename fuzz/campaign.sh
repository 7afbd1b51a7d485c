#!/usr/bin/env bash
# The fuzzing campaign of RELIABILITY.md §4: runs one, several or all cargo-fuzz
# targets until each has executed RUNS inputs (default 10 million) or run for
# MAX_SECONDS (default 1800: 30 minutes, for the slow ones), then minimises the
# target's corpus and appends one line per target to the results file.
#
#   fuzz/campaign.sh                 # every target, one after the other
#   fuzz/campaign.sh frame envelope  # just these
#   RUNS=1000000 MAX_SECONDS=300 fuzz/campaign.sh   # a shorter pass
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Results: fuzz/campaign/results.tsv (target, date, executions, seconds, execs/s,
# coverage edges, features, corpus files before and after, crashes, stopped by) and
# each target's libFuzzer log in fuzz/campaign/<target>.log (the log is not committed).
# A crash stops nothing: its input lands in fuzz/artifacts/<target>/ and the line says
# so; move it to fuzz/regressions/<target>/ once it is understood and fixed.
set -euo pipefail

cd "$(dirname "$0")"
RUNS="${RUNS:-10000000}"
MAX_SECONDS="${MAX_SECONDS:-1800}"
NICE="${NICE:-10}"
out=campaign
mkdir -p "$out"
results="$out/results.tsv"
if [ ! -s "$results" ]; then
    printf 'target\tdate\texecutions\tseconds\texecs_per_s\tcov\tft\tcorpus_before\tcorpus_after\tcrashes\tstopped_by\n' >"$results"
fi

if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    echo "campaign: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "campaign: building ${#targets[@]} target(s)" >&2
cargo +nightly fuzz build >&2

for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    before=$(find "$corpus" -type f | wc -l)
    # Crashes, leaks, timeouts and out-of-memory inputs count; slow units
    # (libFuzzer's slow-unit-*) do not: a paused process writes one too.
    crashes_before=$(find "artifacts/$target" -type f ! -name 'slow-unit-*' | wc -l)
    log="$out/$target.log"
    echo "campaign: $target: up to $RUNS executions or $MAX_SECONDS s" >&2
    start=$(date +%s)
    # -fork=0 and one job: one core, so the campaign can run beside other work.
    # A crash ends libFuzzer's run with a non-zero status; the line records it.
    set +e
    nice -n "$NICE" cargo +nightly fuzz run "$target" "$corpus" -- \
        -runs="$RUNS" -max_total_time="$MAX_SECONDS" -print_final_stats=1 \
        -timeout=10 >"$log" 2>&1
    status=$?
    set -e
    seconds=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    # The last status line libFuzzer printed: "#N ... cov: C ft: F corp: ..."
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    # Keep the committed corpus small: minimise it, then put back any seed
    # that cmin dropped (the replay test checks the seeds are all there).
    seeds_dir=$(mktemp -d)
    find "$corpus" -maxdepth 1 -name 'seed-*' -exec cp {} "$seeds_dir/" \;
    nice -n "$NICE" cargo +nightly fuzz cmin "$target" "$corpus" >>"$log" 2>&1 || true
    cp "$seeds_dir"/* "$corpus/" 2>/dev/null || true
    rm -rf "$seeds_dir"
    after=$(find "$corpus" -type f | wc -l)
    crashes=$(( $(find "artifacts/$target" -type f ! -name 'slow-unit-*' | wc -l) - crashes_before ))
    if [ "$status" -ne 0 ]; then
        stopped="crash(status $status)"
    elif [ "$execs" -ge "$RUNS" ]; then
        stopped="runs"
    else
        stopped="time"
    fi
    rate=$(( seconds > 0 ? execs / seconds : execs ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$(date -u +%F)" \
        "$execs" "$seconds" "$rate" "${cov:-?}" "${ft:-?}" "$before" "$after" "$crashes" \
        "$stopped" >>"$results"
    echo "campaign: $target: $execs executions in $seconds s, cov $cov, $crashes crash(es)" >&2
done
