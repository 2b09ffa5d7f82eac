#!/usr/bin/env bash
# Step time of knowledge distillation against its parts (docs/distillation.md, "Step time"): the plain student step
# (cross-entropy), the online KD step (teacher beside the student), the offline KD step (top-k from a dump), and the
# teacher's forward alone (`dss bench train --mode fwd`). Targets: online ≤ student step + teacher forward + 10 %,
# offline ≤ 1.10 × the student step. Interleaved round by round so that the machine's drift hits every variant alike.
# Reads the teacher, data and dump that tools/experiments/distill_shakespeare.sh leaves in EXP (run that first).
# Usage: ROUNDS=3 THREADS=1 STUDENT=dense tools/bench/distill_step.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/bench/private_build.sh && private_build distill
EXP="${EXP:-runs/distill-shakespeare}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-1}"
STEPS="${STEPS:-200}"
STUDENT="${STUDENT:-dense}"
K="${K:-32}"
teacher=$(ls -d "$EXP"/teacher/checkpoint-* | sort -t- -k2 -n | tail -1)
[[ -f "$EXP/dump-top$K/kd.json" ]] || { echo "$EXP/dump-top$K: no dump; run tools/experiments/distill_shakespeare.sh first" >&2; exit 1; }
work=$(mktemp -d)
# The experiment's seed-1 configs, shortened to STEPS steps with a log line every 20 steps and no evaluation.
for v in ce online "top$K-bucket"; do
  src="$EXP/configs/$STUDENT-$v-s1.yaml"
  [[ -f "$src" ]] || { echo "$src: missing; run tools/experiments/distill_shakespeare.sh first" >&2; exit 1; }
  sed -e "s/^max_steps: .*/max_steps: $STEPS/" -e "s/^eval_steps: .*/eval_steps: 100000/" -e "s/^logging_steps: .*/logging_steps: 20/" \
      -e "s/^save_steps: .*/save_steps: 100000/" -e "s/^threads: .*/threads: $THREADS/" "$src" > "$work/$v.yaml"
done
out="$work/results"
for r in $(seq "$ROUNDS"); do
  for v in ce online "top$K-bucket"; do
    $DSS train --config "$work/$v.yaml" --output-dir "$work/run-$v" --overwrite > /dev/null 2>&1
    # Seconds per step over the logged intervals after the first (the first fills the storage pool).
    /usr/bin/python3 - "$work/run-$v/metrics.jsonl" "$v" >> "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"train"' in l]
per_step = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(rows[1:], rows[2:])]
print(sys.argv[2], statistics.median(per_step))
PY
  done
  t=$($DSS bench train --model "$teacher" --mode fwd --batch 8 --seq 256 --steps 10 --warmup 3 --threads "$THREADS" --json | tail -1)
  echo "teacher-forward $(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['step_s_median'])" "$t")" >> "$out"
done
/usr/bin/python3 - "$out" "$STUDENT" "$THREADS" "$K" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    v, s = line.split()
    runs.setdefault(v, []).append(float(s))
med = {v: statistics.median(s) for v, s in runs.items()}
k = sys.argv[4]
print(f"student {sys.argv[2]}, 8 x 256 tokens per step, {sys.argv[3]} thread(s); medians over {len(runs['ce'])} rounds")
print("| step | ms (median) | rounds (ms) | against its target |")
print("|---|---|---|---|")
budget = med["ce"] + med["teacher-forward"]
notes = {"ce": "", "teacher-forward": "",
         "online": f"{med['online'] / budget:.2f} x (student step + teacher forward); target <= 1.10",
         f"top{k}-bucket": f"{med[f'top{k}-bucket'] / med['ce']:.2f} x student step; target <= 1.10"}
for v in ("ce", "teacher-forward", "online", f"top{k}-bucket"):
    print(f"| {v} | {med[v] * 1e3:.1f} | {', '.join(f'{s * 1e3:.1f}' for s in runs[v])} | {notes[v]} |")
PY
rm -rf "$work"
