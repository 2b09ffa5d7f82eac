"""Logits of a fixture checkpoint from HF transformers' own DeepSeek-V3 / V2 model (an implementation independent of
ours and of tools/reference), in float32 on the CPU (its grouped expert GEMM takes no float64), for the fixture's tokens. Usage: hf_logits.py FIXTURE_DIR OUT."""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

fixture, out = sys.argv[1], sys.argv[2]
tokens = load_file(f"{fixture}/expected.safetensors")["tokens"].long().view(1, -1)
model = AutoModelForCausalLM.from_pretrained(fixture, dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(tokens).logits[0].float().contiguous()
save_file({"logits": logits}, out)
print(f"{fixture}: transformers logits {tuple(logits.shape)}")
