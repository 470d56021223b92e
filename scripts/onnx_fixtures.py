#!/usr/bin/env python3
"""ONNX fixtures for the importer's tests (tests/fixtures/onnx/).

How the committed fixtures were made (the throwaway venv of scripts/torchvision_fixtures.py
plus `pip install onnx onnxruntime onnxscript`):

    /work/torchenv/bin/python scripts/onnx_fixtures.py

with torch 2.15.0, torchvision 0.29.2, onnx 1.23.2, onnxruntime 1.32.0, numpy 2.4.6 (Python 3.11.7).

Three kinds of files:

1. `<arch>.skeleton.onnx`: torchvision's `<arch>(weights=None, num_classes=10)` in eval mode,
   exported by `torch.onnx.export(model, x[2,3,64,64], opset_version=17, dynamo=False)` with a
   dynamic batch (x[2,3,224,224] for VGG and AlexNet, whose adaptive pools export only at
   sizes they divide) (batch norms folded into the convolutions, ReLU6 as Clip, ceil-mode max-pools,
   Concat, Gemm), and `<arch>.dynamo.skeleton.onnx` for two of them from the newer exporter
   (`dynamo=True`, opset 18: ReduceMean with its axes as an input, Reshape to a fixed batch).
   The weights of every Conv and Gemm are stripped (dimensions kept, data removed), which keeps
   the files at a few kB: the Rust test (tests/integration/onnx.rs) fills them with the weights
   of the same architecture built from the synthetic state_dict of tests/fixtures/torchvision,
   layer by layer in node order, and checks that the import computes the same logits and maps
   as that build (and as PyTorch, through the torchvision fixtures).
2. `ops_opset<N>.onnx` (N = 9, 13, 18, 21): a small hand-built network over every op the
   importer maps, in the forms of each opset (Clip bounds as attributes or inputs, Squeeze and
   ReduceMean axes as attributes or inputs), with in-graph normalisation (Sub, Div), batch norms
   after a convolution and after an Add, auto_pad SAME_UPPER, ceil-mode and padded pools,
   grouped convolution, Concat, LeakyRelu, Gemm with alpha, beta and transB = 0, MatMul + Add,
   Dropout, Identity, Constant and a final Softmax. `ops_input.npy` (float32 [4,3,16,16]) and
   `ops_opset<N>_logits.npy` (onnxruntime's outputs before the softmax) are the reference.
3. `view_flatten.onnx`: a small CNN whose forward flattens with `x.view(x.size(0), -1)`,
   exported by the TorchScript exporter with a dynamic batch, which writes that as shape
   arithmetic (Shape, Gather, Unsqueeze, Concat into Reshape); `view_flatten_input.npy` (float32
   [3,1,8,8]) and `view_flatten_logits.npy` (onnxruntime) are its reference.
4. `nhwc.onnx`: a channels-last graph as tf2onnx writes Keras models (input [N, 8, 8, 2], a
   Transpose to channels-first, an asymmetrically padded strided Conv, Gemm);
   `nhwc_input.npy` holds the images channels-first ([3, 2, 8, 8], as the harness reads them)
   and `nhwc_logits.npy` onnxruntime's logits for the same images channels-last.
5. `ops_external.onnx` + `ops_external.onnx.data`: `ops_opset13.onnx` with every initializer
   moved to an external data file (what torch's dynamo exporter writes for sizeable models).
6. `pad_conv.onnx`: a zero Pad (pads as an input, opset 13; asymmetric) before a strided Conv,
   as TensorFlow exports write ZeroPadding2D; `pad_conv_input.npy` and `pad_conv_logits.npy`
   (onnxruntime) its reference; `pad_pool.onnx` pads before a MaxPool (refused: zero padding
   is not max-pool padding).
7. Files the importer must refuse: `unsupported_op.onnx` (a Sin; a Sigmoid until the importer
   learnt the activations of scripts/onnx_activation_fixtures.py) and `two_outputs.onnx`.
"""

import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
ARCHS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "squeezenet1_0", "squeezenet1_1", "mobilenet_v2",
    "vgg11", "vgg16", "vgg11_bn", "vgg16_bn", "alexnet",
]
DYNAMO = ["resnet18", "mobilenet_v2"]


def strip(model):
    """Remove the data of every Conv/Gemm/MatMul weight and bias initializer (dims kept)."""
    weights = {n.input[i] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for i in (1, 2) if i < len(n.input)}
    for t in model.graph.initializer:
        if t.name in weights:
            t.ClearField("raw_data")
            t.ClearField("float_data")
    return model


def skeleton(arch, dynamo):
    torch.manual_seed(0)
    m = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    # Distinct values in every tensor: the exporter shares equal initializers (a fresh batch
    # norm folds to all-zero biases) between layers, which would tie layers the test fills
    # one by one.
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + (0.5 if name.endswith("running_var") else 0.0))
    # VGG and AlexNet at 224: their adaptive pools (to 7×7, 6×6) export only where the output
    # size divides the input's (TorchScript exporter).
    size = 224 if arch.startswith(("vgg", "alexnet")) else 64
    x = torch.rand(2, 3, size, size)
    path = os.path.join(OUT, f"{arch}{'.dynamo' if dynamo else ''}.skeleton.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(m, (x,), path, opset_version=18, dynamo=True, input_names=["input"], output_names=["logits"],
                              external_data=False)
        else:
            torch.onnx.export(m, (x,), path, opset_version=17, dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(path)
    onnx.save(strip(model), path)
    print(f"{path}: {os.path.getsize(path)} bytes, ops {sorted({n.op_type for n in model.graph.node})}")


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def ops_model(opset, rng):
    """The op coverage network at `opset`; returns (model with softmax, model without)."""
    init, nodes = [], []
    r = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731

    def add(op, ins, outs, name=None, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=name or outs[0], **attrs))

    def bn(prefix, c, x, y):
        init.extend([const(f"{prefix}.g", 1 + 0.1 * r(c)), const(f"{prefix}.b", r(c)),
                     const(f"{prefix}.m", r(c)), const(f"{prefix}.v", 0.5 + rng.random(c))])
        add("BatchNormalization", [x, f"{prefix}.g", f"{prefix}.b", f"{prefix}.m", f"{prefix}.v"], [y], epsilon=1e-3)

    # In-graph normalisation: (x - mean) / std.
    init += [const("mean", np.array([0.4, 0.5, 0.6]).reshape(1, 3, 1, 1)), const("std", np.array([0.2, 0.25, 0.3]).reshape(3, 1, 1))]
    add("Sub", ["x", "mean"], ["centered"])
    add("Div", ["centered", "std"], ["normed"])
    init += [const("c1.w", r(8, 3, 3, 3)), const("c1.b", r(8))]
    add("Conv", ["normed", "c1.w", "c1.b"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    bn("bn1", 8, "c1", "bn1")
    add("Relu", ["bn1"], ["relu1"])
    init += [const("c2.w", r(8, 8, 3, 3))]
    add("Conv", ["relu1", "c2.w"], ["c2"], auto_pad="SAME_UPPER", strides=[2, 2])  # 16 → 8
    bn("bn2", 8, "c2", "bn2")
    if opset < 11:
        add("Clip", ["bn2"], ["clip"], min=0.0, max=6.0)
    else:
        init += [const("zero", 0.0), const("six", 6.0)]
        add("Clip", ["bn2", "zero", "six"], ["clip"])
    pool = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0])
    if opset >= 10:
        pool["ceil_mode"] = 1
    add("MaxPool", ["clip"], ["pool"], **pool)  # 8 → 4
    init += [const("b1.w", r(4, 8, 1, 1)), const("b2.w", r(4, 4, 3, 3)), const("b2.b", r(4))]
    add("Conv", ["pool", "b1.w"], ["b1"])
    add("LeakyRelu", ["b1"], ["b1a"], alpha=0.2)
    add("Conv", ["pool", "b2.w", "b2.b"], ["b2"], group=2, pads=[1, 1, 1, 1], dilations=[1, 1])
    add("Relu", ["b2"], ["b2a"])
    add("Concat", ["b1a", "b2a"], ["cat"], axis=1)
    add("Add", ["cat", "pool"], ["res"])
    add("Identity", ["res"], ["res_id"])
    bn("bn3", 8, "res_id", "bn3")  # after an Add: an affine node
    add("AveragePool", ["bn3"], ["avg"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1], count_include_pad=1)
    add("Constant", [], ["half"], value=const("half_value", 0.5))
    add("Mul", ["avg", "half"], ["scaled"])
    if opset < 12:
        add("Dropout", ["scaled"], ["drop"], ratio=0.3)
    else:
        add("Dropout", ["scaled"], ["drop"])
    if opset >= 18:
        init.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"))
        add("ReduceMean", ["drop", "axes"], ["flat"], keepdims=0)
    elif opset >= 13:
        add("GlobalAveragePool", ["drop"], ["gap"])
        init.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"))
        add("Squeeze", ["gap", "axes"], ["flat"])
    else:
        add("GlobalAveragePool", ["drop"], ["gap"])
        add("Flatten", ["gap"], ["flat"], axis=1)
    init += [const("g.w", r(8, 6)), const("g.b", r(6))]
    add("Gemm", ["flat", "g.w", "g.b"], ["gemm"], alpha=0.5, beta=2.0, transB=0)
    add("Relu", ["gemm"], ["h"])
    init += [const("m.w", r(6, 5)), const("m.b", r(5))]
    add("MatMul", ["h", "m.w"], ["mm"])
    add("Add", ["mm", "m.b"], ["logits"])
    add("Softmax", ["logits"], ["probs"], axis=1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])

    def build(out_name, graph_nodes):
        out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", 5])
        g = helper.make_graph(graph_nodes, f"ops_opset{opset}", [x], [out], init)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx_fixtures.py")
        m.ir_version = 7
        onnx.checker.check_model(m)
        return m

    return build("probs", nodes), build("logits", nodes[:-1])


class ViewNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


def view_flatten():
    torch.manual_seed(1)
    path = os.path.join(OUT, "view_flatten.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ViewNet().eval(), (torch.rand(2, 1, 8, 8),), path, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    x = np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32)
    np.save(os.path.join(OUT, "view_flatten_input.npy"), x)
    logits = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.save(os.path.join(OUT, "view_flatten_logits.npy"), logits.astype(np.float32))
    print(f"{path}: ops {[n.op_type for n in onnx.load(path).graph.node]}")


def nhwc():
    rng = np.random.default_rng(2)
    init = [const("w", rng.standard_normal((4, 2, 3, 3)) * 0.3), const("b", rng.standard_normal(4) * 0.1),
            const("fc", rng.standard_normal((3, 4))), const("fcb", rng.standard_normal(3) * 0.1)]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w", "b"], ["c"], strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 2])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    m = helper.make_model(helper.make_graph(nodes, "nhwc", [x], [y], init), opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    path = os.path.join(OUT, "nhwc.onnx")
    onnx.save(m, path)
    images = rng.random((3, 2, 8, 8)).astype(np.float32)
    np.save(os.path.join(OUT, "nhwc_input.npy"), images)
    logits = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": images.transpose(0, 2, 3, 1).copy()})[0]
    np.save(os.path.join(OUT, "nhwc_logits.npy"), logits.astype(np.float32))


def pad_conv():
    rng = np.random.default_rng(3)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    init = [numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64), "pads"),
            const("w", rng.standard_normal((3, 1, 3, 3)) * 0.5), const("fc", rng.standard_normal((3, 2)))]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["c"], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
    ]
    m = helper.make_model(helper.make_graph(nodes, "pad_conv", [x], [y], init), opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    path = os.path.join(OUT, "pad_conv.onnx")
    onnx.save(m, path)
    images = rng.random((2, 1, 8, 8)).astype(np.float32)
    np.save(os.path.join(OUT, "pad_conv_input.npy"), images)
    logits = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": images})[0]
    np.save(os.path.join(OUT, "pad_conv_logits.npy"), logits.astype(np.float32))
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[2, 2]),
             helper.make_node("GlobalAveragePool", ["m"], ["g"]), helper.make_node("Flatten", ["g"], ["logits"])]
    y1 = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])
    m = helper.make_model(helper.make_graph(nodes, "pad_pool", [x], [y1], init[:1]), opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, os.path.join(OUT, "pad_pool.onnx"))


def refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])
    nodes = [helper.make_node("Sin", ["x"], ["s"], name="gate"), helper.make_node("Flatten", ["s"], ["y"])]
    g = helper.make_graph(nodes, "unsupported", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(OUT, "unsupported_op.onnx"))
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 16])
    nodes = [helper.make_node("Flatten", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    g = helper.make_graph(nodes, "two_outputs", [x], [y, z])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(OUT, "two_outputs.onnx"))


def main():
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[1:]
    for arch in ARCHS:
        if not only or arch in only:
            skeleton(arch, False)
            if arch in DYNAMO:
                skeleton(arch, True)
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 16, 16)).astype(np.float32)
    np.save(os.path.join(OUT, "ops_input.npy"), x)
    for opset in (9, 13, 18, 21):
        full, plain = ops_model(opset, np.random.default_rng(opset))
        path = os.path.join(OUT, f"ops_opset{opset}.onnx")
        onnx.save(full, path)
        sess = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
        logits = sess.run(None, {"x": x})[0]
        np.save(os.path.join(OUT, f"ops_opset{opset}_logits.npy"), logits.astype(np.float32))
        print(f"{path}: {os.path.getsize(path)} bytes, logits[0] {logits[0]}")
    view_flatten()
    nhwc()
    pad_conv()
    m = onnx.load(os.path.join(OUT, "ops_opset13.onnx"))
    onnx.external_data_helper.convert_model_to_external_data(
        m, all_tensors_to_one_file=True, location="ops_external.onnx.data", size_threshold=0)
    onnx.save(m, os.path.join(OUT, "ops_external.onnx"))
    refused()


if __name__ == "__main__":
    main()
