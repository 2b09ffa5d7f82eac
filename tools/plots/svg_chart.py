"""A dependency-free SVG line chart: lines with points, optional shaded bands (e.g. min–max over seeds), dashed
reference lines. Used by metrics_svg.py and tools/experiments/summarize_balancing.py."""

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def line_chart(series, title="", xlabel="step", ylabel="", hlines=(), y_range=None, width=720, height=420):
    """series: dicts with label, pts [(x, y)], optional band [(x, lo, hi)] and dashed (bool).
    y_range: (lo, hi), or None for the data's range plus a margin. Returns the SVG text."""
    xs = [x for s in series for x, _ in s["pts"]] + [x for s in series for x, _, _ in s.get("band") or []]
    ys = [y for s in series for _, y in s["pts"]] + [v for s in series for _, lo, hi in s.get("band") or [] for v in (lo, hi)]
    ys += list(hlines)
    x0, x1 = 0, max(xs) if xs else 1
    if y_range is None:
        lo, hi = (min(ys), max(ys)) if ys else (0, 1)
        pad = (hi - lo) * 0.05 or 0.05
        y_range = (lo - pad, hi + pad)
    y0, y1 = y_range
    W, H, L, B, T, R = width, height, 60, 50, 30, 20
    sx = lambda x: L + (x - x0) / (x1 - x0 or 1) * (W - L - R)
    sy = lambda y: T + (y1 - min(max(y, y0), y1)) / (y1 - y0 or 1) * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>']
    for i in range(6):
        xv = x0 + (x1 - x0) * i / 5; yv = y0 + (y1 - y0) * i / 5
        out.append(f'<text x="{sx(xv)}" y="{H-B+16}" text-anchor="middle">{xv:.0f}</text>')
        out.append(f'<text x="{L-6}" y="{sy(yv)+4}" text-anchor="end">{yv:.2f}</text>')
        out.append(f'<line x1="{L}" y1="{sy(yv)}" x2="{W-R}" y2="{sy(yv)}" stroke="#eee"/>')
    out.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">{ylabel}</text>')
    for h in hlines:
        out.append(f'<line x1="{L}" y1="{sy(h)}" x2="{W-R}" y2="{sy(h)}" stroke="gray" stroke-dasharray="5,4"/><text x="{W-R-4}" y="{sy(h)-4}" text-anchor="end" fill="gray">{h}</text>')
    for k, s in enumerate(series):
        c = COLORS[k % len(COLORS)]
        band = s.get("band") or []
        if band:
            poly = [(sx(x), sy(hi)) for x, _, hi in band] + [(sx(x), sy(lo)) for x, lo, _ in reversed(band)]
            out.append(f'<polygon fill="{c}" fill-opacity="0.15" stroke="none" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in poly)}"/>')
    for k, s in enumerate(series):
        c = COLORS[k % len(COLORS)]
        pts = s["pts"]
        dash = ' stroke-dasharray="6,3"' if s.get("dashed") else ""
        if pts:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)}"/>')
            if len(pts) <= 40:
                for x, y in pts:
                    out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{c}"/>')
        out.append(f'<rect x="{W-R-170}" y="{T+8+k*18}" width="12" height="3" fill="{c}"/><text x="{W-R-152}" y="{T+13+k*18}">{s["label"]}</text>')
    out.append("</svg>")
    return "\n".join(out)
