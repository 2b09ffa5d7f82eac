#!/bin/bash
# Data-parallel throughput (docs/performance.md). BASE_BUILD: a checkout of an earlier revision built with
# `dotnet build src/DeepSeekSharp.Cli -c Release` (the single-process baseline).
# tokens/s of configs/quickstart.yaml, 20 steps, global batch 16 sequences of 128: median tokens_per_s of steps 4..20
cd "$(dirname "$0")/../.."
NEW=src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll
BASE=${BASE_BUILD:-/tmp/dss-base}/src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll
common="--config configs/quickstart.yaml --max-steps 20 --set eval_steps=1000 --set sample_tokens=0 --set save_steps=1000 --set logging_steps=1 --overwrite"
med() { python3 -c "
import json,statistics
r=[json.loads(l) for l in open('$2/metrics.jsonl')]
t=[x['tokens_per_s'] for x in r if x['kind']=='train' and x['step']>3]
print('$1', round(statistics.median(t)))"; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi="mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x DSS_THREADS=1"
for round in 1 2 3; do
DSS_THREADS=2 dotnet $BASE train $common --set threads=2 --set gradient_accumulation_steps=2 --output-dir /tmp/dss-dp-b0 >/dev/null && med base-1proc-2threads /tmp/dss-dp-b0
DSS_THREADS=2 dotnet $NEW train $common --set threads=2 --set gradient_accumulation_steps=2 --output-dir /tmp/dss-dp-b1 >/dev/null && med new-1proc-2threads /tmp/dss-dp-b1
$mpi dotnet $NEW train $common --set threads=1 --set gradient_accumulation_steps=1 --output-dir /tmp/dss-dp-b2 >/dev/null && med new-2ranks-1thread /tmp/dss-dp-b2
$mpi dotnet $NEW train $common --set threads=1 --set gradient_accumulation_steps=1 --set zero_stage=1 --output-dir /tmp/dss-dp-b2z >/dev/null && med new-2ranks-zero1 /tmp/dss-dp-b2z
done
