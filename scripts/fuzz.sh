#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for the same number of seconds,
# and prints one summary line per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS defaults to 240 (or $FUZZ_SECONDS); the targets default to all of them. Each run
# starts from fuzz/seeds/<target> plus what earlier runs kept in fuzz/corpus/<target> (ignored
# by git; new inputs go there). Findings land in fuzz/artifacts/<target>/, the full libFuzzer
# output in fuzz/artifacts/<target>.log. Exits non-zero if any target found something or failed.
#
# cargo-fuzz needs nightly compiler flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=none builds without AddressSanitizer (faster, and the way
# out should a toolchain lack it); the default is address. One job, one target at a time: the
# machines have two cores.
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-240}}"
if [[ $# -gt 0 ]]; then
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(frames newcomer owner)
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]  (SECONDS a positive whole number, got '$seconds')" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-address}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it" >&2
    cargo install --locked cargo-fuzz
fi

for target in "${targets[@]}"; do
    if [[ ! -f "fuzz/fuzz_targets/$target.rs" ]]; then
        echo "no fuzz target '$target' (have: $(find fuzz/fuzz_targets -name '*.rs' -printf '%f ' | sed 's/\.rs//g'))" >&2
        exit 2
    fi
done

# Build everything first, so that the timed runs fuzz and do not compile.
cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer"

# The files libFuzzer writes for what it found.
findings_in() {
    find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) \
        2>/dev/null | sort
}

# The value of libFuzzer's final statistic $2 in log $1 (with -print_final_stats=1).
final_stat() {
    grep -E "^stat::$2:" "$1" | tail -n 1 | awk '{print $2}' || true
}

summaries=()
status=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    log="fuzz/artifacts/$target.log"
    mkdir -p "$corpus" "$artifacts"
    before="$(findings_in "$artifacts")"
    echo "== $target: ${seconds}s, log in $log" >&2

    started=$SECONDS
    rc=0
    cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    elapsed=$((SECONDS - started))

    executions="$(final_stat "$log" number_of_executed_units)"
    exec_per_sec="$(final_stat "$log" average_exec_per_sec)"
    corpus_files="$(find "$corpus" -maxdepth 1 -type f | wc -l)"
    coverage="$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | awk '{print $2}' || true)"
    new_findings="$(comm -13 <(printf '%s\n' "$before") <(findings_in "$artifacts") | sed '/^$/d')"
    if [[ -n "$new_findings" ]]; then
        found="$(printf '%s\n' "$new_findings" | wc -l) ($(printf '%s\n' "$new_findings" | xargs -n1 basename | tr '\n' ' ' | sed 's/ $//'))"
        status=1
    elif [[ $rc -ne 0 ]]; then
        found="none, but the run failed (exit $rc): see $log"
        status=1
    else
        found="none"
    fi
    summaries+=("$(printf '%-9s %4ss  executions %-10s exec/s %-7s corpus %-6s cov %-6s findings %s' \
        "$target" "$elapsed" "${executions:-?}" "${exec_per_sec:-?}" "$corpus_files" "${coverage:-?}" "$found")")
    echo "${summaries[-1]}" >&2
done

echo
echo "fuzzing summary (sanitizer $sanitizer, ${seconds}s per target):"
printf '%s\n' "${summaries[@]}"
exit "$status"
