"""ESFT expert scores on the reference model (training.md, ESFT), written as test fixtures.

    /usr/bin/python3 tools/reference/esft_reference.py --out tests/DeepSeekSharp.Tests/Fixtures/esft

For the v3-tiny (sigmoid + bias, norm_topk_prob) and v2-lite-tiny (softmax, raw weights) fixtures: a few seeded
sequences, each with a mask of the positions that count (a fine-tuning example's trained tokens), run through the
float64 reference; per decoder MoE layer l and routed expert i, with K experts per token and L_seq the counted
tokens of a sequence (sequences without one are skipped, N counts the others):

    token score  r_i = 1/N * sum_seq 1/L_seq * sum_t [i chosen for t] / K
    gate score   g_i = 1/N * sum_seq 1/L_seq * sum_t g_it

g_it = the affinity score s_it (sigmoid or softmax, no balancing bias) of a chosen expert, divided by the sum over
the token's K chosen when norm_topk_prob (+1e-20), never times routed_scaling_factor; 0 when not chosen.
Writes scores-<case>.json: {"case", "sequences": [{"tokens", "counted"}], "token_scores", "gate_scores"} (the
score tables in the ESFT release's summary.json layout, full float64 precision).
Sequences are drawn until every routing decision has a score gap >= 1e-3 (as the base fixtures), so a float32
engine must choose the same experts.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_reference as ref  # noqa: E402
import make_fixtures as mf  # noqa: E402
from lora_reference import load_base  # noqa: E402

torch.set_num_threads(1)

# (length, first counted position, stride of counted positions after it); the last sequence counts nothing.
SHAPES = [(24, 0, 1), (17, 6, 1), (31, 10, 2), (9, 9, 1)]


def draw_sequences(cfg, W, seed):
    """Seeded sequences whose routing has margins >= 1e-3 in every decoder MoE layer."""
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed + attempt)
        seqs, ok = [], True
        for length, first, stride in SHAPES:
            tokens = torch.randint(0, cfg["vocab_size"], (1, length), generator=gen)
            counted = [1 if t >= first and (t - first) % stride == 0 else 0 for t in range(length)]
            for key, z in mf.collect_moe_inputs(cfg, W, tokens).items():
                layer = int(key.replace("route.layer", ""))
                if layer >= cfg["num_hidden_layers"]:
                    continue
                p = f"model.layers.{layer}.mlp."
                if mf.decision_margin(cfg, W[p + "gate.weight"], W.get(p + "gate.e_score_correction_bias"), z) < 1e-3:
                    ok = False
            seqs.append((tokens, counted))
        if ok:
            return seqs
    raise SystemExit("no seed gave routing margins >= 1e-3")


def scores(cfg, W, seqs):
    E, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    layers = [l for l in range(cfg["num_hidden_layers"]) if ref.is_moe_layer(cfg, l)]
    tok = {l: torch.zeros(E, dtype=torch.float64) for l in layers}
    gate = {l: torch.zeros(E, dtype=torch.float64) for l in layers}
    n = 0
    for tokens, counted in seqs:
        L = sum(counted)
        if L == 0:
            continue
        n += 1
        mask = torch.tensor(counted, dtype=torch.bool)
        inputs = mf.collect_moe_inputs(cfg, W, tokens)
        for l in layers:
            p = f"model.layers.{l}.mlp."
            idx, _, s = ref.route(cfg, W[p + "gate.weight"], W.get(p + "gate.e_score_correction_bias"), inputs[f"route.layer{l}"])
            g = s.gather(1, idx)
            if ref.cfg_get(cfg, "norm_topk_prob", False):
                g = g / (g.sum(-1, keepdim=True) + 1e-20)
            idx, g = idx[mask], g[mask]
            seq_tok = torch.zeros(E, dtype=torch.float64).index_add(0, idx.reshape(-1), torch.full((idx.numel(),), 1.0 / K, dtype=torch.float64))
            seq_gate = torch.zeros(E, dtype=torch.float64).index_add(0, idx.reshape(-1), g.reshape(-1))
            tok[l] += seq_tok / L
            gate[l] += seq_gate / L
    table = lambda t: {str(l): {str(e): float(v) / n for e, v in enumerate(t[l].tolist())} for l in layers}  # noqa: E731
    return table(tok), table(gate), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "../../tests/DeepSeekSharp.Tests/Fixtures"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    for case, seed in (("v3-tiny", 1000), ("v2-lite-tiny", 2000)):
        cfg, W = load_base(os.path.join(args.fixtures, case))
        seqs = draw_sequences(cfg, W, seed)
        with torch.no_grad():
            tok, gate, n = scores(cfg, W, seqs)
        for layer, row in tok.items():
            assert abs(sum(row.values()) - 1) < 1e-12, (case, layer)  # token scores sum to 1 per layer
        out = {
            "case": case,
            "sequences": [{"tokens": t[0].tolist(), "counted": c} for t, c in seqs],
            "token_scores": tok,
            "gate_scores": gate,
        }
        path = os.path.join(args.out, f"scores-{case}.json")
        with open(path, "w") as f:
            json.dump(out, f)
            f.write("\n")
        sums = {l: round(sum(r.values()), 4) for l, r in gate.items()}
        print(f"{path}: {len(seqs)} sequences ({n} counted), gate-score sums per layer {sums}")


if __name__ == "__main__":
    main()
