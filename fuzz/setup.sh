#!/usr/bin/env bash
# Prepares fuzzing the file readers (see README.md): installs AFL++ from Debian's packages and the pinned SharpFuzz
# instrumenter (dotnet-tools.json), builds the driver, instruments the library assemblies in a copy of its output
# (.work/bin) and writes the seed corpora with the library's own writers (.work/seeds).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v afl-fuzz >/dev/null; then
  sudo_=$([[ $(id -u) -eq 0 ]] && echo "" || echo sudo)
  $sudo_ apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y afl++
fi

dotnet tool restore
dotnet build Quantization.Fuzz/Quantization.Fuzz.csproj -c Release
build=Quantization.Fuzz/bin/Release/net10.0/linux-x64

rm -rf .work/bin .work/seeds
mkdir -p .work
cp -r "$build" .work/bin
# The readers and what they parse with (protobuf for ONNX); System.Text.Json and System.IO.Compression are framework
# assemblies and stay uninstrumented.
for assembly in Quantization.dll Quantization.Onnx.dll Google.Protobuf.dll; do
  dotnet tool run sharpfuzz ".work/bin/$assembly"
done

dotnet "$build/Quantization.Fuzz.dll" seeds .work/seeds
# Archives written by numpy itself.
cp ../tests/Quantization.Tests/Calibration/Data/*.npz .work/seeds/npz/
echo "Ready: fuzz/run.sh TARGET MINUTES (targets: onnx, safetensors, npy, npz, index)"
