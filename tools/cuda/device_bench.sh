#!/usr/bin/env bash
# GPU throughput, run ON the GPU machine from the repository root after tools/cuda/publish.sh (which also copies
# bench-medium's config into .device/): the GEMM shapes of DeepSeek-V3 training in FP8 (block-scaled), BF16 and TF32
# against PyTorch on the same GPU, and bench-medium's training step and forward against PyTorch eager on the same GPU.
set -u
OUT=${OUT:-cuda-out}
mkdir -p "$OUT"
libs=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /opt /usr/lib /usr/local/lib -maxdepth 7 \
       \( -name 'libnvrtc.so.1[23]*' -o -name 'libcublasLt.so.1[23]*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export DSS_CUDA_LIBRARY_PATH="${libs%:}" DSS_CUDA_CACHE=/tmp/dss-cuda-cache
mkdir -p /tmp/dss && tar -xJf .device/dss.tar.xz -C /tmp/dss || exit 1
DSS=/tmp/dss/dss

echo "== check with the algorithm tuning on"
DSS_CUBLASLT_TUNE=1 timeout 120 "$DSS" cuda check --fixtures tests/DeepSeekSharp.Tests/Fixtures 2>&1 | tail -3

echo "== GEMMs: DeepSeek-V3 training shapes (tokens x out x in)"
for shape in "4096 7168 2048" "4096 2112 7168" "4096 24576 1536" "4096 7168 16384" "4096 4096 7168"; do
  set -- $shape
  timeout 90 "$DSS" cuda gemm --m $1 --n $2 --k $3 --precision fp8 bf16-stored tf32 --json 2>&1 | tee -a "$OUT/gemm-shapes.jsonl"
  DSS_CUBLASLT_TUNE=1 timeout 90 "$DSS" cuda gemm --m $1 --n $2 --k $3 --precision fp8 bf16-stored --json 2>&1 | sed 's/^{/{"tuned":true,/' | tee -a "$OUT/gemm-shapes.jsonl"
  timeout 60 python3 tools/cuda/torch_gemm_peer.py --m $1 --n $2 --k $3 2>&1 | tee -a "$OUT/gemm-shapes.jsonl"
done

echo "== bench-medium on the GPU: dss (host-staged backend) vs PyTorch eager, fp32"
for mode in train fwd; do
  timeout 150 "$DSS" bench train --model .device/bench-medium --batch 4 --seq 512 --steps 3 --warmup 2 --mode $mode --device cuda --json 2>&1 | tail -1 | tee -a "$OUT/bench-medium.jsonl"
  timeout 90 python3 tools/reference/bench_model.py .device/bench-medium --batch 4 --seq 512 --warmup 3 --iters 5 --mode $mode --device cuda 2>&1 | tail -1 | tee -a "$OUT/bench-medium.jsonl"
done
