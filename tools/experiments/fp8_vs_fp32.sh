#!/usr/bin/env bash
# The FP8 training claim at small scale: the same model, data and seed as runs/compare-bias (fp32), trained with
# precision: fp8. Prints the final validation losses and their relative difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS="${STEPS:-400}"
DSS="dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"
common=(--config configs/shakespeare-moe.yaml --max-steps "$STEPS" --set eval_steps=100 --set eval_batches=16 --set save_steps="$STEPS" --set sample_tokens=0 --set logging_steps=20)
[ -f runs/compare-bias/metrics.jsonl ] || { rm -rf runs/compare-bias; $DSS train "${common[@]}" --output-dir runs/compare-bias --set balancing=bias > runs/compare-bias.log 2>&1; }
rm -rf runs/compare-fp8
$DSS train "${common[@]}" --output-dir runs/compare-fp8 --set balancing=bias --set precision=fp8 > runs/compare-fp8.log 2>&1
/usr/bin/python3 - <<'PY'
import json
def last(run):
    ev = [json.loads(l) for l in open(f"runs/{run}/metrics.jsonl") if '"eval"' in l]
    return ev[-1]["val_loss"]
a, b = last("compare-bias"), last("compare-fp8")
print(f"fp32 val loss {a:.4f}, fp8 val loss {b:.4f}, relative difference {(b - a) / a * 100:+.3f}%")
PY
