"""PyTorch peer for `dss cuda gemm`: Y = X·Wᵀ on the GPU in BF16 and in FP8 with DeepSeek-V3's 1x128 / 128x128 block
scales (torch.nn.functional.scaled_mm), timed with CUDA events (median of 20 after 5 warm-ups), one JSON line each."""
import argparse
import json

import torch
import torch.nn.functional as F


def time_ms(fn, iterations=20, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--n", type=int, default=7168)
    p.add_argument("--k", type=int, default=2048)
    a = p.parse_args()
    m, n, k = a.m, a.n, a.k
    flops = 2.0 * m * n * k
    torch.manual_seed(0)
    x = torch.randn(m, k, device="cuda")
    w = torch.randn(n, k, device="cuda") * 0.02
    xb, wb = x.bfloat16(), w.bfloat16()
    ms = time_ms(lambda: xb @ wb.t())
    print(json.dumps({"peer": "torch", "torch": torch.__version__, "precision": "bf16", "m": m, "n": n, "k": k, "ms_median": ms, "tflops": flops / ms / 1e9}))
    ms = time_ms(lambda: x @ w.t())
    print(json.dumps({"peer": "torch", "precision": "fp32 (tf32 off)" if not torch.backends.cuda.matmul.allow_tf32 else "fp32 (tf32)", "m": m, "n": n, "k": k, "ms_median": ms, "tflops": flops / ms / 1e9}))
    try:
        # 1x128 activation scales (outer-dimension-major) and 128x128 weight scales, as DeepSeek-V3.
        xs = x.view(m, k // 128, 128).abs().amax(-1).clamp(min=1e-12) / 448.0
        xq = (x.view(m, k // 128, 128) / xs[..., None]).view(m, k).to(torch.float8_e4m3fn)
        ws = w.view(n // 128, 128, k // 128, 128).abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0
        wq = (w.view(n // 128, 128, k // 128, 128) / ws[:, None, :, None]).view(n, k).to(torch.float8_e4m3fn)
        xs_t = xs.t().contiguous().t()
        fn = lambda: F.scaled_mm(xq, wq.t(), xs_t, F.ScalingType.BlockWise1x128, ws.t(), F.ScalingType.BlockWise128x128, output_dtype=torch.bfloat16)
        y = fn()
        ref = (xq.float().view(m, k // 128, 128) * xs[..., None]).view(m, k) @ (wq.float().view(n // 128, 128, k // 128, 128) * ws[:, None, :, None]).view(n, k).t()
        err = ((y.float() - ref).norm() / ref.norm()).item()
        ms = time_ms(fn)
        print(json.dumps({"peer": "torch", "precision": "fp8 1x128/128x128 (F.scaled_mm)", "m": m, "n": n, "k": k, "ms_median": ms, "tflops": flops / ms / 1e9, "error_vs_dequantised": err}))
    except Exception as e:  # the API moved between releases: report, do not fail the check
        print(json.dumps({"peer": "torch", "precision": "fp8", "error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    main()
