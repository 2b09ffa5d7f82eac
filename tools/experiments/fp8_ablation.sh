#!/usr/bin/env bash
# Which part of the FP8 recipe costs loss: the first STOP steps of the fp8_long.sh schedule (same config, seed and
# 3,000-step learning-rate schedule) with one ingredient switched back to high precision at a time, two runs side by
# side with one worker thread each. Compare with runs/long-fp32 and runs/long-fp8 at the same step.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS="${STEPS:-3000}"
STOP="${STOP:-1000}"
dotnet build src/DeepSeekSharp.Cli -c Release > /dev/null
rm -rf runs/.fp8-ablation-bin && mkdir -p runs && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0 runs/.fp8-ablation-bin
DSS="dotnet runs/.fp8-ablation-bin/dss.dll"
common=(--config configs/shakespeare-moe.yaml --max-steps "$STEPS" --stop-at-step "$STOP" --set micro_batch_size=8
        --set eval_steps=250 --set eval_batches=32 --set save_steps="$STEPS" --set sample_tokens=0 --set logging_steps=50
        --set precision=fp8)
run() { local name=$1; shift; rm -rf "runs/ablate-$name"; DSS_THREADS=1 $DSS train "${common[@]}" --output-dir "runs/ablate-$name" "$@" > "runs/ablate-$name.log" 2>&1; }
run fp32-moments --set adam_moments=fp32 &
run fp32-swiglu --set fp8_swiglu_cache=false &
wait
/usr/bin/python3 - "$STOP" <<'PY'
import json, sys
stop = int(sys.argv[1])
def at(run):
    for l in open(f"runs/{run}/metrics.jsonl"):
        j = json.loads(l)
        if j.get("kind") == "eval" and j["step"] == stop: return j["val_loss"]
base = at("long-fp32")
for run in ["long-fp8", "ablate-fp32-moments", "ablate-fp32-swiglu"]:
    v = at(run)
    print(f"{run:24s} val loss at step {stop}: {v:.4f} ({(v - base) / base * 100:+.3f}% vs fp32 {base:.4f})")
PY
