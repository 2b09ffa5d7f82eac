"""GRPO's loss and gradients, computed directly with PyTorch autograd, for tests of DeepSeekSharp's Rl/ code.

The formulas follow TRL's GRPOTrainer (its documented loss): for the sampled token o_t of completion i,
    logp_t   = log_softmax(h_t W^T / temperature)[o_t]
    ratio_t  = exp(logp_t - old_logp_t),  clipped_t = clamp(ratio_t, 1 - eps_low, 1 + eps_high)
    loss_t   = -min(ratio_t A_i, clipped_t A_i) + beta (exp(ref_t - logp_t) - (ref_t - logp_t) - 1)
summed per loss_type: grpo (mean per completion, then mean), bnpo (mean over tokens), dr_grpo (sum / (B * L_max)),
dapo (sum / completion tokens). Advantages: (r - group mean) / (unbiased group std + 1e-4).
Everything here is torch autograd on float64: no derivative is written by hand.

    /usr/bin/python3 tools/reference/grpo_reference.py --out tests/DeepSeekSharp.Tests/Fixtures/grpo
writes one safetensors file per case with the inputs (h, w, targets, completion, old, ref, rewards) and the expected
advantages, loss, dh and dw.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import write_safetensors  # noqa: E402


def advantages(rewards, group):
    r = rewards.view(-1, group)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True)  # unbiased, as torch's default and TRL's
    return ((r - mean) / (std + 1e-4)).view(-1)


def case(name, out, seed, loss_type, beta, eps_low, eps_high, temperature, with_old):
    g = torch.Generator().manual_seed(seed)
    rows, hidden, vocab, group, completions = 24, 16, 40, 3, 6
    h = torch.randn(rows, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=g, dtype=torch.float64) * 0.5
    targets = torch.randint(0, vocab, (rows,), generator=g)
    # Rows 0-1 and the last are prompt/padding rows (-1); the rest belong to six completions of uneven lengths.
    completion = torch.tensor([-1, -1] + [0] * 2 + [1] * 5 + [2] * 3 + [3] * 4 + [4] * 1 + [5] * 6 + [-1], dtype=torch.int64)
    assert completion.numel() == rows
    targets = torch.where(completion >= 0, targets, torch.full_like(targets, -1))
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.25, 2.0], dtype=torch.float64)
    adv = advantages(rewards, group)

    hh = h.clone().requires_grad_(True)
    ww = w.clone().requires_grad_(True)
    logp_all = torch.log_softmax(hh @ ww.T / temperature, dim=-1)
    mask = completion >= 0
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    logp = logp_all.gather(1, safe_targets[:, None])[:, 0]
    with torch.no_grad():
        # A behaviour policy and a reference near the current one (ratios on both sides of the clip range).
        old = logp + torch.randn(rows, generator=g, dtype=torch.float64) * 0.3 if with_old else logp.clone()
        ref = logp + torch.randn(rows, generator=g, dtype=torch.float64) * 0.2
    a_row = torch.where(mask, adv[completion.clamp(min=0)], torch.zeros(rows, dtype=torch.float64))
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * a_row, clipped * a_row)
    if beta != 0:
        per_token = per_token + beta * (torch.exp(ref - logp) - (ref - logp) - 1)
    m = mask.double()
    if loss_type == "grpo":
        per_completion = torch.zeros(completions, dtype=torch.float64).index_add(0, completion.clamp(min=0), per_token * m)
        counts = torch.zeros(completions, dtype=torch.float64).index_add(0, completion.clamp(min=0), m)
        loss = (per_completion / counts.clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum()
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (completions * 8)
    else:
        loss = (per_token * m).sum() / m.sum()
    loss.backward()
    f = lambda t: ("F32", t.detach().to(torch.float32).numpy())
    i = lambda t: ("I32", t.to(torch.int32).numpy())
    tensors = {
        "h": f(h), "w": f(w), "targets": i(targets), "completion": i(completion),
        "old": f(old), "ref": f(ref), "rewards": f(rewards), "advantages": f(adv), "logp": f(logp),
        "loss": ("F64", np.array([loss.item()], dtype=np.float64)), "dh": f(hh.grad), "dw": f(ww.grad),
    }
    meta = {"loss_type": loss_type, "beta": str(beta), "eps_low": str(eps_low), "eps_high": str(eps_high),
            "temperature": str(temperature), "group": str(group), "max_completion_length": "8", "with_old": str(with_old)}
    write_safetensors(os.path.join(out, name + ".safetensors"), tensors, meta)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    case("grpo-beta", args.out, 1, "grpo", 0.04, 0.2, 0.2, 1.0, True)
    case("dapo-clip-higher", args.out, 2, "dapo", 0.0, 0.2, 0.28, 0.7, True)
    case("bnpo-on-policy", args.out, 3, "bnpo", 0.001, 0.2, 0.2, 1.0, False)
    case("dr-grpo", args.out, 4, "dr_grpo", 0.1, 0.1, 0.3, 1.3, True)
    print(f"wrote 4 GRPO cases to {args.out}")


if __name__ == "__main__":
    main()
