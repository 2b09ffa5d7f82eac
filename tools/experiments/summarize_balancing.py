"""Summarise the balancing/MTP study written by tools/experiments/balancing_and_mtp.sh (stdlib only).

    python3 tools/experiments/summarize_balancing.py --root runs/balancing-study --steps 1500 \
        --variants bias aux-loss none bias-no-mtp --seeds 1 2 3 4 5

Per run (ROOT/<variant>/seed-<seed>/metrics.jsonl): the main head's validation loss and the validation MaxVio at the
final evaluation (step --steps), and the training MaxVio averaged over the train records of the last --tail steps.
Prints (and writes to ROOT/summary.md) the per-seed values, per variant the mean ± the half-width of a 95%
confidence interval (Student's t, n − 1 degrees of freedom), and per variant the paired difference against the
reference variant (same seed, so the same initialisation and data order) with its own 95% CI. Also writes SVG curves
per group of variants (mean over seeds, band = min–max over seeds) to ROOT/plots/.
"""
import argparse, json, math, os, statistics, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plots"))
from svg_chart import line_chart

# Two-sided 95% quantiles of Student's t (t_{0.975, df}) for df = 1..30; the normal 1.960 beyond.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
METRICS = [("val_loss", "val loss (main head, nats/char)", 4), ("val_max_vio", "val MaxVio", 3),
           ("train_max_vio", "train MaxVio, last {tail} steps", 3)]
GROUPS = {  # plot groups: a name and the variants drawn together (those present)
    "core": ["bias", "aux-loss", "none", "bias-no-mtp"],
    "gamma": ["bias-g0.0005", "bias", "bias-g0.003", "bias-g0.01"],
    "seq-alpha": ["bias-seq0", "bias", "bias-seq1e-3"],
    "aux-alpha": ["aux-loss-a0.001", "aux-loss", "aux-loss-a0.03"],
}


def t975(df):
    return T975[df - 1] if 1 <= df <= len(T975) else 1.960


def mean_ci(values):
    """(mean, 95% CI half-width); the half-width is nan for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = statistics.fmean(values)
    return m, (t975(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan)


def fmt(m, h, digits):
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if math.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def load_run(path, steps, tail):
    """The run's summary values and curves, or None when it has not reached its final evaluation."""
    if not os.path.exists(path):
        return None
    records = [json.loads(line) for line in open(path) if line.strip()]
    evals = [r for r in records if r.get("kind") == "eval"]
    train = [r for r in records if r.get("kind") == "train" and "max_vio" in r]
    final = [r for r in evals if r["step"] == steps]
    if not final or not train:
        return None
    tail_vio = [r["max_vio"] for r in train if r["step"] > steps - tail]
    # Training MaxVio is noisy per step: the curve is its trailing mean over the last `tail` steps of records.
    smooth = []
    for i, r in enumerate(train):
        window = [q["max_vio"] for q in train[: i + 1] if q["step"] > r["step"] - tail]
        smooth.append((r["step"], statistics.fmean(window)))
    return {
        "val_loss": final[-1]["val_loss"], "val_max_vio": final[-1]["val_max_vio"],
        "train_max_vio": statistics.fmean(tail_vio),
        "curves": {"val_loss": [(r["step"], r["val_loss"]) for r in evals],
                   "val_max_vio": [(r["step"], r["val_max_vio"]) for r in evals],
                   "train_max_vio": smooth},
    }


def band(curves):
    """Mean and min–max over seeds at the steps every seed has."""
    common = sorted(set.intersection(*(set(x for x, _ in c) for c in curves)))
    at = [dict(c) for c in curves]
    mean = [(x, statistics.fmean(a[x] for a in at)) for x in common]
    rng = [(x, min(a[x] for a in at), max(a[x] for a in at)) for x in common]
    return mean, rng


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="runs/balancing-study")
    ap.add_argument("--steps", type=int, default=1500, help="the runs' final step (where the final evaluation is)")
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, required=True)
    ap.add_argument("--reference", default="bias", help="variant the paired differences are taken against")
    ap.add_argument("--tail", type=int, default=100, help="train MaxVio: mean over the records of the last TAIL steps")
    args = ap.parse_args()

    runs, missing = {}, []
    for v in args.variants:
        for s in args.seeds:
            r = load_run(os.path.join(args.root, v, f"seed-{s}", "metrics.jsonl"), args.steps, args.tail)
            if r is None:
                missing.append(f"{v}/seed-{s}")
            else:
                runs[(v, s)] = r
    variants = [v for v in args.variants if any((v, s) in runs for s in args.seeds)]
    out = [f"# Balancing and MTP study: {args.steps} steps, seeds {' '.join(map(str, args.seeds))}", ""]
    if missing:
        out += [f"Not finished (left out): {', '.join(missing)}", ""]
    if not variants:
        out.append("No finished runs yet.")
        print("\n".join(out))
        return

    seeds = args.seeds
    for key, title, digits in METRICS:
        title = title.format(tail=args.tail)
        out += [f"## {title}: per seed, mean ± 95% CI", "",
                "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | n | mean ± 95% CI |",
                "|---|" + "---|" * (len(seeds) + 2)]
        for v in variants:
            vals = [runs[(v, s)][key] for s in seeds if (v, s) in runs]
            cells = [f"{runs[(v, s)][key]:.{digits}f}" if (v, s) in runs else "–" for s in seeds]
            out.append(f"| {v} | " + " | ".join(cells) + f" | {len(vals)} | {fmt(*mean_ci(vals), digits)} |")
        out.append("")

    ref = args.reference
    if ref in variants:
        out += [f"## Paired differences against `{ref}` (variant − {ref}, same seeds), mean ± 95% CI", "",
                "A difference whose interval excludes 0 is marked *. Lower is better for all three.", "",
                "| variant | pairs | Δ val loss | Δ val MaxVio | Δ train MaxVio |", "|---|---|---|---|---|"]
        for v in variants:
            if v == ref:
                continue
            paired = [s for s in seeds if (v, s) in runs and (ref, s) in runs]
            cells = []
            for key, _, digits in METRICS:
                m, h = mean_ci([runs[(v, s)][key] - runs[(ref, s)][key] for s in paired])
                star = "*" if not math.isnan(h) and (m - h > 0 or m + h < 0) else ""
                cells.append(f"{m:+.{digits}f} ± {h:.{digits}f}{star}" if not math.isnan(h)
                             else "–" if math.isnan(m) else f"{m:+.{digits}f}")
            out.append(f"| {v} | {len(paired)} | " + " | ".join(cells) + " |")
        out.append("")

    plot_dir = os.path.join(args.root, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    groups = dict(GROUPS)
    groups["all"] = [v for v in variants if not any(v in g for g in GROUPS.values())]
    written = []
    for name, members in groups.items():
        members = [v for v in members if v in variants]
        if len(members) < (1 if name in ("core", "all") else 2):  # a sweep plot needs a second point of the sweep
            continue
        for key, title, _ in METRICS:
            series = []
            for v in members:
                curves = [runs[(v, s)]["curves"][key] for s in seeds if (v, s) in runs]
                mean, rng = band(curves)
                series.append({"label": f"{v} (n={len(curves)})", "pts": mean, "band": rng})
            ys = [y for s in series for _, y in s["pts"]]
            y_range = None
            if key == "val_loss" and ys:  # the first evaluations are far above the rest: show the last 1 nat
                lo = min(lo for s in series for _, lo, _ in s["band"])
                y_range = (lo - 0.02, lo + 1.0)
            elif ys:
                y_range = (0, max(hi for s in series for _, _, hi in s["band"]) * 1.05 or 1)
            label = title.format(tail=args.tail)
            svg = line_chart(series, f"{label}: mean over seeds, band min–max", "step", label, (), y_range)
            path = os.path.join(plot_dir, f"{name}-{key.replace('_', '-')}.svg")
            open(path, "w").write(svg)
            written.append(path)
    out += ["Plots: " + ", ".join(written), ""]
    text = "\n".join(out)
    print(text)
    open(os.path.join(args.root, "summary.md"), "w").write(text + "\n")


if __name__ == "__main__":
    main()
