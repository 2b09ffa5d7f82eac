#!/usr/bin/env python3
"""Summarises tools/experiments/sft_gsm8k.sh: the base model and every fine-tuned seed on GSM8K test (masked loss per
trained answer token, exact-match accuracy of greedy answers) and on the general-domain held-out set (forgetting),
per seed and as mean ± 95% CI, and draws the GSM8K test loss curves during fine-tuning (docs/img/sft-gsm8k.svg)."""
import argparse, json, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "plots"))
from summarize_balancing import mean_ci, fmt  # noqa: E402
from svg_chart import line_chart  # noqa: E402


def measures(folder):
    def read(name):
        with open(os.path.join(folder, f"eval-{name}.json")) as f:
            return json.load(f)
    loss, general, acc = read("gsm8k-loss"), read("general-loss"), read("gsm8k-accuracy")
    return {"gsm8k_loss": loss["loss"], "accuracy": acc["accuracy"], "correct": acc["correct"], "problems": acc["examples"],
            "general_loss": general["loss"], "no_answer": acc["no_answer"]}


def curve(folder, kind, key):
    pts = []
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == kind and key in r:
                pts.append((r["step"], r[key]))
    return pts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="runs/sft-gsm8k")
    ap.add_argument("--seeds", nargs="+", default=["1", "2", "3"])
    ap.add_argument("--svg", default="docs/img/sft-gsm8k.svg")
    a = ap.parse_args()
    base = measures(os.path.join(a.root, "base"))
    runs = {s: measures(os.path.join(a.root, f"sft-seed-{s}")) for s in a.seeds}
    print("| model | GSM8K test masked loss | GSM8K exact match | general held-out loss |")
    print("|---|---|---|---|")
    print(f"| base | {base['gsm8k_loss']:.4f} | {base['accuracy']*100:.2f} % ({base['correct']}/{base['problems']}) | {base['general_loss']:.4f} |")
    for s, m in runs.items():
        print(f"| SFT, seed {s} | {m['gsm8k_loss']:.4f} | {m['accuracy']*100:.2f} % ({m['correct']}/{m['problems']}) | {m['general_loss']:.4f} |")
    rows = list(runs.values())
    lm, lh = mean_ci([m["gsm8k_loss"] for m in rows])
    am, ah = mean_ci([100 * m["accuracy"] for m in rows])
    gm, gh = mean_ci([m["general_loss"] for m in rows])
    print(f"| SFT, mean ± 95% CI ({len(rows)} seeds) | {fmt(lm, lh, 4)} | {fmt(am, ah, 2)} % | {fmt(gm, gh, 4)} |")
    fm, fh = mean_ci([m["general_loss"] - base["general_loss"] for m in rows])
    dm, dh = mean_ci([m["gsm8k_loss"] - base["gsm8k_loss"] for m in rows])
    print(f"\nGSM8K test loss change: {fmt(dm, dh, 4)} nats/token; general held-out loss change (forgetting): {fmt(fm, fh, 4)} nats/token")
    series = []
    for s in a.seeds:
        folder = os.path.join(a.root, f"sft-seed-{s}")
        series.append({"label": f"GSM8K test loss, seed {s}", "pts": curve(folder, "eval", "val_loss")})
        series.append({"label": f"train loss, seed {s}", "pts": curve(folder, "train", "loss"), "dashed": True})
    os.makedirs(os.path.dirname(a.svg), exist_ok=True)
    with open(a.svg, "w") as f:
        f.write(line_chart(series, title="Full SFT on GSM8K: masked loss per answer token", ylabel="nats/token",
                           hlines=[base["gsm8k_loss"]]))
    print(f"wrote {a.svg} (dashed line: the base model's GSM8K test loss)")


if __name__ == "__main__":
    main()
