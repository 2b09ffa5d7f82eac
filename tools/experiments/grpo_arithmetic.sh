#!/usr/bin/env bash
# GRPO after SFT on the synthetic arithmetic task (docs/results.md, "RL: GRPO on arithmetic"), per seed:
#  1. the task (dss rl task), 2. a short SFT of a tiny MoE from scratch (configs/sft-arithmetic.yaml),
#  3. GRPO from that checkpoint (configs/grpo-arithmetic.yaml) and, for the same wall time, more SFT from the same
#     checkpoint (the control), 4. greedy test accuracy of all three (dss eval --metric gsm8k).
#   SEEDS="1 2 3" tools/experiments/grpo_arithmetic.sh
#   SFT_STEPS=60 RL_STEPS=3 SEEDS=1 OUT=runs/grpo-smoke tools/experiments/grpo_arithmetic.sh     # a smoke test
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/../.."
SEEDS="${SEEDS:-1 2 3}"
OUT="${OUT:-runs/grpo-arith}"
SFT_STEPS="${SFT_STEPS:-400}"
RL_STEPS="${RL_STEPS:-100}"
TEST="${TEST:-200}"
mkdir -p "$OUT"
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
# A private copy of the build: the runs take a while, and a rebuild of the tree meanwhile must not change them.
rm -rf "$OUT/bin" && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0 "$OUT/bin"
DSS=(dotnet "$OUT/bin/dss.dll")
[[ -f "$OUT/arith/train.jsonl" ]] || "${DSS[@]}" rl task --out "$OUT/arith" --train 3000 --test "$TEST" --max-operand 99 --operators +
# The SFT config with this experiment's task files.
sed "s#runs/arith/#$OUT/arith/#" configs/sft-arithmetic.yaml > "$OUT/sft.yaml"
accuracy() { "${DSS[@]}" eval --model "$1" ${2:+--adapter "$2"} --data "$OUT/arith/test.jsonl" --type gsm8k --metric gsm8k --max-new-tokens 24 --json 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])'; }
echo "seed,sft_accuracy,grpo_accuracy,grpo_seconds,more_sft_accuracy,more_sft_steps" > "$OUT/summary.csv"
for seed in $SEEDS; do
  s="$OUT/seed$seed"
  "${DSS[@]}" train --config "$OUT/sft.yaml" --overwrite --set seed="$seed" --set max_steps="$SFT_STEPS" --set save_steps="$SFT_STEPS" \
    --set output_dir="$s/sft" > "$s.sft.log" 2>&1 || { echo "SFT failed: $s.sft.log"; exit 1; }
  sft="$s/sft/checkpoint-$SFT_STEPS"
  start=$(date +%s)
  "${DSS[@]}" rl --config configs/grpo-arithmetic.yaml --set base_model="$sft" --set "dataset=$OUT/arith/train.jsonl" --set "test_dataset=$OUT/arith/test.jsonl" \
    --set max_steps="$RL_STEPS" --set save_steps="$RL_STEPS" --set seed="$seed" --set output_dir="$s/grpo" > "$s.grpo.log" 2>&1 || { echo "GRPO failed: $s.grpo.log"; exit 1; }
  rl_seconds=$(( $(date +%s) - start ))
  # The control: SFT continued from the same checkpoint for the same wall time (steps measured from the SFT run's rate).
  sft_rate=$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if "\"train\"" in l]; print(r[-1]["step"]/max(1e-9,r[-1]["elapsed_s"]))' "$s/sft/metrics.jsonl")
  more=$(python3 -c "print(max(1, round($sft_rate * $rl_seconds)))")
  "${DSS[@]}" train --config "$OUT/sft.yaml" --overwrite --set base_model="$sft" --set model_preset=null --set seed="$seed" \
    --set max_steps="$more" --set save_steps="$more" --set warmup_steps=0 --set output_dir="$s/more-sft" > "$s.more.log" 2>&1
  echo "$seed,$(accuracy "$sft"),$(accuracy "$s/grpo/checkpoint-$RL_STEPS"),$rl_seconds,$(accuracy "$s/more-sft/checkpoint-$more"),$more" | tee -a "$OUT/summary.csv"
done
