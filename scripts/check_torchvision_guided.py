#!/usr/bin/env python3
"""Cross-check of tests/fixtures/torchvision/<arch>.safetensors against independent computations.

    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/check_torchvision_guided.py [arch ...]

(the venv of scripts/torchvision_fixtures.py; torch 2.15.0, torchvision 0.29.2, numpy 2.4.6,
safetensors 0.8.0). For each architecture (default: the six with other activations than
ReLU/ReLU6), on the UNMODIFIED torchvision model loaded with the same synthetic weights (every
activation module only switched to inplace=False), in float64:

- logits and gradient by plain autograd;
- guided backprop by full backward hooks on every activation module, returning
  relu(grad_out) * phi'(z) with phi' written out by hand here (not torch's autograd):
  ReLU 1[z>0], ReLU6 1[0<z<6], Sigmoid s(1-s), SiLU s(1+z(1-s)), Hardsigmoid 1/6 on (-3,3),
  Hardswish 0 / (2z+3)/6 / 1 below -3 / on (-3,3) / above 3, GELU Phi(z)+z*phi(z), Tanh 1-t^2;
- Grad-CAM through retain_grad on the layer's output;
- integrated gradients with the 16 path points in one batch;

each compared with the stored float32 tensor (max |a - b| / max |b|). Prints the differences and
exits non-zero above 1e-6.
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_weights import synthetic  # noqa: E402
from torchvision_fixtures import GRAD_CAM_LAYER, IG_STEPS, NUM_CLASSES, OUT_DIR  # noqa: E402

NEW = ["efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", "regnet_y_400mf",
       "shufflenet_v2_x1_0", "convnext_tiny"]


def dphi(m, z):
    """The activation's derivative at z, by hand."""
    if isinstance(m, nn.ReLU6):
        return ((z > 0) & (z < 6)).to(z.dtype)
    if isinstance(m, nn.ReLU):
        return (z > 0).to(z.dtype)
    if isinstance(m, nn.Sigmoid):
        s = 1 / (1 + torch.exp(-z))
        return s * (1 - s)
    if isinstance(m, nn.SiLU):
        s = 1 / (1 + torch.exp(-z))
        return s * (1 + z * (1 - s))
    if isinstance(m, nn.Hardsigmoid):
        return ((z > -3) & (z < 3)).to(z.dtype) / 6
    if isinstance(m, nn.Hardswish):
        return torch.where(z < -3, torch.zeros_like(z), torch.where(z > 3, torch.ones_like(z), (2 * z + 3) / 6))
    if isinstance(m, nn.GELU):
        assert m.approximate == "none"
        return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if isinstance(m, nn.Tanh):
        return 1 - torch.tanh(z) ** 2
    raise TypeError(type(m).__name__)


ACTS = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.SiLU, nn.Hardsigmoid, nn.Hardswish, nn.GELU, nn.Tanh)


def plain_model(arch):
    model = getattr(torchvision.models, arch)(weights=None, num_classes=NUM_CLASSES)
    sd = {k: (v if k.endswith("num_batches_tracked") else torch.from_numpy(synthetic(k, list(v.shape))))
          for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    model.eval().double()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def check(arch):
    f = load_file(os.path.join(OUT_DIR, f"{arch}.safetensors"))
    model = plain_model(arch)
    x = torch.from_numpy(f["x"]).double()
    t = torch.from_numpy(f["targets"])
    out = {}

    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xg)
    out["logits"], out["gradient"] = logits.detach(), g

    steps = torch.arange(1, IG_STEPS + 1, dtype=torch.float64) / IG_STEPS
    xs = (steps[:, None, None, None, None] * x[None]).reshape(-1, *x.shape[1:]).requires_grad_(True)
    ls = model(xs)
    (gs,) = torch.autograd.grad(ls.gather(1, t.repeat(IG_STEPS)[:, None]).sum(), xs)
    out["integrated_gradients"] = x * gs.reshape(IG_STEPS, *x.shape).sum(0) / IG_STEPS

    store = {}
    layer = dict(model.named_modules())[GRAD_CAM_LAYER[arch]]

    def keep(m, i, o):
        o.retain_grad()
        store["A"] = o

    h = layer.register_forward_hook(keep)
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, t[:, None]).sum().backward()
    h.remove()
    a = store["A"]
    cam = F.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    out["grad_cam"] = F.interpolate(cam[:, None].detach(), size=x.shape[2:], mode="bilinear", align_corners=False)

    handles, n = [], 0
    for m in model.modules():
        if isinstance(m, ACTS):
            n += 1
            # A stack per module: ResNet's blocks call one ReLU module twice, and the backward
            # visits the calls in reverse order.
            m._z = []
            handles.append(m.register_forward_hook(lambda m, i, o: m._z.append(i[0].detach())))
            handles.append(m.register_full_backward_hook(
                lambda m, gi, go: (go[0].clamp(min=0) * dphi(m, m._z.pop()),)))
    xg = x.clone().requires_grad_(True)
    (gb,) = torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
    for hd in handles:
        hd.remove()
    out["guided_backprop"] = gb

    worst = 0.0
    parts = []
    for k, v in out.items():
        e = rel(v.detach().numpy(), f[k])
        worst = max(worst, e)
        parts.append(f"{k} {e:.1e}")
    print(f"{arch} ({n} activation modules hooked): " + ", ".join(parts), flush=True)
    return worst


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "0")) or max(1, os.cpu_count() or 1))
    worst = max(check(a) for a in (sys.argv[1:] or NEW))
    if worst > 1e-6:
        sys.exit(f"largest relative difference {worst:.2e} > 1e-6")


if __name__ == "__main__":
    main()
