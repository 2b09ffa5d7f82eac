#!/usr/bin/env bash
# Before/after of a change: `dss bench train` built from BEFORE (a git revision) against the working tree, the two
# alternating run by run (the order flips every round) so that the machine's drift hits both alike. Prints one
# markdown row per (model, threads, mode, precision): median tokens/s, peak RSS and activation memory of each build,
# and the after/before ratios. A kernel or engine change lands with this table (docs/performance.md).
# Usage: BEFORE=71f944a ROUNDS=5 MODELS="bench-small bench-medium" THREADS="1 2" tools/bench/build_compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BEFORE="${BEFORE:?set BEFORE to the git revision to compare against}"
ROUNDS="${ROUNDS:-5}"
MODELS="${MODELS:-bench-small bench-medium}"
THREADS="${THREADS:-1 2}"
CASES="${CASES:-train:fp32 fwd:fp32 train:fp8}"
work=$(mktemp -d)
trap 'git worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/src" "$BEFORE" >/dev/null 2>&1
dotnet build -c Release "$work/src/src/DeepSeekSharp.Cli" >/dev/null
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
# Private copies, so a rebuild during the (long) run cannot swap assemblies under it.
cp -r "$work/src/src/DeepSeekSharp.Cli/bin/Release/net10.0" "$work/before"
cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0 "$work/after"
out="$work/results"
for r in $(seq "$ROUNDS"); do
  order="before after"; [ $((r % 2)) -eq 0 ] && order="after before"
  for model in $MODELS; do
    dir="../shared/bench/$model"
    read -r b t < <(/usr/bin/python3 -c "import json;c=json.load(open('$dir/workload.json'));print(c['micro_batch_size'],c['sequence_len'])")
    for th in $THREADS; do
      for case in $CASES; do
        mode=${case%%:*}; precision=${case##*:}
        for build in $order; do
          line=$(dotnet "$work/$build/dss.dll" bench train --model "$dir" --batch "$b" --seq "$t" --steps 3 --warmup 3 \
                   --threads "$th" --mode "$mode" --precision "$precision" --json | tail -1)
          echo "$model $th $mode $precision $build $line" >> "$out"
        done
      done
    done
  done
  echo "round $r of $ROUNDS done" >&2
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    model, th, mode, precision, build, js = line.split(" ", 5)
    rows.setdefault((model, th, mode, precision), {}).setdefault(build, []).append(json.loads(js))
med = lambda runs, key: statistics.median(r[key] for r in runs)
print("| model | threads | mode | precision | tokens/s before | after | ratio | peak RSS MB before | after | ratio | activations MB before | after |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for (model, th, mode, precision), builds in rows.items():
    b, a = builds["before"], builds["after"]
    tb, ta = med(b, "tokens_per_s"), med(a, "tokens_per_s")
    rb, ra = med(b, "peak_rss_mb"), med(a, "peak_rss_mb")
    act = lambda runs: f"{med(runs, 'activation_mb'):.1f}" if "activation_mb" in runs[0] else "–"
    print(f"| {model} | {th} | {mode} | {precision} | {tb:,.0f} | {ta:,.0f} | {ta/tb:.3f} | {rb:.0f} | {ra:.0f} | {ra/rb:.3f} | {act(b)} | {act(a)} |")
PY
