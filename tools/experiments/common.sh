# Pieces the fine-tuning experiments share (sft_gsm8k.sh, esft.sh). Source it after setting DSS (the command, an
# array), OUT and THREADS.

# pretrain_base STEPS: the general-domain base model, configs/base-small-moe.yaml trained into $OUT/base for STEPS
# steps (a finished one is kept, an interrupted one resumed).
pretrain_base() {
  local steps=$1
  [[ -d "$OUT/base/checkpoint-$steps" ]] && return 0
  echo "$(date -u +%H:%M:%S) pre-training the base model ($steps steps)"
  local resume=(--overwrite); compgen -G "$OUT/base/checkpoint-*" >/dev/null && resume=(--resume "$OUT/base")
  "${DSS[@]}" train --config configs/base-small-moe.yaml --max-steps "$steps" --output-dir "$OUT/base" "${resume[@]}" \
    --set threads="$THREADS" --set save_steps="$steps" > "$OUT/base.log" 2>&1
}

# general_val FILE: the general-domain held-out set: the last 5 % of the Python standard library's files (the tail of
# the pre-training stream is its validation split), in chunks of at most 1,500 characters, as completion examples.
general_val() {
  python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("../shared/data/python-stdlib/stdlib.jsonl")]
held = rows[int(len(rows) * 0.95):]
with open(sys.argv[1], "w") as f:
    for r in held:
        t = r["text"]
        for i in range(0, len(t), 1500):
            if t[i:i + 1500].strip(): f.write(json.dumps({"text": t[i:i + 1500]}) + "\n")
PY
}
