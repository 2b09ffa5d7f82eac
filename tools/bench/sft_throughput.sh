#!/usr/bin/env bash
# Packed SFT vs pre-training tokens/s on the same model (tiny-v3, byte tokenizer), same sequence_len, micro-batch and
# threads, in interleaved rounds so that load on the machine hits both alike. Pre-training reads TinyShakespeare;
# SFT reads GSM8K's training set (chat template, loss on the answers, sample_packing). Prints the median tokens/s of
# steps 6–25 of every run (computed positions, padding included), the ratio per round and the packing efficiency.
#   ROUNDS=3 THREADS=2 tools/bench/sft_throughput.sh
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/../.."
ROUNDS="${ROUNDS:-3}"; THREADS="${THREADS:-2}"; OUT="${OUT:-runs/bench-sft-throughput}"
mkdir -p "$OUT"
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
DSS=(dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll)
common=(--set model_preset=tiny-v3 --set tokenizer=byte --set sequence_len=512 --set micro_batch_size=8 --set max_steps=25
  --set logging_steps=1 --set eval_steps=1000 --set eval_batches=0 --set sample_tokens=0 --set save_steps=1000
  --set threads="$THREADS" --set warmup_steps=5)
cat > "$OUT/pt.yaml" <<YAML
datasets:
  - path: ../shared/data/tinyshakespeare/input.txt
    type: text
val_set_size: 0.01
YAML
cat > "$OUT/sft.yaml" <<YAML
chat_template: deepseek_v3
datasets:
  - path: ../shared/data/gsm8k/train.jsonl
    type: gsm8k
sample_packing: true
val_set_size: 0
YAML
median() { python3 -c 'import json,statistics,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(statistics.median(x["tokens_per_s"] for x in r if x.get("kind")=="train" and x["step"]>5))' "$1"; }
for round in $(seq "$ROUNDS"); do
  for kind in pt sft; do
    "${DSS[@]}" train --config "$OUT/$kind.yaml" "${common[@]}" --output-dir "$OUT/$kind-$round" --overwrite > "$OUT/$kind-$round.log" 2>&1
  done
  pt=$(median "$OUT/pt-$round/metrics.jsonl"); sft=$(median "$OUT/sft-$round/metrics.jsonl")
  python3 -c "import sys; pt,sft=map(float,sys.argv[1:]); print(f'round $round: pre-training {pt:,.0f} tokens/s, packed SFT {sft:,.0f} tokens/s, ratio {sft/pt:.3f}')" "$pt" "$sft"
done
grep -h "packed into" "$OUT/sft-1.log" | sed 's/^\[[^]]*\] //'
