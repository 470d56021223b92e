#!/usr/bin/env python3
"""Reference outputs of torchvision architectures on synthetic weights (tests/fixtures/torchvision/).

How the committed fixtures were made (a throwaway venv outside the repo, PyPI only):

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch torchvision safetensors numpy
    /work/torchenv/bin/python scripts/torchvision_fixtures.py            # all architectures
    /work/torchenv/bin/python scripts/torchvision_fixtures.py resnet18   # or some of them

with torch 2.15.0+cu132, torchvision 0.29.2+cu132, numpy 2.4.6, safetensors 0.8.0, on CPU
(Python 3.11.7). The versions actually used are also written into each file's metadata.

For each architecture: `torchvision.models.<arch>(weights=None, num_classes=10)`, every
state_dict entry replaced by scripts/synthetic_weights.py's formula (same keys and shapes;
num_batches_tracked left as torch has it), eval mode, computed in float64 and stored as
float32. The input `x` is [2,3,64,64], the formula's key "input" scaled as u (in [0,1)); the
targets are the argmax classes of each image's logits. Outputs (see the fixtures' README):
logits, gradient, integrated_gradients (zero baseline, right Riemann sum, 16 steps), grad_cam
(at the default layer below, bilinear upsampling, align_corners=False) and guided_backprop
(at every ReLU/ReLU6 the gradient is relu(g) * 1[z > 0], for ReLU6 relu(g) * 1[0 < z < 6]; at
every other elementwise nonlinearity -- SiLU, Sigmoid, Hardsigmoid, Hardswish, GELU, Tanh --
relu(g) * phi'(z) with phi' that function's own derivative, as torch's autograd computes it;
everything else, the squeeze-and-excitation product x * s, LayerNorm, adds, pooling, ConvNeXt's
layer scale, backpropagates its plain gradient).

The six architectures added later (efficientnet_b0, mobilenet_v3_small, mobilenet_v3_large,
regnet_y_400mf, shufflenet_v2_x1_0, convnext_tiny) were made on 2026-12-07 with the same
versions (torch 2.15.0+cu132 and torchvision 0.29.2+cu132 as PyPI's default wheels report
themselves, numpy 2.4.6, safetensors 0.8.0, Python 3.11.7), on CPU, one thread:

    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/torchvision_fixtures.py \
        efficientnet_b0 mobilenet_v3_small mobilenet_v3_large regnet_y_400mf shufflenet_v2_x1_0 convnext_tiny

(this script, one thread, reproduces the first twelve's files byte for byte). ConvNeXt's
layer_scale needed a new rule in the weight formula (scripts/synthetic_weights.py: 1 + 0.1 r).
All six were cross-checked (scripts/check_torchvision_guided.py) against the unmodified
torchvision models: plain autograd, guided backprop by full backward hooks with hand-written
derivatives, Grad-CAM by retain_grad and a batched IG, all within 6e-8 relative.

vit_b_16 (added 2026-12-08: torch and torchvision as above, numpy 2.3.5, one thread:
`FIXTURE_THREADS=1 ... vit_b_16`) is a SMALL Vision Transformer built by the same torchvision
code as vit_b_16, `torchvision.models.VisionTransformer(image_size=32, patch_size=16,
num_layers=2, num_heads=12, hidden_dim=48, mlp_dim=96, num_classes=10)`, not vit_b_16 itself.
The real one (224x224 input, 12 layers of width 768, 86M parameters) would cost seconds per
float64 pass here (IG alone is 17 passes) and make the Rust test slow, while every kind of
computation it has is already in the small one: the 16x16 patchify convolution, the class token,
the position embedding, pre-norm encoder blocks (LayerNorm eps 1e-6, nn.MultiheadAttention,
residual adds, an MLP with exact GELU), the final LayerNorm and the head on the class token. 12
heads as vit_b_16 has (head dim 48 / 12 = 4), so that a Rust builder taking the head count from
the architecture name builds the same attention; 32x32 gives 2x2 = 4 patch tokens + the class
token, T = 5, so the attention mixes tokens and the positions matter. Its input `x` is
[2,3,32,32] (the same formula stream, so its first 6144 values). The class token and position
embedding needed a rule in the weight formula (0.5 r; torchvision's zeros and N(0, 0.02^2) would
leave them nearly invisible).

On the ViT:
- nn.MultiheadAttention's fused inference fast path (torch._native_multi_head_attention, taken
  under no_grad) differs from the autograd path in the last bits (1e-15), so it is switched off
  (torch.backends.mha.set_fastpath_enabled(False)) and every pass, with or without gradients,
  runs F.multi_head_attention_forward; with need_weights=False that calls
  F.scaled_dot_product_attention, whose softmax is inside one fused op.
- Guided backprop: the only elementwise nonlinearities are the two MLP blocks' nn.GELU modules
  (`encoder.layers.encoder_layer_{0,1}.mlp.1`), swapped for SmoothAct("gelu") like ConvNeXt's
  (the script prints the count: {'GELU': 2}); there the backward is relu(g) * GELU'(z). The
  attention (the q/k/v projections, the softmax and both products inside SDPA), the LayerNorms,
  the residual adds, the class-token concatenation and the position-embedding add backpropagate
  the plain gradient autograd computes. scripts/check_torchvision_guided.py checks this against
  the unmodified model with full backward hooks on the GELU modules.
- Grad-CAM at `encoder.layers.encoder_layer_1.ln_1` ([2,5,48]) with pytorch-grad-cam's ViT
  recipe (its README / tutorial `reshape_transform`): the class token dropped (tensor[:, 1:, :]),
  the 4 patch tokens reshaped to the 2x2 grid in row-major patch order and put channels first,
  [2,48,2,2]; the same transform is applied to the gradient of that layer's output (which is
  what pytorch-grad-cam's gradient hook does), then the usual Grad-CAM as for the CNNs.
  scripts/check_torchvision_guided.py vit_b_16 compares it with pytorch_grad_cam.GradCAM.
  At this layer the patch tokens reach the logits only as keys and values of the class token's
  attention in the last block, and the per-token weighted sum has either sign: on the fixture's
  input the ReLU leaves one of image 0's four cells and none of image 1's (a zero map; this is
  Grad-CAM's own behaviour on ViTs, not a bug). So the ViT's file also has
  `grad_cam_unrectified` [2,1,2,2], the signed sum before the ReLU and the upsampling, whose
  four distinct values per image check the token-to-grid order (a transposed grid swaps the
  off-diagonal cells). Any layer after the last block's attention (ln_2, the MLP, the block
  output) has a zero gradient on every patch token, so Grad-CAM there is zero.
"""

import datetime
import json
import os
import sys
import time

import numpy as np
import safetensors
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_weights import checksum, synthetic  # noqa: E402

NUM_CLASSES = 10
IG_STEPS = 16
INPUT_SHAPE = (2, 3, 64, 64)
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torchvision")

# Grad-CAM's default layer: the output of the last convolution's activation.
GRAD_CAM_LAYER = {
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "resnet101": "layer4",
    "squeezenet1_0": "features.12",  # the last Fire module: cat(ReLU(expand1x1), ReLU(expand3x3))
    "squeezenet1_1": "features.12",
    "mobilenet_v2": "features.18",  # Conv2dNormActivation(320 -> 1280): conv, BN, ReLU6
    "vgg11": "features.19",
    "vgg16": "features.29",
    "vgg11_bn": "features.27",
    "vgg16_bn": "features.42",
    "alexnet": "features.11",
    # The architectures below follow pytorch-grad-cam's README choices ("VGG, densenet161 and
    # mobilenet: model.features[-1]"; the last stage / last block otherwise), in torchvision names.
    "efficientnet_b0": "features.8",  # Conv2dNormActivation(320 -> 1280): conv, BN, SiLU
    "mobilenet_v3_small": "features.12",  # Conv2dNormActivation(96 -> 576): conv, BN, Hardswish
    "mobilenet_v3_large": "features.16",  # Conv2dNormActivation(160 -> 960): conv, BN, Hardswish
    "regnet_y_400mf": "trunk_output",  # the last stage; its last block ends ReLU(proj(x) + f(x))
    "shufflenet_v2_x1_0": "conv5",  # conv 1x1 (464 -> 1024), BN, ReLU
    "convnext_tiny": "features.7",  # the last stage; its last CNBlock ends in a residual add (no activation)
    # The last encoder block's first LayerNorm (pytorch-grad-cam's ViT choice,
    # `model.blocks[-1].norm1` in timm), through the reshape below.
    "vit_b_16": "encoder.layers.encoder_layer_1.ln_1",
}
ARCHS = list(GRAD_CAM_LAYER)

# Architectures not built as torchvision.models.<arch>(weights=None, num_classes=10): a small
# Vision Transformer under vit_b_16's name (see the docstring for why small).
VIT_CONFIG = {
    "vit_b_16": dict(image_size=32, patch_size=16, num_layers=2, num_heads=12, hidden_dim=48,
                     mlp_dim=96),
}


def new_model(arch):
    """The untrained torchvision model of `arch` with NUM_CLASSES outputs."""
    if arch in VIT_CONFIG:
        return torchvision.models.VisionTransformer(**VIT_CONFIG[arch], num_classes=NUM_CLASSES)
    return getattr(torchvision.models, arch)(weights=None, num_classes=NUM_CLASSES)


def input_shape(arch):
    if arch in VIT_CONFIG:
        size = VIT_CONFIG[arch]["image_size"]
        return (INPUT_SHAPE[0], INPUT_SHAPE[1], size, size)
    return INPUT_SHAPE


def vit_reshape_transform(tensor):
    """pytorch-grad-cam's ViT reshape_transform: [B, 1 + h*w, D] -> [B, D, h, w], the class token
    dropped and the patch tokens (row-major over the patch grid, as torchvision's _process_input
    flattens them) laid on their square grid."""
    b, t, d = tensor.shape
    side = int(round((t - 1) ** 0.5))
    assert side * side == t - 1, tensor.shape
    return tensor[:, 1:, :].reshape(b, side, side, d).permute(0, 3, 1, 2)


# Grad-CAM's reshape of the layer's output (and of its gradient) to [B, C, h, w], where needed.
GRAD_CAM_RESHAPE = {"vit_b_16": vit_reshape_transform}


class GuidedReLU(torch.autograd.Function):
    """ReLU (or ReLU6 with `cap` = 6) whose backward is relu(g) * 1[0 < z (< cap)]."""

    @staticmethod
    def forward(ctx, z, cap):
        ctx.save_for_backward(z)
        ctx.cap = cap
        return z.clamp(min=0) if cap is None else z.clamp(0, cap)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        mask = z > 0
        if ctx.cap is not None:
            mask = mask & (z < ctx.cap)
        return g.clamp(min=0) * mask.to(g.dtype), None


# The other elementwise nonlinearities torchvision's models use, as functions (never in place).
SMOOTH = {
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
    "hardswish": F.hardswish,
    "gelu": F.gelu,  # approximate="none" (ConvNeXt's nn.GELU())
    "tanh": torch.tanh,
}


class GuidedSmooth(torch.autograd.Function):
    """phi(z) whose backward is relu(g) * phi'(z): phi's own backward (torch's derivative,
    hardswish's and hardsigmoid's kink conventions included) fed relu(g) instead of g."""

    @staticmethod
    def forward(ctx, z, kind):
        ctx.save_for_backward(z)
        ctx.kind = kind
        return SMOOTH[kind](z)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (gz,) = torch.autograd.grad(SMOOTH[ctx.kind](z), z, g.clamp(min=0))
        return gz, None


class Act(nn.Module):
    """Stands in for every nn.ReLU / nn.ReLU6 (never in place): plain, or guided when `guided`."""

    def __init__(self, cap):
        super().__init__()
        self.cap = cap
        self.guided = False

    def forward(self, z):
        if self.guided:
            return GuidedReLU.apply(z, self.cap)
        return F.relu(z) if self.cap is None else F.relu6(z)


class SmoothAct(nn.Module):
    """Stands in for every nn.SiLU / Sigmoid / Hardsigmoid / Hardswish / GELU / Tanh (never in
    place): plain, or guided when `guided`."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.guided = False

    def forward(self, z):
        if self.guided:
            return GuidedSmooth.apply(z, self.kind)
        return SMOOTH[self.kind](z)


def replace_activations(model):
    """Swap every activation module for an Act / SmoothAct; returns how many of each kind."""
    counts = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):  # ReLU6 subclasses Hardtanh, not ReLU; test it first
                new, kind = Act(6.0), "ReLU6"
            elif isinstance(child, nn.ReLU):
                new, kind = Act(None), "ReLU"
            elif isinstance(child, nn.SiLU):
                new, kind = SmoothAct("silu"), "SiLU"
            elif isinstance(child, nn.Sigmoid):
                new, kind = SmoothAct("sigmoid"), "Sigmoid"
            elif isinstance(child, nn.Hardsigmoid):
                new, kind = SmoothAct("hardsigmoid"), "Hardsigmoid"
            elif isinstance(child, nn.Hardswish):
                new, kind = SmoothAct("hardswish"), "Hardswish"
            elif isinstance(child, nn.GELU):
                if child.approximate != "none":
                    raise RuntimeError(f"unexpected GELU approximation {child.approximate!r}")
                new, kind = SmoothAct("gelu"), "GELU"
            elif isinstance(child, nn.Tanh):
                new, kind = SmoothAct("tanh"), "Tanh"
            elif isinstance(child, (nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.PReLU, nn.Mish, nn.Softplus)):
                raise RuntimeError(f"unexpected activation {type(child).__name__}")
            else:
                continue
            setattr(parent, name, new)
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def set_guided(model, on):
    for m in model.modules():
        if isinstance(m, (Act, SmoothAct)):
            m.guided = on


def build(arch):
    if arch in VIT_CONFIG:
        # One code path for attention in every pass (see the docstring): the fused no-grad fast
        # path differs from the autograd path by rounding. (A global switch; only the ViT has
        # nn.MultiheadAttention.)
        torch.backends.mha.set_fastpath_enabled(False)
    model = new_model(arch)
    sd = model.state_dict()
    keys = []
    new_sd = {}
    for k, v in sd.items():
        entry = {"name": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        if k.endswith("num_batches_tracked"):
            new_sd[k] = v
        else:
            w = synthetic(k, list(v.shape))
            entry["checksum"] = f"{checksum(w):#018x}"
            new_sd[k] = torch.from_numpy(w)
        keys.append(entry)
    model.load_state_dict(new_sd, strict=True)
    n_act = replace_activations(model)
    model.eval().double()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, keys, n_act


def input_grad(model, x, targets):
    """d sum_b logit_{targets[b]}(x_b) / dx, and the logits."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    sel = logits.gather(1, targets[:, None]).sum()
    (g,) = torch.autograd.grad(sel, x)
    return g, logits.detach()


def grad_cam(model, layer, x, targets, reshape=None):
    """Grad-CAM at `layer`; `reshape` (e.g. the ViT's) maps its output and the output's gradient
    to [B, C, h, w] first."""
    store = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    try:
        # The parameters do not require grad: let the graph start at x so that A has one.
        logits = model(x.detach().clone().requires_grad_(True))
    finally:
        handle.remove()
    a = store["A"]
    (ga,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), a)
    if reshape is not None:
        a, ga = reshape(a), reshape(ga)
    alpha = ga.mean(dim=(2, 3), keepdim=True)
    raw = (alpha * a).sum(dim=1)
    cam = F.relu(raw)
    up = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    return up.detach(), tuple(a.shape), raw[:, None].detach()


def make(arch):
    t0 = time.time()
    model, keys, n_act = build(arch)
    t_build = time.time() - t0
    x = torch.from_numpy(synthetic("input", input_shape(arch), scale="u")).double()

    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(dim=1)
    grad, logits2 = input_grad(model, x, targets)
    assert torch.equal(logits, logits2)

    ig = torch.zeros_like(x)
    for s in range(1, IG_STEPS + 1):
        g, _ = input_grad(model, x * (s / IG_STEPS), targets)
        ig += g
    ig = x * ig / IG_STEPS

    cam, a_shape, cam_raw = grad_cam(model, GRAD_CAM_LAYER[arch], x, targets, GRAD_CAM_RESHAPE.get(arch))

    set_guided(model, True)
    try:
        gbp, logits3 = input_grad(model, x, targets)
    finally:
        set_guided(model, False)
    assert torch.equal(logits, logits3)

    out = {
        "x": x,
        "logits": logits,
        "gradient": grad,
        "integrated_gradients": ig,
        "grad_cam": cam,
        "guided_backprop": gbp,
    }
    if arch in GRAD_CAM_RESHAPE:
        # The ViT's map is rectified to zero on most of its 2x2 grid (see the docstring): the
        # signed weighted sum before the ReLU and the upsampling, [2,1,h,w], checks the reshape.
        out["grad_cam_unrectified"] = cam_raw
    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in out.items()}
    arrays["targets"] = targets.numpy().astype(np.int64)
    for k, v in arrays.items():
        if not np.isfinite(v).all():
            raise RuntimeError(f"{arch}: {k} has NaN/inf")
    lg = arrays["logits"]
    if np.ptp(lg, axis=1).min() == 0:
        raise RuntimeError(f"{arch}: all logits equal in an image: {lg}")
    for k in ("gradient", "integrated_gradients", "guided_backprop", "grad_cam"):
        if not np.abs(arrays[k]).max() > 0:
            print(f"  WARNING {arch}: {k} is all zero", flush=True)

    metadata = {
        "arch": arch,
        "num_classes": str(NUM_CLASSES),
        "grad_cam_layer": GRAD_CAM_LAYER[arch],
        "ig_steps": str(IG_STEPS),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "made_by": "scripts/torchvision_fixtures.py",
    }
    if arch in VIT_CONFIG:  # (only here, so that the other files stay byte-identical)
        metadata["model"] = "torchvision.models.VisionTransformer"
        metadata["config"] = json.dumps(VIT_CONFIG[arch], sort_keys=True)
        metadata["grad_cam_reshape"] = ("tensor[:, 1:, :] -> [B, h, w, D] -> [B, D, h, w] "
                                        "(class token dropped)")
    os.makedirs(OUT_DIR, exist_ok=True)
    # One metadata entry holding sorted JSON: safetensors writes a metadata map in hash order,
    # which would make reruns differ byte-wise although every value is the same.
    save_file(arrays, os.path.join(OUT_DIR, f"{arch}.safetensors"),
              metadata={"fixture": json.dumps(metadata, sort_keys=True)})
    # One key a line: readable and diff-friendly.
    head = {"arch": arch, "num_classes": NUM_CLASSES, "torch": torch.__version__,
            "torchvision": torchvision.__version__}
    if arch in VIT_CONFIG:
        head["vit_config"] = VIT_CONFIG[arch]
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    entries = ",\n".join(f"    {json.dumps(k)}" for k in keys)
    with open(os.path.join(OUT_DIR, f"{arch}.keys.json"), "w") as f:
        f.write("{\n" + "\n".join(lines) + '\n  "keys": [\n' + entries + "\n  ]\n}\n")

    n_params = sum(int(np.prod(k["shape"])) for k in keys if k["dtype"] != "int64")
    total = time.time() - t0
    print(
        f"{arch}: {n_params} params, activations {n_act}, Grad-CAM A {list(a_shape)}, "
        f"targets {arrays['targets'].tolist()}, logits range {lg.min():.4g}..{lg.max():.4g} "
        f"(per-image spread {np.ptp(lg, axis=1).round(4).tolist()}), "
        f"|grad| max {np.abs(arrays['gradient']).max():.3g}, "
        f"|gbp| max {np.abs(arrays['guided_backprop']).max():.3g}, "
        f"cam max {arrays['grad_cam'].max():.3g}; weights {t_build:.1f} s, total {total:.1f} s",
        flush=True,
    )
    if "grad_cam_unrectified" in arrays:
        signed = arrays["grad_cam_unrectified"].astype(np.float64).round(4).tolist()
        print(f"  {arch}: Grad-CAM before the ReLU {signed}", flush=True)


def main():
    # FIXTURE_THREADS=1 keeps a shared machine usable (the first twelve, made with 2 threads,
    # come out byte-identical with 1).
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "0")) or max(1, os.cpu_count() or 1))
    archs = sys.argv[1:] or ARCHS
    for a in archs:
        if a not in GRAD_CAM_LAYER:
            sys.exit(f"unknown architecture {a!r}; known: {', '.join(ARCHS)}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {np.__version__}, "
          f"{datetime.date.today().isoformat()}", flush=True)
    for a in archs:
        make(a)


if __name__ == "__main__":
    main()
