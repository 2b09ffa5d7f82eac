"""Independent PyTorch reference of the DeepSeek-V3 model family (V3/R1, V2, V2-Lite).

Written from DeepSeekSharp's spec (shared/spec/model.md), not from any other implementation.
Weights are a plain dict {HF weight name: tensor}; the config is the HF config.json dict.
Everything works on any float dtype (the fixtures use float64, the benchmark float32) and on
activations shaped [B, T, hidden].

One function per concept:
  rms_norm, yarn_inv_freq / rope_inv_freq, softmax_scale, apply_rope_interleaved,
  mla_attention (training form), mla_attention_absorbed (inference form, used as a self-check),
  route (gate scoring + group-limited top-k), swiglu (expert / dense MLP), moe, decoder_block,
  model_forward (main model), mtp_forward (multi-token prediction modules), loss_fn.
"""
import math

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- config helpers

def cfg_get(cfg, key, default=None):
    v = cfg.get(key, default)
    return default if v is None else v


def is_moe_layer(cfg, layer):
    """Dense SwiGLU for layer < first_k_dense_replace, MoE otherwise when layer % moe_layer_freq == 0.
    MTP layers (index >= num_hidden_layers) always use MoE when the model has routed experts."""
    if not cfg_get(cfg, "n_routed_experts", 0):
        return False
    if layer >= cfg["num_hidden_layers"]:
        return True
    return layer >= cfg_get(cfg, "first_k_dense_replace", 0) and layer % cfg_get(cfg, "moe_layer_freq", 1) == 0


def num_mtp(cfg):
    return int(cfg_get(cfg, "num_nextn_predict_layers", 0))


# ----------------------------------------------------------------------------- RMSNorm

def rms_norm(x, weight, eps):
    """x * rsqrt(mean(x^2) + eps) * weight, over the last dim."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


# ----------------------------------------------------------------------------- RoPE / YaRN

def rope_inv_freq(dim, theta):
    """f_i = theta^(-2i/dim), i = 0 .. dim/2-1 (float64)."""
    i = torch.arange(0, dim // 2, dtype=torch.float64)
    return theta ** (-2.0 * i / dim)


def yarn_mscale(scale, mscale):
    """m = 0.1 * mscale * ln(s) + 1 when s > 1 else 1."""
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_active(cfg):
    rs = cfg.get("rope_scaling")
    if not rs or rs.get("type", rs.get("rope_type")) != "yarn":
        return False
    return cfg["max_position_embeddings"] > rs["original_max_position_embeddings"]


def yarn_inv_freq(dim, theta, factor, l0, beta_fast, beta_slow):
    """YaRN-corrected frequencies (spec: corr / low / high / ramp / smooth)."""
    f = rope_inv_freq(dim, theta)

    def corr(r):
        return dim * math.log(l0 / (r * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(corr(beta_fast)), 0)
    high = min(math.ceil(corr(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    i = torch.arange(dim // 2, dtype=torch.float64)
    ramp = ((i - low) / (high - low)).clamp(0, 1)
    smooth = 1 - ramp
    return f / factor * (1 - smooth) + f * smooth


def rope_tables(cfg, positions):
    """cos, sin [T, dr/2] (float64) for integer positions, plus the cos/sin multiplier
    (HF's mscale(mscale)/mscale(mscale_all_dim), 1.0 for every released config)."""
    dr = cfg["qk_rope_head_dim"]
    theta = float(cfg_get(cfg, "rope_theta", 10000.0))
    if yarn_active(cfg):
        rs = cfg["rope_scaling"]
        inv = yarn_inv_freq(dr, theta, float(rs["factor"]), float(rs["original_max_position_embeddings"]),
                            float(rs.get("beta_fast", 32)), float(rs.get("beta_slow", 1)))
        fac = float(rs["factor"])
        cs_scale = yarn_mscale(fac, float(rs.get("mscale", 1.0) or 0.0)) / \
            yarn_mscale(fac, float(rs.get("mscale_all_dim", 0.0) or 0.0))
    else:
        inv = rope_inv_freq(dr, theta)
        cs_scale = 1.0
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang) * cs_scale, torch.sin(ang) * cs_scale


def softmax_scale(cfg):
    """(dn + dr)^-0.5, times m^2 (m from mscale_all_dim) when YaRN is active."""
    s = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    if yarn_active(cfg):
        rs = cfg["rope_scaling"]
        m = yarn_mscale(float(rs["factor"]), float(rs.get("mscale_all_dim", 0.0) or 0.0))
        s = s * m * m
    return s


def apply_rope_interleaved(x, cos, sin):
    """Rotate pairs (2i, 2i+1) of the last dim by angle pos*f_i. x [..., T, (heads,) dr];
    cos/sin [T, dr/2] broadcast over leading batch dims and (if present) the head dim."""
    if x.dim() == cos.dim() + 2:          # [B, T, H, dr]
        cos, sin = cos[:, None, :], sin[:, None, :]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    xe, xo = x[..., 0::2], x[..., 1::2]
    ye = xe * cos - xo * sin
    yo = xe * sin + xo * cos
    return torch.stack([ye, yo], dim=-1).flatten(-2)


# ----------------------------------------------------------------------------- MLA

def linear(x, w):
    return x @ w.t()


def mla_project(cfg, W, p, x, cos, sin):
    """Shared front half of MLA: q_nope, q_pe (roped), c_kv (normed latent), k_pe (roped, one per token)."""
    n, dn, dr = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
    dc, eps = cfg["kv_lora_rank"], cfg["rms_norm_eps"]
    B, T, _ = x.shape
    if cfg.get("q_lora_rank"):
        q = linear(rms_norm(linear(x, W[p + "q_a_proj.weight"]), W[p + "q_a_layernorm.weight"], eps),
                   W[p + "q_b_proj.weight"])
    else:
        q = linear(x, W[p + "q_proj.weight"])
    q = q.view(B, T, n, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    q_pe = apply_rope_interleaved(q_pe, cos, sin)
    kv_a = linear(x, W[p + "kv_a_proj_with_mqa.weight"])          # [B, T, dc + dr]
    c_kv = rms_norm(kv_a[..., :dc], W[p + "kv_a_layernorm.weight"], eps)
    k_pe = apply_rope_interleaved(kv_a[..., dc:], cos, sin)      # [B, T, dr]
    return q_nope, q_pe, c_kv, k_pe


def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def mla_attention(cfg, W, p, x, cos, sin):
    """MLA, training form: expand c_kv to per-head k_nope / v with kv_b_proj."""
    n, dn, dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    B, T, _ = x.shape
    q_nope, q_pe, c_kv, k_pe = mla_project(cfg, W, p, x, cos, sin)
    kv = linear(c_kv, W[p + "kv_b_proj.weight"]).view(B, T, n, dn + dv)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    k = torch.cat([k_nope, k_pe[:, :, None, :].expand(B, T, n, k_pe.shape[-1])], dim=-1)
    q = torch.cat([q_nope, q_pe], dim=-1)
    scores = torch.einsum("bshd,bthd->bhst", q, k) * softmax_scale(cfg)
    scores = scores.masked_fill(~causal_mask(T, x.device), float("-inf"))
    prob = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhst,bthd->bshd", prob, v).reshape(B, T, n * dv)
    return linear(o, W[p + "o_proj.weight"])


def mla_attention_absorbed(cfg, W, p, x, cos, sin):
    """MLA, inference ("absorbed") form: only c_kv and k_pe are kept per token;
    W_UK is folded into the query and W_UV applied after the softmax. Must equal mla_attention."""
    n, dn, dv, dc = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    B, T, _ = x.shape
    q_nope, q_pe, c_kv, k_pe = mla_project(cfg, W, p, x, cos, sin)
    wkv = W[p + "kv_b_proj.weight"].view(n, dn + dv, dc)
    w_uk, w_uv = wkv[:, :dn, :], wkv[:, dn:, :]                  # [n, dn, dc], [n, dv, dc]
    q_lat = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)          # [B, T, n, dc]
    scores = (torch.einsum("bshc,btc->bhst", q_lat, c_kv) +
              torch.einsum("bshr,btr->bhst", q_pe, k_pe)) * softmax_scale(cfg)
    scores = scores.masked_fill(~causal_mask(T, x.device), float("-inf"))
    prob = torch.softmax(scores, dim=-1)
    o_lat = torch.einsum("bhst,btc->bshc", prob, c_kv)            # [B, T, n, dc]
    o = torch.einsum("bshc,hvc->bshv", o_lat, w_uv).reshape(B, T, n * dv)
    return linear(o, W[p + "o_proj.weight"])


# ----------------------------------------------------------------------------- MLPs and MoE

def swiglu(W, p, x):
    """down_proj( silu(gate_proj(x)) * up_proj(x) ) -- dense MLP, routed expert and shared experts."""
    return linear(F.silu(linear(x, W[p + "gate_proj.weight"])) * linear(x, W[p + "up_proj.weight"]),
                  W[p + "down_proj.weight"])


def topk_lower_index(x, k):
    """Top-k along the last dim; ties go to the LOWER index (stable descending sort)."""
    _, order = torch.sort(x, dim=-1, descending=True, stable=True)
    return order[..., :k]


def route(cfg, gate_w, bias, u, use_bias=True, use_groups=True):
    """Gate scoring + (group-limited) top-k.  u [N, hidden].
    Returns idx [N, k] (selection order), weights [N, k] (differentiable through s), s [N, E].
    use_bias / use_groups=False exist only for the fixture script's 'does it matter' assertions."""
    E, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    logits = linear(u, gate_w)
    func = cfg_get(cfg, "scoring_func", "softmax")
    if func == "sigmoid":
        s = torch.sigmoid(logits)
    elif func == "softmax":
        s = torch.softmax(logits, dim=-1)
    else:
        raise ValueError(func)
    method = cfg_get(cfg, "topk_method", "greedy")
    sel = s.detach().clone()
    if method == "noaux_tc" and bias is not None and use_bias:
        sel = sel + bias.detach()
    n_group, topk_group = cfg_get(cfg, "n_group", 1), cfg_get(cfg, "topk_group", 1)
    if n_group > 1 and use_groups and method in ("noaux_tc", "group_limited_greedy"):
        g = sel.view(-1, n_group, E // n_group)
        if method == "noaux_tc":
            gscore = torch.sort(g, dim=-1, descending=True).values[..., :2].sum(-1)
        else:  # group_limited_greedy: max raw score in the group
            gscore = g.max(dim=-1).values
        gidx = topk_lower_index(gscore, topk_group)
        gmask = torch.zeros_like(gscore, dtype=torch.bool).scatter_(1, gidx, True)
        emask = gmask[:, :, None].expand_as(g).reshape(-1, E)
        sel = sel.masked_fill(~emask, float("-inf"))
    idx = topk_lower_index(sel, k)
    w = torch.gather(s, 1, idx)
    if cfg_get(cfg, "norm_topk_prob", False):
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * float(cfg_get(cfg, "routed_scaling_factor", 1.0))
    return idx, w, s


def moe(cfg, W, p, x, routes=None, key=None):
    """DeepSeekMoE: y = sum_j w_j Expert_idx_j(x) + SharedExperts(x).  Records selected indices in routes[key]."""
    B, T, H = x.shape
    u = x.reshape(B * T, H)
    bias = W.get(p + "gate.e_score_correction_bias")
    idx, w, _ = route(cfg, W[p + "gate.weight"], bias, u)
    if routes is not None:
        routes[key] = idx.detach().sort(dim=-1).values
    y = torch.zeros_like(u)
    for e in range(cfg["n_routed_experts"]):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        ye = swiglu(W, f"{p}experts.{e}.", u[tok])
        y = y.index_add(0, tok, ye * w[tok, slot][:, None])
    if cfg_get(cfg, "n_shared_experts", 0):
        y = y + swiglu(W, p + "shared_experts.", u)
    return y.view(B, T, H)


# ----------------------------------------------------------------------------- blocks and model

def decoder_block(cfg, W, layer, h, cos, sin, routes=None, absorbed=False):
    p = f"model.layers.{layer}."
    eps = cfg["rms_norm_eps"]
    attn = mla_attention_absorbed if absorbed else mla_attention
    a = h + attn(cfg, W, p + "self_attn.", rms_norm(h, W[p + "input_layernorm.weight"], eps), cos, sin)
    z = rms_norm(a, W[p + "post_attention_layernorm.weight"], eps)
    if is_moe_layer(cfg, layer):
        f = moe(cfg, W, p + "mlp.", z, routes, f"route.layer{layer}")
    else:
        f = swiglu(W, p + "mlp.", z)
    return a + f


def model_forward(cfg, W, tokens, routes=None, absorbed=False):
    """tokens [B, T] -> (logits [B, T, V], h_final [B, T, hidden] AFTER model.norm)."""
    B, T = tokens.shape
    cos, sin = rope_tables(cfg, torch.arange(T))
    cos, sin = cos.to(tokens.device), sin.to(tokens.device)
    h = W["model.embed_tokens.weight"][tokens]
    for layer in range(cfg["num_hidden_layers"]):
        h = decoder_block(cfg, W, layer, h, cos, sin, routes, absorbed)
    hn = rms_norm(h, W["model.norm.weight"], cfg["rms_norm_eps"])
    return linear(hn, W["lm_head.weight"]), hn


def mtp_forward(cfg, W, tokens, h_main, routes=None, absorbed=False):
    """Multi-token prediction. Depth k (1..D) row i uses embed(t_{i+k}) and h^{k-1}_i and predicts t_{i+k+1}.
    Depth k has T-k rows (positions 0..T-k-1, used as the RoPE positions).  The embedding and output
    head are the MAIN model's tensors (shared), not the copies stored under the MTP layer.
    Returns a list of logits [B, T-k, V]."""
    eps = cfg["rms_norm_eps"]
    B, T = tokens.shape
    out = []
    h_prev = h_main
    for k in range(1, num_mtp(cfg) + 1):
        layer = cfg["num_hidden_layers"] + k - 1
        p = f"model.layers.{layer}."
        rows = T - k
        emb = W["model.embed_tokens.weight"][tokens[:, k:k + rows]]
        hp = h_prev[:, :rows]
        x = linear(torch.cat([rms_norm(emb, W[p + "enorm.weight"], eps),
                              rms_norm(hp, W[p + "hnorm.weight"], eps)], dim=-1), W[p + "eh_proj.weight"])
        cos, sin = rope_tables(cfg, torch.arange(rows))
        cos, sin = cos.to(tokens.device), sin.to(tokens.device)
        h = decoder_block(cfg, W, layer, x, cos, sin, routes, absorbed)
        out.append(linear(rms_norm(h, W[p + "shared_head.norm.weight"], eps), W["lm_head.weight"]))
        h_prev = h
    return out


def cross_entropy(logits, targets):
    """Mean CE; logits [N, V], targets [N]."""
    return -torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).mean()


def loss_fn(cfg, logits, mtp_logits, tokens, mtp_weight):
    """L = mean CE(main, positions 0..T-2) + (mtp_weight / D) * sum_k mean CE(depth k, rows 0..T-k-2).
    Single sequence (B = 1)."""
    T = tokens.shape[1]
    loss = cross_entropy(logits[0, :T - 1], tokens[0, 1:])
    D = len(mtp_logits)
    for k, lk in enumerate(mtp_logits, start=1):
        rows = T - k - 1
        loss = loss + (mtp_weight / D) * cross_entropy(lk[0, :rows], tokens[0, k + 1:k + 1 + rows])
    return loss


def trainable_names(cfg, W):
    """Every weight except e_score_correction_bias (state, not a parameter) and the MTP copies
    of embed_tokens / shared_head.head (the main tensors are used instead)."""
    out = []
    for name in W:
        if name.endswith("e_score_correction_bias"):
            continue
        if name.endswith(".embed_tokens.weight") and name != "model.embed_tokens.weight":
            continue
        if name.endswith("shared_head.head.weight"):
            continue
        out.append(name)
    return out


# ----------------------------------------------------------------------------- random init

def init_weights(cfg, gen, dtype=torch.float64, std=0.02, norm_noise=0.0, bias_std=0.0,
                 std_overrides=None):
    """Random weights with HF names.  std_overrides: {name suffix: std} to tune activation sizes."""
    std_overrides = std_overrides or {}
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    n, dn, dr, dv = (cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"],
                     cfg["v_head_dim"])
    dc, qr = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
    W = {}

    def normal(name, shape):
        s = std
        for suf, v in std_overrides.items():
            if name.endswith(suf):
                s = v
        W[name] = torch.randn(*shape, generator=gen, dtype=torch.float64).mul_(s).to(dtype)

    def norm(name, dim):
        W[name] = (1.0 + norm_noise * torch.randn(dim, generator=gen, dtype=torch.float64)).to(dtype)

    def mlp(p, inter):
        normal(p + "gate_proj.weight", (inter, H))
        normal(p + "up_proj.weight", (inter, H))
        normal(p + "down_proj.weight", (H, inter))

    def block(layer):
        p = f"model.layers.{layer}."
        norm(p + "input_layernorm.weight", H)
        a = p + "self_attn."
        if qr:
            normal(a + "q_a_proj.weight", (qr, H))
            norm(a + "q_a_layernorm.weight", qr)
            normal(a + "q_b_proj.weight", (n * (dn + dr), qr))
        else:
            normal(a + "q_proj.weight", (n * (dn + dr), H))
        normal(a + "kv_a_proj_with_mqa.weight", (dc + dr, H))
        norm(a + "kv_a_layernorm.weight", dc)
        normal(a + "kv_b_proj.weight", (n * (dn + dv), dc))
        normal(a + "o_proj.weight", (H, n * dv))
        norm(p + "post_attention_layernorm.weight", H)
        m = p + "mlp."
        if is_moe_layer(cfg, layer):
            E = cfg["n_routed_experts"]
            normal(m + "gate.weight", (E, H))
            if cfg_get(cfg, "topk_method", "greedy") == "noaux_tc":
                W[m + "gate.e_score_correction_bias"] = (
                    bias_std * torch.randn(E, generator=gen, dtype=torch.float64)).to(dtype)
            for e in range(E):
                mlp(f"{m}experts.{e}.", cfg["moe_intermediate_size"])
            if cfg_get(cfg, "n_shared_experts", 0):
                mlp(m + "shared_experts.", cfg["n_shared_experts"] * cfg["moe_intermediate_size"])
        else:
            mlp(m, cfg["intermediate_size"])

    normal("model.embed_tokens.weight", (V, H))
    for layer in range(cfg["num_hidden_layers"]):
        block(layer)
    norm("model.norm.weight", H)
    normal("lm_head.weight", (V, H))
    for k in range(1, num_mtp(cfg) + 1):
        layer = cfg["num_hidden_layers"] + k - 1
        p = f"model.layers.{layer}."
        W[p + "embed_tokens.weight"] = W["model.embed_tokens.weight"].clone()
        norm(p + "enorm.weight", H)
        norm(p + "hnorm.weight", H)
        normal(p + "eh_proj.weight", (H, 2 * H))
        block(layer)
        norm(p + "shared_head.norm.weight", H)
        W[p + "shared_head.head.weight"] = W["lm_head.weight"].clone()
    return W
