"""Max |difference| between logits files: ours on the GPU, HF transformers', and the PyTorch reference fixture."""
import sys

from safetensors.numpy import load_file

name, ours, hf, reference = sys.argv[1:5]
a = load_file(ours)["logits"]
b = load_file(hf)["logits"]
r = load_file(reference)["logits"].reshape(a.shape)
print(f"| {name} | dss cuda vs transformers: {abs(a - b).max():.3g} | transformers vs tools/reference: {abs(b - r).max():.3g} | dss cuda vs tools/reference: {abs(a - r).max():.3g} | argmax agreement dss/transformers: {(a.argmax(-1) == b.argmax(-1)).mean():.3f} |")
