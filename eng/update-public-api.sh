#!/usr/bin/env bash
# Rewrites each package's PublicAPI.Unshipped.txt to the public API its code declares now, from the public API
# analyzer's own diagnostics: RS0016 names every untracked symbol exactly as the file must list it. Unlike the code fix
# (`dotnet format analyzers --diagnostics RS0016`), which only adds lines, it also drops the lines of removed symbols
# (RS0017). Run it after changing public API, review `git diff src/*/PublicAPI.Unshipped.txt`, and commit the files.
# PublicAPI.Shipped.txt is left alone: it changes only at a release (see CONTRIBUTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."

for file in src/*/PublicAPI.Unshipped.txt; do printf '#nullable enable\n' >"$file"; done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# RS0016 as a warning so that every project compiles and reports; a rebuild so that none is skipped as up to date.
dotnet build src/Quantization.Cli/Quantization.Cli.csproj -c Release --no-incremental -p:WarningsNotAsErrors=RS0016 >"$log" 2>&1 || {
  grep -E ': error ' "$log" | sort -u | head -n 40 >&2
  exit 1
}
sed -n "s/.*: warning RS0016: Symbol '\(.*\)' is not part of the declared public API.*\[\([^][]*\)\]\$/\2	\1/p" "$log" | sort -u |
  while IFS=$'\t' read -r project symbol; do
    printf '%s\n' "$symbol" >>"$(dirname "$project")/PublicAPI.Unshipped.txt"
  done
for file in src/*/PublicAPI.Unshipped.txt; do
  { head -n 1 "$file"; tail -n +2 "$file" | LC_ALL=C sort -u; } >"$file.tmp" && mv "$file.tmp" "$file"
  echo "$file: $(($(wc -l <"$file") - 1)) symbols"
done
