#!/usr/bin/env bash
# Full SFT of a small general-domain MoE on GSM8K (docs/results.md, "Supervised fine-tuning on GSM8K").
#  1. The base model: configs/base-small-moe.yaml (TinyShakespeare + the Python standard library, a BPE tokenizer
#     trained on that mix, a V2-Lite-shaped MoE scaled down); kept in $OUT/base and reused (also by the LoRA, ESFT,
#     distillation and RL experiments: BASE=$OUT/base/checkpoint-<steps>).
#  2. The base measured: GSM8K test masked loss and exact-match accuracy (greedy), general-domain held-out loss.
#  3. configs/sft-gsm8k-small.yaml once per seed (the seed sets the data order), each measured the same way.
#  4. tools/experiments/summarize_sft.py: per-seed values, mean ± sd, the forgetting, curves.
#
#   SEEDS="1 2 3" tools/experiments/sft_gsm8k.sh
#   BASE_STEPS=20 SFT_STEPS=10 GSM8K_LIMIT=16 SEEDS="1" OUT=runs/sft-smoke tools/experiments/sft_gsm8k.sh   # a smoke test
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/../.."
SEEDS="${SEEDS:-1 2 3}"
OUT="${OUT:-runs/sft-gsm8k}"
BASE_STEPS="${BASE_STEPS:-1500}"
SFT_STEPS="${SFT_STEPS:-400}"
THREADS="${THREADS:-2}"
GSM8K_LIMIT="${GSM8K_LIMIT:-0}"          # 0 = the whole test set (1,319 problems)
MAX_NEW="${MAX_NEW:-256}"
mkdir -p "$OUT"
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
DSS=(dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll)
limit=(); [[ "$GSM8K_LIMIT" != 0 ]] && limit=(--limit "$GSM8K_LIMIT")

# 1. Base model (a finished one is kept), and the general-domain held-out set.
source tools/experiments/common.sh
base="$OUT/base/checkpoint-$BASE_STEPS"
pretrain_base "$BASE_STEPS"
general_val "$OUT/general-val.jsonl"

# 2–3. Measurements of one model into $dir/eval-*.json.
measure() {
  local model=$1 dir=$2
  "${DSS[@]}" eval --model "$model" --data ../shared/data/gsm8k/test.jsonl --type gsm8k --metric loss --chat-template deepseek_v3 \
    --sequence-len 512 --threads "$THREADS" --json > "$dir/eval-gsm8k-loss.json"
  "${DSS[@]}" eval --model "$model" --data "$OUT/general-val.jsonl" --type completion --metric loss --sequence-len 1024 \
    --threads "$THREADS" --json > "$dir/eval-general-loss.json"
  "${DSS[@]}" eval --model "$model" --data ../shared/data/gsm8k/test.jsonl --metric gsm8k --chat-template deepseek_v3 \
    --max-new-tokens "$MAX_NEW" --threads "$THREADS" "${limit[@]}" --json > "$dir/eval-gsm8k-accuracy.json"
}
if [[ ! -s "$OUT/base/eval-gsm8k-accuracy.json" ]]; then
  echo "$(date -u +%H:%M:%S) measuring the base model"
  measure "$base" "$OUT/base"
fi
for seed in $SEEDS; do
  dir="$OUT/sft-seed-$seed"
  if [[ ! -s "$dir/eval-gsm8k-accuracy.json" ]]; then
    echo "$(date -u +%H:%M:%S) fine-tuning, seed $seed"
    "${DSS[@]}" train --config configs/sft-gsm8k-small.yaml --max-steps "$SFT_STEPS" --output-dir "$dir" --overwrite \
      --set base_model="$base" --set seed="$seed" --set threads="$THREADS" --set save_steps="$SFT_STEPS" > "$OUT/sft-seed-$seed.log" 2>&1
    measure "$dir/checkpoint-$SFT_STEPS" "$dir"
  fi
done
echo "$(date -u +%H:%M:%S) done"
python3 tools/experiments/summarize_sft.py --root "$OUT" --seeds $SEEDS
