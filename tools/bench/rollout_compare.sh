#!/usr/bin/env bash
# GRPO rollout throughput before/after a change: `dss bench rollout` built from BEFORE (a git revision, exported with
# git archive) against the working tree, alternating process by process at each thread count so that the machine's
# drift hits both builds alike. Every run samples PROMPTS × GENERATIONS completions of TOKENS tokens together (batched)
# and 8 of them one at a time (batch-1) in the same process; prints one JSON line per run and, per build and thread
# count, the medians of the batched rate, the batch-1 rate and their ratio.
# Usage: BEFORE=fc8e924 ROUNDS=3 THREADS="1 2" TOKENS=16 tools/bench/rollout_compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BEFORE="${BEFORE:?set BEFORE to the git revision to compare against}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-1 2}"
TOKENS="${TOKENS:-16}"
PROMPTS="${PROMPTS:-4}"
GENERATIONS="${GENERATIONS:-8}"
MODEL="${MODEL:-bench-small}"
source tools/bench/private_build.sh && private_build rollout-after
after="$DSS"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive "$BEFORE" | tar -x -C "$work"
(cd "$work" && dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null)
before="dotnet $work/src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"
args="--model ../shared/bench/$MODEL --prompts $PROMPTS --generations $GENERATIONS --tokens $TOKENS --prompt-tokens 32 --batch1-sequences 8 --json"
out="$work/runs.txt"
for r in $(seq "$ROUNDS"); do
  for t in $THREADS; do
    for build in before after; do
      cmd=$([ "$build" = before ] && echo "$before" || echo "$after")
      line=$(DSS_THREADS=$t $cmd bench rollout $args)
      echo "$build $t $line" | tee -a "$out"
    done
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    build, t, js = line.split(" ", 2)
    rows.setdefault((build, int(t)), []).append(json.loads(js))
print("| build | threads | batched tokens/s | batch-1 tokens/s | batched / batch-1 |")
print("|---|---|---|---|---|")
for (build, t), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] != "before")):
    b = st.median(r["batched_tokens_per_s"] for r in rs); s = st.median(r["batch1_tokens_per_s"] for r in rs)
    ratio = st.median(r["speedup"] for r in rs)
    print(f"| {build} | {t} | {b:,.0f} | {s:,.0f} | {ratio:.2f}× |")
PY
