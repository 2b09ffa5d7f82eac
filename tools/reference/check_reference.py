"""Self-checks of the reference implementation and of the written fixtures.

    /usr/bin/python3 tools/reference/check_reference.py [--fixtures tests/DeepSeekSharp.Tests/Fixtures]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_reference as ref  # noqa: E402
import make_fixtures as mf  # noqa: E402

torch.set_num_threads(1)


def check(name, ok, detail=""):
    print(f"{'OK  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        raise SystemExit(1)


def load_case(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    raw = mf.read_safetensors(os.path.join(folder, "model.safetensors"))
    W = {}
    for n, (dt, arr) in raw.items():
        if n.endswith("_scale_inv"):
            continue
        if dt == "F8_E4M3":
            sc = raw[n + "_scale_inv"][1]
            full = np.repeat(np.repeat(sc, 128, 0), 128, 1)[:arr.shape[0], :arr.shape[1]]
            arr = (mf.e4m3_decode(arr).astype(np.float32) * full).astype(np.float32)
        W[n] = torch.from_numpy(np.array(arr, dtype=np.float64))
    exp = {n: torch.from_numpy(np.array(a)) for n, (dt, a) in
           mf.read_safetensors(os.path.join(folder, "expected.safetensors")).items()}
    return cfg, W, exp


def check_fixture_files(root):
    """Recompute every case from its files alone (incl. FP8 dequantisation) and compare with expected."""
    for case in sorted(os.listdir(root)):
        folder = os.path.join(root, case)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        cfg, W, exp = load_case(folder)
        tokens = exp["tokens"][None]
        train = ref.trainable_names(cfg, W)
        for n in train:
            W[n].requires_grad_(True)
        routes = {}
        logits, h = ref.model_forward(cfg, W, tokens, routes)
        mtp = ref.mtp_forward(cfg, W, tokens, h, routes)
        loss = ref.loss_fn(cfg, logits, mtp, tokens, float(exp["mtp_weight"][0]))
        loss.backward()
        err = (logits[0].detach() - exp["logits"].double()).abs().max().item()
        if mtp:
            err = max(err, (mtp[0][0].detach() - exp["mtp_logits"].double()).abs().max().item())
        err = max(err, abs(loss.item() - exp["loss"].item()))
        gerr = 0.0
        for n in train:
            g = W[n].grad if W[n].grad is not None else torch.zeros_like(W[n])
            gerr = max(gerr, (g - exp["grad." + n].double()).abs().max().item())
        same_routes = all(torch.equal(routes[k], exp[k]) for k in routes) and \
            set(routes) == {k for k in exp if k.startswith("route.")}
        grads_complete = {k[5:] for k in exp if k.startswith("grad.")} == set(train)
        if ref.yarn_active(cfg):
            with torch.no_grad():
                plain = ref.model_forward(dict(cfg, rope_scaling=None), W, tokens)[0]
            d = (plain - logits.detach()).abs().max().item()
            check(f"fixture {case}: YaRN matters", d > 0.1, f"(max |logits - plain-RoPE logits| {d:.2f})")
        check(f"fixture {case} recomputed from files", err < 1e-5 and gerr < 1e-6 and same_routes and grads_complete,
              f"(max |d logits/loss| {err:.2e}, max |d grad| {gerr:.2e}, routes equal {same_routes})")


def tiny_cfg():
    c = mf.base_v3_config()
    c.update({"vocab_size": 16, "hidden_size": 8, "intermediate_size": 12, "moe_intermediate_size": 4,
              "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 6, "kv_lora_rank": 4,
              "qk_nope_head_dim": 2, "qk_rope_head_dim": 4, "v_head_dim": 2, "n_routed_experts": 4,
              "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
              "rope_scaling": dict(c["rope_scaling"], original_max_position_embeddings=4),
              "max_position_embeddings": 16})
    return c


def check_gradcheck():
    """torch.autograd.gradcheck (float64 finite differences) on a reduced V3 model with MTP."""
    cfg = tiny_cfg()
    gen = torch.Generator().manual_seed(7)
    W = ref.init_weights(cfg, gen, torch.float64, std=0.3, norm_noise=0.1, bias_std=0.2,
                         std_overrides={"embed_tokens.weight": 1.0, "gate.weight": 1.0})
    tokens = torch.randint(0, cfg["vocab_size"], (1, 7), generator=gen)
    names = ref.trainable_names(cfg, W)
    params = [W[n].clone().requires_grad_(True) for n in names]

    def f(*ps):
        W2 = dict(W)
        W2.update(zip(names, ps))
        W2["model.layers.2.embed_tokens.weight"] = W2["model.embed_tokens.weight"]
        logits, h = ref.model_forward(cfg, W2, tokens)
        mtp = ref.mtp_forward(cfg, W2, tokens, h)
        return ref.loss_fn(cfg, logits, mtp, tokens, 0.3)

    n_el = sum(p.numel() for p in params)
    ok = torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5)
    check("gradcheck reduced V3 (MLA+YaRN, dense+MoE noaux_tc groups, MTP, loss)", ok, f"({n_el} params)")


def check_absorbed():
    for case, spec in mf.CASES.items():
        cfg = spec["cfg"]()
        gen = torch.Generator().manual_seed(spec["seed"])
        W = ref.init_weights(cfg, gen, torch.float64, std=spec["std"], norm_noise=spec["norm_noise"],
                             bias_std=spec["bias_std"], std_overrides=spec["overrides"])
        x = torch.randn(2, 20, cfg["hidden_size"], generator=gen, dtype=torch.float64)
        cos, sin = ref.rope_tables(cfg, torch.arange(20))
        a = ref.mla_attention(cfg, W, "model.layers.0.self_attn.", x, cos, sin)
        b = ref.mla_attention_absorbed(cfg, W, "model.layers.0.self_attn.", x, cos, sin)
        check(f"MLA absorbed == training form ({case})", torch.allclose(a, b, atol=1e-13, rtol=1e-11),
              f"(max diff {(a - b).abs().max().item():.1e})")


def check_rope_layouts():
    """Interleaved rotation == HF's de-interleave + rotate_half, up to the same permutation on q and k,
    so q.k scores agree."""
    cfg = mf.base_v3_config()
    T, dr = 30, cfg["qk_rope_head_dim"]
    cos, sin = ref.rope_tables(cfg, torch.arange(T))
    x = torch.randn(1, T, dr, dtype=torch.float64)
    y = ref.apply_rope_interleaved(x, cos, sin)
    xd = torch.cat([x[..., 0::2], x[..., 1::2]], -1)                       # HF de-interleave
    c2, s2 = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    rot = torch.cat([-xd[..., dr // 2:], xd[..., :dr // 2]], -1)            # rotate_half
    yh = xd * c2 + rot * s2
    check("RoPE interleaved == HF de-interleave + rotate_half", torch.allclose(torch.cat([y[..., 0::2], y[..., 1::2]], -1), yh))
    # complex-number view (official inference code)
    z = torch.view_as_complex(x.view(1, T, dr // 2, 2).contiguous())
    ang = torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))
    yc = torch.view_as_real(z * ang).flatten(-2)
    check("RoPE interleaved == complex-pair rotation", torch.allclose(y, yc))


def check_yarn():
    cfg = mf.base_v3_config()
    inv = ref.yarn_inv_freq(4, 10000.0, 4.0, 16.0, 32.0, 1.0)
    base = ref.rope_inv_freq(4, 10000.0)
    # by hand: corr(32) < 0 -> low 0; corr(1) = 4 ln(16/2pi)/(2 ln 1e4) = 0.203 -> high 1
    check("YaRN d=4: f0 kept, f1 / factor", torch.allclose(inv, torch.tensor([base[0], base[1] / 4])), str(inv.tolist()))
    m = 0.1 * 1.0 * math.log(4) + 1
    check("YaRN softmax scale = (dn+dr)^-0.5 m^2", abs(ref.softmax_scale(cfg) - 12 ** -0.5 * m * m) < 1e-15)
    c2 = dict(cfg, max_position_embeddings=16)
    check("YaRN inactive when max_pos <= original", abs(ref.softmax_scale(c2) - 12 ** -0.5) < 1e-15)
    # a larger dr exercises the ramp
    inv64 = ref.yarn_inv_freq(64, 10000.0, 40.0, 4096.0, 32.0, 1.0)
    b64 = ref.rope_inv_freq(64, 10000.0)
    r = (inv64 / b64)
    check("YaRN d=64 (V3): ratios go 1 -> 1/40 monotonically", bool((r[:-1] >= r[1:] - 1e-15).all()) and
          abs(r[0].item() - 1) < 1e-15 and abs(r[-1].item() - 1 / 40) < 1e-15)


def check_moe_dense_equivalent():
    """moe() (gather/scatter) == dense combination weights x all experts."""
    spec = mf.CASES["v3-tiny"]
    cfg = spec["cfg"]()
    gen = torch.Generator().manual_seed(1)
    W = ref.init_weights(cfg, gen, torch.float64, std=0.1, norm_noise=0.1, bias_std=0.25,
                         std_overrides={"gate.weight": 0.3})
    x = torch.randn(1, 40, cfg["hidden_size"], generator=gen, dtype=torch.float64)
    p = "model.layers.1.mlp."
    y = ref.moe(cfg, W, p, x)
    u = x[0]
    idx, w, s = ref.route(cfg, W[p + "gate.weight"], W[p + "gate.e_score_correction_bias"], u)
    dense = torch.zeros(u.shape[0], cfg["n_routed_experts"], dtype=torch.float64).scatter(1, idx, w)
    y2 = sum(dense[:, e:e + 1] * ref.swiglu(W, f"{p}experts.{e}.", u) for e in range(cfg["n_routed_experts"]))
    y2 = y2 + ref.swiglu(W, p + "shared_experts.", u)
    check("MoE scatter form == dense-combination form", torch.allclose(y[0], y2, atol=1e-14))
    # manual routing of one token, written out longhand
    t = 3
    sc = torch.sigmoid(W[p + "gate.weight"] @ u[t])
    sel = sc + W[p + "gate.e_score_correction_bias"]
    groups = [sorted(sel[2 * g:2 * g + 2].tolist(), reverse=True) for g in range(4)]
    gs = [a + b for a, b in groups]
    keep = sorted(range(4), key=lambda g: -gs[g])[:2]
    allowed = [e for e in range(8) if e // 2 in keep]
    chosen = sorted(sorted(allowed, key=lambda e: -sel[e].item())[:2])
    wt = sc[chosen] / sc[chosen].sum() * 2.5
    got = sorted(zip(idx[t].tolist(), w[t].tolist()))
    check("routing of one token == longhand noaux_tc", [g[0] for g in got] == chosen and
          torch.allclose(torch.tensor([g[1] for g in got], dtype=torch.float64), wt))


def check_batch():
    cfg = mf.CASES["v3-tiny"]["cfg"]()
    gen = torch.Generator().manual_seed(5)
    W = ref.init_weights(cfg, gen, torch.float64, std=0.1, norm_noise=0.1, bias_std=0.25)
    toks = torch.randint(0, 128, (3, 10), generator=gen)
    lb, hb = ref.model_forward(cfg, W, toks)
    ok = all(torch.allclose(lb[i:i + 1], ref.model_forward(cfg, W, toks[i:i + 1])[0], atol=1e-13) for i in range(3))
    check("batched forward == per-sequence forward", ok)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="tests/DeepSeekSharp.Tests/Fixtures")
    ap.add_argument("--skip-gradcheck", action="store_true")
    args = ap.parse_args()
    check("E4M3FN codec (all 256 codes, ties-to-even, saturation)", mf.e4m3_self_check())
    check_rope_layouts()
    check_yarn()
    check_absorbed()
    check_moe_dense_equivalent()
    check_batch()
    if not args.skip_gradcheck:
        check_gradcheck()
    if os.path.isdir(args.fixtures):
        check_fixture_files(args.fixtures)


if __name__ == "__main__":
    main()
