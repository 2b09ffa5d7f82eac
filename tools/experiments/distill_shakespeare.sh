#!/usr/bin/env bash
# Knowledge distillation at small scale (training.md, Knowledge distillation; docs/distillation.md, "The experiment").
# A teacher (the tiny-v3 MoE, 762K active parameters, MTP) trained on TinyShakespeare windows is distilled into two
# students with about an eighth of its active parameters: a dense one (configs/models/kd-student-dense, 107K active)
# and a MoE (configs/models/kd-student-moe, 89K active). For every student and seed, the same steps, data order and
# schedule:
#   ce            cross-entropy on the labels only (the baseline)
#   ce-wall       cross-entropy for STEPS x WALL_RATIO steps: the same wall time as the online run, with WALL_RATIO the
#                 online step / student step ratio measured by tools/bench/distill_step.sh on a quiet machine (unset: the
#                 ratio of the two runs' own elapsed times, which a shared machine distorts)
#   online        the teacher beside the student, its full distribution (kd_alpha, kd_temperature below)
#   top8-renorm   offline, the teacher's top-8 from a dump, tail renormalised away (Axolotl's treatment)
#   top8-bucket   offline, top-8, the left-over mass as one more category (tail-aware)
#   top32-renorm, top32-bucket   the same with k = 32
# Reported: final validation loss (nats/char on held-out windows), its gap to the teacher's, wall time per run; the
# dump's size and throughput. Every run uses THREADS threads and runs alone.
#
#   tools/experiments/distill_shakespeare.sh
#   SEEDS="1 2 3 4 5" STEPS=3000 tools/experiments/distill_shakespeare.sh
#   TEACHER_STEPS=50 STEPS=20 SEEDS=1 OUT=runs/distill-smoke tools/experiments/distill_shakespeare.sh   # a smoke test
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/../.."
OUT="${OUT:-runs/distill-shakespeare}"
SEEDS="${SEEDS:-1 2 3}"
STUDENTS="${STUDENTS:-dense moe}"
TEACHER_STEPS="${TEACHER_STEPS:-2000}"
STEPS="${STEPS:-1500}"
THREADS="${THREADS:-1}"
KD_ALPHA="${KD_ALPHA:-0.9}"
KD_TEMPERATURE="${KD_TEMPERATURE:-1}"
WALL_RATIO="${WALL_RATIO:-}"
VARIANTS="${VARIANTS:-ce online top8-renorm top8-bucket top32-renorm top32-bucket ce-wall}"
mkdir -p "$OUT/configs" "$OUT/data"

# A private copy of the build, so rebuilding the tree while this runs cannot swap assemblies under it.
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
rm -rf "$OUT/bin" && mkdir -p "$OUT/bin" && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0/. "$OUT/bin/"
DSS=(dotnet "$OUT/bin/dss.dll")

# The data: TinyShakespeare cut into 255-character windows (one completion example each, 256 tokens with EOS), the
# first 90 % for training, the last 10 % held out. Windows are documents, so an offline dump can be looked up by them.
python3 - "$OUT/data" <<'PY'
import json, sys
text = open("../shared/data/tinyshakespeare/input.txt").read()
windows = [text[i:i + 255] for i in range(0, len(text) - 255, 255)]
cut = int(len(windows) * 0.9)
for name, part in (("train", windows[:cut]), ("val", windows[cut:])):
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for w in part: f.write(json.dumps({"text": w}) + "\n")
PY

# config NAME MODEL_KEY STEPS SEED MICRO_BATCH [extra YAML lines]: writes $OUT/configs/NAME.yaml
config() {
  local name=$1 model=$2 steps=$3 seed=$4 mb=$5; shift 5
  cat > "$OUT/configs/$name.yaml" <<EOF
$model
tokenizer: byte
datasets:
  - path: $OUT/data/train.jsonl
    type: completion
test_datasets:
  - path: $OUT/data/val.jsonl
    type: completion
sequence_len: 256
micro_batch_size: $mb
max_steps: $steps
learning_rate: 2.0e-3
lr_scheduler: cosine
warmup_steps: 100
min_lr_ratio: 0.1
weight_decay: 0.1
max_grad_norm: 1.0
balancing: bias
eval_steps: $(( steps / 4 > 0 ? steps / 4 : 1 ))
eval_batches: 54
logging_steps: 50
save_steps: $steps
sample_tokens: 0
seed: $seed
threads: $THREADS
EOF
  for line in "$@"; do echo "$line" >> "$OUT/configs/$name.yaml"; done
}

# train NAME: runs $OUT/configs/NAME.yaml into $OUT/NAME (a finished run is kept)
train() {
  local name=$1
  [[ -f "$OUT/$name/done" ]] && return 0
  echo "$(date -u +%H:%M:%S) $name"
  "${DSS[@]}" train --config "$OUT/configs/$name.yaml" --output-dir "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1
  touch "$OUT/$name/done"
}

# The teacher: tiny-v3 (MTP depth 1) with 16 sequences per step.
config teacher "model_preset: tiny-v3" "$TEACHER_STEPS" 1 16 "mtp_lambda: 0.3"
train teacher
teacher="$OUT/teacher/checkpoint-$TEACHER_STEPS"

# The offline dumps: the teacher's top-k over the training windows, timed.
for k in 8 32; do
  if [[ ! -f "$OUT/dump-top$k/kd.json" ]]; then
    config dump-source "model_config: configs/models/kd-student-dense" 1 1 8
    start=$(date +%s.%N)
    "${DSS[@]}" distill dump --teacher "$teacher" --config "$OUT/configs/dump-source.yaml" --top-k "$k" \
      --out "$OUT/dump-top$k" > "$OUT/dump-top$k.log" 2>&1
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)" > "$OUT/dump-top$k.seconds"
  fi
done

for student in $STUDENTS; do
  model="model_config: configs/models/kd-student-$student"
  for seed in $SEEDS; do
    for variant in $VARIANTS; do
      name="$student-$variant-s$seed"
      kd=("distillation:" "  kd_alpha: $KD_ALPHA" "  kd_temperature: $KD_TEMPERATURE")
      steps=$STEPS
      case $variant in
        ce) kd=() ;;
        ce-wall)
          # As many steps as the online run's wall time buys at the ce run's rate (both measured from their logs).
          steps=$(python3 - "$OUT/$student-ce-s$seed/metrics.jsonl" "$OUT/$student-online-s$seed/metrics.jsonl" "$STEPS" "$WALL_RATIO" <<'PY'
import json, sys
def last_elapsed(path):
    return [json.loads(l) for l in open(path) if '"kind":"train"' in l][-1]["elapsed_s"]
ratio = float(sys.argv[4]) if sys.argv[4] else last_elapsed(sys.argv[2]) / last_elapsed(sys.argv[1])
print(int(int(sys.argv[3]) * ratio))
PY
)
          kd=() ;;
        online) kd+=("  teacher: $teacher") ;;
        top*-*) k=${variant#top}; k=${k%%-*}; tail=${variant#*-}
          [[ $tail == renorm ]] && tail=renormalize
          kd+=("  logits: $OUT/dump-top$k" "  kd_tail: $tail") ;;
      esac
      config "$name" "$model" "$steps" "$seed" 8 "${kd[@]}"
      train "$name"
    done
  done
done

# The table: final validation loss per run, mean ± std over seeds, gap to the teacher, wall time.
python3 - "$OUT" "$STUDENTS" "$SEEDS" "$VARIANTS" <<'PY'
import json, os, statistics, sys
out, students, seeds, variants = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
def final(run):
    rows = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    ev = [r for r in rows if r["kind"] == "eval"][-1]
    tr = [r for r in rows if r["kind"] == "train"][-1]
    return ev["val_loss"], tr["elapsed_s"], tr["step"]
t_loss, t_wall, t_steps = final("teacher")
print(f"teacher: val_loss {t_loss:.4f} after {t_steps} steps, {t_wall:.0f} s")
for k in (8, 32):
    d = f"{out}/dump-top{k}"
    if os.path.isdir(d):
        size = sum(os.path.getsize(f"{d}/{f}") for f in os.listdir(d))
        meta = json.load(open(f"{d}/kd.json"))
        secs = float(open(f"{d}.seconds").read())
        print(f"dump top-{k}: {meta['rows']:,} rows, {size / 1e6:.1f} MB, {secs:.1f} s ({meta['rows'] / secs:,.0f} rows/s)")
print()
print("| student | variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | gap to teacher | vs ce (paired) | wall s | steps |")
print("|---|---|" + "---|" * len(seeds) + "---|---|---|---|---|")
for st in students:
    base = {s: final(f"{st}-ce-s{s}")[0] for s in seeds}
    for v in variants:
        runs = [final(f"{st}-{v}-s{s}") for s in seeds]
        losses = [r[0] for r in runs]
        diffs = [l - base[s] for l, s in zip(losses, seeds)]
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        dsd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        mean = statistics.mean(losses)
        print(f"| {st} | {v} | " + " | ".join(f"{l:.4f}" for l in losses)
              + f" | {mean:.4f} ± {sd:.4f} | {mean - t_loss:+.4f} | {statistics.mean(diffs):+.4f} ± {dsd:.4f} | "
              + f"{statistics.mean(r[1] for r in runs):.0f} | {runs[0][2]} |")
PY
