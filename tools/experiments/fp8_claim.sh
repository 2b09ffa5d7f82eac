#!/usr/bin/env bash
# The FP8 claim with statistics (docs/fp8.md): configs/shakespeare-moe.yaml trained STEPS steps for every seed of SEEDS
# in each VARIANT, PARALLEL runs side by side with one worker thread each (longest first). The variant bf16-nudged is
# bf16 started from weights one ulp away (init_ulp_nudge=1): its distance from bf16 is the noise floor, what two runs
# that differ only by rounding already disagree by. Prints per-seed final validation losses, each variant's paired
# relative difference from bf16 with mean and 95 % confidence interval, and writes the curves to docs/img/fp8-claim.svg.
# Usage: SEEDS="1 2 3 4 5" STEPS=1500 tools/experiments/fp8_claim.sh   (SUMMARY_ONLY=1 re-prints from runs/; finished
# runs are kept, so a second call with more seeds or variants only runs what is missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS="${SEEDS:-1 2 3 4 5}"
STEPS="${STEPS:-1500}"
PARALLEL="${PARALLEL:-2}"
VARIANTS="${VARIANTS:-fp8 fp8-fp32-moments bf16 bf16-nudged}"
OUT="runs/fp8-claim"
args_of() {
  case $1 in
    fp32) echo "--set precision=fp32" ;;
    bf16) echo "--set precision=bf16" ;;
    bf16-nudged) echo "--set precision=bf16 --set init_ulp_nudge=1" ;;
    bf16-bf16-moments) echo "--set precision=bf16 --set adam_moments=bf16" ;;
    fp8) echo "--set precision=fp8" ;;
    fp8-fp32-moments) echo "--set precision=fp8 --set adam_moments=fp32" ;;
    fp8-e4m3-o-proj) echo "--set precision=fp8 --set fp8_e5m6_o_proj=false" ;;
    fp8-fp32-swiglu) echo "--set precision=fp8 --set fp8_swiglu_cache=false" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}
if [ -z "${SUMMARY_ONLY:-}" ]; then
  if [ -z "${REUSE_BUILD:-}" ] || [ ! -f "$OUT/.bin/dss.dll" ]; then # REUSE_BUILD=1: add runs made by the same build
    dotnet build src/DeepSeekSharp.Cli -c Release > /dev/null
    # A private copy of the build, so that rebuilding while the runs go cannot swap assemblies under them.
    rm -rf "$OUT/.bin" && mkdir -p "$OUT" && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0 "$OUT/.bin"
  fi
  jobs="$OUT/.jobs"; : > "$jobs"
  for s in $SEEDS; do for v in $VARIANTS; do # seed by seed: a run cut short still has complete pairs
    [ -f "$OUT/$v-seed$s/metrics.jsonl" ] && grep -q "\"step\":$STEPS," "$OUT/$v-seed$s/metrics.jsonl" && continue # done before
    echo "$v $s" >> "$jobs"
  done; done
  run_one() {
    local v=$1 s=$2 dir="$OUT/$1-seed$2"
    rm -rf "$dir"
    # shellcheck disable=SC2046
    DSS_THREADS=1 dotnet "$OUT/.bin/dss.dll" train --config configs/shakespeare-moe.yaml --max-steps "$STEPS" \
      --set micro_batch_size=8 --set eval_steps=250 --set eval_batches=32 --set save_steps="$STEPS" --set sample_tokens=0 \
      --set logging_steps=50 --set seed="$s" $(args_of "$v") --output-dir "$dir" > "$dir.log" 2>&1
    echo "done: $v seed $s ($(tail -1 "$dir.log" | cut -c1-100))"
  }
  export -f run_one args_of; export OUT STEPS
  xargs -P "$PARALLEL" -L 1 bash -c 'run_one "$0" "$1"' < "$jobs"
fi
/usr/bin/python3 - "$OUT" "$STEPS" "$SEEDS" "$VARIANTS" <<'PY'
import json, os, statistics, sys
sys.path.insert(0, "tools/experiments"); sys.path.insert(0, "tools/plots")
from summarize_balancing import mean_ci   # mean and 95 % t-interval, shared with the balancing study
from svg_chart import line_chart
out, steps, seeds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
def evals(v, s):
    path = f"{out}/{v}-seed{s}/metrics.jsonl"
    if not os.path.exists(path): return []
    return [r for r in map(json.loads, open(path)) if r.get("kind") == "eval"]
final = {}
for v in variants:
    for s in seeds:
        e = evals(v, s)
        if e and e[-1]["step"] == steps: final[(v, s)] = e[-1]["val_loss"]
print(f"Final validation loss (nats/char) after {steps} steps, per seed:\n")
print("| seed | " + " | ".join(variants) + " |")
print("|---|" + "---|" * len(variants))
for s in seeds:
    print(f"| {s} | " + " | ".join(f"{final[(v, s)]:.4f}" if (v, s) in final else "–" for v in variants) + " |")
if "bf16" in variants:
    print("\nPaired relative difference from bf16, same seed: (variant − bf16)/bf16 in %\n")
    print("| variant | per seed | mean ± 95 % CI | max abs |")
    print("|---|---|---|---|")
    for v in variants:
        if v == "bf16": continue
        d = [(final[(v, s)] - final[("bf16", s)]) / final[("bf16", s)] * 100 for s in seeds if (v, s) in final and ("bf16", s) in final]
        if not d: continue
        m, h = mean_ci(d)
        print(f"| {v} | {', '.join(f'{x:+.3f}' for x in d)} | {m:+.3f} ± {h:.3f} | {max(abs(x) for x in d):.3f} |")
# Curves: each variant's validation loss, mean over the seeds with their min–max band.
series = []
for v in variants:
    by_step = {}
    for s in seeds:
        for r in evals(v, s): by_step.setdefault(r["step"], []).append(r["val_loss"])
    pts = sorted((k, x) for k, x in by_step.items() if len(x) == len(seeds))
    if pts:
        series.append({"label": v, "pts": [(k, statistics.fmean(x)) for k, x in pts], "band": [(k, min(x), max(x)) for k, x in pts]})
if series:
    os.makedirs("docs/img", exist_ok=True)
    open("docs/img/fp8-claim.svg", "w").write(line_chart(series, title=f"validation loss, mean over seeds {' '.join(seeds)} (band: min–max)",
                                                        ylabel="val loss (nats/char)"))
PY
