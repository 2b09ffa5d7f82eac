#!/usr/bin/env bash
# Training-step and forward throughput of `dss bench train` (fp32 and fp8) and the PyTorch peer
# (tools/reference/bench_model.py), interleaved round by round so that the machine's drift hits all of them alike.
# Prints one markdown row per (model, threads, mode, engine) with the median over ROUNDS runs.
# Each run times 3 steps after 3 warm-up steps: both engines are still speeding up over their first steps (PyTorch's
# bench-medium training step on 1 thread took 17.0, 12.8, 9.1, 7.4, 7.4 s; dss's first timed step after a single
# warm-up was ~25 % slower than its later ones), and a steady-state step is what a training run spends its time in.
# Usage: ROUNDS=3 MODELS="bench-small bench-medium" THREADS="1 2" tools/bench/train_compare.sh
# Before/after: BASE=<revision> builds that revision too and adds the engines dss-fp32@base and dss-fp8@base, e.g.
#   BASE=main ROUNDS=3 THREADS="1 2" MODES=train ENGINES="dss-fp32 dss-fp8 dss-fp32@base dss-fp8@base" tools/bench/train_compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/bench/private_build.sh
if [ -n "${BASE:-}" ]; then private_build base "$BASE"; DSS_BASE=$DSS; fi
private_build train
ROUNDS="${ROUNDS:-3}"
MODELS="${MODELS:-bench-small}"
THREADS="${THREADS:-2}"
MODES="${MODES:-train fwd}"
ENGINES="${ENGINES:-dss-fp32 dss-fp8 torch-fp32}"
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for model in $MODELS; do
    dir="../shared/bench/$model"
    read -r b t < <(/usr/bin/python3 -c "import json;c=json.load(open('$dir/workload.json'));print(c['micro_batch_size'],c['sequence_len'])")
    steps=3
    for th in $THREADS; do
      for mode in $MODES; do
        for e in $ENGINES; do
          case $e in
            dss-fp32|dss-fp8|dss-fp32@base|dss-fp8@base)
              [ "$mode" = fwd ] && [ "${e%@base}" = dss-fp8 ] && continue
              bin=$DSS
              [ "$e" != "${e%@base}" ] && bin=$DSS_BASE
              p=${e%@base}
              line=$($bin bench train --model "$dir" --batch "$b" --seq "$t" --steps $steps --warmup 3 --threads "$th" \
                      --mode "$mode" --precision "${p#dss-}" --json | tail -1) ;;
            torch-fp32)
              line=$(GOMP_SPINCOUNT=1000 OPENBLAS_THREAD_TIMEOUT=4 /usr/bin/python3 tools/reference/bench_model.py "$dir" \
                      --batch "$b" --seq "$t" --threads "$th" --mode "$mode" --warmup 3 --iters $steps | tail -1) ;;
          esac
          echo "$model $th $mode $e $line" >> "$out"
        done
      done
    done
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    model, th, mode, engine, js = line.split(" ", 4)
    rows.setdefault((model, th, mode, engine), []).append(json.loads(js))
print("| model | threads | mode | engine | tokens/s (median) | runs | peak RSS MB | activations MB |")
print("|---|---|---|---|---|---|---|---|")
for (model, th, mode, engine), rs in sorted(rows.items()):
    tps = statistics.median(r["tokens_per_s"] for r in rs)
    rss = statistics.median(r.get("peak_rss_mb", 0) for r in rs)
    act = rs[0].get("activation_mb", "")
    runs = ", ".join(format(r["tokens_per_s"], ",.0f") for r in rs)
    print(f"| {model} | {th} | {mode} | {engine} | {tps:,.0f} | {runs} | {rss:,.0f} | {act} |")
PY
