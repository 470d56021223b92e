#!/usr/bin/env python3
"""Reference attention rollout and Chefer et al. maps of the small ViT fixture
(tests/fixtures/torchvision/attention_vit_b_16.safetensors).

    /work/torchenv/bin/python scripts/attention_fixtures.py

The model is tests/fixtures/torchvision/vit_b_16's: torchvision's
`VisionTransformer(image_size=S, patch_size=16, num_layers=2, num_heads=12, hidden_dim=48,
mlp_dim=96, num_classes=10)` with every state_dict entry replaced by
scripts/synthetic_weights.py's formula, eval mode, float64. Two sizes: S = 32 (the
vit_b_16 fixture's own model and input: a 2x2 patch grid) and S = 64 (a 4x4 grid: the same
weights but the position embedding, which the formula draws for its [1, 17, 48] shape; the
input is the formula's "input" of shape [2, 3, 64, 64], scaled as u).

The attention probabilities: every EncoderBlock's forward is patched to compute its
self-attention by hand (q, k, v from in_proj_weight/in_proj_bias, softmax(q kT / sqrt(dh)) per
head, the heads' outputs through out_proj), keeping each layer's probabilities A_l
[B, heads, T, T] (query x key) in the graph; the patched model's logits are asserted equal to
the unpatched torchvision model's (with the fused MHA fast path off) to 1e-12. (nn.MultiheadAttention
with need_weights=True returns the probabilities as a view made after their use, so the
target's gradient would not reach it: hence the hand-written attention.) The gradients
dA_l = d logit_t / d A_l come from one autograd.grad of the batch sum of the target logits.

Maps (each [B, 1, S, S], the class token's row over the patches, row-major, upsampled with
F.interpolate(mode="bilinear", align_corners=False)):
* rollout_<fusion>[_discard<r>] (Abnar and Zuidema 2020, as jacobgil/vit-explain):
  F_l = fusion over heads of A_l (mean, max, min); with a discard ratio r, per image the
  floor(r T^2) smallest entries of F_l are set to 0, the (0, 0) entry (class token to
  itself) never; A'_l = (F_l + I) / 2, rows divided by their sums; R = A'_L ... A'_1.
* chefer (Chefer et al., ICCV 2021, the self-attention rule): R = I;
  R <- R + mean_heads(relu(dA_l * A_l)) @ R for l in forward order.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.numpy import save_file
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_weights import synthetic  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torchvision",
                   "attention_vit_b_16.safetensors")
ROLLOUTS = [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.5)]


def build(size):
    model = VisionTransformer(image_size=size, patch_size=16, num_layers=2, num_heads=12,
                              hidden_dim=48, mlp_dim=96, num_classes=10)
    sd = {k: torch.from_numpy(synthetic(k, list(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)
    model.eval().double()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def attention(mha, x, store):
    """nn.MultiheadAttention(x, x, x) (batch first) by hand; its probabilities appended to store."""
    b, t, d = x.shape
    h = mha.num_heads
    dh = d // h
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).split(d, dim=-1)
    heads = lambda z: z.reshape(b, t, h, dh).transpose(1, 2)  # noqa: E731
    a = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(dh), dim=-1)
    store.append(a)
    o = (a @ heads(v)).transpose(1, 2).reshape(b, t, d)
    return mha.out_proj(o)


def patched_forward(store):
    def forward(self, inp):
        x = self.ln_1(inp)
        x = self.dropout(attention(self.self_attention, x, store))
        x = x + inp
        return x + self.mlp(self.ln_2(x))
    return forward


def fuse(a, fusion):
    return {"mean": lambda: a.mean(1), "max": lambda: a.max(1).values, "min": lambda: a.min(1).values}[fusion]()


def discard(f, ratio):
    """vit-explain's discard, per image: the floor(ratio T^2) smallest entries set to 0, never (0, 0)."""
    b, t, _ = f.shape
    flat = f.reshape(b, t * t).clone()
    n = int(t * t * ratio)
    if n == 0:
        return f
    idx = flat.topk(n, dim=-1, largest=False).indices
    for i in range(b):
        keep = idx[i][idx[i] != 0]
        flat[i, keep] = 0
    return flat.reshape(b, t, t)


def class_row_map(r, size):
    b, t, _ = r.shape
    g = int(round(math.sqrt(t - 1)))
    m = r[:, 0, 1:].reshape(b, 1, g, g)
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)


def rollout(attns, fusion, ratio, size):
    t = attns[0].shape[-1]
    eye = torch.eye(t, dtype=torch.float64)
    r = eye.expand(attns[0].shape[0], t, t)
    for a in attns:
        f = discard(fuse(a, fusion), ratio)
        f = (f + eye) / 2
        f = f / f.sum(dim=-1, keepdim=True)
        r = f @ r
    return class_row_map(r, size)


def chefer(attns, grads, size):
    t = attns[0].shape[-1]
    r = torch.eye(t, dtype=torch.float64).expand(attns[0].shape[0], t, t)
    for a, g in zip(attns, grads):
        r = r + (g * a).clamp(min=0).mean(1) @ r
    return class_row_map(r, size)


def make(size, x):
    model = build(size)
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        plain = model(x)
    store = []
    original = EncoderBlock.forward
    EncoderBlock.forward = patched_forward(store)
    try:
        logits = model(x.clone().requires_grad_(True))
    finally:
        EncoderBlock.forward = original
    assert (logits - plain).abs().max() < 1e-12, "hand-written attention differs from torchvision's"
    targets = logits.detach().argmax(1)
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), store)
    attns = [a.detach() for a in store]
    out = {"x": x, "logits": logits.detach(), "chefer": chefer(attns, grads, size)}
    for fusion, ratio in ROLLOUTS:
        name = f"rollout_{fusion}" + (f"_discard{ratio}" if ratio else "")
        out[name] = rollout(attns, fusion, ratio, size)
    arrays = {f"{k}_{size}": v.numpy() for k, v in out.items()}
    arrays[f"targets_{size}"] = targets.numpy().astype(np.int64)
    return arrays


def main():
    torch.set_num_threads(1)
    arrays = {}
    for size in (32, 64):
        x = torch.from_numpy(synthetic("input", [2, 3, size, size], scale="u")).double()
        arrays.update(make(size, x))
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "made_by": "scripts/attention_fixtures.py",
            "rollouts": json.dumps(ROLLOUTS)}
    save_file(arrays, OUT, metadata={"fixture": json.dumps(meta, sort_keys=True)})
    for k, v in sorted(arrays.items()):
        print(k, list(v.shape), v.dtype, float(np.abs(v).max()))


if __name__ == "__main__":
    main()
