#!/usr/bin/env bash
# Step time and peak RSS of LoRA against full fine-tuning with `dss bench train`, interleaved round by round so that
# the machine's drift hits every variant alike. Variants: full training (every weight, AdamW on all), LoRA r 16 on
# attention and every routed expert over an fp32 base and over an FP8 base (base_model_precision: fp8), each with the
# routed experts as grouped GEMMs (adapters inside the grouped op) and as one module per expert (the path adapted
# experts took before). Prints one markdown row per variant: median step seconds, the fraction of the full step, and
# the median peak RSS and its fraction. Each run times STEPS steps after WARMUP warm-up steps.
# Usage: ROUNDS=2 MODEL=bench-medium THREADS=2 tools/bench/lora_compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/bench/private_build.sh && private_build lora
ROUNDS="${ROUNDS:-2}"
MODEL="${MODEL:-bench-medium}"
THREADS="${THREADS:-2}"
STEPS="${STEPS:-3}"
WARMUP="${WARMUP:-2}"
RANK="${RANK:-16}"
dir="../shared/bench/$MODEL"
read -r b t < <(/usr/bin/python3 -c "import json;c=json.load(open('$dir/workload.json'));print(c['micro_batch_size'],c['sequence_len'])")
declare -A ARGS=(
  [full]=""
  [lora-fp32-grouped]="--lora-r $RANK"
  [lora-fp32-per-expert]="--lora-r $RANK --per-expert-modules"
  [lora-fp8-grouped]="--lora-r $RANK --base-precision fp8"
  [lora-fp8-per-expert]="--lora-r $RANK --base-precision fp8 --per-expert-modules"
)
VARIANTS="${VARIANTS:-full lora-fp32-grouped lora-fp32-per-expert lora-fp8-grouped lora-fp8-per-expert}"
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    line=$($DSS bench train --model "$dir" --batch "$b" --seq "$t" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" ${ARGS[$v]} --json | tail -1)
    echo "$v $load $line" >> "$out"
  done
done
/usr/bin/python3 - "$out" "$MODEL" "$b" "$t" "$THREADS" <<'PY'
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    variant, load, js = line.split(" ", 2)
    rows.setdefault(variant, []).append((float(load), json.loads(js)))
full = rows.get("full")
base_s = statistics.median(r["step_s_median"] for _, r in full) if full else None
base_rss = statistics.median(r["peak_rss_mb"] for _, r in full) if full else None
print(f"{sys.argv[2]}, batch {sys.argv[3]} x {sys.argv[4]} tokens, {sys.argv[5]} threads")
print("| variant | step s (median) | runs | x full step | peak RSS MB | x full RSS | 1-min load at start |")
print("|---|---|---|---|---|---|---|")
for variant, rs in rows.items():
    s = statistics.median(r["step_s_median"] for _, r in rs)
    rss = statistics.median(r["peak_rss_mb"] for _, r in rs)
    runs = ", ".join(format(r["step_s_median"], ".2f") for _, r in rs)
    loads = ", ".join(format(l, ".1f") for l, _ in rs)
    fs = f"{s / base_s:.2f}" if base_s else ""
    fr = f"{rss / base_rss:.2f}" if base_rss else ""
    print(f"| {variant} | {s:.2f} | {runs} | {fs} | {rss:,.0f} | {fr} | {loads} |")
PY
