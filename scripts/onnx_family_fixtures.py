#!/usr/bin/env python3
"""ONNX import fixtures for seven CNN families (tests/fixtures/onnx/families/).

How the committed fixtures were made (the throwaway venv of scripts/torchvision_fixtures.py
plus `pip install onnx onnxruntime onnxscript`):

    /work/torchenv/bin/python scripts/onnx_family_fixtures.py            # all seven
    /work/torchenv/bin/python scripts/onnx_family_fixtures.py convnext_tiny   # or some
    FAMILY_DYNAMO=1 ... also prints what the default (dynamo) exporter writes (not stored)

on 2026-12-07 with torch 2.15.0+cu132, torchvision 0.29.2+cu132 (PyPI's default wheels, run on
CPU, one thread: FIXTURE_THREADS overrides), onnx 1.23.2, onnxruntime 1.32.0, onnxscript 0.7.2,
numpy 2.4.6 (Python 3.11.7). Reruns give byte-identical files (checked), except that on
another machine onnxruntime's ConvNeXt and ShuffleNet logits moved by 4e-7 and 8e-7 of their
scale (its kernels differ by CPU); the committed logits are the first machine's. `convnext_tiny_opset13.onnx` and
`convnext_tiny_dynamo.onnx`, and `shufflenet_v2_x0_5_dynamo.onnx` (VARIANTS below) were added on
2026-12-07 by reruns of `... onnx_family_fixtures.py convnext_tiny shufflenet_v2_x0_5` with the
same versions.

Seven families the importer refuses today, each a REDUCED-WIDTH instance of torchvision's own
class (so the graph has every structural op of the family), 10 classes, 3 input channels:

- mobilenet_v3_small, mobilenet_v3_large: `MobileNetV3` with four / six InvertedResidualConfigs
  (below), last_channel 48: Hardswish stem; blocks with and without expand conv, with and
  without SE (avg-pool, 1x1 conv, ReLU, 1x1 conv, Hardsigmoid, gating Mul), ReLU and Hardswish
  blocks, kernel 3 and 5, residual blocks; head Linear, Hardswish, Dropout, Linear.
- efficientnet_b0: `EfficientNet` with MBConvConfig(1,3,1,16,8,1), (6,3,2,8,16,2), (6,5,2,16,24,1),
  last_channel 64: SiLU everywhere, SE (SiLU inside, Sigmoid gate) in every MBConv, expand
  ratio 1 and 6, a residual MBConv with stochastic depth.
- efficientnet_v2_s: `EfficientNet` with FusedMBConvConfig(1,3,1,8,8,2), (4,3,2,8,16,2),
  MBConvConfig(4,3,2,16,24,2), BatchNorm eps 1e-3, last_channel 64: Fused-MBConv with expand
  ratio 1 (one 3x3 conv, residual) and 4 (3x3 expand + 1x1 project), MBConv with SE.
- regnet_y_400mf: `RegNet`, stem 16, BlockParams(depths [1,2,2], widths [16,24,32], group
  width 8, bottleneck 1, strides 2, se_ratio 0.25): grouped 3x3 convs, SE with ReLU and Sigmoid,
  projection shortcut (1x1 stride-2 conv + BN) and identity shortcuts, ReLU after each add.
- shufflenet_v2_x0_5: `ShuffleNetV2([2, 2, 1], [8, 16, 32, 64, 128])`: stride-2 blocks (two
  branches, Concat), stride-1 blocks (x.chunk(2, dim=1), one branch, Concat), the channel
  shuffle after each (view, transpose, view), max-pool, conv5, x.mean([2, 3]).
- convnext_tiny: `ConvNeXt([CNBlockConfig(8,16,1), (16,24,2), (24,32,1), (32,None,1)],
  stochastic_depth_prob 0.1)`: 4x4/4 stem + LayerNorm2d, LayerNorm2d + 2x2/2 downsampling,
  CNBlocks (depthwise 7x7, Permute, LayerNorm, Linear, GELU, Linear, Permute, layer scale,
  stochastic depth, residual add), head LayerNorm2d, Flatten, Linear.

Weights: torch.Generator seeded per family; every Conv2d / Linear weight N(0, 2/fan_in), bias
N(0, 0.1^2); BatchNorm running statistics measured on 8 batches of 16 uniform images with only
the BatchNorms in train mode (cumulative average), then the affine parameters 1 + 0.2 N / 0.1 N,
the means shifted by 0.05 N and the variances scaled by 1 + 0.2 U (so BN is neither the identity
nor an exact normalisation); LayerNorm affine 1 + 0.2 N / 0.1 N; ConvNeXt's layer scale
U(0.5, 1) (torchvision's 1e-6 would make every block the identity); finally the classifier (the
last Linear) divided by the logits' standard deviation on 16 random images, so logits are O(1).
Eval mode: dropout and stochastic depth are the identity and do not appear in the graphs.

Files (tests/fixtures/onnx/families/): `input.npy` float32 [3,3,32,32], uniform [0,1)
(numpy default_rng(2026); 32 is the smallest power of two every family accepts: the
ConvNeXt divides by 32 with unpadded convolutions); per family `<family>.onnx`
(`torch.onnx.export(model, x, opset_version=17, dynamo=False, input_names=["input"],
output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})`, float32,
batch norms folded into the convolutions by the exporter, IR 8), `<family>_logits.npy`
(onnxruntime on the file, float32 [3,10]), `<family>_targets.npy` (int64 [3], the argmax of
each image's float64 torch logits; onnxruntime's argmax agrees), `<family>_gradient.npy`
(float32 [3,3,32,32]: d sum_b logit_b[target_b] / dx by PyTorch autograd on the float64 copy
of the model, the plain gradient, no attribution rule).

Checks made by the script: onnx.checker (full), onnxruntime vs torch float32 logits (max |d| /
max |logit|, below), batch 1 vs batch 3 through the dynamic axis (bit-equal), finite and
non-zero gradient.

| family | params | .onnx bytes | logits | ort vs torch f32 | |grad| max |
|---|---|---|---|---|---|
| mobilenet_v3_small | 26658 | 116987 | -3.76..3.28 | 7.0e-7 | 1.16 |
| mobilenet_v3_large | 27138 | 121531 | -1.52..0.57 | 1.7e-6 | 0.77 |
| efficientnet_b0 | 18056 | 88551 | -0.99..2.96 | 2.8e-7 | 0.41 |
| efficientnet_v2_s | 28220 | 126575 | -1.98..2.28 | 5.8e-7 | 1.23 |
| regnet_y_400mf | 20454 | 98950 | -2.66..1.41 | 3.6e-7 | 0.71 |
| shufflenet_v2_x0_5 | 16570 | 102602 | -1.98..2.14 | 2.1e-6 | 2.83 |
| convnext_tiny | 29066 | 143559 | -1.87..2.32 | 5.4e-7 | 0.18 |

ONNX op types in the committed files (TorchScript exporter, default domain only, opset 17):

- mobilenet_v3_small: Add 1, Conv 19, Flatten 1, Gemm 2, GlobalAveragePool 4, HardSigmoid 3,
  HardSwish 7, Mul 3, Relu 6
- mobilenet_v3_large: Add 3, Conv 25, Flatten 1, Gemm 2, GlobalAveragePool 4, HardSigmoid 3,
  HardSwish 9, Mul 3, Relu 8
- efficientnet_b0: Add 1, Conv 21, Flatten 1, Gemm 1, GlobalAveragePool 5, Mul 17, Sigmoid 17
- efficientnet_v2_s: Add 4, Conv 18, Flatten 1, Gemm 1, GlobalAveragePool 3, Mul 14, Sigmoid 14
- regnet_y_400mf: Add 5, Conv 29, Flatten 1, Gemm 1, GlobalAveragePool 6, Mul 5, Relu 21,
  Sigmoid 5
- shufflenet_v2_x0_5: Add 2, Cast 10, Concat 15, Constant 82, Conv 23, Div 7, Gather 22,
  Gemm 1, MaxPool 1, Mul 4, ReduceMean 1, Relu 15, Reshape 10, Shape 22, Slice 4, Transpose 5,
  Unsqueeze 40
- convnext_tiny: Add 20, Constant 15, Conv 9, Div 5, Erf 5, Flatten 1, Gemm 1,
  GlobalAveragePool 1, LayerNormalization 10, MatMul 10, Mul 15, Transpose 20

How the family ops are written (what the importer has to recognise):

- SE gate: GlobalAveragePool -> Conv 1x1 (bias) -> Relu (or SiLU as Sigmoid + Mul) -> Conv 1x1
  -> HardSigmoid (alpha = 1/6 as an attribute, beta left at ONNX's default 0.5) or Sigmoid ->
  Mul(gate [N,C,1,1], x [N,C,H,W]) with broadcasting, gate first. SiLU is Sigmoid(z) then
  Mul(z, s), z first: a Mul whose operands are z and Sigmoid(z) is SiLU, a Mul of a Sigmoid of
  something else with x is an SE gate.
- Hardswish: the HardSwish op (opset 14+). Residual adds: Add of two tensors of one shape.
- Channel shuffle with a dynamic batch: Shape -> Gather(0..3) of the Concat's output, channels
  Div 2 -> Cast(int64) twice, Unsqueeze each, Concat into [N, 2, C/2, H, W] -> Reshape ->
  Transpose(perm 0,2,1,3,4) -> Reshape to [N, C, H, W] (also from Shape/Gather/Unsqueeze/Concat).
- chunk(2, dim=1) with a dynamic batch: NOT a Split but two Slices on axis 1 whose bounds are
  computed: Shape -> Gather([1]) -> Add 1 -> Div 2 -> Mul 1 / Mul 2; Slice(x, [0], end1, [1])
  and Slice(x, end1, end2, [1]).
- ShuffleNet's head: ReduceMean(axes=[2,3] attribute, keepdims=0) then Gemm (no Flatten).
- ConvNeXt: LayerNorm2d is Transpose(0,2,3,1) -> LayerNormalization(axis=-1, epsilon 1e-6,
  scale, bias) -> Transpose(0,3,1,2); the CNBlock is Conv 7x7 depthwise -> Transpose ->
  LayerNormalization -> MatMul(x, W^T [C,4C]) -> Add(bias, .) -> GELU -> MatMul([4C,C]) ->
  Add(bias, .) -> Transpose -> Mul(layer_scale [C,1,1], .) -> Add(., x). Exact GELU at opset
  17 is Div(x, Constant sqrt2) -> Erf -> Add(., Constant 1) -> Mul(x, .) -> Mul(., Constant 0.5),
  the constants as Constant nodes (not initializers). The head: GlobalAveragePool, the
  LayerNorm2d pattern, Flatten, Gemm.

The default exporter of torch 2.15 (`torch.onnx.export(..., dynamo=True)`, the default; with
dynamic_shapes={"x": {0: Dim("N")}}) writes opset 20, IR 10, about twice the bytes (per-node
metadata), also folds the batch norms, and differs in: ReduceMean(x, axes [-1,-2] as an input,
keepdims 1) instead of GlobalAveragePool; Reshape instead of Flatten; one `Gelu`
(approximate "none") op instead of the Erf pattern (ConvNeXt: Add 15, Mul 5, Gelu 5); for
ShuffleNet constant Reshape shapes ([-1, 2, C/2, H, W], allowzero 1) with no shape arithmetic
and chunk as one `Split` (axis 1, num_outputs 2, opset-18 form); LayerNormalization gets
stash_type 1. Its op lists: mobilenet_v3_small Add 1, Conv 19, Gemm 2, HardSigmoid 3,
HardSwish 7, Mul 3, ReduceMean 4, Relu 6, Reshape 1; mobilenet_v3_large Add 3, Conv 25, Gemm 2,
HardSigmoid 3, HardSwish 9, Mul 3, ReduceMean 4, Relu 8, Reshape 1; efficientnet_b0 Add 1,
Conv 21, Gemm 1, Mul 17, ReduceMean 5, Reshape 1, Sigmoid 17; efficientnet_v2_s Add 4, Conv 18,
Gemm 1, Mul 14, ReduceMean 3, Reshape 1, Sigmoid 14; regnet_y_400mf Add 5, Conv 29, Gemm 1,
Mul 5, ReduceMean 6, Relu 21, Reshape 1, Sigmoid 5; shufflenet_v2_x0_5 Concat 5, Conv 23,
Gemm 1, MaxPool 1, ReduceMean 1, Relu 15, Reshape 10, Split 2, Transpose 5; convnext_tiny
Add 15, Conv 9, Gelu 5, Gemm 1, LayerNormalization 10, MatMul 10, Mul 5, ReduceMean 1,
Reshape 1, Transpose 20.
"""

import collections
import copy
import os
import sys
import tempfile
import warnings
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.shufflenetv2 import ShuffleNetV2

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx", "families")
NUM_CLASSES = 10
INPUT_SHAPE = (3, 3, 32, 32)
OPSET = 17


def mobilenet_v3_small():
    # (input, kernel, expanded, out, SE, activation, stride, dilation): the small model's first
    # block (no expand conv, SE, ReLU, stride 2), a ReLU block without SE, Hardswish blocks with
    # SE (kernel 5), one of them residual.
    c = partial(InvertedResidualConfig, width_mult=1.0)
    setting = [
        c(16, 3, 16, 16, True, "RE", 2, 1),
        c(16, 3, 32, 16, False, "RE", 2, 1),
        c(16, 5, 48, 24, True, "HS", 2, 1),
        c(24, 5, 48, 24, True, "HS", 1, 1),
    ]
    return MobileNetV3(setting, last_channel=64, num_classes=NUM_CLASSES)


def mobilenet_v3_large():
    # The large model's kinds of block: the first without expand conv, residual, no SE, ReLU;
    # ReLU with expand conv; ReLU with SE (kernel 5); Hardswish without SE; Hardswish with SE,
    # residual.
    c = partial(InvertedResidualConfig, width_mult=1.0)
    setting = [
        c(16, 3, 16, 16, False, "RE", 1, 1),
        c(16, 3, 32, 16, False, "RE", 2, 1),
        c(16, 5, 32, 16, True, "RE", 2, 1),
        c(16, 3, 32, 16, False, "HS", 1, 1),
        c(16, 3, 48, 24, True, "HS", 2, 1),
        c(24, 5, 48, 24, True, "HS", 1, 1),
    ]
    return MobileNetV3(setting, last_channel=48, num_classes=NUM_CLASSES)


def efficientnet_b0():
    # (expand_ratio, kernel, stride, input, out, layers): expand ratio 1 (no expand conv), then
    # expand ratio 6 with a residual second layer (stochastic depth), kernel 5. Every MBConv has
    # SE with SiLU and a Sigmoid gate.
    setting = [
        MBConvConfig(1, 3, 1, 16, 8, 1),
        MBConvConfig(6, 3, 2, 8, 16, 2),
        MBConvConfig(6, 5, 2, 16, 24, 1),
    ]
    return EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2, num_classes=NUM_CLASSES, last_channel=64)


def efficientnet_v2_s():
    # v2-s's structure: Fused-MBConv with expand ratio 1 (one conv, residual), Fused-MBConv with
    # expand ratio 4 (expand conv + project), MBConv with SE; BatchNorm eps 1e-3.
    setting = [
        FusedMBConvConfig(1, 3, 1, 8, 8, 2),
        FusedMBConvConfig(4, 3, 2, 8, 16, 2),
        MBConvConfig(4, 3, 2, 16, 24, 2),
    ]
    return EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2, num_classes=NUM_CLASSES,
                        norm_layer=partial(nn.BatchNorm2d, eps=1e-03), last_channel=64)


def regnet_y_400mf():
    # RegNetY: SE (ratio 0.25), grouped 3x3 convolutions (group width 8), a projection shortcut
    # at each stage's first block and identity shortcuts after.
    params = BlockParams(depths=[1, 2, 2], widths=[16, 24, 32], group_widths=[8, 8, 8],
                         bottleneck_multipliers=[1.0, 1.0, 1.0], strides=[2, 2, 2], se_ratio=0.25)
    return RegNet(params, num_classes=NUM_CLASSES, stem_width=16,
                  norm_layer=partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1))


def shufflenet_v2_x0_5():
    # Three stages; the first two repeat, so both kinds of block (stride 2 with two branches,
    # stride 1 with chunk) and the channel shuffle appear.
    return ShuffleNetV2([2, 2, 1], [8, 16, 32, 64, 128], num_classes=NUM_CLASSES)


def convnext_tiny():
    # Four stages like tiny (stem 4x4/4 + LayerNorm2d, LayerNorm2d + 2x2/2 downsampling,
    # CNBlocks: depthwise 7x7, Permute, LayerNorm, Linear, GELU, Linear, Permute, layer scale,
    # stochastic depth, residual add; head LayerNorm2d, Flatten, Linear).
    setting = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 24, 2), CNBlockConfig(24, 32, 1),
               CNBlockConfig(32, None, 1)]
    return ConvNeXt(setting, stochastic_depth_prob=0.1, num_classes=NUM_CLASSES)


FAMILIES = {
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
    "efficientnet_b0": efficientnet_b0,
    "efficientnet_v2_s": efficientnet_v2_s,
    "regnet_y_400mf": regnet_y_400mf,
    "shufflenet_v2_x0_5": shufflenet_v2_x0_5,
    "convnext_tiny": convnext_tiny,
}


def randomise(model, gen):
    """Random weights that keep the signal: He-scaled convolutions and linears, BatchNorm
    running statistics measured on random images (then the affine parameters and statistics
    perturbed), LayerNorm affine and ConvNeXt's layer scale of order one."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        elif isinstance(m, (nn.LayerNorm,)) or type(m).__name__ == "LayerNorm2d":
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        elif type(m).__name__ == "CNBlock":
            with torch.no_grad():
                m.layer_scale.copy_(0.5 + 0.5 * torch.rand(m.layer_scale.shape, generator=gen))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if bns:
        # Running statistics of the network's own activations (cumulative average over 8
        # batches of uniform images, only the BatchNorms in train mode: dropout and stochastic
        # depth stay off and draw nothing), so that eval-mode BN roughly normalises.
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for _ in range(8):
                model(torch.rand((16,) + INPUT_SHAPE[1:], generator=gen))
        with torch.no_grad():
            for m in bns:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.add_(0.05 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.mul_(1 + 0.2 * torch.rand(m.running_var.shape, generator=gen))
                m.momentum = 0.1
    model.eval()
    # The classifier (the last Linear) scaled so that the logits' spread is about one.
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        spread = model(torch.rand((16,) + INPUT_SHAPE[1:], generator=gen)).std()
        head.weight.div_(spread)
        head.bias.div_(spread)
    return model


def op_counts(model_proto):
    c = collections.Counter(n.op_type for n in model_proto.graph.node)
    return dict(sorted(c.items()))


def opset_of(model_proto):
    return {o.domain or "ai.onnx": o.version for o in model_proto.opset_import}


def export(model, x, path, dynamo):
    kwargs = dict(input_names=["input"], output_names=["logits"])
    if dynamo:
        batch = torch.export.Dim("N", min=1, max=1024)
        torch.onnx.export(model, (x,), path, dynamo=True, dynamic_shapes={"x": {0: batch}},
                          external_data=False, **kwargs)
    else:
        torch.onnx.export(model, (x,), path, opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, **kwargs)


def make(name, x, report):
    torch.manual_seed(0)  # nothing should draw from the global generator; in case it does
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    model = randomise(FAMILIES[name](), gen)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        ref32 = model(xt).numpy()

    path = os.path.join(OUT, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model, xt, path, dynamo=False)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    # A different batch size through the dynamic axis.
    logits1 = sess.run(None, {"input": x[:1]})[0]

    m64 = copy.deepcopy(model).double()
    x64 = xt.double().requires_grad_(True)
    out64 = m64(x64)
    targets = out64.argmax(dim=1)
    (grad,) = torch.autograd.grad(out64.gather(1, targets[:, None]).sum(), x64)
    out64 = out64.detach().numpy()

    if not (np.argmax(logits, axis=1) == targets.numpy()).all():
        raise RuntimeError(f"{name}: onnxruntime's argmax differs from float64 torch's")
    scale = np.abs(ref32).max()
    rel_ort = float(np.abs(logits - ref32).max() / scale)
    rel_64 = float(np.abs(out64 - ref32).max() / scale)
    rel_b1 = float(np.abs(logits1 - logits[:1]).max() / scale)
    if rel_ort > 1e-4 or rel_b1 > 1e-5:
        raise RuntimeError(f"{name}: onnxruntime differs from torch: {rel_ort:.2e}, batch 1 {rel_b1:.2e}")
    g = grad.numpy().astype(np.float32)
    if not np.abs(g).max() > 0 or not np.isfinite(g).all():
        raise RuntimeError(f"{name}: degenerate gradient")

    np.save(os.path.join(OUT, f"{name}_logits.npy"), logits.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_gradient.npy"), g)
    np.save(os.path.join(OUT, f"{name}_targets.npy"), targets.numpy().astype(np.int64))

    n_params = sum(p.numel() for p in model.parameters())
    line = (f"{name}: {n_params} params, {os.path.getsize(path)} bytes, opset {opset_of(proto)}, "
            f"logits {logits.min():.3f}..{logits.max():.3f} (per-image std "
            f"{np.round(logits.std(axis=1), 3).tolist()}), targets {targets.tolist()}, "
            f"|grad| max {np.abs(g).max():.3g} mean {np.abs(g).mean():.3g}, "
            f"ort vs torch f32 {rel_ort:.2e}, torch f64 vs f32 {rel_64:.2e}, batch 1 vs 3 {rel_b1:.1e}")
    print(line, flush=True)
    print(f"    ops (TorchScript exporter, opset {OPSET}): {op_counts(proto)}", flush=True)
    report[name] = {"ops": op_counts(proto), "opset": opset_of(proto)}

    if name in VARIANTS:
        variants(name, model, xt, logits, scale)

    if os.environ.get("FAMILY_DYNAMO"):
        # What torch.onnx.export writes by default (dynamo=True) in this torch: not stored.
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, f"{name}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export(model, xt, p, dynamo=True)
            dp = onnx.load(p)
            s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
            dl = s.run(None, {s.get_inputs()[0].name: x})[0]
            print(f"    ops (dynamo exporter, opset {opset_of(dp)}, {os.path.getsize(p)} bytes, "
                  f"vs torch {np.abs(dl - ref32).max() / scale:.1e}): {op_counts(dp)}", flush=True)


# Families also stored as other exporters write them, to check the importer's other forms of
# their ops against the same logits and gradient (same model, same weights):
# `<family>_opset13.onnx` (TorchScript exporter at opset 13: LayerNorm decomposed into
# ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div then Mul/Add, GELU as the Erf pattern) and
# `<family>_dynamo.onnx` (the default dynamo exporter, opset 20: LayerNormalization with
# stash_type, one Gelu op, ReduceMean for the pooling, Reshape for the flatten; ShuffleNet's
# chunk as one two-output Split with num_outputs, its shuffle with constant Reshape shapes).
VARIANTS = {"convnext_tiny": ["opset13", "dynamo"], "shufflenet_v2_x0_5": ["dynamo"]}


def variants(name, model, xt, logits, scale):
    x = xt.numpy()
    for tag in VARIANTS[name]:
        path = os.path.join(OUT, f"{name}_{tag}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if tag == "dynamo":
                export(model, xt, path, dynamo=True)
            else:
                torch.onnx.export(model, (xt,), path, opset_version=13, dynamo=False,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        err = float(np.abs(got - logits).max() / scale)
        if err > 1e-5:
            raise RuntimeError(f"{name} {tag}: onnxruntime's logits differ from the opset-17 file's by {err:.1e}")
        print(f"    {tag}: {os.path.getsize(path)} bytes, opset {opset_of(proto)}, vs opset 17 {err:.1e}, "
              f"ops {op_counts(proto)}", flush=True)


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    names = sys.argv[1:] or list(FAMILIES)
    for n in names:
        if n not in FAMILIES:
            sys.exit(f"unknown family {n!r}; known: {', '.join(FAMILIES)}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}", flush=True)
    os.makedirs(OUT, exist_ok=True)
    x = np.random.default_rng(2026).random(INPUT_SHAPE, dtype=np.float32)
    np.save(os.path.join(OUT, "input.npy"), x)
    report = {}
    for n in names:
        make(n, x, report)


if __name__ == "__main__":
    main()
