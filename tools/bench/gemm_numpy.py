"""numpy/OpenBLAS SGEMM GFLOP/s on the same shapes as `dss bench gemm`, for docs/performance.md.

    /usr/bin/python3 tools/bench/gemm_numpy.py --threads 2 --shapes 2048x768x256 2048x256x768

Prints one JSON line per shape: {"m", "n", "k", "threads", "gflops", "seconds_median"}.
"""
import argparse, ctypes, json, os, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iterations", type=int, default=10)
ap.add_argument("--shapes", nargs="+", default=["2048x768x256", "2048x256x768", "2048x8192x256", "1024x1024x1024", "2048x1536x512"])
args = ap.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
import numpy as np  # noqa: E402  (after the thread setting)

for spec in args.shapes:
    m, n, k = (int(x) for x in spec.split("x"))
    rng = np.random.default_rng(1)
    a = rng.random((m, k), dtype=np.float32) - 0.5
    b = rng.random((k, n), dtype=np.float32) - 0.5
    for _ in range(3):
        a @ b
    times = []
    for _ in range(args.iterations):
        t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)
    med = sorted(times)[len(times) // 2]
    print(json.dumps({"m": m, "n": n, "k": k, "threads": args.threads, "gflops": round(2 * m * n * k / med / 1e9, 1), "seconds_median": med}))
