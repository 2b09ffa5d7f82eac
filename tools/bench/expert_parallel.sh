#!/bin/bash
# Expert-parallel throughput and bytes (docs/performance.md). BASE_BUILD: a checkout of an earlier revision built with
# `dotnet build src/DeepSeekSharp.Cli -c Release` (the single-process baseline).
# bench-small on TinyShakespeare (byte tokenizer, 8 × 256 tokens per micro-batch, no MTP):
#  1. one process, 2 threads, gradient_accumulation_steps 2, 8 steps: the revision before against this one;
#  2. mpirun -np 2, 1 thread per rank, 6 steps: expert_parallel_size 1 (DP 2) against 2 (EP 2), with the bytes rank 0
#     sent per step. Figures: median tokens_per_s from step 3 on.
cd "$(dirname "$0")/../.."
NEW=src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll
BASE=${BASE_BUILD:-/tmp/dss-base}/src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll
common="--set model_config=../shared/bench/bench-small --set tokenizer=byte --set datasets=../shared/data/tinyshakespeare/input.txt
 --set val_set_size=0.01 --set sequence_len=256 --set micro_batch_size=8 --set warmup_steps=1 --set learning_rate=1e-3
 --set eval_steps=1000 --set eval_batches=0 --set sample_tokens=0 --set save_steps=1000 --set logging_steps=1 --set seed=1
 --set mtp_depth=0 --overwrite"
med() { python3 -c "
import json,statistics
r=[json.loads(l) for l in open('$2/metrics.jsonl') if '\"train\"' in l][2:]
print('$1', round(statistics.median([x['tokens_per_s'] for x in r])), r[-1].get('ep_dispatch_bytes', ''), r[-1].get('ep_combine_bytes', ''))"; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi="mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x DSS_THREADS=1"
for round in 1 2 3; do
  DSS_THREADS=2 dotnet $BASE train $common --max-steps 8 --set threads=2 --set gradient_accumulation_steps=2 --output-dir /tmp/dss-ep-b0 >/dev/null && med base-1proc /tmp/dss-ep-b0
  DSS_THREADS=2 dotnet $NEW train $common --max-steps 8 --set threads=2 --set gradient_accumulation_steps=2 --output-dir /tmp/dss-ep-b1 >/dev/null && med new-1proc /tmp/dss-ep-b1
done
for round in 1 2; do
  for ep in 1 2; do
    $mpi dotnet $NEW train $common --max-steps 6 --set threads=1 --set gradient_accumulation_steps=1 --set expert_parallel_size=$ep --output-dir /tmp/dss-ep-b2 >/dev/null && med ep$ep-2ranks /tmp/dss-ep-b2
  done
done
