#!/usr/bin/env python3
"""Reference LRP relevance maps by zennit (tests/fixtures/torchvision/lrp_<arch>.safetensors).

How the committed fixtures were made (the throwaway venv of scripts/torchvision_fixtures.py,
plus zennit from PyPI):

    /work/torchenv/bin/pip install zennit==0.5.1
    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/lrp_fixtures.py            # all three
    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/lrp_fixtures.py resnet18   # or some

with zennit 0.5.1, torch 2.15.0+cu132, torchvision 0.29.2+cu132, numpy 2.4.6, safetensors
0.8.0, on CPU, one thread; the versions actually used are written into each file's metadata
(one entry, `fixture`: sorted JSON with the arch, the versions and the canonizers' names).

For vgg11, resnet18 and mobilenet_v2: `torchvision.models.<arch>(weights=None, num_classes=10)`
with every state_dict entry replaced by scripts/synthetic_weights.py's formula (num_batches_tracked
left as torch has it), eval mode, float64 -- the weights of scripts/torchvision_fixtures.py, but
WITHOUT its activation swap: zennit picks rules by module type, so nn.ReLU / nn.ReLU6 must stay
torch's modules (they get zennit's Pass rule). The script checks that these logits equal
torchvision_fixtures.build(arch)'s to 1e-10 relative. The input `x` is [2,3,64,64] (the formula's
key "input", scaled as u), `targets` the argmax classes.

Every map is zennit's `Gradient` attributor with the composite below and the output relevance
`attr_output` = one_hot(targets) * logits (the target logit's value in the target column, zero
elsewhere: the relevance sums to the logit up to what biases and stabilisers absorb), computed in
float64 on a fresh deep copy of the model per composite, stored as float32 [2,3,64,64]. The script
checks that the canonized model's logits equal the original's (1e-10 relative), that every map is
finite and not all zero, and prints each map's sum against the target logit.

Keys (all composites from zennit.composites, default settings unless given):

    x                       F32 [2,3,64,64]  the input
    targets                 I64 [2]          argmax of the logits
    logits                  F32 [2,10]       the eval-mode logits
    lrp_epsilon_plus        EpsilonPlus(): ZPlus at every conv, Epsilon(1e-6) at every nn.Linear
    lrp_epsilon_plus_flat   EpsilonPlusFlat(): as EpsilonPlus but Flat at the first layer
    lrp_epsilon_gamma_box   EpsilonGammaBox(low=0., high=1.): ZBox at the first conv, Gamma(0.25)
                            at the other convs, Epsilon(1e-6) at nn.Linear
    lrp_epsilon_alpha2_beta1       EpsilonAlpha2Beta1(): AlphaBeta(2, 1) at convs, Epsilon at nn.Linear
    lrp_epsilon_alpha2_beta1_flat  EpsilonAlpha2Beta1Flat(): as above, Flat at the first layer
    lrp_epsilon_plus@epsilon=0.1   EpsilonPlus(epsilon=0.1) (the Linear layers' epsilon)
    lrp_epsilon_gamma_box@gamma=0.5,low=-1,high=2   EpsilonGammaBox(low=-1., high=2., gamma=0.5)
    lrp_epsilon_plus_flat@first_layer=w_square      EpsilonPlusFlat(first_map=[(zennit.types.Linear,
                                    WSquare())]): WSquare at the first layer (every parameter squared,
                                    the bias included, as zennit 0.5.1 does), the rest as EpsilonPlus
    lrp_epsilon_gamma_box@first_layer=flat          EpsilonGammaBox(low=0., high=1., first_map=
                                    [(zennit.types.Linear, Flat())]): Flat in place of ZBox

In every composite (zennit's layer_map_base): activations (ReLU, ReLU6) Pass, BatchNorm Pass (the
canonizers have merged each BN into its conv and made it the identity), zennit.layer.Sum and
AvgPool modules (nn.AdaptiveAvgPool2d included) Norm(1e-6); the stabilisers are 1e-6. Modules
without a rule (MaxPool2d, Dropout) and functional ops (torch.flatten, torch.stack) pass relevance
by their plain gradient. The "first layer" of
the Flat / ZBox composites is the first module in named_modules() order that is a zennit Linear
(Flat) / Convolution (ZBox): `features.0` (vgg11), `conv1` (resnet18), `features.0.0`
(mobilenet_v2); the script prints the rule of every module so this can be read off.

Canonizers:

    vgg11         zennit.torchvision.VGGCanonizer()  (= SequentialMergeBatchNorm; vgg11 has no BN,
                  so it changes nothing)
    resnet18      ExactResNetCanonizer (here): zennit.torchvision.ResNetCanonizer's parts -- the
                  merge of every conv+BN pair (downsample included: all 20) and each BasicBlock's
                  forward replaced so that the residual add is
                  relu(canonizer_sum(stack([identity, out], -1))), a zennit.layer.Sum (Norm) -- with
                  ExactSequentialMergeBatchNorm for the merge (below)
    mobilenet_v2  MobileNetV2Canonizer (here; zennit has none): ExactSequentialMergeBatchNorm (each
                  Conv2d+BatchNorm2d in the Sequentials: all 52) plus an AttributeCanonizer that, for
                  every torchvision InvertedResidual with `use_res_connect` (features.3, 5, 6, 8, 9,
                  10, 12, 13, 15, 16), sets `canonizer_sum` = zennit.layer.Sum() and replaces forward by
                  canonizer_sum(torch.stack([x, self.conv(x)], dim=-1)), so that the residual addition
                  gets Norm: each summand's relevance = summand * R / stabilize(sum), stabilize(z) =
                  z + 1e-6 * sign(z) (sign(0) = +1); blocks without the residual are left alone;
                  and the global average pool as a module (Norm; see the end of this docstring)

ExactSequentialMergeBatchNorm: zennit 0.5.1's SequentialMergeBatchNorm folds each BN into its
conv (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta), then
sets the BN to mean 0, var 1, gamma 1, beta 0 but leaves its eps (1e-5), so the "identity" BN
still computes x / sqrt(1 + 1e-5): with zennit's own merge the canonized logits differ from the
model's by 3.75e-5 (resnet18) and 4.33e-5 (mobilenet_v2) relative, and the maps by up to 1.8e-3
relative (the script prints both). Here the merged BN gets var = 0.5 and eps = 0.5 instead
(zennit's own later fix, chr5tphr/zennit#240), an exact identity; the folded weights are
zennit's. The canonized logits then equal the model's to 2e-15 relative.

Zero-bias check (resnet18 only), keys with the suffix `@nobias`:

    logits@nobias                    F32 [2,10]
    lrp_epsilon_plus@nobias          EpsilonPlus()
    lrp_epsilon_gamma_box@nobias     EpsilonGammaBox(low=0., high=1.)

The same model, but before canonizing, every state_dict entry whose key ends in `.bias` or in
`.running_mean` is set to zero. In resnet18 these are the BatchNorms' `bias` (beta) and
`running_mean` (bn1, layerK.M.bn1, layerK.M.bn2, layerK.0.downsample.1) and `fc.bias` (its convs have
no bias); BatchNorm weight (gamma) and running_var keep the formula's values. The merged conv
biases (b - mean) * gamma / sqrt(var + eps) + beta are then exactly 0, the whole network is
bias-free, and the relevance sums equal the target logits up to the stabilisers (printed). The
targets are those of the unmodified model (`targets`; here also the argmax of logits@nobias),
the output relevance one_hot(targets) * logits@nobias.

What the run printed (both images; sum of the map / target logit):

    vgg11         targets [4, 4], target logits 0.0306, 0.0321: ratios -0.50 .. -0.59 (-0.05 with
                  epsilon=0.1); the biases absorb more than the logit (the formula's weights shrink
                  the signal layer by layer)
    resnet18      targets [4, 4], target logits 0.959, 1.019: ratios 0.94 .. 0.96 (0.86 with epsilon=0.1)
    resnet18@nobias  target logits 0.7308, 0.8252: ratio 0.999986 for both composites, all of the
                  1.4e-5 lost to the stabilisers (checked once by hand: with epsilon and stabilizer
                  1e-12 EpsilonPlus gives 1 - 1.4e-11; about 1.2e-5 is the conv / Sum / AvgPool
                  stabilisers', 1.4e-6 fc's Epsilon)
    mobilenet_v2  targets [3, 3], target logits 0.1572, 0.1570: ratios 0.008 .. 0.032

mobilenet_v2's global average pool is functional in torchvision (F.adaptive_avg_pool2d in
_forward_impl), so stock zennit would give it no rule (its plain gradient: each of the 2x2
positions of features.18 receiving R/4, dead activations included). The harness gives every
average pool Norm, as zennit does to every pooling module; so MobileNetV2Canonizer also makes this
pool a module (`canonizer_pool`, nn.AdaptiveAvgPool2d((1, 1)), MobileNetV2PoolCanonizer) and the
maps here are zennit's Norm there (2.4e-3 relative from the functional form's EpsilonPlus map).
"""

import copy
import importlib.metadata
import json
import os
import sys

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
import torchvision
from safetensors.numpy import save_file
from torchvision.models.mobilenetv2 import InvertedResidual

import zennit.composites as zc
import zennit.types
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.layer import Sum
from zennit.rules import Flat, WSquare
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer, ResNetCanonizer, VGGCanonizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_weights import synthetic  # noqa: E402
from torchvision_fixtures import INPUT_SHAPE, NUM_CLASSES, OUT_DIR  # noqa: E402
from torchvision_fixtures import build as build_swapped  # noqa: E402

ARCHS = ["vgg11", "resnet18", "mobilenet_v2"]
NOBIAS_ARCHS = ["resnet18"]
NOBIAS_SUFFIXES = (".bias", ".running_mean")
TOL = 1e-10


class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's SequentialMergeBatchNorm, but the merged BatchNorm is an exact identity.

    zennit 0.5.1 sets the merged BN to mean 0, var 1, weight 1, bias 0 and leaves eps (1e-5), so
    the "identity" computes x / sqrt(1 + eps): every merged BN scales by 1 - 5e-6 and resnet18's
    canonized logits differ from the original's by 3.7e-5 relative. Here var = 0.5 and eps = 0.5
    (zennit's own later fix, chr5tphr/zennit#240): 1 / sqrt(0.5 + 0.5) = 1 exactly. The merged
    conv weights and biases are zennit's, unchanged; remove() restores eps as well."""

    def register(self, linears, batch_norm):
        self.batch_norm_eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 0.5)
        batch_norm.eps = 0.5

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps


class ExactResNetCanonizer(CompositeCanonizer):
    """zennit.torchvision.ResNetCanonizer with ExactSequentialMergeBatchNorm."""

    def __init__(self):
        super().__init__((ExactSequentialMergeBatchNorm(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()))


class MobileNetV2InvertedResidualCanonizer(AttributeCanonizer):
    """For torchvision's InvertedResidual with use_res_connect: the residual add as a zennit Sum."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, InvertedResidual) and module.use_res_connect:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self, x):
        return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))


class MobileNetV2PoolCanonizer(AttributeCanonizer):
    """For torchvision's MobileNetV2: the functional global average pool as an nn.AdaptiveAvgPool2d
    module, so that it gets the composites' Norm rule like every other average pool."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, torchvision.models.MobileNetV2):
            return {"forward": cls.forward.__get__(module), "canonizer_pool": torch.nn.AdaptiveAvgPool2d((1, 1))}
        return None

    @staticmethod
    def forward(self, x):
        x = self.canonizer_pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class MobileNetV2Canonizer(CompositeCanonizer):
    """(Exact)SequentialMergeBatchNorm, the InvertedResidual residual-as-Sum and the pool-as-module
    canonizers."""

    def __init__(self, merge=ExactSequentialMergeBatchNorm):
        super().__init__((merge(), MobileNetV2InvertedResidualCanonizer(), MobileNetV2PoolCanonizer()))


class StockMobileNetV2Canonizer(MobileNetV2Canonizer):
    """As MobileNetV2Canonizer with zennit 0.5.1's own SequentialMergeBatchNorm (for comparison only)."""

    def __init__(self):
        super().__init__(SequentialMergeBatchNorm)


# arch -> (canonizer used for the fixtures, its description, zennit 0.5.1's stock equivalent or None)
CANONIZERS = {
    "vgg11": (VGGCanonizer, "zennit.torchvision.VGGCanonizer (vgg11 has no BatchNorm: changes nothing)", None),
    "resnet18": (ExactResNetCanonizer,
                 "ExactResNetCanonizer (scripts/lrp_fixtures.py): zennit.torchvision.ResNetCanonizer with "
                 "SequentialMergeBatchNorm replaced by ExactSequentialMergeBatchNorm (merged BN var=0.5, "
                 "eps=0.5: exact identity)", ResNetCanonizer),
    "mobilenet_v2": (MobileNetV2Canonizer,
                     "MobileNetV2Canonizer (scripts/lrp_fixtures.py): ExactSequentialMergeBatchNorm + "
                     "InvertedResidual with use_res_connect -> canonizer_sum = zennit.layer.Sum() over "
                     "torch.stack([x, conv(x)], -1)", StockMobileNetV2Canonizer),
}

# key -> (composite class, kwargs)
COMPOSITES = {
    "lrp_epsilon_plus": (zc.EpsilonPlus, {}),
    "lrp_epsilon_plus_flat": (zc.EpsilonPlusFlat, {}),
    "lrp_epsilon_gamma_box": (zc.EpsilonGammaBox, {"low": 0.0, "high": 1.0}),
    "lrp_epsilon_alpha2_beta1": (zc.EpsilonAlpha2Beta1, {}),
    "lrp_epsilon_alpha2_beta1_flat": (zc.EpsilonAlpha2Beta1Flat, {}),
    "lrp_epsilon_plus@epsilon=0.1": (zc.EpsilonPlus, {"epsilon": 0.1}),
    "lrp_epsilon_gamma_box@gamma=0.5,low=-1,high=2": (zc.EpsilonGammaBox, {"low": -1.0, "high": 2.0, "gamma": 0.5}),
    # The `first_layer` setting: zennit's first_map, prepended to the composite's own (the first
    # match wins), as a user of zennit replaces the first layer's rule.
    "lrp_epsilon_plus_flat@first_layer=w_square": (zc.EpsilonPlusFlat, {"first_map": [(zennit.types.Linear, WSquare())]}),
    "lrp_epsilon_gamma_box@first_layer=flat": (zc.EpsilonGammaBox, {"low": 0.0, "high": 1.0,
                                                                     "first_map": [(zennit.types.Linear, Flat())]}),
}
NOBIAS_COMPOSITES = ["lrp_epsilon_plus", "lrp_epsilon_gamma_box"]


def build(arch, zero_bias=False):
    """torchvision's model with the formula's weights, torch's own activation modules, float64.
    With zero_bias, every state_dict entry ending in NOBIAS_SUFFIXES is zero; returns the zeroed keys."""
    model = getattr(torchvision.models, arch)(weights=None, num_classes=NUM_CLASSES)
    new_sd, zeroed = {}, []
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            new_sd[k] = v
        elif zero_bias and k.endswith(NOBIAS_SUFFIXES):
            new_sd[k] = torch.zeros(tuple(v.shape), dtype=torch.float32)
            zeroed.append(k)
        else:
            new_sd[k] = torch.from_numpy(synthetic(k, list(v.shape)))
    model.load_state_dict(new_sd, strict=True)
    model.eval().double()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, zeroed


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def check_close(what, a, b):
    d = rel_diff(a, b)
    if not d <= TOL:
        raise RuntimeError(f"{what}: relative difference {d:.3g} > {TOL}")
    return d


def canonized_logits(model, canonizer_cls, x):
    """Logits of a deep copy with only the canonizer applied (no hooks); also how many merges and
    attribute canonizers were applied and the largest |bias| of a conv / linear after merging."""
    m = copy.deepcopy(model)
    instances = canonizer_cls().apply(m)
    with torch.no_grad():
        out = m(x)
    n_merge = sum(isinstance(i, SequentialMergeBatchNorm) for i in instances)
    n_attr = sum(isinstance(i, AttributeCanonizer) for i in instances)
    conv_bias = [mod.bias.detach() for mod in m.modules()
                 if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None]
    max_bias = max(float(b.abs().max()) for b in conv_bias) if conv_bias else 0.0
    for i in instances:
        i.remove()
    return out, n_merge, n_attr, max_bias


def attribute(model, canonizer_cls, composite_cls, kwargs, x, targets, logits, tol=TOL):
    """zennit's LRP map (float64) on a deep copy; the rule each module got; the hooked model's
    logits' relative difference to `logits`."""
    m = copy.deepcopy(model)
    composite = composite_cls(canonizers=[canonizer_cls()], **kwargs)
    rules = []
    inner = composite.module_map

    def recording_map(ctx, name, module):
        hook = inner(ctx, name, module)
        rules.append((name, type(module).__name__, None if hook is None else type(hook).__name__,
                      len(list(module.children())) == 0))
        return hook

    composite.module_map = recording_map
    attr_out = F.one_hot(targets, NUM_CLASSES).to(logits) * logits
    with Gradient(model=m, composite=composite) as attributor:
        out, rel = attributor(x.detach().clone(), attr_out)
    d = rel_diff(out.detach(), logits)
    if tol is not None and not d <= tol:
        raise RuntimeError(f"hooked + canonized logits vs original: relative difference {d:.3g} > {tol}")
    rel = rel.detach()
    if not torch.isfinite(rel).all() or not rel.abs().max() > 0:
        raise RuntimeError(f"not finite or all zero ({rel.min()} .. {rel.max()})")
    return rel, rules, d


def report(key, rel, logits, targets, d):
    sums = rel.sum(dim=(1, 2, 3))
    tl = logits.gather(1, targets[:, None])[:, 0]
    print(f"  {key:46s} logits d={d:.0e}  sum R = {', '.join(f'{v:+.6g}' for v in sums.tolist())}  "
          f"logit = {', '.join(f'{v:+.6g}' for v in tl.tolist())}  "
          f"ratio = {', '.join(f'{v:.6g}' for v in (sums / tl).tolist())}  "
          f"max|R| = {rel.abs().max().item():.3g}", flush=True)


def print_rules(rules, full):
    firsts = [r for r in rules if r[2] in ("Flat", "ZBox")]
    if firsts:
        print("      first layer: " + ", ".join(f"{n} ({t}) -> {h}" for n, t, h, _ in firsts), flush=True)
    if not full:
        return
    summary = {}
    for name, typ, hook, leaf in rules:
        if hook is None and not leaf:
            continue
        summary.setdefault((typ, hook), []).append(name)
    for (typ, hook), names in sorted(summary.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
        print(f"      {typ:20s} -> {str(hook):8s} {shown}", flush=True)


def versions():
    return {
        "zennit": importlib.metadata.version("zennit"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def make(arch):
    canonizer_cls, canonizer_desc, stock_cls = CANONIZERS[arch]
    x = torch.from_numpy(synthetic("input", INPUT_SHAPE, scale="u")).double()
    model, _ = build(arch)
    with torch.no_grad():
        logits = model(x)
        ref_model, _, _ = build_swapped(arch)
        d_ref = check_close(f"{arch}: logits vs torchvision_fixtures.build", logits, ref_model(x))
    targets = logits.argmax(dim=1)
    c_logits, n_merge, n_attr, _ = canonized_logits(model, canonizer_cls, x)
    d_can = check_close(f"{arch}: canonized logits", c_logits, logits)
    n_bn = sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in model.modules())
    if n_merge != n_bn:
        raise RuntimeError(f"{arch}: {n_merge} batch norms merged of {n_bn}")
    print(f"{arch}: targets {targets.tolist()}; logits vs torchvision_fixtures.build d={d_ref:.1e}; "
          f"canonized d={d_can:.1e} ({n_merge} BN merged, {n_attr} residual adds as Sum)", flush=True)
    if stock_cls is not None:
        s_logits, _, _, _ = canonized_logits(model, stock_cls, x)
        print(f"  (zennit 0.5.1's stock merge, {stock_cls.__name__}: canonized logits d="
              f"{rel_diff(s_logits, logits):.2e})", flush=True)
    for b in range(logits.shape[0]):
        print(f"  logits[{b}] = {', '.join(f'{v:+.6f}' for v in logits[b].tolist())}", flush=True)

    out = {
        "x": x.numpy().astype(np.float32),
        "targets": targets.numpy().astype(np.int64),
        "logits": logits.numpy().astype(np.float32),
    }
    for key, (cls, kwargs) in COMPOSITES.items():
        rel, rules, d = attribute(model, canonizer_cls, cls, kwargs, x, targets, logits)
        report(key, rel, logits, targets, d)
        print_rules(rules, full=key == "lrp_epsilon_plus")
        if stock_cls is not None and key in NOBIAS_COMPOSITES:
            srel, _, sd = attribute(model, stock_cls, cls, kwargs, x, targets, logits, tol=None)
            print(f"      with zennit 0.5.1's stock merge: hooked logits d={sd:.2e}, map differs by "
                  f"{rel_diff(srel, rel):.2e} (max |a - b| / max |b|)", flush=True)
        out[key] = rel.numpy().astype(np.float32)

    meta = dict(versions())
    meta.update({"arch": arch, "canonizers": canonizer_desc, "made_by": "scripts/lrp_fixtures.py"})

    if arch in NOBIAS_ARCHS:
        nb_model, zeroed = build(arch, zero_bias=True)
        with torch.no_grad():
            nb_logits = nb_model(x)
        c_logits, _, _, max_bias = canonized_logits(nb_model, canonizer_cls, x)
        d_can = check_close(f"{arch}@nobias: canonized logits", c_logits, nb_logits)
        if max_bias != 0.0:
            raise RuntimeError(f"{arch}@nobias: merged biases not zero (max {max_bias})")
        print(f"{arch}@nobias: zeroed {len(zeroed)} state_dict entries: {', '.join(zeroed)}", flush=True)
        print(f"  canonized d={d_can:.1e}, max |merged bias| = {max_bias}; argmax of logits@nobias "
              f"{nb_logits.argmax(1).tolist()} (targets used: {targets.tolist()})", flush=True)
        for b in range(nb_logits.shape[0]):
            print(f"  logits@nobias[{b}] = {', '.join(f'{v:+.6f}' for v in nb_logits[b].tolist())}", flush=True)
        out["logits@nobias"] = nb_logits.numpy().astype(np.float32)
        for key in NOBIAS_COMPOSITES:
            cls, kwargs = COMPOSITES[key]
            rel, _, d = attribute(nb_model, canonizer_cls, cls, kwargs, x, targets, nb_logits)
            report(key + "@nobias", rel, nb_logits, targets, d)
            out[key + "@nobias"] = rel.numpy().astype(np.float32)
        meta["nobias_zeroed_suffixes"] = ", ".join(NOBIAS_SUFFIXES)

    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.normpath(os.path.join(OUT_DIR, f"lrp_{arch}.safetensors"))
    # One metadata entry holding sorted JSON (as scripts/torchvision_fixtures.py): byte-stable reruns.
    save_file(out, path, metadata={"fixture": json.dumps(meta, sort_keys=True)})
    print(f"{arch}: {path} ({os.path.getsize(path)} bytes, {len(out)} tensors)", flush=True)


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    archs = sys.argv[1:] or ARCHS
    for a in archs:
        if a not in CANONIZERS:
            sys.exit(f"unknown architecture {a!r}; known: {', '.join(ARCHS)}")
    print(", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    for a in archs:
        make(a)


if __name__ == "__main__":
    main()
