#!/usr/bin/env bash
# Builds the self-contained linux-x64 dss that the GPU machine runs (it has no .NET SDK) into .device/dss.tar.xz,
# a folder git ignores, so that it can travel beside the working tree. Run from anywhere; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
out=$(mktemp -d)
dotnet publish src/DeepSeekSharp.Cli -c Release -r linux-x64 --self-contained -o "$out" >/dev/null
mkdir -p .device/bench-medium
cp ../shared/bench/bench-medium/config.json .device/bench-medium/
tar -C "$out" -cf - . | xz -T2 -2 > .device/dss.tar.xz
rm -rf "$out"
ls -l .device/dss.tar.xz
