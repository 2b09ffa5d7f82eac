"""PyTorch peer of `dss bench train`: throughput of the reference model for an HF config folder (random init, float32).

    GOMP_SPINCOUNT=1000 OPENBLAS_THREAD_TIMEOUT=4 \
    /usr/bin/python3 tools/reference/bench_model.py FOLDER_WITH_config.json --batch 8 --seq 256 --threads 2 --mode train

Prints one JSON line: {"tokens_per_s": ..., "step_s_median": ..., ...}.
--mode fwd: one "step" = a forward pass of the main model (no MTP unless --mtp) over a [batch, seq] block of random
tokens (full causal prefill, logits included), under no_grad.
--mode train: forward, mean next-token cross-entropy, backward and torch.optim.AdamW (betas 0.9/0.95, decay 0.1,
foreach) -- the same workload as `dss bench train`. The environment variables above give the peer its best chance
(../shared/bench/README.md). Weights are random (normal std 0.02, norms 1, bias 0).
"""
import argparse
import ctypes
import json
import os
import resource
import sys
import time


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", help="folder with config.json (or the config.json itself)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mtp", action="store_true", help="also run the MTP module(s) (fwd mode)")
    ap.add_argument("--mode", choices=["fwd", "train"], default="fwd")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (PyTorch eager on the GPU, TF32 off: fp32 as dss's default)")
    return ap.parse_args()


def set_blas_threads(n):
    """Pin OpenBLAS (if it is what torch/numpy use) to n threads via ctypes."""
    done = []
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        libs = set()
    for lib in sorted(libs):
        try:
            h = ctypes.CDLL(lib)
            for fn in ("openblas_set_num_threads", "openblas_set_num_threads64_", "goto_set_num_threads"):
                if hasattr(h, fn):
                    getattr(h, fn)(ctypes.c_int(n))
                    done.append(f"{os.path.basename(lib)}:{fn}")
                    break
        except OSError:
            pass
    if not done:
        # Debian's python3-torch falls back to the reference BLAS when no optimised one is installed: ~20x slower.
        print("warning: torch is not using OpenBLAS (apt-get install -y libopenblas0-pthread); "
              "its figures are not a fair peer", file=sys.stderr)
    return done


def main():
    args = parse()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch  # noqa: E402  (after the env vars)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import deepseek_reference as ref  # noqa: E402

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    blas = set_blas_threads(args.threads)

    path = args.folder if args.folder.endswith(".json") else os.path.join(args.folder, "config.json")
    cfg = json.load(open(path))
    gen = torch.Generator().manual_seed(args.seed)
    W = ref.init_weights(cfg, gen, torch.float32, std=0.02, norm_noise=0.0, bias_std=0.0)
    tokens = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq), generator=gen)
    if args.device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = False
        W = {k: v.to(args.device) for k, v in W.items()}
        tokens = tokens.to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    if args.mode == "train":
        params = []
        for name in ref.trainable_names(cfg, W):
            W[name] = W[name].detach().requires_grad_(True)
            params.append(W[name])
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
        targets = tokens[:, 1:].reshape(-1)

        def step():
            logits, _ = ref.model_forward(cfg, W, tokens)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
    else:
        def step():
            with torch.no_grad():
                logits, h = ref.model_forward(cfg, W, tokens)
                if args.mtp:
                    ref.mtp_forward(cfg, W, tokens, h)

    times = []
    for _ in range(args.warmup):
        step()
    sync()
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq / med,
        "step_s_median": med,
        "step_s_min": times[0],
        "batch": args.batch, "seq": args.seq, "threads": args.threads, "iters": args.iters,
        "warmup": args.warmup, "dtype": "float32", "device": args.device, "mtp": args.mtp, "mode": args.mode,
        "model_type": cfg.get("model_type"), "torch": torch.__version__, "blas_threads_set": blas,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }))


if __name__ == "__main__":
    main()
