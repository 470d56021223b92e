#!/usr/bin/env python3
"""ONNX fixtures for the activations (tests/fixtures/onnx/act_*), built with onnx.helper.

Needs only onnx, onnxruntime and numpy (no torch):

    python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install onnx onnxruntime numpy
    /tmp/ortenv/bin/python scripts/onnx_activation_fixtures.py

Each `act_<name>.onnx` is one tiny network, x [N,2,6,6] → Conv 3×3 (pad 1, 4 channels) →
the activation → Conv 1×1 (3 channels) → GlobalAveragePool → Flatten → Gemm (3 classes),
with random weights, at the opset named in FORMS. The activation is one ONNX op (Sigmoid,
Tanh, HardSigmoid with ONNX's default and with PyTorch's alpha, HardSwish, Gelu with
approximate none and tanh) or the multi-node pattern `torch.onnx.export` writes: SiLU as
Sigmoid then Mul(x, s) (and Mul(s, x)), HardSwish below opset 14 as HardSigmoid(1/6, 1/2)
then Mul, and exact GELU below opset 20 as Div(x, √2) → Erf → Add 1 → Mul x → Mul 0.5 (and
the other order: x·0.5 first, x·(1/√2) from a Constant node, Add(1, erf)), and tanh GELU below
opset 20 as torch writes it (x·x·x·0.044715 + x → ·√(2/π) → Tanh → Add 1 → Mul x → Mul 0.5;
`act_gelu_tanh_torch`, added on 2026-12-07 by a rerun: the other files came out byte-identical).
`act_input.npy` (float32 [3,2,6,6]) is the input and `act_<name>_logits.npy` onnxruntime's
logits. `act_erf_alone.onnx` is an Erf outside that pattern (refused).
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
SQRT2 = np.float32(np.sqrt(2.0))


def scalar(name, v):
    return numpy_helper.from_array(np.array(v, dtype=np.float32), name)


def activation(kind):
    """(nodes from value `a` to value `h`, extra initializers)."""
    n = helper.make_node
    if kind == "sigmoid":
        return [n("Sigmoid", ["a"], ["h"], name="act")], []
    if kind == "tanh":
        return [n("Tanh", ["a"], ["h"], name="act")], []
    if kind == "hardsigmoid_onnx":
        return [n("HardSigmoid", ["a"], ["h"], name="act")], []
    if kind == "hardsigmoid_torch":
        return [n("HardSigmoid", ["a"], ["h"], name="act", alpha=1.0 / 6.0, beta=0.5)], []
    if kind == "hardswish":
        return [n("HardSwish", ["a"], ["h"], name="act")], []
    if kind == "gelu":
        return [n("Gelu", ["a"], ["h"], name="act")], []
    if kind == "gelu_tanh":
        return [n("Gelu", ["a"], ["h"], name="act", approximate="tanh")], []
    if kind == "silu_torch":
        return [n("Sigmoid", ["a"], ["s"], name="act/Sigmoid"), n("Mul", ["a", "s"], ["h"], name="act/Mul")], []
    if kind == "silu_swapped":
        return [n("Sigmoid", ["a"], ["s"], name="act/Sigmoid"), n("Mul", ["s", "a"], ["h"], name="act/Mul")], []
    if kind == "hardswish_torch":
        return [n("HardSigmoid", ["a"], ["s"], name="act/HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
                n("Mul", ["a", "s"], ["h"], name="act/Mul")], []
    if kind == "gelu_torch":
        return [n("Div", ["a", "sqrt2"], ["d"], name="act/Div"), n("Erf", ["d"], ["e"], name="act/Erf"),
                n("Add", ["e", "one"], ["p"], name="act/Add"), n("Mul", ["a", "p"], ["m"], name="act/Mul"),
                n("Mul", ["m", "half"], ["h"], name="act/Mul_1")], \
            [scalar("sqrt2", SQRT2), scalar("one", 1.0), scalar("half", 0.5)]
    if kind == "gelu_half_first":
        c = helper.make_tensor("c", TensorProto.FLOAT, [], [1.0 / np.sqrt(2.0)])
        return [n("Constant", [], ["r"], name="act/Constant", value=c),
                n("Mul", ["half", "a"], ["hx"], name="act/Half"), n("Mul", ["r", "a"], ["d"], name="act/Scale"),
                n("Erf", ["d"], ["e"], name="act/Erf"), n("Add", ["one", "e"], ["p"], name="act/Add"),
                n("Mul", ["p", "hx"], ["h"], name="act/Mul")], [scalar("one", 1.0), scalar("half", 0.5)]
    if kind == "gelu_tanh_torch":
        # torch.onnx.export of F.gelu(x, approximate="tanh") below opset 20, node for node
        # (torch 2.15): x·x·x·0.044715 + x, ·√(2/π), Tanh, Add 1, Mul x, Mul 0.5, the constants
        # as Constant nodes in front.
        def const(name, v):
            return n("Constant", [], [name], name=f"act/{name}",
                     value=helper.make_tensor(name, TensorProto.FLOAT, [], [v]))
        return [n("Mul", ["a", "a"], ["sq"], name="act/Mul"), n("Mul", ["a", "sq"], ["cube"], name="act/Mul_1"),
                const("k", 0.044715), n("Mul", ["k", "cube"], ["kc"], name="act/Mul_2"),
                n("Add", ["a", "kc"], ["inner"], name="act/Add"), const("r", float(np.sqrt(2.0 / np.pi))),
                n("Mul", ["r", "inner"], ["u"], name="act/Mul_3"), n("Tanh", ["u"], ["t"], name="act/Tanh"),
                const("one_c", 1.0), n("Add", ["one_c", "t"], ["p"], name="act/Add_1"),
                n("Mul", ["a", "p"], ["m"], name="act/Mul_4"), const("half_c", 0.5),
                n("Mul", ["half_c", "m"], ["h"], name="act/Mul_5")], []
    if kind == "erf_alone":
        return [n("Erf", ["a"], ["h"], name="act/Erf")], []
    raise ValueError(kind)


# (name, opset)
FORMS = [("sigmoid", 9), ("tanh", 21), ("hardsigmoid_onnx", 9), ("hardsigmoid_torch", 21),
         ("hardswish", 14), ("gelu", 20), ("gelu_tanh", 21), ("silu_torch", 13), ("silu_swapped", 18),
         ("hardswish_torch", 13), ("gelu_torch", 17), ("gelu_half_first", 11), ("gelu_tanh_torch", 17)]


def model(kind, opset, rng):
    w1 = numpy_helper.from_array((rng.standard_normal((4, 2, 3, 3)) * 0.8).astype(np.float32), "w1")
    b1 = numpy_helper.from_array((rng.standard_normal(4) * 0.5).astype(np.float32), "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((3, 4, 1, 1)) * 0.8).astype(np.float32), "w2")
    fc = numpy_helper.from_array((rng.standard_normal((3, 3)) * 0.8).astype(np.float32), "fc")
    fb = numpy_helper.from_array((rng.standard_normal(3) * 0.1).astype(np.float32), "fb")
    act, extra = activation(kind)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1])] + act + [
        helper.make_node("Conv", ["h", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], name="fc", transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    g = helper.make_graph(nodes, f"act_{kind}", [x], [y], [w1, b1, w2, fc, fb] + extra)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main():
    rng = np.random.default_rng(20)
    # Inputs of both signs and beyond HardSwish's kinks (±3) after the first convolution.
    x = (rng.standard_normal((3, 2, 6, 6)) * 1.5).astype(np.float32)
    np.save(os.path.join(OUT, "act_input.npy"), x)
    for kind, opset in FORMS:
        m = model(kind, opset, np.random.default_rng(len(kind) * 7 + opset))
        path = os.path.join(OUT, f"act_{kind}.onnx")
        onnx.save(m, path)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        logits = sess.run(None, {"x": x})[0]
        np.save(os.path.join(OUT, f"act_{kind}_logits.npy"), logits.astype(np.float32))
        print(f"{path}: opset {opset}, {os.path.getsize(path)} bytes, logits[0] {logits[0]}")
    onnx.save(model("erf_alone", 13, np.random.default_rng(0)), os.path.join(OUT, "act_erf_alone.onnx"))


if __name__ == "__main__":
    main()
