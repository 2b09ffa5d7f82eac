#!/usr/bin/env bash
# DeepSeek-V3's balancing and MTP claims at small scale, over several seeds: bias balancing (V3), the classic
# aux-loss baseline, no balancing and bias without MTP, plus sweeps of the bias speed γ, the sequence-wise α and the
# aux-loss α. Every variant runs once per seed (the seed sets the initialisation and the data order), PARALLEL runs
# side by side with THREADS threads each. Then tools/experiments/summarize_balancing.py prints per-seed values,
# mean ± 95% CI per variant and paired differences against `bias`, and draws the curves.
#
#   SEEDS="1 2 3 4 5" STEPS=1500 PARALLEL=2 THREADS=1 tools/experiments/balancing_and_mtp.sh
#   VARIANTS="bias aux-loss none" SEEDS="1 2" STEPS=30 tools/experiments/balancing_and_mtp.sh   # a smoke test
#
# Runs go to $OUT/<variant>/seed-<seed>/ (metrics.jsonl, train.log). A run that already finished is kept; one that
# stopped part-way continues from its last checkpoint, so the study can be restarted after an interruption.
set -euo pipefail
SELF="$(realpath "$0")"
cd "${BALANCING_STUDY_ROOT:-$(dirname "$SELF")/../..}"
SEEDS="${SEEDS:-1 2 3 4 5}"
STEPS="${STEPS:-1500}"
THREADS="${THREADS:-1}"
PARALLEL="${PARALLEL:-2}"
OUT="${OUT:-runs/balancing-study}"
EVAL_STEPS="${EVAL_STEPS:-$(( STEPS >= 1000 ? 100 : (STEPS >= 10 ? STEPS / 10 : 1) ))}"
EVAL_BATCHES="${EVAL_BATCHES:-16}"
# Core comparison first (V3's claim), then MTP, then the sweeps; γ = 0.001, seq α = 1e-4 and aux α = 0.01 are `bias`
# and `aux-loss` themselves. "|" separates blocks: a block runs seed by seed (every variant of seed 1, then of
# seed 2, ...), so paired comparisons are available before the block ends.
VARIANTS="${VARIANTS:-bias aux-loss none | bias-no-mtp | bias-g0.0005 bias-g0.003 bias-g0.01 | bias-seq0 bias-seq1e-3 | aux-loss-a0.001 aux-loss-a0.03}"
VARIANT_LIST="$(echo ${VARIANTS//|/ })"

# The settings of each variant, on top of configs/shakespeare-moe.yaml.
variant_settings() {
  local bias=(balancing=bias bias_update_speed=0.001 seq_aux_alpha=0.0001)
  case "$1" in
    bias)            echo "${bias[*]}" ;;
    bias-no-mtp)     echo "${bias[*]} mtp_depth=0" ;;
    bias-g*)         echo "balancing=bias bias_update_speed=${1#bias-g} seq_aux_alpha=0.0001" ;;
    bias-seq*)       echo "balancing=bias bias_update_speed=0.001 seq_aux_alpha=${1#bias-seq}" ;;
    aux-loss)        echo "balancing=aux_loss aux_loss_alpha=0.01" ;;
    aux-loss-a*)     echo "balancing=aux_loss aux_loss_alpha=${1#aux-loss-a}" ;;
    none)            echo "balancing=none" ;;
    *) echo "balancing_and_mtp.sh: unknown variant '$1' (bias, bias-no-mtp, bias-g<γ>, bias-seq<α>, aux-loss, aux-loss-a<α>, none)" >&2; return 1 ;;
  esac
}
for v in $VARIANT_LIST; do variant_settings "$v" >/dev/null; done
for s in $SEEDS; do [[ "$s" =~ ^[0-9]+$ ]] || { echo "balancing_and_mtp.sh: SEEDS: '$s' is not a non-negative integer" >&2; exit 2; }; done

# Bash reads a script as it runs it: the study runs from its own copy, so editing this file cannot disturb it.
mkdir -p "$OUT"
if [[ -z "${BALANCING_STUDY_ROOT:-}" ]]; then
  cp "$SELF" "$OUT/study.sh"
  BALANCING_STUDY_ROOT="$PWD" exec bash "$OUT/study.sh"
fi
dotnet build -c Release src/DeepSeekSharp.Cli >/dev/null
# The study runs for hours: it uses its own copy of the build, so later builds in this tree do not change its runs.
rm -rf "$OUT/dss-build" && cp -r src/DeepSeekSharp.Cli/bin/Release/net10.0 "$OUT/dss-build"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true
export DSS="dotnet $OUT/dss-build/dss.dll" STEPS THREADS OUT EVAL_STEPS EVAL_BATCHES

# One run (variant, seed); prints one line when it ends.
run_one() {
  local variant=$1 seed=$2 dir="$OUT/$1/seed-$2"
  local sets=() resume=(--overwrite)
  for kv in $(variant_settings "$variant"); do sets+=(--set "$kv"); done
  if [[ -f "$dir/metrics.jsonl" ]] && grep -q "\"kind\":\"eval\",\"step\":$STEPS[,}]" "$dir/metrics.jsonl"; then
    echo "$(date -u +%H:%M:%S) kept     $variant seed $seed (already finished)"; return 0
  fi
  if compgen -G "$dir/checkpoint-*" >/dev/null; then resume=(--resume "$dir"); fi
  mkdir -p "$dir"
  local start=$SECONDS
  if $DSS train --config configs/shakespeare-moe.yaml --max-steps "$STEPS" --output-dir "$dir" "${resume[@]}" \
      --set seed="$seed" --set threads="$THREADS" --set eval_steps="$EVAL_STEPS" --set eval_batches="$EVAL_BATCHES" \
      --set save_steps=500 --set save_total_limit=1 --set sample_tokens=0 --set logging_steps=20 "${sets[@]}" \
      >> "$dir/train.log" 2>&1; then
    echo "$(date -u +%H:%M:%S) finished $variant seed $seed in $(( SECONDS - start )) s"
  else
    echo "$(date -u +%H:%M:%S) FAILED   $variant seed $seed (see $dir/train.log)"
  fi
}
export -f run_one variant_settings

# The runs in order: block by block, within a block seed by seed.
jobs() {
  local block=()
  for token in $VARIANTS "|"; do
    if [[ "$token" == "|" ]]; then
      for s in $SEEDS; do for v in "${block[@]}"; do echo "$v $s"; done; done
      block=()
    else block+=("$token"); fi
  done
}
echo "$(date -u +%H:%M:%S) study (pid $$): variants [$VARIANTS], seeds [$SEEDS], $STEPS steps, $PARALLEL runs side by side × $THREADS thread(s) → $OUT"
jobs | xargs -n 2 -P "$PARALLEL" bash -c 'run_one "$0" "$1"'
/usr/bin/python3 tools/experiments/summarize_balancing.py --root "$OUT" --steps "$STEPS" --variants $VARIANT_LIST --seeds $SEEDS
