#!/usr/bin/env bash
# The CUDA backend's device check, run ON the GPU machine from the repository root after tools/cuda/publish.sh
# (the self-contained dss travels as .device/dss.tar.xz). Writes every log under $OUT (default ./cuda-out) and prints
# a summary: device and libraries, every backend operation against the CPU backend, the reference fixtures on the GPU,
# the FP8 scale layouts, GEMM throughput against PyTorch, the FP8 error study, and logits against HF transformers.
set -u
OUT=${OUT:-cuda-out}
mkdir -p "$OUT"
step() { echo; echo "== $1"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
# The CUDA libraries: the toolkit's, else the NVIDIA wheels PyTorch uses.
libs=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /opt /usr/lib /usr/local/lib -maxdepth 7 \
       \( -name 'libnvrtc.so.1[23]*' -o -name 'libcublasLt.so.1[23]*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export DSS_CUDA_LIBRARY_PATH="${libs%:}"
export DSS_CUDA_CACHE=/tmp/dss-cuda-cache
echo "DSS_CUDA_LIBRARY_PATH=$DSS_CUDA_LIBRARY_PATH"
hdr=$(find /usr/local/cuda*/include /opt -name cublasLt.h 2>/dev/null | head -1)
[ -n "$hdr" ] && grep -nE 'CUBLASLT_MATMUL_DESC_(TRANSA|TRANSB|A_SCALE_POINTER|B_SCALE_POINTER|A_SCALE_MODE|B_SCALE_MODE) *=|MATRIX_SCALE_(VEC128_32F|BLK128x128_32F) *=' "$hdr" | tee "$OUT/cublaslt-enums.txt"

mkdir -p /tmp/dss && tar -xJf .device/dss.tar.xz -C /tmp/dss || { echo "no .device/dss.tar.xz: run tools/cuda/publish.sh first"; exit 1; }
DSS=/tmp/dss/dss

step "dss cuda info"
timeout 120 "$DSS" cuda info 2>&1 | tee "$OUT/info.txt"

step "dss cuda check"
timeout 300 "$DSS" cuda check --fixtures tests/DeepSeekSharp.Tests/Fixtures --out "$OUT/cuda-check.json" 2>&1 | tee "$OUT/cuda-check.md"

step "GEMM 4096x7168x2048: dss vs PyTorch"
timeout 150 "$DSS" cuda gemm --m 4096 --n 7168 --k 2048 --precision fp32 tf32 bf16 bf16-stored fp8 --json 2>&1 | tee "$OUT/gemm.jsonl"
timeout 120 python3 tools/cuda/torch_gemm_peer.py --m 4096 --n 7168 --k 2048 2>&1 | tee -a "$OUT/gemm.jsonl"

step "FP8 error study on the GPU"
timeout 150 "$DSS" cuda fp8-study 2>&1 | tee "$OUT/fp8-study.md"

step "logits against HF transformers (float64, CPU) and our PyTorch reference"
for f in v3-tiny v2-lite-tiny; do
  dir=tests/DeepSeekSharp.Tests/Fixtures/$f
  tokens=$(python3 -c "from safetensors.numpy import load_file; print(','.join(str(int(t)) for t in load_file('$dir/expected.safetensors')['tokens']))" 2>&1)
  timeout 60 "$DSS" forward --model "$dir" --tokens "$tokens" --device cuda --out "/tmp/$f-dss-cuda.safetensors" 2>&1
  timeout 120 python3 tools/cuda/hf_logits.py "$dir" "/tmp/$f-hf.safetensors" 2>&1 | tail -3
  python3 tools/cuda/compare_logits.py "$f" "/tmp/$f-dss-cuda.safetensors" "/tmp/$f-hf.safetensors" "$dir/expected.safetensors" 2>&1 | tee -a "$OUT/hf-compare.md"
done
