#!/usr/bin/env bash
# Same data, model and seed, four ways: bias balancing (V3), the aux-loss baseline, no balancing, and bias without MTP.
# Writes runs/compare-*/ and prints a Markdown table (final val loss of the main head, val MaxVio, train MaxVio).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS="${STEPS:-400}"
DSS="dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
common=(--config configs/shakespeare-moe.yaml --max-steps "$STEPS" --set eval_steps="$STEPS" --set eval_batches=16 --set save_steps="$STEPS" --set sample_tokens=0 --set logging_steps=20)
run() { local name=$1; shift; rm -rf "runs/compare-$name"; $DSS train "${common[@]}" --output-dir "runs/compare-$name" "$@" > "runs/compare-$name.log" 2>&1; }
mkdir -p runs
run bias --set balancing=bias
run aux-loss --set balancing=aux_loss --set aux_loss_alpha=0.01
run none --set balancing=none
run bias-no-mtp --set balancing=bias --set mtp_depth=0
echo "| run | final val loss (main head, nats/char) | val MaxVio (mean over MoE layers) | train MaxVio, last 100 steps |"
echo "|---|---|---|---|"
for name in bias aux-loss none bias-no-mtp; do
  /usr/bin/python3 - "$name" <<'PY'
import json, sys
name = sys.argv[1]
rows = [json.loads(l) for l in open(f"runs/compare-{name}/metrics.jsonl")]
ev = [r for r in rows if r["kind"] == "eval"][-1]
tr = [r for r in rows if r["kind"] == "train"]
tail = [r["max_vio"] for r in tr if r["step"] > tr[-1]["step"] - 100]
print(f"| {name} | {ev['val_loss']:.4f} | {ev['val_max_vio']:.3f} | {sum(tail)/len(tail):.3f} |")
PY
done
