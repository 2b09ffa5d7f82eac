"""Plot validation (and training) loss from dss metrics.jsonl files as a dependency-free SVG.

    python3 tools/plots/metrics_svg.py --out docs/img/x.svg --x elapsed_s LABEL=runs/a/metrics.jsonl LABEL2=runs/b/metrics.jsonl

--x step|elapsed_s|tokens; --kind eval (val_loss) or train (loss); --hline 1.88 draws a reference line.
"""
import argparse, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svg_chart import line_chart

ap = argparse.ArgumentParser()
ap.add_argument("runs", nargs="+", help="LABEL=path/to/metrics.jsonl")
ap.add_argument("--out", required=True)
ap.add_argument("--x", default="step")
ap.add_argument("--kind", default="eval")
ap.add_argument("--title", default="")
ap.add_argument("--hline", type=float, action="append", default=[])
args = ap.parse_args()
ykey = "val_loss" if args.kind == "eval" else "loss"
series = []
for spec in args.runs:
    label, path = spec.split("=", 1)
    pts = []
    for line in open(path):
        r = json.loads(line)
        if r.get("kind") == args.kind and ykey in r and args.x in r:
            pts.append((float(r[args.x]), float(r[ykey])))
    series.append({"label": label, "pts": pts})
ys = [y for s in series for _, y in s["pts"]] + args.hline
# Losses start high: show at most 2.5 nats above the lowest value.
y_range = (min(ys) - 0.05, min(max(ys), min(ys) + 2.5) + 0.05) if ys else None
svg = line_chart(series, args.title, args.x, f"{ykey} (nats/token)", args.hline, y_range)
open(args.out, "w").write(svg)
print(f"wrote {args.out}")
