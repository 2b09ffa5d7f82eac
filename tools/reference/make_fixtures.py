"""Generate DeepSeekSharp's reference fixtures (deterministic; fixed seeds).

    /usr/bin/python3 tools/reference/make_fixtures.py --out tests/DeepSeekSharp.Tests/Fixtures

Each case folder gets config.json, model.safetensors and expected.safetensors (see README.md).
The model is computed in float64 by deepseek_reference.py; results are stored as float32.
"""
import argparse
import copy
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_reference as ref  # noqa: E402

torch.set_num_threads(1)


# ============================================================================= safetensors

_DT = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
       "F8_E4M3": np.uint8, "F16": np.float16}


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_str, np.ndarray)}; names sorted, data contiguous in that order."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dt, arr = tensors[name]
        arr = np.ascontiguousarray(arr.astype(np.dtype(_DT[dt]).newbyteorder("<"), copy=False))
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=np.dtype(_DT[info["dtype"]]).newbyteorder("<"))
        out[name] = (info["dtype"], arr.reshape(info["shape"]))
    assert base + max(i["data_offsets"][1] for k, i in header.items() if k != "__metadata__") == len(data)
    return out


# ============================================================================= FP8 E4M3FN

def e4m3_decode(codes):
    """uint8 codes -> float64 (OCP E4M3FN: bias 7, subnormals, no inf, S.1111.111 = NaN)."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e = (c >> 3) & 0xF
    m = c & 0x7
    val = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    val = np.where((c & 0x7F) == 0x7F, np.nan, val)
    return sign * val


_E4M3_POS = e4m3_decode(np.arange(0, 127, dtype=np.uint8))   # codes 0x00..0x7E, ascending values


def e4m3_encode(x):
    """float -> uint8 codes: round to nearest, ties to even, saturate finite values to +-448, NaN -> 0x7F."""
    x = np.asarray(x, dtype=np.float64)
    neg = np.signbit(x)
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(_E4M3_POS, a, side="left"), 0, 126)
    lo = np.maximum(hi - 1, 0)
    dhi = _E4M3_POS[hi] - a
    dlo = a - _E4M3_POS[lo]
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo)
    code = np.where(_E4M3_POS[hi] == a, hi, code)
    code = code.astype(np.uint8) | np.where(neg, 0x80, 0).astype(np.uint8)
    code = np.where(np.isnan(x), np.uint8(0x7F), code)
    return code.astype(np.uint8)


def e4m3_self_check():
    v = e4m3_decode(np.arange(256, dtype=np.uint8))
    assert np.isnan(v[0x7F]) and np.isnan(v[0xFF]) and np.isnan(v).sum() == 2
    assert v[0x7E] == 448.0 and v[0xFE] == -448.0 and v[0x01] == 2.0 ** -9 and v[0x08] == 2.0 ** -6
    assert v[0x38] == 1.0 and v[0x07] == 7 / 8 * 2.0 ** -6
    fin = ~np.isnan(v)
    assert (np.diff(v[:0x7F]) > 0).all()                          # monotone positive half
    codes = np.arange(256)[fin]
    assert (e4m3_encode(v[fin]) == codes).all()                    # decode->encode round trip (incl. -0 = 0x80)
    # rounding: midpoints go to the even code, slightly-off midpoints go to the nearest
    pos = _E4M3_POS
    mid = (pos[:-1] + pos[1:]) / 2
    enc = e4m3_encode(mid)
    lo_codes = np.arange(126)
    assert (enc == np.where(lo_codes % 2 == 0, lo_codes, lo_codes + 1)).all()
    assert (e4m3_encode(np.nextafter(mid, 0)) == lo_codes).all()
    assert (e4m3_encode(np.nextafter(mid, 1e9)) == lo_codes + 1).all()
    assert e4m3_encode(1e9) == 0x7E and e4m3_encode(-500.0) == 0xFE and e4m3_encode(464.0) == 0x7E
    assert e4m3_encode(2.0 ** -10) == 0x00 and e4m3_encode(2.0 ** -10 * 1.0001) == 0x01
    assert e4m3_encode(np.nan) == 0x7F
    return True


def quantize_fp8_block(w, block=128):
    """w float32 [out, in] -> (codes uint8 [out, in], scale_inv float32 [ceil(out/128), ceil(in/128)],
    dequantised float32).  Per block: s = amax/448 (float32; 1 if the block is all zero);
    q = E4M3(w / s) (the division done in float32); dequant = float32(q) * s (float32)."""
    w = np.asarray(w, dtype=np.float32)
    O, I = w.shape
    nb_o, nb_i = -(-O // block), -(-I // block)
    codes = np.zeros((O, I), np.uint8)
    scale = np.zeros((nb_o, nb_i), np.float32)
    deq = np.zeros((O, I), np.float32)
    for bo in range(nb_o):
        for bi in range(nb_i):
            sl = (slice(bo * block, min(O, (bo + 1) * block)), slice(bi * block, min(I, (bi + 1) * block)))
            blk = w[sl]
            amax = np.float32(np.abs(blk).max())
            s = np.float32(1.0) if amax == 0 else np.float32(amax / np.float32(448.0))
            q = e4m3_encode((blk / s).astype(np.float32))
            codes[sl] = q
            scale[bo, bi] = s
            deq[sl] = (e4m3_decode(q).astype(np.float32) * s).astype(np.float32)
    return codes, scale, deq


def fp8_quantized_name(name):
    """Attention and MLP/expert/shared-expert Linear weights are FP8; everything else stays F32."""
    if not name.endswith(".weight"):
        return False
    attn = any(name.endswith(f"self_attn.{x}.weight") for x in
               ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"))
    mlp = ".mlp." in name and any(name.endswith(f"{x}.weight") for x in ("gate_proj", "up_proj", "down_proj"))
    return attn or mlp


# ============================================================================= configs

def base_v3_config():
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 128,
        "hidden_size": 32,
        "intermediate_size": 160,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 3,
        "num_nextn_predict_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_shared_experts": 1,
        "n_routed_experts": 8,
        "ep_size": 1,
        "routed_scaling_factor": 2.5,
        "kv_lora_rank": 16,
        "q_lora_rank": 24,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "qk_nope_head_dim": 8,
        "topk_method": "noaux_tc",
        "n_group": 4,
        "topk_group": 2,
        "num_experts_per_tok": 2,
        "moe_layer_freq": 1,
        "first_k_dense_replace": 1,
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "aux_loss_alpha": 0.001,
        "seq_aux": True,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-6,
        "use_cache": True,
        "pad_token_id": None,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "rope_theta": 10000,
        "rope_scaling": {
            "type": "yarn", "factor": 4, "original_max_position_embeddings": 16,
            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
        },
        "attention_bias": False,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
        "transformers_version": "4.46.3",
    }


def v2_lite_config():
    c = base_v3_config()
    for k in ("num_nextn_predict_layers",):
        del c[k]
    c.update({
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "intermediate_size": 64,
        "q_lora_rank": None,
        "scoring_func": "softmax",
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "n_routed_experts": 8,
        "num_experts_per_tok": 3,
        "n_shared_experts": 2,
        "rope_scaling": {
            "type": "yarn", "factor": 4, "original_max_position_embeddings": 16,
            "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707,
        },
    })
    return c


def v2_group_config():
    c = base_v3_config()
    del c["num_nextn_predict_layers"]
    c.update({
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "intermediate_size": 64,
        "q_lora_rank": 24,
        "scoring_func": "softmax",
        "topk_method": "group_limited_greedy",
        "n_group": 4,
        "topk_group": 2,
        "norm_topk_prob": False,
        "routed_scaling_factor": 16.0,
        "n_routed_experts": 8,
        # k = 3 > topk_group so that group limiting can change the choice (with k <= topk_group and
        # group score = max score, the unrestricted top-k always lies inside the kept groups).
        "num_experts_per_tok": 3,
        "n_shared_experts": 1,
        "rope_scaling": None,
    })
    return c


# ============================================================================= the cases

V3_STD = {
    "embed_tokens.weight": 0.5,
    "lm_head.weight": 0.25,
    "q_b_proj.weight": 0.3,
    "q_proj.weight": 0.12,
    "kv_b_proj.weight": 0.3,
    "kv_a_proj_with_mqa.weight": 0.15,
    "gate.weight": 0.3,
    "eh_proj.weight": 0.15,
}


CASES = {
    "v3-tiny": dict(cfg=base_v3_config, seed=1246, T=24, mtp_weight=0.3, std=0.1, norm_noise=0.1,
                    bias_std=0.25, overrides=V3_STD, fp8=False),
    "v3-tiny-fp8": dict(cfg=base_v3_config, seed=1246, T=24, mtp_weight=0.3, std=0.1, norm_noise=0.1,
                        bias_std=0.25, overrides=V3_STD, fp8=True),
    "v2-lite-tiny": dict(cfg=v2_lite_config, seed=2354, T=24, mtp_weight=0.0, std=0.1, norm_noise=0.1,
                         bias_std=0.0, overrides=V3_STD, fp8=False),
    "v2-group-tiny": dict(cfg=v2_group_config, seed=3464, T=12, mtp_weight=0.0, std=0.1, norm_noise=0.1,
                          bias_std=0.0, overrides=V3_STD, fp8=False),
}


def expert_down_overrides(cfg, std):
    return {f"experts.{e}.down_proj.weight": std for e in range(cfg["n_routed_experts"])}


# ============================================================================= routing assertions

MIN_MARGIN = 1e-3

def collect_moe_inputs(cfg, W, tokens):
    """Run the model and capture the MoE input z for every MoE layer (main + MTP)."""
    captured = {}
    orig = ref.moe

    def spy(cfg_, W_, p, x, routes=None, key=None):
        captured[key] = x.detach().reshape(-1, x.shape[-1]).clone()
        return orig(cfg_, W_, p, x, routes, key)

    ref.moe = spy
    try:
        with torch.no_grad():
            logits, h = ref.model_forward(cfg, W, tokens)
            ref.mtp_forward(cfg, W, tokens, h)
    finally:
        ref.moe = orig
    return captured


def decision_margin(cfg, gate_w, bias, z):
    """Smallest gap, over tokens, at the routing decision boundaries (k-th vs (k+1)-th allowed expert,
    topk_group-th vs next group).  Must be comfortably above float32 noise so a float32 engine
    makes the same choices as this float64 reference."""
    E, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    logits = z @ gate_w.t()
    s = torch.sigmoid(logits) if cfg["scoring_func"] == "sigmoid" else torch.softmax(logits, -1)
    method = cfg.get("topk_method")
    sel = s + bias if (method == "noaux_tc" and bias is not None) else s.clone()
    margins = []
    G, tg = cfg.get("n_group", 1) or 1, cfg.get("topk_group", 1) or 1
    if G > 1 and method in ("noaux_tc", "group_limited_greedy"):
        g = sel.view(-1, G, E // G)
        gs = g.sort(-1, descending=True).values[..., :2].sum(-1) if method == "noaux_tc" else g.max(-1).values
        gss, gidx = gs.sort(-1, descending=True)
        margins.append(gss[:, tg - 1] - gss[:, tg])
        keep = torch.zeros_like(gs, dtype=torch.bool).scatter_(1, gidx[:, :tg], True)
        sel = sel.masked_fill(~keep[:, :, None].expand_as(g).reshape(-1, E), float("-inf"))
    ss = sel.sort(-1, descending=True).values
    margins.append(ss[:, k - 1] - ss[:, k])
    return float(torch.stack(margins).min())


def routing_diffs(cfg, W, tokens):
    """Per MoE layer: #tokens whose selection changes without the bias / without group limiting."""
    out = {}
    for key, z in collect_moe_inputs(cfg, W, tokens).items():
        layer = int(key.replace("route.layer", ""))
        p = f"model.layers.{layer}.mlp."
        bias = W.get(p + "gate.e_score_correction_bias")
        full_idx, _, s_raw = ref.route(cfg, W[p + "gate.weight"], bias, z)
        full = full_idx.sort(-1).values
        if bias is not None:
            # HF's modeling_deepseek (V3) fills dropped groups with 0.0 instead of -inf; keep every chosen
            # biased score > 0 so that quirk cannot change the fixture's selection.
            assert float((s_raw + bias).gather(1, full_idx).min()) > 0.05
        nob = ref.route(cfg, W[p + "gate.weight"], bias, z, use_bias=False)[0].sort(-1).values
        nog = ref.route(cfg, W[p + "gate.weight"], bias, z, use_groups=False)[0].sort(-1).values
        margin = decision_margin(cfg, W[p + "gate.weight"], bias, z)
        out[layer] = (int((full != nob).any(-1).sum()), int((full != nog).any(-1).sum()), z.shape[0],
                      round(margin, 6))
    return out


# ============================================================================= one case

def build_case(name, spec, out_dir):
    cfg = spec["cfg"]()
    if spec["fp8"]:
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [128, 128]}
    gen = torch.Generator().manual_seed(spec["seed"])
    overrides = dict(spec["overrides"])
    if name == "v2-group-tiny":   # routed_scaling_factor 16: shrink the routed experts' outputs
        overrides.update(expert_down_overrides(cfg, 0.03))
    W = ref.init_weights(cfg, gen, torch.float64, std=spec["std"], norm_noise=spec["norm_noise"],
                         bias_std=spec["bias_std"], std_overrides=overrides)
    T = spec["T"]
    tokens = torch.randint(0, cfg["vocab_size"], (1, T), generator=gen)

    # Stored weights are float32; the float64 model uses exactly those float32 values
    # (for FP8: exactly the dequantised values float32(e4m3) * scale_inv).
    model_tensors = {}
    for n_, t in W.items():
        w32 = t.to(torch.float32).numpy()
        if spec["fp8"] and fp8_quantized_name(n_):
            codes, scale, deq = quantize_fp8_block(w32)
            model_tensors[n_] = ("F8_E4M3", codes)
            model_tensors[n_ + "_scale_inv"] = ("F32", scale)
            w32 = deq
        else:
            model_tensors[n_] = ("F32", w32)
        W[n_] = torch.from_numpy(w32.astype(np.float64))
    # MTP copies must equal the main tensors
    for k in range(1, ref.num_mtp(cfg) + 1):
        L = cfg["num_hidden_layers"] + k - 1
        assert torch.equal(W[f"model.layers.{L}.embed_tokens.weight"], W["model.embed_tokens.weight"])
        assert torch.equal(W[f"model.layers.{L}.shared_head.head.weight"], W["lm_head.weight"])

    # ---- routing must be non-trivial
    diffs = routing_diffs(cfg, W, tokens)
    method = cfg.get("topk_method")
    total_bias = sum(d[0] for d in diffs.values())
    total_group = sum(d[1] for d in diffs.values())
    print(f"  [{name}] routing per layer (bias-changes, group-changes, tokens, min margin): {diffs}")
    assert min(d[3] for d in diffs.values()) >= MIN_MARGIN, "routing too close to a tie for float32"
    if method == "noaux_tc":
        assert total_bias >= 5, "bias must change the selection for several tokens"
        assert all(d[0] >= 1 for d in diffs.values()), "bias must matter in every MoE layer"
    if cfg.get("n_group", 1) > 1:
        assert total_group >= 3, "group limiting must change the selection for some tokens"
        assert all(d[1] >= 1 for d in diffs.values()), "group limiting must matter in every MoE layer"

    # ---- forward + backward in float64
    train = ref.trainable_names(cfg, W)
    for n_ in train:
        W[n_].requires_grad_(True)
    routes = {}
    logits, h = ref.model_forward(cfg, W, tokens, routes)
    mtp = ref.mtp_forward(cfg, W, tokens, h, routes)
    loss = ref.loss_fn(cfg, logits, mtp, tokens, spec["mtp_weight"])
    loss.backward()

    # ---- self-check: absorbed MLA gives the same logits
    with torch.no_grad():
        la, ha = ref.model_forward(cfg, W, tokens, absorbed=True)
        assert torch.allclose(la, logits, atol=1e-12, rtol=1e-10), (la - logits).abs().max()
        if mtp:
            ma = ref.mtp_forward(cfg, W, tokens, ha, absorbed=True)
            assert torch.allclose(ma[0], mtp[0], atol=1e-12, rtol=1e-10)

    stats = dict(logits_std=float(logits.std()), h_rms=float(h.pow(2).mean().sqrt()), loss=float(loss))
    print(f"  [{name}] {stats}")

    exp = {"tokens": ("I64", tokens[0].numpy().astype(np.int64)),
           "logits": ("F32", logits[0].detach().numpy().astype(np.float32)),
           "loss": ("F32", np.array([loss.item()], np.float32)),
           "mtp_weight": ("F32", np.array([spec["mtp_weight"]], np.float32))}
    if mtp:
        exp["mtp_logits"] = ("F32", mtp[0][0].detach().numpy().astype(np.float32))
    for key, idx in routes.items():
        exp[key] = ("I64", idx.numpy().astype(np.int64))
    for n_ in train:
        g = W[n_].grad
        g = torch.zeros_like(W[n_]) if g is None else g
        exp["grad." + n_] = ("F32", g.detach().numpy().astype(np.float32))

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(case_dir, "model.safetensors"), model_tensors, {"format": "pt"})
    write_safetensors(os.path.join(case_dir, "expected.safetensors"), exp,
                      {"format": "pt", "generator": "tools/reference/make_fixtures.py", "case": name})

    # ---- round-trip check of the written files
    back = read_safetensors(os.path.join(case_dir, "model.safetensors"))
    for n_, (dt, arr) in model_tensors.items():
        assert back[n_][0] == dt and np.array_equal(back[n_][1], arr)
    if spec["fp8"]:
        for n_ in W:
            if fp8_quantized_name(n_):
                deq = (e4m3_decode(back[n_][1]).astype(np.float32).reshape(back[n_][1].shape))
                sc = back[n_ + "_scale_inv"][1]
                full = np.repeat(np.repeat(sc, 128, 0), 128, 1)[:deq.shape[0], :deq.shape[1]]
                assert np.array_equal((deq * full).astype(np.float32), W[n_].detach().numpy().astype(np.float32))
    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    print(f"  [{name}] wrote {case_dir} ({size} bytes, {len(exp)} expected tensors)")
    assert size < 1_000_000
    return cfg, W


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/DeepSeekSharp.Tests/Fixtures")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    assert e4m3_self_check()
    print("E4M3FN encoder/decoder self-check: OK (256 codes)")
    for name in args.cases:
        build_case(name, CASES[name], args.out)


if __name__ == "__main__":
    main()
