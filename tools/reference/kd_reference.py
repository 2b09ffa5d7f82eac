"""Knowledge-distillation loss reference (float64 autograd), written from shared/spec/training.md and
docs/distillation.md (not ported from any other code base).

    L = kl_weight * tau^2 * KL(p_T^tau || p_S^tau) + ce_weight * CE(y, z_s)

summed over the rows whose target y >= 0 and divided by their count. The teacher is either dense (its logits; p_T^tau =
softmax(z_t / tau)) or top-k (ids [N, K] and log-probabilities at tau = 1, [N, K]) with one of two tail treatments:
  renormalize  p_T^tau over the k ids = softmax(logp / tau); KL over those ids against the student's full-vocabulary
               log-softmax(z_s / tau) read at the ids (Axolotl's top-k KD);
  bucket       a (k+1)-th category "every other id": teacher mass 1 - sum(exp(logp)) tempered the same way (softmax over the
               k+1 tempered log-masses), student mass = its softmax(z_s / tau) summed outside the ids; a left-over
               mass <= k * 2^-22 (the rounding of k float32 log-probs) is taken as 0.
kd_beta (beta) replaces KL(P || Q) over those categories (the vocabulary, or bucket's k + 1) by the generalised
Jensen-Shannon divergence: beta = 1 KL(Q || P); 0 < beta < 1 beta*KL(P || M) + (1 - beta)*KL(Q || M), M = beta*P + (1 - beta)*Q.

Writes, under --out (tests/DeepSeekSharp.Tests/Fixtures):
  kd-op/cases.safetensors      the loss op alone: h [N, H], W [V, H] (student), th [N, Ht], tW [V, Ht] (teacher),
                               targets (I32, -1 = ignored), top-k ids/logprobs for k = 6 and k = V, and per case
                               <case>.loss, <case>.kl, <case>.ce, <case>.dh, <case>.dW
  kd-v2-lite-tiny/<case>.safetensors   the v2-lite-tiny student distilled from the v3-tiny teacher on one sequence:
                               tokens, (top-k cases) teacher ids/logprobs, loss, grad.<HF name> of every student weight
Usage: /usr/bin/python3 tools/reference/kd_reference.py --out tests/DeepSeekSharp.Tests/Fixtures
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_reference as ref  # noqa: E402
import make_fixtures as mf  # noqa: E402
from lora_reference import load_base  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64


def teacher_topk(zt, k):
    """The k largest log-softmax entries per row (tau = 1), as float32 values the C# side reads back exactly."""
    lp = torch.log_softmax(zt, dim=-1)
    vals, ids = torch.topk(lp, k, dim=-1)
    return ids.to(torch.int32), vals.to(torch.float32)


def divergence(logP, logQ, beta):
    """Per row: KL(P || Q) at beta = 0, KL(Q || P) at 1, the generalised JSD between (categories on the last axis)."""
    P, Q = logP.exp(), logQ.exp()

    def kl(p, logp, logm):
        return torch.where(p > 0, p * (logp - logm), torch.zeros_like(p)).sum(-1)

    if beta == 0:
        return kl(P, logP, logQ)
    if beta == 1:
        return kl(Q, logQ, logP)
    logM = torch.logsumexp(torch.stack([logP + np.log(beta), logQ + np.log(1 - beta)]), dim=0)
    return beta * kl(P, logP, logM) + (1 - beta) * kl(Q, logQ, logM)


def kd_loss(zs, y, kl_w, ce_w, tau, dense=None, topk=None, tail="renormalize", beta=0.0):
    """zs [N, V] student logits; y [N] (-1 ignored); dense: teacher logits [N, V]; topk: (ids [N, K], logp [N, K])."""
    mask = y >= 0
    count = int(mask.sum())
    ls = torch.log_softmax(zs / tau, dim=-1)
    if dense is not None:
        lt = torch.log_softmax(dense / tau, dim=-1)
        kl = divergence(lt, ls, beta)
    else:
        ids, logp = topk
        ids = ids.long()
        a = logp.to(F64) / tau
        lq = ls.gather(1, ids)
        if tail == "bucket":
            # below k float32 half-ulps of 1 the left-over mass is rounding noise of the stored log-probs: taken as 0
            tail_mass = 1 - logp.to(F64).exp().sum(-1)
            tail_mass = torch.where(tail_mass > ids.shape[1] * 2.0 ** -22, tail_mass, torch.zeros_like(tail_mass))
            a = torch.cat([a, (tail_mass.log() / tau)[:, None]], dim=1)
            outside = ls.scatter(1, ids, float("-inf"))
            lq = torch.cat([lq, torch.logsumexp(outside, dim=-1, keepdim=True)], dim=1)
        logP = a - torch.logsumexp(a, dim=-1, keepdim=True)
        if beta != 0:
            assert tail == "bucket", "kd_beta needs the student side to be a distribution"
        kl = divergence(logP, lq, beta)
    ce = -torch.log_softmax(zs, dim=-1).gather(1, y.clamp(min=0).long()[:, None])[:, 0]
    kl_sum, ce_sum = kl[mask].sum(), ce[mask].sum()
    total = (kl_w * tau * tau * kl_sum + ce_w * ce_sum) / count
    return total, kl_sum / count, ce_sum / count


OP_CASES = [
    # name, tau, kl_weight, ce_weight, teacher ("dense" | k), tail
    ("dense-t1", 1.0, 0.5, 0.5, "dense", None),
    ("dense-t2", 2.0, 0.7, 0.3, "dense", None),
    ("top6-renormalize-t1", 1.0, 1.0, 0.0, 6, "renormalize"),
    ("top6-renormalize-t2", 2.0, 0.5, 0.5, 6, "renormalize"),
    ("top6-bucket-t1", 1.0, 0.5, 0.5, 6, "bucket"),
    ("top6-bucket-t2", 2.0, 0.8, 0.25, 6, "bucket"),
    ("topV-renormalize-t2", 2.0, 0.7, 0.3, "V", "renormalize"),
    ("topV-bucket-t2", 2.0, 0.7, 0.3, "V", "bucket"),
    # kd_beta: reverse KL and generalised JSD
    ("dense-b1-t1", 1.0, 0.6, 0.4, "dense", None, 1.0),
    ("dense-b0.5-t2", 2.0, 0.7, 0.3, "dense", None, 0.5),
    ("dense-b0.1-t1", 1.0, 1.0, 0.0, "dense", None, 0.1),
    ("top6-bucket-b1-t2", 2.0, 0.8, 0.2, 6, "bucket", 1.0),
    ("top6-bucket-b0.5-t1", 1.0, 0.5, 0.5, 6, "bucket", 0.5),
    ("topV-bucket-b0.5-t2", 2.0, 0.7, 0.3, "V", "bucket", 0.5),
]


def build_op(out_dir):
    g = torch.Generator().manual_seed(4242)
    N, H, Ht, V = 12, 16, 20, 40
    h = torch.randn(N, H, generator=g, dtype=F64).float().to(F64)
    W = (0.5 * torch.randn(V, H, generator=g, dtype=F64)).float().to(F64)
    th = torch.randn(N, Ht, generator=g, dtype=F64).float().to(F64)
    tW = (0.6 * torch.randn(V, Ht, generator=g, dtype=F64)).float().to(F64)
    y = torch.randint(0, V, (N,), generator=g)
    y[[2, 7, 11]] = -1
    zt = th @ tW.t()
    tops = {6: teacher_topk(zt, 6), "V": teacher_topk(zt, V)}
    out = {"h": ("F32", h.numpy()), "W": ("F32", W.numpy()), "th": ("F32", th.numpy()), "tW": ("F32", tW.numpy()),
           "targets": ("I32", y.to(torch.int32).numpy())}
    for key, (ids, lp) in tops.items():
        out[f"top{key}.ids"] = ("I32", ids.numpy())
        out[f"top{key}.logprobs"] = ("F32", lp.numpy())
    for name, tau, klw, cew, teacher, tail, *rest in OP_CASES:
        beta = rest[0] if rest else 0.0
        hh, WW = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
        zs = hh @ WW.t()
        if teacher == "dense":
            total, kl, ce = kd_loss(zs, y, klw, cew, tau, dense=zt, beta=beta)
        else:
            total, kl, ce = kd_loss(zs, y, klw, cew, tau, topk=tops[teacher], tail=tail, beta=beta)
        total.backward()
        for part, val in (("loss", total), ("kl", kl), ("ce", ce)):
            out[f"{name}.{part}"] = ("F32", np.array([val.item()]))
        out[f"{name}.dh"] = ("F32", hh.grad.numpy())
        out[f"{name}.dW"] = ("F32", WW.grad.numpy())
    # offline with k = V is online: the reference agrees with itself before the C# side is asked to
    for tail in ("renormalize", "bucket"):
        assert abs(out[f"topV-{tail}-t2.loss"][1][0] - out["dense-t2.loss"][1][0]) < 1e-6
    assert abs(out["topV-bucket-b0.5-t2.loss"][1][0] - out["dense-b0.5-t2.loss"][1][0]) < 1e-6
    os.makedirs(os.path.join(out_dir, "kd-op"), exist_ok=True)
    mf.write_safetensors(os.path.join(out_dir, "kd-op", "cases.safetensors"), out)


MODEL_CASES = [
    # name, tau, kl_weight, ce_weight, k (None = dense), tail
    ("full-t1", 1.0, 0.5, 0.5, None, None),
    ("full-t2", 2.0, 0.5, 0.5, None, None),
    ("top8-t1", 1.0, 0.5, 0.5, 8, "renormalize"),
    ("top8-t2", 2.0, 0.5, 0.5, 8, "renormalize"),
]


def build_model(fixtures):
    tcfg, tW = load_base(os.path.join(fixtures, "v3-tiny"))
    scfg, sW = load_base(os.path.join(fixtures, "v2-lite-tiny"))
    assert tcfg["vocab_size"] == scfg["vocab_size"]
    g = torch.Generator().manual_seed(7373)
    T = 24
    tokens = torch.randint(0, scfg["vocab_size"], (1, T), generator=g)
    with torch.no_grad():
        zt = ref.model_forward(tcfg, tW, tokens)[0][0, :T - 1]
    y = tokens[0, 1:]
    names = ref.trainable_names(scfg, sW)
    case_dir = os.path.join(fixtures, "kd-v2-lite-tiny")
    os.makedirs(case_dir, exist_ok=True)
    for name, tau, klw, cew, k, tail in MODEL_CASES:
        W = {n: t.clone().requires_grad_(n in names) for n, t in sW.items()}
        zs = ref.model_forward(scfg, W, tokens)[0][0, :T - 1]
        out = {"tokens": ("I64", tokens[0].numpy())}
        if k is None:
            total, _, _ = kd_loss(zs, y, klw, cew, tau, dense=zt)
        else:
            ids, lp = teacher_topk(zt, k)
            # a float32 engine must pick the same k ids: the k-th and (k+1)-th teacher logits are well apart
            srt = torch.sort(zt, dim=-1, descending=True).values
            assert float((srt[:, k - 1] - srt[:, k]).min()) > 1e-4
            total, _, _ = kd_loss(zs, y, klw, cew, tau, topk=(ids, lp), tail=tail)
            out["teacher.ids"] = ("I32", ids.numpy())
            out["teacher.logprobs"] = ("F32", lp.numpy())
        total.backward()
        out["loss"] = ("F32", np.array([total.item()]))
        out["settings"] = ("F32", np.array([tau, klw, cew, k or 0]))
        for n in names:
            out["grad." + n] = ("F32", W[n].grad.numpy())
        path = os.path.join(case_dir, name + ".safetensors")
        mf.write_safetensors(path, out)
        assert os.path.getsize(path) < 1 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the Fixtures folder (reads v3-tiny and v2-lite-tiny there)")
    args = ap.parse_args()
    build_op(args.out)
    build_model(args.out)


if __name__ == "__main__":
    main()
