#!/usr/bin/env bash
# The ESFT comparison at small scale (training.md, ESFT; docs/fine-tuning.md, "ESFT"): on GSM8K, from the same
# general-domain base, five models measured the same way:
#   vanilla      the base itself
#   full         full fine-tuning (configs/sft-gsm8k-small.yaml)
#   lora         LoRA rank 8 on every Linear (adapter: lora)
#   esft-token   ESFT, token scores, p = 0.2 (esft_method: token; adapter: esft)
#   esft-gate    ESFT, gate scores, p = 0.1 (esft_method: gate; adapter: esft)
# Each: GSM8K test masked loss and exact-match accuracy (task), general-domain held-out loss (forgetting), and the
# trainable parameters (from the run's log). The claim to test: ESFT comes close to full fine-tuning on the task,
# forgets less of the general domain, beats LoRA, and trains a small fraction of the parameters. The paper's learning
# rates were 3e-5 (full), 1e-4 (LoRA) and 1e-5 (ESFT) for a 16B model; at this scale they are set by FULL_LR, LORA_LR
# and ESFT_LR (defaults: the SFT config's 1e-3 for full and ESFT, 3e-3 for LoRA).
#
#   tools/experiments/esft.sh                                   # base from configs/base-small-moe.yaml (shared with sft_gsm8k.sh)
#   BASE=runs/sft-gsm8k/base/checkpoint-1500 tools/experiments/esft.sh
#   BASE=runs/quickstart/checkpoint-150 STEPS=2 GSM8K_LIMIT=2 EVAL_LIMIT=8 MAX_NEW=8 OUT=runs/esft-smoke tools/experiments/esft.sh   # a smoke test
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/../.."
OUT="${OUT:-runs/esft-gsm8k}"
BASE_STEPS="${BASE_STEPS:-1500}"
STEPS="${STEPS:-400}"
THREADS="${THREADS:-2}"
GSM8K_LIMIT="${GSM8K_LIMIT:-0}"          # 0 = the whole test set (1,319 problems)
EVAL_LIMIT="${EVAL_LIMIT:-0}"            # 0 = every example of the loss evaluations
MAX_NEW="${MAX_NEW:-256}"
FULL_LR="${FULL_LR:-1e-3}"
LORA_LR="${LORA_LR:-3e-3}"
ESFT_LR="${ESFT_LR:-1e-3}"
mkdir -p "$OUT"
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
DSS=(dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll)
limit=(); [[ "$GSM8K_LIMIT" != 0 ]] && limit=(--limit "$GSM8K_LIMIT")
loss_limit=(); [[ "$EVAL_LIMIT" != 0 ]] && loss_limit=(--limit "$EVAL_LIMIT")

# The base model: $BASE, or configs/base-small-moe.yaml trained here (a finished one is kept); the general-domain
# held-out set, as tools/experiments/sft_gsm8k.sh builds it.
source tools/experiments/common.sh
base="${BASE:-$OUT/base/checkpoint-$BASE_STEPS}"
if [[ ! -d "$base" ]]; then
  [[ -n "${BASE:-}" ]] && { echo "BASE=$BASE does not exist" >&2; exit 1; }
  pretrain_base "$BASE_STEPS"
fi
general_val "$OUT/general-val.jsonl"

# Measurements of the base, with an adapter folder when given, into $dir/eval-*.json.
measure() {
  local dir=$1; shift
  local adapter=("$@")
  "${DSS[@]}" eval --model "${model:-$base}" "${adapter[@]}" --data ../shared/data/gsm8k/test.jsonl --type gsm8k --metric loss \
    --chat-template deepseek_v3 --sequence-len 512 --threads "$THREADS" "${loss_limit[@]}" --json > "$dir/eval-gsm8k-loss.json" 2>> "$dir/eval.log"
  "${DSS[@]}" eval --model "${model:-$base}" "${adapter[@]}" --data "$OUT/general-val.jsonl" --type completion --metric loss \
    --sequence-len 512 --threads "$THREADS" "${loss_limit[@]}" --json > "$dir/eval-general-loss.json" 2>> "$dir/eval.log"
  "${DSS[@]}" eval --model "${model:-$base}" "${adapter[@]}" --data ../shared/data/gsm8k/test.jsonl --metric gsm8k \
    --chat-template deepseek_v3 --max-new-tokens "$MAX_NEW" --threads "$THREADS" "${limit[@]}" --json > "$dir/eval-gsm8k-accuracy.json" 2>> "$dir/eval.log"
}

mkdir -p "$OUT/vanilla"
if [[ ! -s "$OUT/vanilla/eval-gsm8k-accuracy.json" ]]; then
  echo "$(date -u +%H:%M:%S) measuring the base model"
  model="$base" measure "$OUT/vanilla"
fi

# name, then the --set overrides of configs/sft-gsm8k-small.yaml
run() {
  local name=$1; shift
  local dir="$OUT/$name"
  [[ -s "$dir/eval-gsm8k-accuracy.json" ]] && return
  echo "$(date -u +%H:%M:%S) $name"
  local sets=(); for s in "$@"; do sets+=(--set "$s"); done
  "${DSS[@]}" train --config configs/sft-gsm8k-small.yaml --max-steps "$STEPS" --output-dir "$dir" --overwrite \
    --set base_model="$base" --set threads="$THREADS" --set save_steps="$STEPS" "${sets[@]}" > "$OUT/$name.log" 2>&1
  if grep -q "^adapter=" <(printf '%s\n' "$@"); then model="$base" measure "$dir" --adapter "$dir/checkpoint-$STEPS"
  else model="$dir/checkpoint-$STEPS" measure "$dir"; fi
}
run full "learning_rate=$FULL_LR"
run lora "learning_rate=$LORA_LR" adapter=lora lora_r=8 lora_alpha=16 lora_target_linear=true
run esft-token "learning_rate=$ESFT_LR" adapter=esft esft_method=token esft_p=0.2
run esft-gate "learning_rate=$ESFT_LR" adapter=esft esft_method=gate esft_p=0.1
echo "$(date -u +%H:%M:%S) done"

# One table: task (GSM8K loss, accuracy), general-domain loss, trainable parameters.
python3 - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def value(path, *keys):
    try:
        d = json.load(open(path))
        for k in keys:
            if k in d: return d[k]
    except (OSError, ValueError):
        pass
    return None
def trainable(name):
    try:
        for line in open(os.path.join(out, name + ".log")):
            m = re.search(r"([\d,]+) trainable parameters", line)
            if m: return m.group(1)
    except OSError:
        pass
    return "all" if name in ("full", "vanilla") else "?"
print(f"{'method':<12} {'trainable':>12} {'gsm8k loss':>11} {'gsm8k acc':>10} {'general loss':>13}")
for name in ("vanilla", "full", "lora", "esft-token", "esft-gate"):
    d = os.path.join(out, name)
    gl = value(os.path.join(d, "eval-gsm8k-loss.json"), "loss")
    acc = value(os.path.join(d, "eval-gsm8k-accuracy.json"), "accuracy")
    gen = value(os.path.join(d, "eval-general-loss.json"), "loss")
    f = lambda v, p: "—" if v is None else f"{v:.{p}f}"
    print(f"{name:<12} {('—' if name == 'vanilla' else trainable(name)):>12} {f(gl, 4):>11} {f(acc, 4):>10} {f(gen, 4):>13}")
PY
