#!/usr/bin/env bash
# Coverage-guided fuzzing of databus's parsers of untrusted input (fuzz/, FUZZING.md) on the
# stable toolchain. cargo builds fuzz/fuzz_targets/*.rs with the SanitizerCoverage flags that
# cargo-fuzz passes, minus any sanitizer (the only part that needs nightly), so nothing but
# crates.io is needed: libfuzzer-sys compiles libFuzzer itself with the C++ compiler.
# Then each target runs under libFuzzer, one after another, over a scratch copy of its corpus.
#
#   FUZZ_SECONDS=60   how long each target runs
#   FUZZ_TARGETS=...  a subset, space- or comma-separated (default: every fuzz target)
#   FUZZ_MERGE=1      merge inputs that cover new edges back into fuzz/corpus/<target>/
#
# Logs go to .run/fuzz/<target>.log, crash inputs to .run/fuzz/artifacts/<target>/.
# Prints a markdown table of the run; exits 1 if any target crashed.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-60}
if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: FUZZ_SECONDS must be a positive number of seconds, got '$seconds'" >&2
    exit 2
fi

all_targets=()
for file in fuzz/fuzz_targets/*.rs; do
    name=${file##*/}
    all_targets+=("${name%.rs}")
done
requested=${FUZZ_TARGETS:-}
read -r -a targets <<<"${requested//,/ }"
if ((${#targets[@]} == 0)); then
    targets=("${all_targets[@]}")
fi
for target in "${targets[@]}"; do
    if [[ ! -f fuzz/fuzz_targets/$target.rs ]]; then
        echo "fuzz: no target '$target'; there are: ${all_targets[*]}" >&2
        exit 2
    fi
done

# The flags cargo-fuzz 0.12 passes with `--sanitizer none` on Linux: edge coverage with
# inline 8-bit counters and a PC table (what libFuzzer's feedback reads), comparison tracing
# (so it can solve `==` on integers), branch folding off (more edges), stack depth, and
# `--cfg fuzzing`. Plus debug assertions and overflow checks, so an overflow is a crash
# rather than a silently wrong length, and one codegen unit, as cargo-fuzz uses in release.
sancov_flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    -Cllvm-args=-sanitizer-coverage-stack-depth
    --cfg=fuzzing
    -Cdebug-assertions
    -Coverflow-checks
    -Ccodegen-units=1
)
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, and its own
# target dir keeps the instrumented build from invalidating the normal one.
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=$root/target/fuzz
bins=()
for target in "${targets[@]}"; do
    bins+=(--bin "$target")
done
echo "fuzz: building ${targets[*]} (instrumented, $target_dir)" >&2
unset CARGO_ENCODED_RUSTFLAGS
RUSTFLAGS="${sancov_flags[*]} ${RUSTFLAGS:-}" cargo build --release -p databus-fuzz \
    --features libfuzzer --target "$triple" --target-dir "$target_dir" "${bins[@]}"
bin_dir=$target_dir/$triple/release

run_dir=$root/.run/fuzz
mkdir -p "$run_dir"
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
rows=()
failed=()
for target in "${targets[@]}"; do
    corpus=$run_dir/corpus/$target
    artifacts=$run_dir/artifacts/$target
    log=$run_dir/$target.log
    rm -rf "$corpus" "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    cp -R "fuzz/corpus/$target/." "$corpus/"

    echo "fuzz: $target for ${seconds}s (log: ${log#"$root"/})" >&2
    started=$(date +%s)
    status=0
    "$bin_dir/$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
        -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - started))

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    runs=${runs:-0}
    crashes=$(find "$artifacts" -type f | wc -l)
    if ((status != 0 || crashes > 0)); then
        failed+=("$target")
        # A fuzzer that stopped without leaving an input still fails the run: 72 is libFuzzer's
        # exit code when a signal interrupted it, anything else means it could not run.
        if ((crashes == 0)); then
            if ((status == 72)); then crashes="interrupted"; else crashes="exit $status"; fi
        fi
    elif [[ ${FUZZ_MERGE:-0} == 1 ]]; then
        before=$(find "fuzz/corpus/$target" -type f | wc -l)
        # Edges only (-use_counters=0), not hit-count buckets: one input per newly covered
        # edge keeps the committed corpus small, and the fuzzer regrows the rest in seconds.
        "$bin_dir/$target" -merge=1 -use_counters=0 "fuzz/corpus/$target" "$corpus" \
            >"$run_dir/$target.merge.log" 2>&1
        after=$(find "fuzz/corpus/$target" -type f | wc -l)
        echo "fuzz: $target: merged $((after - before)) new inputs into fuzz/corpus/$target" >&2
    fi
    rows+=("| $target | $elapsed | $runs | $((runs / (elapsed > 0 ? elapsed : 1))) | $crashes |")
done

echo
echo "| target | seconds | executions | exec/s | crashes |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"

if ((${#failed[@]} > 0)); then
    for target in "${failed[@]}"; do
        echo >&2
        echo "fuzz: $target failed; inputs in .run/fuzz/artifacts/$target/:" >&2
        find "$run_dir/artifacts/$target" -type f >&2
        echo "--- end of .run/fuzz/$target.log:" >&2
        tail -n 40 "$run_dir/$target.log" >&2
    done
    exit 1
fi
