#!/usr/bin/env bash
# Minimizes the queue of the last run.sh of a target (afl-cmin) into the committed corpus (corpus/TARGET) and copies
# any crash or hang it saved into crashes/TARGET. Usage: fuzz/minimize.sh TARGET
set -euo pipefail
cd "$(dirname "$0")"
[[ $# -eq 1 ]] || { echo "Usage: $0 TARGET" >&2; exit 2; }
target=$1
work=.work/$target
driver=("$(command -v dotnet)" .work/bin/Quantization.Fuzz.dll "$target")
export AFL_SKIP_BIN_CHECK=1 AFL_FORKSRV_INIT_TMOUT=120000 DOTNET_GCHeapHardLimit=0x40000000 DOTNET_CLI_TELEMETRY_OPTOUT=1
[[ -d /dev/shm ]] && export TMPDIR=/dev/shm

# Minimize the queue into the committed corpus; files over 10 KB are left out (the corpus stays small to commit and replay).
rm -rf "$work/min"
nice -n 19 afl-cmin -i "$work/out/default/queue" -o "$work/min" -t 10000 -m none -- "${driver[@]}"
rm -rf "corpus/$target"
mkdir -p "corpus/$target"
i=0
for file in "$work"/min/*; do
  [[ $(stat -c %s "$file") -le 10240 ]] || continue
  cp "$file" "$(printf 'corpus/%s/%04d' "$target" "$i")"
  i=$((i + 1))
done

for kind in crashes hangs; do
  if compgen -G "$work/out/default/$kind/id:*" >/dev/null; then
    mkdir -p "crashes/$target"
    for file in "$work/out/default/$kind"/id:*; do
      cp "$file" "crashes/$target/$kind-$(sha1sum "$file" | cut -c1-12)"
    done
  fi
done
echo "corpus/$target: $(ls "corpus/$target" | wc -l) files, $(du -cb corpus/"$target"/* | tail -1 | cut -f1) bytes"
