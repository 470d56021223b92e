#!/usr/bin/env python3
"""Cross-check of tests/fixtures/torchvision/<arch>.safetensors against independent computations.

    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/check_torchvision_guided.py [arch ...]

(the venv of scripts/torchvision_fixtures.py; torch 2.15.0, torchvision 0.29.2, numpy 2.4.6
(2.3.5 when vit_b_16 was added), safetensors 0.8.0). For each architecture (default: the six
with other activations than ReLU/ReLU6, and vit_b_16), on the UNMODIFIED torchvision model
loaded with the same synthetic weights (every activation module only switched to
inplace=False), in float64:

- logits and gradient by plain autograd;
- guided backprop by full backward hooks on every activation module, returning
  relu(grad_out) * phi'(z) with phi' written out by hand here (not torch's autograd):
  ReLU 1[z>0], ReLU6 1[0<z<6], Sigmoid s(1-s), SiLU s(1+z(1-s)), Hardsigmoid 1/6 on (-3,3),
  Hardswish 0 / (2z+3)/6 / 1 below -3 / on (-3,3) / above 3, GELU Phi(z)+z*phi(z), Tanh 1-t^2;
- Grad-CAM through retain_grad on the layer's output;
- integrated gradients with the 16 path points in one batch;

each compared with the stored float32 tensor (max |a - b| / max |b|). Prints the differences and
exits non-zero above 1e-6.

vit_b_16 (the small ViT of scripts/torchvision_fixtures.py, checked by default too): the same
checks with the full backward hooks on its two nn.GELU modules (the attention, LayerNorms and
adds untouched, so plain autograd), nn.MultiheadAttention's fast path off as there, Grad-CAM with
the ViT reshape applied to the retained output and its gradient; and pytorch-grad-cam's own
GradCAM (1.5.7, `reshape_transform` = the fixture script's, ClassifierOutputTarget(target)) on a
fresh copy of the model: its rectified map before resizing, upsampled here with F.interpolate,
against the stored grad_cam (relative), and its final output (min-max scaled per image, cv2
resize in float32) against the stored grad_cam min-max scaled the same way (absolute), and
its weighted sum before the ReLU against the stored grad_cam_unrectified. Needs
`pip install grad-cam==1.5.7` in the venv.
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_weights import synthetic  # noqa: E402
from torchvision_fixtures import (  # noqa: E402
    GRAD_CAM_LAYER,
    GRAD_CAM_RESHAPE,
    IG_STEPS,
    OUT_DIR,
    VIT_CONFIG,
    new_model,
)

NEW = ["efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", "regnet_y_400mf",
       "shufflenet_v2_x1_0", "convnext_tiny", "vit_b_16"]


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
    if arch in VIT_CONFIG:
        torch.backends.mha.set_fastpath_enabled(False)  # as scripts/torchvision_fixtures.py does
    model = new_model(arch)
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
    a, ga = store["A"], store["A"].grad
    if arch in GRAD_CAM_RESHAPE:
        a, ga = GRAD_CAM_RESHAPE[arch](a), GRAD_CAM_RESHAPE[arch](ga)
    raw = (ga.mean(dim=(2, 3), keepdim=True) * a).sum(1)
    if "grad_cam_unrectified" in f:
        out["grad_cam_unrectified"] = raw[:, None].detach()
    cam = F.relu(raw)
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
    if arch in GRAD_CAM_RESHAPE:
        worst = max(worst, check_pytorch_grad_cam(arch, x, t, f["grad_cam"], f["grad_cam_unrectified"]))
    return worst


def check_pytorch_grad_cam(arch, x, t, stored, unrectified):
    """pytorch-grad-cam's GradCAM with the fixture's reshape_transform against the stored map."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class RawGradCAM(GradCAM):
        """GradCAM keeping its weighted sum (before the ReLU, the min-max scaling and resizing)."""

        def get_cam_image(self, *args, **kwargs):
            self.raw = super().get_cam_image(*args, **kwargs)
            return self.raw

    model = plain_model(arch)
    for p in model.parameters():  # pytorch-grad-cam takes the gradient through the parameters
        p.requires_grad_(True)
    layer = dict(model.named_modules())[GRAD_CAM_LAYER[arch]]
    cam = RawGradCAM(model=model, target_layers=[layer], reshape_transform=GRAD_CAM_RESHAPE[arch])
    maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    e_signed = rel(cam.raw[:, None], unrectified)
    raw = torch.from_numpy(np.maximum(cam.raw, 0))[:, None]
    up = F.interpolate(raw, size=x.shape[2:], mode="bilinear", align_corners=False).numpy()
    e_raw = max(rel(up, stored), e_signed)
    s = stored[:, 0].astype(np.float64)
    s = s - s.min(axis=(1, 2), keepdims=True)
    s = s / (1e-7 + s.max(axis=(1, 2), keepdims=True))
    e_out = float(np.abs(np.asarray(maps, np.float64) - s).max())
    print(f"{arch} pytorch-grad-cam GradCAM (reshape_transform, cam {list(cam.raw.shape)}): "
          f"before the ReLU {e_signed:.1e} relative, unscaled map upsampled {rel(up, stored):.1e} "
          f"relative, min-max scaled output {e_out:.1e} absolute (max 1)", flush=True)
    # The scaled output went through cv2's float32 resize: a few float32 ulps of 1.
    if e_out > 1e-5:
        sys.exit(f"{arch}: pytorch-grad-cam's scaled output differs by {e_out:.2e} > 1e-5")
    return e_raw


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "0")) or max(1, os.cpu_count() or 1))
    worst = max(check(a) for a in (sys.argv[1:] or NEW))
    if worst > 1e-6:
        sys.exit(f"largest relative difference {worst:.2e} > 1e-6")


if __name__ == "__main__":
    main()
