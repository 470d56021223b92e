#!/usr/bin/env python3
"""Reference β-smoothed maps (tests/fixtures/torchvision/beta_smooth_<arch>.safetensors).

β-smoothing (Dombrowski et al., NeurIPS 2019, Section 5; their code's `convert_relu_to_softplus`):
a map computed on the network with every nn.ReLU replaced by nn.Softplus(beta), forward and
backward, the target class the real (ReLU) network's argmax.

How the committed fixtures were made (the venv of scripts/lrp_fixtures.py, zennit 0.5.1 included):

    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/beta_smooth_fixtures.py            # both
    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/beta_smooth_fixtures.py resnet18   # or one

with zennit 0.5.1, torch 2.15.0+cu132, torchvision 0.29.2+cu132, numpy 2.4.6, safetensors 0.8.0, on
CPU, one thread; the versions used are in each file's metadata (`fixture`: sorted JSON).

Models: scripts/lrp_fixtures.py's build(arch) -- torchvision's vgg11 / resnet18 with
scripts/synthetic_weights.py's weights, nn.ReLU modules, eval mode, float64 -- and its softplus
copy: a deep copy with every nn.ReLU module replaced by nn.Softplus(beta=β) (torch's default
threshold 20: above βz = 20 torch returns z, which differs from ln(1 + e^{βz})/β by at most
e^{-20}/β, 2e-9/β). resnet18's BasicBlock calls its one `relu` module twice; both become softplus.
The input `x` is lrp_fixtures' [2,3,64,64]; `targets` the argmax of the ReLU network's logits.

Keys (F32 unless said; maps [2,3,64,64]):

    x, targets (I64 [2]), logits ([2,10], the ReLU network's)
    logits@beta=B                  [2,10] the softplus(B) network's logits
    gradient@beta=B                d logit[target] / dx through the softplus(B) network (autograd)
    lrp_epsilon_plus_flat@beta=B   zennit's EpsilonPlusFlat on the softplus(B) network, canonized
                                   as in scripts/lrp_fixtures.py (VGGCanonizer; ExactResNetCanonizer:
                                   the residual sum a zennit Sum with Norm, BN merged exactly), every
                                   nn.Softplus getting the composites' Pass (zennit.types.Activation
                                   includes Softplus), attr_output = one_hot(targets) * logits@beta=B
                                   (the harness seeds LRP with the logits of the pass it runs)

    gradient@beta_backward=B       zennit's BetaSmooth(beta_smooth=B) composite on the ReLU network
                                   (zennit.attribution.Gradient, attr_output = one_hot(targets)): the
                                   real forward pass, each nn.ReLU's gradient sigmoid(B z) * grad

for B in BETAS. Two pitfalls of zennit 0.5.1's hook on torchvision models, both avoided here
(distinct_relus below; the function is unchanged): (1) its hook stores the module's input after
the forward call, and torchvision's ReLUs are nn.ReLU(inplace=True), so the stored "input" is
relu(z) and the backward computes sigmoid(B relu(z)) -- 0.5 instead of sigmoid(B z) wherever z < 0;
every nn.ReLU is set inplace=False; (2) the hook keeps one stored input per module, and resnet18's
BasicBlock calls its one `relu` module twice, so the first call's backward would read the second
call's input; each BasicBlock gets a second nn.ReLU for its second call. The script checks
zennit's map on the patched model against an independent implementation (a
torch.autograd.Function whose backward is grad * sigmoid(B z)) to 1e-10 relative, and prints how
far zennit's map on the stock model is from it.

The script checks that the canonized softplus network's logits equal the
uncanonized ones (1e-10 relative), that every map is finite and not all zero, and prints how far
each smoothed map is from the unsmoothed one (Pearson r of the flattened maps).
"""

import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.numpy import save_file

import zennit.composites as zc
from zennit.attribution import Gradient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lrp_fixtures import CANONIZERS, attribute, build, rel_diff, versions  # noqa: E402
from synthetic_weights import synthetic  # noqa: E402
from torchvision_fixtures import INPUT_SHAPE, NUM_CLASSES, OUT_DIR  # noqa: E402

ARCHS = ["vgg11", "resnet18"]
BETAS = [1.0, 3.0, 10.0]


def softplus_copy(model, beta):
    """A deep copy with every nn.ReLU module replaced by nn.Softplus(beta); how many were replaced."""
    m = copy.deepcopy(model)
    replaced = 0
    for parent in m.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, torch.nn.Softplus(beta=beta))
                replaced += 1
    if any(isinstance(mod, torch.nn.ReLU) for mod in m.modules()):
        raise RuntimeError("a ReLU module is left")
    return m, replaced


class SmoothReLUFunction(torch.autograd.Function):
    """ReLU forward; backward grad * sigmoid(beta * z) (what zennit's ReLUBetaSmooth hook computes)."""

    @staticmethod
    def forward(ctx, z, beta):
        ctx.save_for_backward(z)
        ctx.beta = beta
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * torch.sigmoid(ctx.beta * z), None


class SmoothReLU(torch.nn.Module):
    def __init__(self, beta):
        super().__init__()
        self.beta = beta

    def forward(self, z):
        return SmoothReLUFunction.apply(z, self.beta)


def distinct_relus(model):
    """A deep copy in which every nn.ReLU is out of place and each torchvision BasicBlock calls a
    second nn.ReLU (`relu2`) for its second activation, so that no nn.ReLU module is called twice
    in one forward pass."""
    m = copy.deepcopy(model)
    for mod in list(m.modules()):
        if isinstance(mod, torchvision.models.resnet.BasicBlock):
            mod.relu2 = torch.nn.ReLU()
            mod.forward = basic_block_forward.__get__(mod)
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    return m


def basic_block_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu2(self.bn2(self.conv2(out)) + identity)


def replace_relus(model, make):
    m = copy.deepcopy(model)
    for parent in m.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, make())
    return m


def zennit_beta_smooth(model, x, targets, beta):
    """zennit's BetaSmooth gradient map."""
    attr_out = F.one_hot(targets, NUM_CLASSES).to(x)
    with Gradient(model=model, composite=zc.BetaSmooth(beta_smooth=beta)) as attributor:
        _, grad = attributor(x.detach().clone(), attr_out)
    return grad.detach()


def gradient(model, x, targets):
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    out.gather(1, targets[:, None]).sum().backward()
    return x.grad.detach()


def pearson(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def make(arch):
    canonizer_cls, canonizer_desc, _ = CANONIZERS[arch]
    x = torch.from_numpy(synthetic("input", INPUT_SHAPE, scale="u")).double()
    model, _ = build(arch)
    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(dim=1)
    plain = gradient(model, x, targets)
    print(f"{arch}: targets {targets.tolist()}", flush=True)
    out = {
        "x": x.numpy().astype(np.float32),
        "targets": targets.numpy().astype(np.int64),
        "logits": logits.numpy().astype(np.float32),
    }
    for beta in BETAS:
        smooth, replaced = softplus_copy(model, beta)
        with torch.no_grad():
            s_logits = smooth(x)
        g = gradient(smooth, x, targets)
        rel, _, d = attribute(smooth, canonizer_cls, zc.EpsilonPlusFlat, {}, x, targets, s_logits)
        for key, v in [("logits", s_logits), ("gradient", g), ("lrp_epsilon_plus_flat", rel)]:
            if not torch.isfinite(v).all() or not v.abs().max() > 0:
                raise RuntimeError(f"{arch} {key}@beta={beta:g}: not finite or all zero")
        print(f"  beta={beta:g}: {replaced} ReLU modules -> Softplus; logits "
              f"{', '.join(f'{v:+.4f}' for v in s_logits.gather(1, targets[:, None])[:, 0].tolist())} "
              f"(ReLU: {', '.join(f'{v:+.4f}' for v in logits.gather(1, targets[:, None])[:, 0].tolist())}); "
              f"r(gradient, ReLU gradient) = {pearson(g, plain):.3f}; LRP hooked logits d={d:.0e}, "
              f"sum R = {', '.join(f'{v:+.4g}' for v in rel.sum(dim=(1, 2, 3)).tolist())}", flush=True)
        out[f"logits@beta={beta:g}"] = s_logits.numpy().astype(np.float32)
        out[f"gradient@beta={beta:g}"] = g.numpy().astype(np.float32)
        out[f"lrp_epsilon_plus_flat@beta={beta:g}"] = rel.numpy().astype(np.float32)

        distinct = distinct_relus(model)
        zb = zennit_beta_smooth(distinct, x, targets, beta)
        own = gradient(replace_relus(distinct, lambda: SmoothReLU(beta)), x, targets)
        d_own = rel_diff(zb, own)
        if not d_own <= 1e-10:
            raise RuntimeError(f"{arch} beta_backward={beta:g}: zennit vs own implementation {d_own:.3g}")
        reused = rel_diff(zennit_beta_smooth(model, x, targets, beta), own)
        print(f"  beta_backward={beta:g}: zennit BetaSmooth vs own d={d_own:.1e}; r(map, ReLU gradient) = "
              f"{pearson(zb, plain):.3f}; zennit on the stock model (in-place, reused ReLU modules) d={reused:.2e}",
              flush=True)
        out[f"gradient@beta_backward={beta:g}"] = zb.numpy().astype(np.float32)

    meta = dict(versions())
    meta.update({"arch": arch, "canonizers": canonizer_desc, "made_by": "scripts/beta_smooth_fixtures.py",
                 "betas": ", ".join(f"{b:g}" for b in BETAS)})
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.normpath(os.path.join(OUT_DIR, f"beta_smooth_{arch}.safetensors"))
    save_file(out, path, metadata={"fixture": json.dumps(meta, sort_keys=True)})
    print(f"{arch}: {path} ({os.path.getsize(path)} bytes, {len(out)} tensors)", flush=True)


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    archs = sys.argv[1:] or ARCHS
    for a in archs:
        if a not in ARCHS:
            sys.exit(f"unknown architecture {a!r}; known: {', '.join(ARCHS)}")
    print(", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    for a in archs:
        make(a)


if __name__ == "__main__":
    main()
