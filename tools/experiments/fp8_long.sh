#!/usr/bin/env bash
# The FP8 training claim over thousands of steps: configs/shakespeare-moe.yaml (tiny-v3 MoE + MTP, byte level,
# same data, seed and batches) trained in fp32 and in fp8 (FP8 GEMMs in every attention/MLP/expert Linear, BF16
# AdamW moments), and PRECISIONS="bf16 fp8" against a BF16 baseline (every Linear on BF16 weights: the baseline
# DeepSeek-V3's report compares FP8 with). The two runs go side by side, one worker thread each, so they take the
# same wall time on a 2-core machine. Prints the final validation losses and their relative difference; the curves go to
# docs/img/fp8-long-*.svg via tools/plots/metrics_svg.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS="${STEPS:-3000}"
SEED="${SEED:-1337}"        # the config's seed; runs of another seed get their own folders
PRECISIONS="${PRECISIONS:-fp32 fp8}"
TAG=""; [ "$SEED" != 1337 ] && TAG="-seed$SEED"
dotnet build src/DeepSeekSharp.Cli -c Release > /dev/null
# A private copy of the build, so that rebuilding while the runs go cannot swap assemblies under them.
rm -rf "runs/.fp8-long-bin$TAG" && mkdir -p runs && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0 "runs/.fp8-long-bin$TAG"
DSS="dotnet runs/.fp8-long-bin$TAG/dss.dll"
common=(--config configs/shakespeare-moe.yaml --max-steps "$STEPS" --set micro_batch_size=8 --set eval_steps=250
        --set eval_batches=32 --set save_steps="$STEPS" --set sample_tokens=0 --set logging_steps=50 --set seed="$SEED")
for p in $PRECISIONS; do
  rm -rf "runs/long-$p$TAG"
  DSS_THREADS=1 $DSS train "${common[@]}" --output-dir "runs/long-$p$TAG" --set precision=$p > "runs/long-$p$TAG.log" 2>&1 &
done
wait
/usr/bin/python3 - "$TAG" $PRECISIONS <<'PY'
import json, sys
tag, precisions = sys.argv[1], sys.argv[2:]
def evals(run):
    return [json.loads(l) for l in open(f"runs/{run}/metrics.jsonl") if '"eval"' in l]
b = evals("long-fp8" + tag)
for base in (p for p in precisions if p != "fp8"):
    a = evals(f"long-{base}" + tag)
    for x, y in zip(a, b):
        print(f"step {x['step']:5d}: {base} {x['val_loss']:.4f}  fp8 {y['val_loss']:.4f}  ({(y['val_loss'] - x['val_loss']) / x['val_loss'] * 100:+.3f}%)")
    print(f"final: {base} {a[-1]['val_loss']:.4f}, fp8 {b[-1]['val_loss']:.4f}, relative difference {(b[-1]['val_loss'] - a[-1]['val_loss']) / a[-1]['val_loss'] * 100:+.3f}%")
PY
