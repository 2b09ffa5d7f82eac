"""LoRA with HF PEFT's semantics on the independent PyTorch reference (deepseek_reference.py).

PEFT itself is not needed (nor imported): its rules are implemented here from its documented behaviour --
  * a LoRA layer computes  y = x W^T + scale * B(A(x)),  A [r, in], B [out, r], scale = alpha / r
    (alpha / sqrt(r) with use_rslora), no dropout at evaluation;
  * target_modules as a list selects module key K when K == t or K ends with "." + t; as a string, when
    re.fullmatch(t, K);
  * rank_pattern / alpha_pattern: the first key k of rank_pattern then alpha_pattern with
    re.match(r"(.*\.)?(k)$", K) decides r = rank_pattern.get(k, r) and alpha = alpha_pattern.get(k, lora_alpha);
  * on disk: adapter_config.json (json, indent 2, sorted keys) and adapter_model.safetensors whose keys are
    base_model.model.<module key>.lora_A.weight / .lora_B.weight (the adapter name "default" removed) and, for
    modules_to_save, base_model.model.<parameter name>.

Modes:
    /usr/bin/python3 tools/reference/lora_reference.py --out tests/DeepSeekSharp.Tests/Fixtures
        writes lora-v3-tiny/ and lora-v2-lite-tiny/: a PEFT adapter folder for the base fixture of the same name
        and expected.safetensors (tokens, logits, loss, grad.<PEFT key> of every lora_A / lora_B).
    /usr/bin/python3 tools/reference/lora_reference.py --check ADAPTER_DIR --base BASE_DIR --logits FILE
        loads a PEFT adapter folder (e.g. one written by `dss train` with adapter: lora) onto the base, runs the
        reference on the token ids stored in FILE ('tokens', or --tokens) and prints the largest difference from
        FILE's 'logits' (written by `dss forward --adapter`).
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_reference as ref  # noqa: E402
import make_fixtures as mf  # noqa: E402

torch.set_num_threads(1)

PEFT_PREFIX = "base_model.model."


# ============================================================================= the LoRA layer

class LoraLinear(torch.nn.Module):
    """PEFT's lora.Linear (evaluation, no dropout): base(x) + scale * lora_B(lora_A(x)); the base weight is frozen."""

    def __init__(self, weight, r, alpha, use_rslora):
        super().__init__()
        out_f, in_f = weight.shape
        self.weight = weight.detach()
        self.r, self.alpha = r, alpha
        self.scale = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.lora_A = torch.nn.Linear(in_f, r, bias=False, dtype=weight.dtype)
        self.lora_B = torch.nn.Linear(r, out_f, bias=False, dtype=weight.dtype)

    def forward(self, x):
        return x @ self.weight.t() + self.scale * self.lora_B(self.lora_A(x))


def candidate_modules(cfg, W, include_mtp):
    """Module keys of the model's Linears (HF names without '.weight'). The router (`mlp.gate`) is an nn.Parameter
    in HF's MoEGate, not a Linear, and the output head is left out as in our trainer; HF's modeling code does not
    instantiate the MTP layers (index >= num_hidden_layers), so PEFT never sees them (kept only with include_mtp)."""
    out = []
    for name, t in W.items():
        if t.dim() != 2 or not name.endswith(".weight") or name.endswith("embed_tokens.weight"):
            continue
        key = name[:-len(".weight")]
        if key == "lm_head" or key.endswith(".mlp.gate") or key.endswith("shared_head.head"):
            continue
        m = re.match(r"model\.layers\.(\d+)\.", key)
        if m and int(m.group(1)) >= cfg["num_hidden_layers"] and not include_mtp:
            continue
        out.append(key)
    return out


def peft_selects(target_modules, key):
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, key) is not None
    return any(key == t or key.endswith("." + t) for t in target_modules)


def peft_rank_alpha(config, key):
    patterns = list(config.get("rank_pattern") or {}) + list(config.get("alpha_pattern") or {})
    found = next((k for k in patterns if re.match(rf"(.*\.)?({k})$", key)), key)
    return (int((config.get("rank_pattern") or {}).get(found, config["r"])),
            float((config.get("alpha_pattern") or {}).get(found, config["lora_alpha"])))


class LoraModel:
    """The reference model with LoRA layers on the selected Linears. The reference computes every projection with
    ref.linear(x, W[name]); inside `with self.active():` that call goes through the LoRA layer of the weight."""

    def __init__(self, cfg, W, config, include_mtp=False):
        self.cfg, self.W, self.config = cfg, W, config
        self.layers = {}
        for key in candidate_modules(cfg, W, include_mtp):
            if peft_selects(config["target_modules"], key):
                r, alpha = peft_rank_alpha(config, key)
                self.layers[key] = LoraLinear(W[key + ".weight"], r, alpha, bool(config.get("use_rslora", False)))
        if not self.layers:
            raise SystemExit(f"target_modules {config['target_modules']} select no Linear")
        self._by_weight = {id(W[k + ".weight"]): layer for k, layer in self.layers.items()}

    def active(self):
        model = self

        class _Patch:
            def __enter__(self):
                self.orig = ref.linear

                def lora_linear(x, w):
                    layer = model._by_weight.get(id(w))
                    return layer(x) if layer is not None else self.orig(x, w)
                ref.linear = lora_linear

            def __exit__(self, *exc):
                ref.linear = self.orig
        return _Patch()

    def forward(self, tokens, routes=None):
        with self.active():
            return ref.model_forward(self.cfg, self.W, tokens, routes)[0]

    def peft_tensors(self):
        """{PEFT key: tensor} of every lora_A / lora_B."""
        out = {}
        for key, layer in sorted(self.layers.items()):
            out[f"{PEFT_PREFIX}{key}.lora_A.weight"] = layer.lora_A.weight
            out[f"{PEFT_PREFIX}{key}.lora_B.weight"] = layer.lora_B.weight
        return out


def peft_config(base, r, alpha, targets, use_rslora=False, rank_pattern=None, alpha_pattern=None):
    """adapter_config.json with the fields PEFT writes for a plain LoRA CAUSAL_LM adapter (json, indent 2, sorted keys)."""
    return {
        "alpha_pattern": alpha_pattern or {},
        "auto_mapping": None,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": rank_pattern or {},
        "revision": None,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": use_rslora,
    }


# ============================================================================= loading a base model

def load_base(base_dir):
    """config dict and {HF name: float64 tensor} (float32 values, FP8 weights dequantised as make_fixtures does)."""
    with open(os.path.join(base_dir, "config.json")) as f:
        cfg = json.load(f)
    raw = {}
    for fname in sorted(os.listdir(base_dir)):
        if fname.endswith(".safetensors") and fname.startswith("model"):
            raw.update(mf.read_safetensors(os.path.join(base_dir, fname)))
    W = {}
    for name, (dt, arr) in raw.items():
        if name.endswith("_scale_inv"):
            continue
        if dt == "F8_E4M3":
            sc = raw[name + "_scale_inv"][1]
            deq = mf.e4m3_decode(arr).astype(np.float32).reshape(arr.shape)
            full = np.repeat(np.repeat(sc, 128, 0), 128, 1)[:arr.shape[0], :arr.shape[1]]
            arr = (deq * full).astype(np.float32)
        elif dt == "F16":
            arr = arr.astype(np.float32)
        elif dt != "F32":
            raise SystemExit(f"{base_dir}: tensor {name} has dtype {dt}; the reference reads F32, F16 and FP8 E4M3")
        W[name] = torch.from_numpy(np.array(arr, dtype=np.float64))
    return cfg, W


def main_loss(logits, tokens):
    """Mean cross-entropy of positions 0..T-2 predicting tokens 1..T-1 (the main head only)."""
    return ref.cross_entropy(logits[0, :-1], tokens[0, 1:])


# ============================================================================= fixtures

CASES = {
    # r 2 everywhere except kv_b_proj (rank_pattern: 4), alpha 4 except o_proj (alpha_pattern: 12).
    "lora-v3-tiny": dict(base="v3-tiny", seed=5151, T=24, r=2, alpha=4.0, rslora=False,
                         targets=["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
                                  "gate_proj", "up_proj", "down_proj"],
                         rank_pattern={"kv_b_proj": 4}, alpha_pattern={"o_proj": 12.0}),
    # rsLoRA: scale = alpha / sqrt(r); the routed and shared experts' down_proj get alpha 2 (alpha_pattern).
    "lora-v2-lite-tiny": dict(base="v2-lite-tiny", seed=6262, T=24, r=3, alpha=6.0, rslora=True,
                              targets=["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
                                       "gate_proj", "up_proj", "down_proj"],
                              rank_pattern={}, alpha_pattern={"down_proj": 2.0}),
}

B_STD = 0.05   # B is random (not PEFT's zeros) so that every adapter changes the output


def build_case(name, spec, fixtures):
    base_dir = os.path.join(fixtures, spec["base"])
    cfg, W = load_base(base_dir)
    config = peft_config(f"tests/DeepSeekSharp.Tests/Fixtures/{spec['base']}", spec["r"], spec["alpha"], spec["targets"],
                         spec["rslora"], spec["rank_pattern"], spec["alpha_pattern"])
    lm = LoraModel(cfg, W, config)
    gen = torch.Generator().manual_seed(spec["seed"])
    for key, layer in sorted(lm.layers.items()):
        with torch.no_grad():
            bound = 1 / math.sqrt(layer.lora_A.weight.shape[1])       # PEFT's A: kaiming_uniform(a=sqrt(5))
            a = (torch.rand(layer.lora_A.weight.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            b = torch.randn(layer.lora_B.weight.shape, generator=gen, dtype=torch.float64) * B_STD
            # the model computes with exactly the float32 values written to the adapter file
            layer.lora_A.weight.copy_(a.float().double())
            layer.lora_B.weight.copy_(b.float().double())
    tokens = torch.randint(0, cfg["vocab_size"], (1, spec["T"]), generator=gen)

    # ---- the patterns did what they say
    for key, layer in lm.layers.items():
        want_r = spec["rank_pattern"].get(key.split(".")[-1], spec["r"])
        want_a = spec["alpha_pattern"].get(key.split(".")[-1], spec["alpha"])
        assert (layer.r, layer.alpha) == (want_r, want_a), (key, layer.r, layer.alpha)
    kinds = {k.split(".")[-1] for k in lm.layers} | {"experts" for k in lm.layers if ".experts." in k} | \
        {"shared_experts" for k in lm.layers if ".shared_experts." in k}
    assert {"o_proj", "kv_b_proj", "experts", "shared_experts", "gate_proj"} <= kinds, kinds

    # ---- routing decisions of the adapted model far from ties (a float32 engine must pick the same experts)
    orig_moe = ref.moe
    margins = {}

    def spy(cfg_, W_, p, x, routes=None, key=None):
        z = x.detach().reshape(-1, x.shape[-1])
        margins[key] = mf.decision_margin(cfg_, W_[p + "gate.weight"], W_.get(p + "gate.e_score_correction_bias"), z)
        return orig_moe(cfg_, W_, p, x, routes, key)
    ref.moe = spy
    try:
        with torch.no_grad():
            lm.forward(tokens)
    finally:
        ref.moe = orig_moe
    assert min(margins.values()) >= mf.MIN_MARGIN, margins

    # ---- forward + backward (float64); base frozen, only A and B carry gradients
    params = lm.peft_tensors()
    for t in params.values():
        t.grad = None
    routes = {}
    logits = lm.forward(tokens, routes)
    loss = main_loss(logits, tokens)
    loss.backward()
    assert all(not W[n].requires_grad for n in W)
    for t in params.values():      # adapters of routed experts that no token chose: an all-zero gradient
        if t.grad is None:
            t.grad = torch.zeros_like(t)

    with torch.no_grad():
        base_logits = ref.model_forward(cfg, W, tokens)[0]
        delta = float((logits - base_logits).abs().max())
        assert delta > 0.05, f"the adapters barely change the logits ({delta})"
        # merged weights W + scale * B A give the same logits (the adapter is the low-rank update it claims to be)
        Wm = dict(W)
        for key, layer in lm.layers.items():
            Wm[key + ".weight"] = W[key + ".weight"] + layer.scale * layer.lora_B.weight @ layer.lora_A.weight
        merged = ref.model_forward(cfg, Wm, tokens)[0]
        assert torch.allclose(merged, logits, atol=1e-11), float((merged - logits).abs().max())
        # directional derivative of the loss along a random direction == grad . direction (central difference)
        d = {k: torch.randn(t.shape, generator=gen, dtype=torch.float64) for k, t in params.items()}
        eps = 1e-6

        def loss_at(s):
            for k, t in params.items():
                t.add_(s * d[k])
            val = float(main_loss(lm.forward(tokens), tokens))
            for k, t in params.items():
                t.sub_(s * d[k])
            return val
        fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        analytic = sum(float((params[k].grad * d[k]).sum()) for k in params)
        assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(analytic)), (fd, analytic)

    zero_experts = {k.rsplit(".", 2)[0] for k, t in params.items() if ".experts." in k and float(t.grad.abs().max()) == 0}
    unrouted = {f"model.layers.{k[len('route.layer'):]}.mlp.experts.{e}" for k, idx in routes.items()
                for e in range(cfg["n_routed_experts"]) if not (idx == e).any()}
    assert {k[len(PEFT_PREFIX):] for k in zero_experts} == {f"{u}.{p}" for u in unrouted for p in ("gate_proj", "up_proj", "down_proj")}
    print(f"  [{name}] {len(lm.layers)} LoRA layers, loss {float(loss):.6f}, max |logit change| {delta:.3f}, "
          f"routing margin {min(margins.values()):.4f}, directional derivative {analytic:.6g} (fd {fd:.6g}), "
          f"unrouted experts (zero gradient): {sorted(unrouted)}")

    case_dir = os.path.join(fixtures, name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "adapter_config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))
    mf.write_safetensors(os.path.join(case_dir, "adapter_model.safetensors"),
                         {k: ("F32", t.detach().numpy().astype(np.float32)) for k, t in params.items()},
                         {"format": "pt"})
    exp = {"tokens": ("I64", tokens[0].numpy().astype(np.int64)),
           "logits": ("F32", logits[0].detach().numpy().astype(np.float32)),
           "base_logits": ("F32", base_logits[0].numpy().astype(np.float32)),
           "loss": ("F32", np.array([loss.item()], np.float32))}
    for k, idx in routes.items():
        exp[k] = ("I64", idx.numpy().astype(np.int64))
    for k, t in params.items():
        exp["grad." + k] = ("F32", t.grad.numpy().astype(np.float32))
    mf.write_safetensors(os.path.join(case_dir, "expected.safetensors"), exp,
                         {"format": "pt", "generator": "tools/reference/lora_reference.py", "case": name})

    # ---- what was written loads back into the same model (the --check path)
    cfg2, W2 = load_base(base_dir)
    lm2 = load_adapter(cfg2, W2, case_dir)
    with torch.no_grad():
        again = lm2.forward(tokens)
    assert torch.equal(again, logits.detach()), float((again - logits).abs().max())
    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    print(f"  [{name}] wrote {case_dir} ({size} bytes, {len(exp)} expected tensors)")
    assert size < 500_000


# ============================================================================= loading a PEFT folder

def load_adapter(cfg, W, adapter_dir):
    """A PEFT adapter folder on the reference model, as PEFT would load it: LoRA layers built from the config
    (target_modules, r / lora_alpha, rank_pattern / alpha_pattern, use_rslora), then the tensors copied in by key.
    Every selected module must have its tensors and every tensor a module (PEFT would leave a missing one at its
    initialisation and ignore an unknown one; here either is an error)."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    with open(path) as f:
        config = json.load(f)
    if config.get("peft_type") != "LORA":
        raise SystemExit(f"{path}: peft_type {config.get('peft_type')!r}, expected 'LORA'")
    if config.get("fan_in_fan_out") or config.get("bias", "none") != "none" or config.get("use_dora"):
        raise SystemExit(f"{path}: fan_in_fan_out, bias or use_dora set; this reference implements plain LoRA only")
    tensors = mf.read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    # HF's model has no MTP layers, so PEFT's adapters have none; our trainer may also adapt the MTP block's Linears
    # (unused by the main logits): accept them when the file carries them.
    mtp_keys = [k for k in tensors if (m := re.match(r"base_model\.model\.model\.layers\.(\d+)\.", k))
                and int(m.group(1)) >= cfg["num_hidden_layers"]]
    lm = LoraModel(cfg, W, config, include_mtp=bool(mtp_keys))
    keys = set(tensors)
    for key, layer in lm.layers.items():
        for part, param in (("lora_A", layer.lora_A.weight), ("lora_B", layer.lora_B.weight)):
            k = f"{PEFT_PREFIX}{key}.{part}.weight"
            if k not in tensors:
                raise SystemExit(f"{adapter_dir}: {k} missing (target_modules select {key})")
            dt, arr = tensors[k]
            if tuple(arr.shape) != tuple(param.shape):
                raise SystemExit(f"{adapter_dir}: {k} has shape {list(arr.shape)}, the config gives {list(param.shape)}")
            with torch.no_grad():
                param.copy_(torch.from_numpy(np.array(arr, dtype=np.float64)))
            keys.discard(k)
    for m in config.get("modules_to_save") or []:
        for k in list(keys):
            name = k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k
            if name in W and (name == m + ".weight" or name.endswith("." + m + ".weight")):
                W[name].copy_(torch.from_numpy(np.array(tensors[k][1], dtype=np.float64)))
                keys.discard(k)
    if keys:
        raise SystemExit(f"{adapter_dir}: {len(keys)} tensor(s) belong to no selected module: {sorted(keys)[:5]}")
    return lm


def check(args):
    cfg, W = load_base(args.base)
    lm = load_adapter(cfg, W, args.check)
    got = mf.read_safetensors(args.logits)
    if args.tokens:
        ids = [int(t) for t in args.tokens.split(",")]
    elif "tokens" in got:
        ids = [int(t) for t in got["tokens"][1]]
    else:
        raise SystemExit(f"{args.logits}: no 'tokens' tensor; pass --tokens")
    tokens = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits = lm.forward(tokens)[0]
        base = ref.model_forward(cfg, W, tokens)[0][0]
    theirs = torch.from_numpy(np.array(got["logits"][1], dtype=np.float64)).reshape(logits.shape)
    diff = float((theirs - logits).abs().max())
    effect = float((logits - base).abs().max())     # with vs without the LoRA layers (modules_to_save kept)
    scales = sorted({round(layer.scale, 6) for layer in lm.layers.values()})
    print(json.dumps({"adapter": args.check, "lora_layers": len(lm.layers), "scales": scales, "tokens": len(ids),
                      "max_abs_logit_diff": diff, "max_abs_lora_effect": effect,
                      "max_abs_logit": float(logits.abs().max())}))
    if diff > args.tol:
        print(f"FAIL: max |logit difference| {diff:.3g} > {args.tol:g}", file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/DeepSeekSharp.Tests/Fixtures", help="fixtures folder (holds the base cases)")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--check", metavar="ADAPTER_DIR", help="PEFT adapter folder to load onto --base")
    ap.add_argument("--base", metavar="BASE_DIR", help="HF model folder (config.json + model*.safetensors)")
    ap.add_argument("--logits", metavar="FILE", help="safetensors with 'logits' [T, vocab] (and 'tokens') to compare")
    ap.add_argument("--tokens", help="comma-separated ids (default: FILE's 'tokens')")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted |logit difference| (default 1e-4)")
    args = ap.parse_args()
    if args.check:
        if not args.base or not args.logits:
            ap.error("--check needs --base and --logits")
        sys.exit(check(args))
    for name in args.cases:
        build_case(name, CASES[name], args.out)


if __name__ == "__main__":
    main()
