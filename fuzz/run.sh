#!/usr/bin/env bash
# Fuzzes one reader for some minutes, then minimizes what afl-fuzz found into the committed corpus (corpus/TARGET) and
# copies any crash or hang into crashes/TARGET (minimize.sh). Run setup.sh first. Usage: fuzz/run.sh TARGET MINUTES
# Runs at the lowest priority: other work on the machine keeps the CPU.
set -euo pipefail
cd "$(dirname "$0")"
[[ $# -eq 2 ]] || { echo "Usage: $0 TARGET MINUTES (targets: onnx, safetensors, npy, npz, index)" >&2; exit 2; }
target=$1 minutes=$2
driver=("$(command -v dotnet)" .work/bin/Quantization.Fuzz.dll "$target")
[[ -f .work/bin/Quantization.Fuzz.dll ]] || { echo "Run fuzz/setup.sh first." >&2; exit 2; }

# dotnet is not an instrumented binary (the instrumentation is in the assemblies); the runtime starts slowly; a
# reader that allocates past 1 GiB fails with OutOfMemoryException, which the fuzzer sees as a crash; file-based
# targets write each input under TMPDIR, in memory where /dev/shm exists.
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_FORKSRV_INIT_TMOUT=120000 AFL_NO_AFFINITY=1
export DOTNET_GCHeapHardLimit=0x40000000 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
[[ -d /dev/shm ]] && export TMPDIR=/dev/shm

work=.work/$target
rm -rf "$work"
mkdir -p "$work/in"
cp .work/seeds/"$target"/* "$work/in/"
if compgen -G "corpus/$target/*" >/dev/null; then cp corpus/"$target"/* "$work/in/"; fi
if compgen -G "crashes/$target/*" >/dev/null; then cp crashes/"$target"/* "$work/in/"; fi

nice -n 19 afl-fuzz -i "$work/in" -o "$work/out" -x "dictionaries/$target.dict" -t 10000 -m none \
  -V $((minutes * 60)) -- "${driver[@]}" >"$work/afl.log" 2>&1 || { tail -n 30 "$work/afl.log"; exit 1; }

stats=$work/out/default/fuzzer_stats
grep -E '^(execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|run_time)' "$stats" | tee "$work/summary.txt"

exec ./minimize.sh "$target"
