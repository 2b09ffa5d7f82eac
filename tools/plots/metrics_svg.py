"""Plot validation (and training) loss from dss metrics.jsonl files as a dependency-free SVG.

    python3 tools/plots/metrics_svg.py --out docs/img/x.svg --x elapsed_s LABEL=runs/a/metrics.jsonl LABEL2=runs/b/metrics.jsonl

--x step|elapsed_s|tokens; --kind eval (val_loss) or train (loss); --hline 1.88 draws a reference line.
"""
import argparse, json

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
    series.append((label, pts))
xs = [x for _, p in series for x, _ in p]
ys = [y for _, p in series for _, y in p] + args.hline
x0, x1 = 0, max(xs) if xs else 1
y0, y1 = min(ys) - 0.05, min(max(ys), min(ys) + 2.5) + 0.05
W, H, L, B, T, R = 720, 420, 60, 50, 30, 20
sx = lambda x: L + (x - x0) / (x1 - x0 or 1) * (W - L - R)
sy = lambda y: T + (y1 - min(max(y, y0), y1)) / (y1 - y0 or 1) * (H - T - B)
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">{args.title}</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>']
for i in range(6):
    xv = x0 + (x1 - x0) * i / 5; yv = y0 + (y1 - y0) * i / 5
    out.append(f'<text x="{sx(xv)}" y="{H-B+16}" text-anchor="middle">{xv:.0f}</text>')
    out.append(f'<text x="{L-6}" y="{sy(yv)+4}" text-anchor="end">{yv:.2f}</text>')
    out.append(f'<line x1="{L}" y1="{sy(yv)}" x2="{W-R}" y2="{sy(yv)}" stroke="#eee"/>')
out.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">{args.x}</text>')
out.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">{ykey} (nats/token)</text>')
for h in args.hline:
    out.append(f'<line x1="{L}" y1="{sy(h)}" x2="{W-R}" y2="{sy(h)}" stroke="gray" stroke-dasharray="5,4"/><text x="{W-R-4}" y="{sy(h)-4}" text-anchor="end" fill="gray">{h}</text>')
for k, (label, pts) in enumerate(series):
    c = colors[k % len(colors)]
    if pts:
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{c}"/>')
    out.append(f'<rect x="{W-R-170}" y="{T+8+k*18}" width="12" height="3" fill="{c}"/><text x="{W-R-152}" y="{T+13+k*18}">{label}</text>')
out.append("</svg>")
open(args.out, "w").write("\n".join(out))
print(f"wrote {args.out}")
