#!/usr/bin/env bash
# GEMM GFLOP/s of `dss bench gemm` and numpy/OpenBLAS on the same shapes, in one run (for docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
DSS="dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"
SHAPES="${SHAPES:-2048x768x256 2048x256x768 2048x8192x256 2048x1536x512 2048x512x1536 2048x16384x512 1024x1024x1024}"
echo "| shape (m x n x k) | threads | dss GFLOP/s | numpy/OpenBLAS GFLOP/s | ratio |"
echo "|---|---|---|---|---|"
for t in 1 2; do
  for s in $SHAPES; do
    IFS=x read -r m n k <<< "$s"
    ours=$($DSS bench gemm --m "$m" --n "$n" --k "$k" --threads "$t" --iterations 10 --json | sed -E 's/.*"gflops":([0-9.]+).*/\1/')
    peer=$(/usr/bin/python3 tools/bench/gemm_numpy.py --threads "$t" --iterations 10 --shapes "$s" | sed -E 's/.*"gflops": ([0-9.]+).*/\1/')
    printf '| %s | %s | %.1f | %.1f | %.2f |\n' "$s" "$t" "$ours" "$peer" "$(awk -v a="$ours" -v b="$peer" 'BEGIN{print a/b}')"
  done
done
