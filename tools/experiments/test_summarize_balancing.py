"""Checks summarize_balancing.py on made-up runs whose statistics are worked out by hand.

    python3 tools/experiments/test_summarize_balancing.py
"""
import json, os, subprocess, sys, tempfile, unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def write_run(root, variant, seed, val_loss, val_vio, train_vios, steps=200):
    folder = os.path.join(root, variant, f"seed-{seed}")
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for i, v in enumerate(train_vios):  # train records every 20 steps up to `steps`
            step = steps - 20 * (len(train_vios) - 1 - i)
            f.write(json.dumps({"kind": "train", "step": step, "loss": 2.0, "max_vio": v}) + "\n")
        f.write(json.dumps({"kind": "eval", "step": steps // 2, "val_loss": val_loss + 1, "val_max_vio": 1.0}) + "\n")
        f.write(json.dumps({"kind": "eval", "step": steps, "val_loss": val_loss, "val_max_vio": val_vio}) + "\n")


class SummaryTests(unittest.TestCase):
    def test_means_intervals_and_paired_differences(self):
        with tempfile.TemporaryDirectory() as root:
            # bias: val loss 1, 2, 3 → mean 2, s = 1, 95% CI half-width t(0.975, 2) · 1/√3 = 4.303/1.732 = 2.484.
            for seed, loss in zip((1, 2, 3), (1.0, 2.0, 3.0)):
                write_run(root, "bias", seed, loss, 0.1 * seed, [9.0, 0.2, 0.2, 0.2, 0.2, 0.2])
            # aux-loss: bias + 0.5, 0.7, 0.9 → paired Δ mean 0.7, s = 0.2, half-width 4.303 · 0.2/√3 = 0.4969 (excludes 0).
            for seed, (loss, d) in enumerate(zip((1.0, 2.0, 3.0), (0.5, 0.7, 0.9)), start=1):
                write_run(root, "aux-loss", seed, loss + d, 0.1 * seed, [0.3] * 6)
            # none: seed 3 unfinished (no final evaluation) → left out and named.
            write_run(root, "none", 1, 5.0, 2.0, [2.0] * 6)
            write_run(root, "none", 2, 5.0, 2.0, [2.0] * 6, steps=100)
            out = subprocess.run([sys.executable, os.path.join(HERE, "summarize_balancing.py"), "--root", root,
                                  "--steps", "200", "--variants", "bias", "aux-loss", "none", "--seeds", "1", "2", "3"],
                                 capture_output=True, text=True, check=True).stdout
            self.assertIn("| bias | 1.0000 | 2.0000 | 3.0000 | 3 | 2.0000 ± 2.4843 |", out)
            # Train MaxVio: the records of the last 100 steps (steps 120..200 → five 0.2s), not the 9.0 at step 100.
            self.assertIn("| bias | 0.200 | 0.200 | 0.200 | 3 | 0.200 ± 0.000 |", out)
            self.assertIn("| aux-loss | 3 | +0.7000 ± 0.4969* |", out)
            self.assertIn("| none | 1 | +4.0000 | +1.900 | +1.800 |", out)  # one pair: no interval
            self.assertIn("none/seed-2", out.split("\n")[2])
            self.assertIn("none/seed-3", out.split("\n")[2])
            self.assertIn("| none | 5.0000 | – | – | 1 | 5.0000 |", out)
            for name in ("core-val-loss", "core-val-max-vio", "core-train-max-vio"):
                with open(os.path.join(root, "plots", name + ".svg")) as f:
                    svg = f.read()
                self.assertTrue(svg.startswith("<svg") and svg.rstrip().endswith("</svg>"))
                self.assertIn("<polygon", svg)  # the min–max band
            self.assertFalse(os.path.exists(os.path.join(root, "plots", "gamma-val-loss.svg")))  # no second γ
            self.assertTrue(os.path.exists(os.path.join(root, "summary.md")))


if __name__ == "__main__":
    unittest.main()
