#!/usr/bin/env python3
"""Independent numpy reference for the `fmnist_cnn` model and nine attributions.

This file deliberately shares no code with the Rust crate (no candle, no torch):
forward pass, hand-written backward pass and the attribution definitions are all
re-derived here in float64 so that the Rust integration test can compare against
them.  See tests/reference/README.md for the conventions.

Usage:
    python3 tests/reference/reference_maps.py --weights W.safetensors --images X.npy --out DIR
    python3 tests/reference/reference_maps.py --self-test
"""

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

IG_STEPS = 50
NUM_CLASSES = 10

# --------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "U8": "u1",
}

PARAM_SHAPES = {
    "conv1.weight": (32, 1, 3, 3),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "fc1.weight": (128, 3136),
    "fc1.bias": (128,),
    "fc2.weight": (10, 128),
    "fc2.bias": (10,),
}


def read_safetensors(path):
    """Parse a .safetensors file by hand; returns {name: float64 ndarray}."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype == "BF16":
            begin, end = info["data_offsets"]
            u16 = np.frombuffer(raw[base + begin : base + end], dtype="<u2")
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        elif dtype in _ST_DTYPES:
            begin, end = info["data_offsets"]
            arr = np.frombuffer(raw[base + begin : base + end], dtype=_ST_DTYPES[dtype])
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        shape = tuple(info["shape"])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: {arr.size} elements for shape {shape}")
        out[name] = arr.reshape(shape).astype(np.float64)
    return out


def write_safetensors(path, tensors):
    """Minimal F32 writer (used only by the self-test / timing helpers)."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_params(path):
    t = read_safetensors(path)
    params = {}
    for name, shape in PARAM_SHAPES.items():
        if name not in t:
            raise KeyError(f"{path}: missing tensor {name} (have {sorted(t)})")
        if t[name].shape != shape:
            raise ValueError(f"{path}: {name} has shape {t[name].shape}, expected {shape}")
        params[name] = t[name]
    return params


def load_images(path):
    x = np.load(path)
    if x.dtype == np.uint8:
        x = x.astype(np.float64) / 255.0
    else:
        x = x.astype(np.float64)
    if x.ndim == 3:  # [N,28,28]
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"{path}: expected [N,1,28,28] images, got {x.shape}")
    return x


# --------------------------------------------------------------------------------------
# Layers (float64, batch-first NCHW)
# --------------------------------------------------------------------------------------


def conv3x3_forward(x, w, b):
    """Cross-correlation, 3x3, stride 1, zero padding 1: [B,C,H,W] -> [B,O,H,W]."""
    B, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    z = np.zeros((B, w.shape[0], H, W))
    for i in range(3):
        for j in range(3):
            # z[b,o,h,w] += sum_c W[o,c,i,j] * xp[b,c,h+i,w+j]
            z += np.einsum("bchw,oc->bohw", xp[:, :, i : i + H, j : j + W], w[:, :, i, j], optimize=True)
    return z + b[None, :, None, None]


def conv3x3_input_grad(g, w):
    """Gradient w.r.t. the conv input given upstream g [B,O,H,W]: scatter of the forward."""
    B, O, H, W = g.shape
    C = w.shape[1]
    gp = np.zeros((B, C, H + 2, W + 2))
    for i in range(3):
        for j in range(3):
            # xp[b,c,h+i,w+j] received W[o,c,i,j] * g[b,o,h,w]
            gp[:, :, i : i + H, j : j + W] += np.einsum("bohw,oc->bchw", g, w[:, :, i, j], optimize=True)
    return gp[:, :, 1:-1, 1:-1]


def maxpool2_forward(a):
    """2x2/2 max-pool. Returns (pooled, argmax) where argmax in {0,1,2,3} indexes the window
    in row-major order (0,0),(0,1),(1,0),(1,1); np.argmax picks the FIRST maximum."""
    B, C, H, W = a.shape
    win = a.reshape(B, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
    idx = np.argmax(win, axis=-1)
    pooled = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    return pooled, idx


def maxpool2_backward(g, idx):
    """Route the whole upstream gradient to the first arg-max of each window."""
    B, C, h, w = g.shape
    win = np.zeros((B, C, h, w, 4))
    np.put_along_axis(win, idx[..., None], g[..., None], axis=-1)
    return win.reshape(B, C, h, w, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, 2 * h, 2 * w)


def forward(p, x):
    """Returns logits [B,10] and a cache for backward."""
    z1 = conv3x3_forward(x, p["conv1.weight"], p["conv1.bias"])
    a1 = np.maximum(z1, 0.0)
    m1, i1 = maxpool2_forward(a1)
    z2 = conv3x3_forward(m1, p["conv2.weight"], p["conv2.bias"])
    a2 = np.maximum(z2, 0.0)
    m2, i2 = maxpool2_forward(a2)
    f = m2.reshape(m2.shape[0], -1)  # NCHW flatten: c*49 + h*7 + w
    z3 = f @ p["fc1.weight"].T + p["fc1.bias"]
    a3 = np.maximum(z3, 0.0)
    logits = a3 @ p["fc2.weight"].T + p["fc2.bias"]
    return logits, (z1, i1, z2, i2, m2.shape, z3)


BACKWARD_RULES = ("gradient", "guided", "deconvnet", "rescale")

# DeepLIFT rescale: below this |z - z0| the multiplier falls back to the plain derivative.
RESCALE_EPS = 1e-6


def relu_backward(g, z, rule, z0=None):
    """Backward through a ReLU with pre-activation z, given upstream g (w.r.t. its output).

    'gradient':  g * (z > 0)           (true derivative, 0 at z = 0)
    'guided':    relu(g) * (z > 0)     (guided backprop, Springenberg et al. 2015)
    'deconvnet': relu(g)               (deconvnet, Zeiler & Fergus 2014; z is ignored)
    'rescale':   g * m, m = (relu(z) - relu(z0)) / (z - z0) where |z - z0| > 1e-6, else
                 (z > 0)               (DeepLIFT rescale, Shrikumar et al. 2017; z0 is the
                                        same ReLU's pre-activation on the reference input)
    """
    if rule == "gradient":
        return g * (z > 0)
    if rule == "guided":
        return np.maximum(g, 0.0) * (z > 0)
    if rule == "deconvnet":
        return np.maximum(g, 0.0)
    if rule == "rescale":
        if z0 is None or z0.shape != z.shape:
            raise ValueError("rule 'rescale' needs the reference pre-activation z0 (same shape as z)")
        dz = z - z0
        far = np.abs(dz) > RESCALE_EPS
        ratio = (np.maximum(z, 0.0) - np.maximum(z0, 0.0)) / np.where(far, dz, 1.0)
        return g * np.where(far, ratio, (z > 0).astype(np.float64))
    raise ValueError(f"unknown backward rule {rule!r} (expected one of {BACKWARD_RULES})")


def input_gradient(p, x, target, rule="gradient", ref_pre=None):
    """Backward pass of logit_target to x for each image; target int array [B].

    rule selects the ReLU backward rule (see relu_backward); it is applied at EVERY ReLU
    (after conv1, conv2 and fc1). Max-pool, conv and linear backward are the same for all
    rules (max-pool routes to the first arg-max of x's own forward pass, also for 'rescale').
    rule='gradient' gives d logit_target / d x. rule='rescale' needs ref_pre = (z1_0, z2_0,
    z3_0), the reference input's pre-activations at the conv1, conv2 and fc1 ReLUs (shapes as
    for x), and gives DeepLIFT's multipliers at the input. Returns (map, logits)."""
    if rule not in BACKWARD_RULES:
        raise ValueError(f"unknown backward rule {rule!r} (expected one of {BACKWARD_RULES})")
    if (rule == "rescale") != (ref_pre is not None):
        raise ValueError("ref_pre must be given exactly when rule == 'rescale'")
    logits, (z1, i1, z2, i2, m2_shape, z3) = forward(p, x)
    z1_0, z2_0, z3_0 = ref_pre if ref_pre is not None else (None, None, None)
    B = x.shape[0]
    g = np.zeros((B, NUM_CLASSES))
    g[np.arange(B), target] = 1.0
    g = g @ p["fc2.weight"]  # [B,128]
    g = relu_backward(g, z3, rule, z3_0)
    g = g @ p["fc1.weight"]  # [B,3136]
    g = g.reshape(m2_shape)  # [B,64,7,7]
    g = relu_backward(maxpool2_backward(g, i2), z2, rule, z2_0)
    g = conv3x3_input_grad(g, p["conv2.weight"])  # [B,32,14,14]
    g = relu_backward(maxpool2_backward(g, i1), z1, rule, z1_0)
    g = conv3x3_input_grad(g, p["conv1.weight"])  # [B,1,28,28]
    return g, logits


# --------------------------------------------------------------------------------------
# Attributions
# --------------------------------------------------------------------------------------


def gauss_legendre_01(n):
    u, wu = np.polynomial.legendre.leggauss(n)
    return (u + 1.0) / 2.0, wu / 2.0


def integrated_gradients(p, x, target, steps=IG_STEPS, chunk_images=256):
    """Zero baseline, Gauss-Legendre on [0,1]: x * sum_i w_i grad(alpha_i x)."""
    alphas, weights = gauss_legendre_01(steps)
    B = x.shape[0]
    acc = np.zeros_like(x)
    # Flatten (alpha, image) pairs and process in chunks to bound memory.
    a_idx = np.repeat(np.arange(steps), B)
    b_idx = np.tile(np.arange(B), steps)
    for s in range(0, steps * B, chunk_images):
        ai, bi = a_idx[s : s + chunk_images], b_idx[s : s + chunk_images]
        xs = alphas[ai][:, None, None, None] * x[bi]
        g, _ = input_gradient(p, xs, target[bi])
        np.add.at(acc, bi, weights[ai][:, None, None, None] * g)
    return x * acc


def deeplift(p, x, target, x0=None):
    """DeepLIFT, rescale rule, for logit_target: multipliers at the input (x) * (x - x0).

    x0 defaults to the all-zero image. The reference forward pass is an ordinary forward
    pass on x0 (its own max-pooling); its ReLU pre-activations feed the 'rescale' rule."""
    if x0 is None:
        x0 = np.zeros_like(x)
    x0 = np.broadcast_to(x0, x.shape)
    _, (z1_0, _, z2_0, _, _, z3_0) = forward(p, x0)
    mult, _ = input_gradient(p, x, target, rule="rescale", ref_pre=(z1_0, z2_0, z3_0))
    return mult * (x - x0)


def conv2_activation_gradient(p, x, target):
    """Grad-CAM's layer: A = conv2's output after its ReLU, before pooling [B,64,14,14], and
    G = d logit_target / d A (ordinary backward: fc2, fc1 ReLU derivative [z > 0], fc1,
    reshape to [B,64,7,7], max-pool backward to the first arg-max of each window of A).
    Returns (A, G, logits)."""
    logits, (z1, i1, z2, i2, m2_shape, z3) = forward(p, x)
    B = x.shape[0]
    g = np.zeros((B, NUM_CLASSES))
    g[np.arange(B), target] = 1.0
    g = g @ p["fc2.weight"]  # [B,128]
    g = g * (z3 > 0)
    g = g @ p["fc1.weight"]  # [B,3136]
    g = maxpool2_backward(g.reshape(m2_shape), i2)  # [B,64,14,14]
    return np.maximum(z2, 0.0), g, logits


def forward_from_conv2_activation(p, a2):
    """logits from A = relu(conv2) [B,64,14,14] (A is taken as is: no ReLU re-applied)."""
    m2, _ = maxpool2_forward(a2)
    f = m2.reshape(m2.shape[0], -1)
    return np.maximum(f @ p["fc1.weight"].T + p["fc1.bias"], 0.0) @ p["fc2.weight"].T + p["fc2.bias"]


def bilinear_matrix(n_in, n_out):
    """[n_out, n_in] interpolation matrix of PyTorch's F.interpolate(mode='bilinear',
    align_corners=False) along one axis: src = (o + 0.5) * n_in / n_out - 0.5, clamped below
    at 0; i0 = floor(src) (<= n_in - 1), i1 = min(i0 + 1, n_in - 1), frac = src - i0."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[o, i0] += 1.0 - frac
        m[o, i1] += frac
    return m


def bilinear_upsample(a, out_hw=(28, 28)):
    """Separable bilinear resize (align_corners=False) of the last two axes of a."""
    mr = bilinear_matrix(a.shape[-2], out_hw[0])
    mc = bilinear_matrix(a.shape[-1], out_hw[1])
    return np.einsum("rh,...hw,cw->...rc", mr, a, mc)


def grad_cam(p, x, target):
    """Grad-CAM (Selvaraju et al. 2017) at conv2's post-ReLU, pre-pool output A:
    alpha_k = mean_{h,w} G_k, cam = relu(sum_k alpha_k A_k) [B,14,14], bilinearly upsampled
    to [B,1,28,28]. Returns (upsampled map, cam [B,14,14])."""
    a2, g, _ = conv2_activation_gradient(p, x, target)
    alpha = g.mean(axis=(2, 3))  # [B,64]
    cam = np.maximum(np.einsum("bk,bkhw->bhw", alpha, a2), 0.0)
    return bilinear_upsample(cam)[:, None], cam


OCC_WINDOW = 4
OCC_STRIDE = 2


def occlusion_masks(size=28, window=OCC_WINDOW, stride=OCC_STRIDE):
    """[P,size,size] 0/1 masks of the occlusion windows, top-left (r, c) with
    r, c in range(0, size - window + 1, stride), row-major."""
    starts = range(0, size - window + 1, stride)
    masks = []
    for r in starts:
        for c in starts:
            m = np.zeros((size, size))
            m[r : r + window, c : c + window] = 1.0
            masks.append(m)
    return np.stack(masks)


def occlusion(p, x, target, chunk_images=512):
    """Occlusion (Zeiler & Fergus 2014): 4x4 windows (all channels), stride 2, baseline 0.
    drop_w = logit_t(x) - logit_t(x with window w set to 0); a pixel's value is the mean of
    the drops of the windows covering it (0 if none)."""
    masks = occlusion_masks()  # [P,28,28]
    P = masks.shape[0]
    B = x.shape[0]
    base, _ = forward(p, x)
    base_t = base[np.arange(B), target]
    keep = 1.0 - masks
    b_idx = np.repeat(np.arange(B), P)
    w_idx = np.tile(np.arange(P), B)
    occ_t = np.empty(B * P)
    for s in range(0, B * P, chunk_images):
        bi, wi = b_idx[s : s + chunk_images], w_idx[s : s + chunk_images]
        xs = x[bi] * keep[wi][:, None]
        lg, _ = forward(p, xs)
        occ_t[s : s + chunk_images] = lg[np.arange(len(bi)), target[bi]]
    drops = base_t[:, None] - occ_t.reshape(B, P)  # [B,P]
    count = masks.sum(axis=0)  # [28,28]
    total = np.einsum("bp,phw->bhw", drops, masks)
    out = np.where(count > 0, total / np.maximum(count, 1.0), 0.0)
    return out[:, None]


def compute_all(p, x):
    logits, _ = forward(p, x)
    preds = np.argmax(logits, axis=1).astype(np.int64)
    grad, _ = input_gradient(p, x, preds)
    guided = input_gradient(p, x, preds, rule="guided")[0]
    gcam, _ = grad_cam(p, x, preds)
    return {
        "logits": logits,
        "preds": preds,
        "gradient": grad,
        "gradient_x_input": x * grad,
        "integrated_gradients": integrated_gradients(p, x, preds),
        "guided_backprop": guided,
        "deconvnet": input_gradient(p, x, preds, rule="deconvnet")[0],
        "deeplift": deeplift(p, x, preds),
        "grad_cam": gcam,
        "guided_grad_cam": guided * gcam,
        "occlusion": occlusion(p, x, preds),
    }


# --------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------


def random_params(rng, scale=1.0):
    """He-style random weights (float64), so activations stay O(1)."""
    p = {}
    for name, shape in PARAM_SHAPES.items():
        if name.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            p[name] = rng.normal(0.0, scale * np.sqrt(2.0 / fan_in), size=shape)
        else:
            p[name] = rng.normal(0.0, 0.05, size=shape)
    return p


def naive_forward(p, x1):
    """Loop-based forward for ONE image [1,28,28] (checks conv orientation and flatten order)."""

    def conv(x, w, b):
        C, H, W = x.shape
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        out = np.empty((w.shape[0], H, W))
        for h in range(H):
            for ww in range(W):
                patch = xp[:, h : h + 3, ww : ww + 3].ravel()
                out[:, h, ww] = w.reshape(w.shape[0], -1) @ patch + b
        return out

    def pool(a):
        C, H, W = a.shape
        out = np.empty((C, H // 2, W // 2))
        for c in range(C):
            for h in range(H // 2):
                for ww in range(W // 2):
                    out[c, h, ww] = max(a[c, 2 * h, 2 * ww], a[c, 2 * h, 2 * ww + 1],
                                        a[c, 2 * h + 1, 2 * ww], a[c, 2 * h + 1, 2 * ww + 1])
        return out

    a = pool(np.maximum(conv(x1, p["conv1.weight"], p["conv1.bias"]), 0))
    a = pool(np.maximum(conv(a, p["conv2.weight"], p["conv2.bias"]), 0))
    f = np.array([a[c, h, w] for c in range(64) for h in range(7) for w in range(7)])
    hdn = np.maximum(p["fc1.weight"] @ f + p["fc1.bias"], 0)
    return p["fc2.weight"] @ hdn + p["fc2.bias"]


PLAIN_RULES = ("gradient", "guided", "deconvnet")  # the rules that need no reference input


def pool_ref_breaks(a, a0, idx):
    """Number of 2x2 windows where the reference activation a0 at x's arg-max idx is below
    the reference window's own max; only there can max-pool break DeepLIFT's summation."""
    B, C, H, W = a0.shape
    win0 = a0.reshape(B, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
    at_idx = np.take_along_axis(win0, idx[..., None], axis=-1)[..., 0]
    return int(np.sum(at_idx < win0.max(axis=-1)))


def _input_gradient_frozen(p, x, target):
    """Verbatim copy of input_gradient from before the `rule` argument was added (plain
    gradient only). The self-test checks that rule='gradient' reproduces it bit for bit."""
    logits, (z1, i1, z2, i2, m2_shape, z3) = forward(p, x)
    B = x.shape[0]
    g = np.zeros((B, NUM_CLASSES))
    g[np.arange(B), target] = 1.0
    g = g @ p["fc2.weight"]  # [B,128]
    g = g * (z3 > 0)
    g = g @ p["fc1.weight"]  # [B,3136]
    g = g.reshape(m2_shape)  # [B,64,7,7]
    g = maxpool2_backward(g, i2) * (z2 > 0)
    g = conv3x3_input_grad(g, p["conv2.weight"])  # [B,32,14,14]
    g = maxpool2_backward(g, i1) * (z1 > 0)
    g = conv3x3_input_grad(g, p["conv1.weight"])  # [B,1,28,28]
    return g, logits


def hand_built_rules_case():
    """Tiny hand-built network on which gradient, guided backprop and deconvnet differ.

    conv1: channel 0 copies the input (centre tap 1, bias 0); channels 1..31 zero weights,
           bias -1.  conv2: channel 0 copies conv1-pooled channel 0 likewise; others off.
    Image: zero except x[1,2] = 0.9, x[2,5] = 0.5.  After pool1 (7x7 windows of 2x2) these
    sit at (0,1) and (1,2) of the 14x14 map; after pool2 at (0,0) and (0,1) of the 7x7 map,
    i.e. flattened features A = f[0] = 0.9 and B = f[1] = 0.5 (index c*49 + h*7 + w).
    fc1: u0 = A - B = 0.4, u1 = A + B = 1.4, u2 = A - 10 = -9.1 (others zero weights, bias -1).
    fc2: logit 0 = u0 - u1 + u2.  Upstream at the fc1 ReLU outputs: (1, -1, 1).
      gradient : (1,-1,0)           -> dA = 0, dB = -2 -> -2 at (2,5)
      guided   : relu(.)*(z>0) = (1,0,0) -> dA = 1, dB = -1 -> conv2 ReLU keeps only A -> 1 at (1,2)
      deconvnet: relu(.)       = (1,0,1) -> dA = 2, dB = -1 -> conv2 ReLU keeps only A -> 2 at (1,2)
    DeepLIFT (zero baseline; the zero image gives A = B = 0 and fc1 pre-activations
    u0..u3 = 0, 0, -10, -0.5): fc1 unit u3 = relu(A - 0.5) (= 0.4) and logit 2 = u3 are added
    for it; fc2 row 0 does not read u3, so nothing above changes.
      target 2: multiplier of u3 = (0.4 - 0) / (0.4 - (-0.5)) = 4/9 -> dA = 4/9; conv ReLUs
                have multiplier 1 on A's path -> 4/9 * x[1,2] = 0.4 at (1,2)
      target 0: multipliers of u0..u2 = 0.4/0.4, 1.4/1.4, (0 - 0)/0.9 = (1, 1, 0) -> as for
                'gradient' dB = -2 -> -2 * x[2,5] = -1.0 at (2,5)
    Returns (params, x [1,1,28,28], target [1], {rule: expected map [28,28]} for target 0,
    {target: expected deeplift map [28,28]})."""
    p = {name: np.zeros(shape) for name, shape in PARAM_SHAPES.items()}
    p["conv1.weight"][0, 0, 1, 1] = 1.0
    p["conv1.bias"][1:] = -1.0
    p["conv2.weight"][0, 0, 1, 1] = 1.0
    p["conv2.bias"][1:] = -1.0
    p["fc1.weight"][0, 0], p["fc1.weight"][0, 1] = 1.0, -1.0
    p["fc1.weight"][1, 0], p["fc1.weight"][1, 1] = 1.0, 1.0
    p["fc1.weight"][2, 0], p["fc1.bias"][2] = 1.0, -10.0
    p["fc1.weight"][3, 0], p["fc1.bias"][3] = 1.0, -0.5
    p["fc1.bias"][4:] = -1.0
    p["fc2.weight"][0, :3] = [1.0, -1.0, 1.0]
    p["fc2.weight"][2, 3] = 1.0
    x = np.zeros((1, 1, 28, 28))
    x[0, 0, 1, 2], x[0, 0, 2, 5] = 0.9, 0.5
    expect = {r: np.zeros((28, 28)) for r in PLAIN_RULES}
    expect["gradient"][2, 5] = -2.0
    expect["guided"][1, 2] = 1.0
    expect["deconvnet"][1, 2] = 2.0
    expect_dl = {t: np.zeros((28, 28)) for t in (0, 2)}
    expect_dl[2][1, 2] = 0.4
    expect_dl[0][2, 5] = -1.0
    return p, x, np.array([0]), expect, expect_dl


def self_test():
    rng = np.random.default_rng(12345)
    p = random_params(rng)
    x = rng.uniform(0.0, 1.0, size=(3, 1, 28, 28))
    ok = True

    def report(name, value, tol):
        nonlocal ok
        passed = value <= tol
        ok &= passed
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {value:.3e} (tol {tol:.0e})")

    # 0. vectorised forward == loop forward
    logits, cache = forward(p, x)
    err = max(np.max(np.abs(naive_forward(p, x[b]) - logits[b])) for b in range(2))
    report("forward vs naive loops, max |diff|", err, 1e-10)

    # Continuous random inputs/weights: no tied non-zero pool maxima; check the margin.
    z1, i1, z2, i2, _, z3 = cache

    def tie_margin(a):
        B, C, H, W = a.shape
        win = np.sort(a.reshape(B, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5)
                      .reshape(B, C, H // 2, W // 2, 4), axis=-1)
        live = win[..., 3] > 0  # all-zero windows carry no gradient (ReLU mask is 0)
        return (win[..., 3] - win[..., 2])[live].min()

    print(f"       min |pre-activation| (conv1, conv2, fc1): "
          f"{np.abs(z1).min():.2e}, {np.abs(z2).min():.2e}, {np.abs(z3).min():.2e}; "
          f"min top1-top2 gap in live pool windows: "
          f"{tie_margin(np.maximum(z1, 0)):.2e}, {tie_margin(np.maximum(z2, 0)):.2e}")

    # 1. gradient vs central finite differences
    preds = np.argmax(logits, axis=1)
    grad, _ = input_gradient(p, x, preds)
    h = 1e-6
    worst_rel = 0.0
    n_checked = 0
    n_pattern_changes = 0
    for b in range(x.shape[0]):
        pix = [(rng.integers(28), rng.integers(28)) for _ in range(8)]
        pix.append(tuple(np.unravel_index(np.argmax(np.abs(grad[b, 0])), (28, 28))))
        for (r, c) in pix:
            xp_, xm_ = x[b : b + 1].copy(), x[b : b + 1].copy()
            xp_[0, 0, r, c] += h
            xm_[0, 0, r, c] -= h
            lp, cp = forward(p, xp_)
            lm, cm = forward(p, xm_)
            # FD is only meaningful if x+h and x-h lie on the same linear piece as x:
            # identical ReLU masks and identical pool arg-max choices.
            for cache_pm in (cp, cm):
                same = all(np.array_equal(u > 0, v[b : b + 1] > 0) for u, v in
                           ((cache_pm[0], z1), (cache_pm[2], z2), (cache_pm[5], z3)))
                same &= np.array_equal(cache_pm[1], i1[b : b + 1])
                same &= np.array_equal(cache_pm[3], i2[b : b + 1])
                n_pattern_changes += 0 if same else 1
            fd = (lp[0, preds[b]] - lm[0, preds[b]]) / (2 * h)
            an = grad[b, 0, r, c]
            rel = abs(fd - an) / max(abs(fd), abs(an), 1e-3)
            worst_rel = max(worst_rel, rel)
            n_checked += 1
    print(f"       gradient checked on {n_checked} pixels, max |grad| = {np.abs(grad).max():.3e}")
    report("FD points that changed ReLU/max-pool pattern (must be 0)", float(n_pattern_changes), 0.0)
    report("gradient vs central FD (h=1e-6), max rel err", worst_rel, 1e-5)

    # also the full gradient for every class on one image, via a batch of targets
    xb = np.repeat(x[:1], NUM_CLASSES, axis=0)
    gall, _ = input_gradient(p, xb, np.arange(NUM_CLASSES))
    r, c = 13, 17
    xp_, xm_ = x[:1].copy(), x[:1].copy()
    xp_[0, 0, r, c] += h
    xm_[0, 0, r, c] -= h
    fd = (forward(p, xp_)[0][0] - forward(p, xm_)[0][0]) / (2 * h)
    report("all-class gradient at pixel (13,17), max abs err", np.max(np.abs(fd - gall[:, 0, r, c])), 1e-7)

    # 2. max-pool tie routing: all-equal window -> gradient on (0,0)
    a = np.zeros((1, 1, 4, 4))
    a[0, 0, 2:, 2:] = [[1.0, 2.0], [2.0, 0.5]]  # tie between (0,1) and (1,0): first is (0,1)
    _, idx = maxpool2_forward(a)
    gb = maxpool2_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), idx)
    expect = np.zeros((4, 4))
    expect[0, 0], expect[0, 2], expect[2, 0], expect[2, 3] = 1.0, 2.0, 3.0, 4.0
    report("max-pool first-argmax tie routing, max abs err", np.max(np.abs(gb[0, 0] - expect)), 0.0)

    # 3. IG completeness: sum IG = logit_t(x) - logit_t(0)
    ig = integrated_gradients(p, x, preds)
    l0, _ = forward(p, np.zeros_like(x))
    gap = logits[np.arange(3), preds] - l0[np.arange(3), preds]
    sums = ig.reshape(3, -1).sum(axis=1)
    rel = np.abs(sums - gap) / np.maximum(np.abs(gap), 1e-12)
    for b in range(3):
        print(f"       image {b}: sum IG = {sums[b]:+.6f}, logit_t(x)-logit_t(0) = {gap[b]:+.6f}, "
              f"abs err {abs(sums[b] - gap[b]):.2e}")
    report("IG completeness (50 GL steps), max rel err", rel.max(), 1e-2)

    # 4. IG with chunking == IG without chunking (bookkeeping of the (alpha, image) pairs)
    ig2 = integrated_gradients(p, x, preds, chunk_images=7)
    report("IG chunk-size invariance, max abs diff", np.max(np.abs(ig - ig2)), 1e-12)

    # 5. backward rules
    # 5a. hand-built case: the three rules give different, hand-derived maps
    hp, hx, ht, hexp, hexp_dl = hand_built_rules_case()
    hlog, hcache = forward(hp, hx)
    hpre = hcache[5][0, :4]
    print(f"       hand-built case: logit_0 = {hlog[0, 0]:+.3f} (expect 0.4 - 1.4 + relu(-9.1) = -1), "
          f"logit_2 = {hlog[0, 2]:+.3f} (expect relu(0.4) = 0.4), fc1 pre-activations u0..u3 = "
          f"{hpre[0]:+.2f}, {hpre[1]:+.2f}, {hpre[2]:+.2f}, {hpre[3]:+.2f}")
    report("hand-built case logit_0 vs -1, abs err", abs(hlog[0, 0] - (-1.0)), 1e-12)
    report("hand-built case logit_2 vs 0.4, abs err", abs(hlog[0, 2] - 0.4), 1e-12)
    hmaps = {}
    for rule in PLAIN_RULES:
        hmaps[rule] = input_gradient(hp, hx, ht, rule=rule)[0][0, 0]
        nz = [(int(r), int(c), float(hmaps[rule][r, c])) for r, c in zip(*np.nonzero(hmaps[rule]))]
        print(f"       hand-built case, rule {rule!r}: non-zeros (row, col, value) = {nz}")
        report(f"hand-built case, rule {rule!r} vs hand-derived, max abs err",
               np.max(np.abs(hmaps[rule] - hexp[rule])), 1e-12)
    n_same = sum(np.array_equal(hmaps[a], hmaps[b])
                 for i, a in enumerate(PLAIN_RULES) for b in PLAIN_RULES[i + 1 :])
    report("hand-built case, rule pairs giving identical maps (must be 0)", float(n_same), 0.0)
    hl0, _ = forward(hp, np.zeros_like(hx))
    for t in (2, 0):
        dl = deeplift(hp, hx, np.array([t]))[0, 0]
        nz = [(int(r), int(c), float(dl[r, c])) for r, c in zip(*np.nonzero(dl))]
        print(f"       hand-built case, deeplift target {t}: non-zeros (row, col, value) = {nz}, "
              f"sum = {dl.sum():+.6f}, logit_{t}(x) - logit_{t}(0) = {hlog[0, t] - hl0[0, t]:+.6f}")
        report(f"hand-built case, deeplift target {t} vs hand-derived, max abs err",
               np.max(np.abs(dl - hexp_dl[t])), 1e-12)

    # 5b. rule='gradient' == the backward from before the rule argument existed (bit for bit),
    #     on random weights and images, for the predicted and for all classes
    gnew, _ = input_gradient(p, x, preds, rule="gradient")
    gold, _ = _input_gradient_frozen(p, x, preds)
    gnew_all, _ = input_gradient(p, xb, np.arange(NUM_CLASSES))
    gold_all, _ = _input_gradient_frozen(p, xb, np.arange(NUM_CLASSES))
    diff = max(np.max(np.abs(gnew - gold)), np.max(np.abs(gnew_all - gold_all)))
    report("rule='gradient' vs pre-change backward (random weights), max abs diff", diff, 0.0)
    gp_rand = input_gradient(p, x, preds, rule="guided")[0]
    dc_rand = input_gradient(p, x, preds, rule="deconvnet")[0]
    print(f"       random net: max|guided - gradient| = {np.max(np.abs(gp_rand - gnew)):.3e}, "
          f"max|deconvnet - gradient| = {np.max(np.abs(dc_rand - gnew)):.3e}, "
          f"max|deconvnet - guided| = {np.max(np.abs(dc_rand - gp_rand)):.3e}")

    # 5c. rule='rescale' with a reference equal to x itself (|z - z0| = 0 everywhere) takes the
    #     fallback branch everywhere and must reproduce rule='gradient' bit for bit
    own = (z1, z2, z3)
    gres, _ = input_gradient(p, x, preds, rule="rescale", ref_pre=own)
    report("rule='rescale' with z0 = z vs rule='gradient', max abs diff",
           float(np.max(np.abs(gres - gnew))), 0.0)

    # 6. DeepLIFT summation-to-delta: sum deeplift = logit_t(x) - logit_t(0).
    # 6a. random net: not exact, because max-pool routes by x's arg-max; the zero image's
    #     conv1 windows are all tied (bias only), but its conv2 windows at the border are not.
    dl = deeplift(p, x, preds)
    l0, c0 = forward(p, np.zeros_like(x))
    gap = logits[np.arange(3), preds] - l0[np.arange(3), preds]
    sums = dl.reshape(3, -1).sum(axis=1)
    rel = np.abs(sums - gap) / np.maximum(np.abs(gap), 1e-12)
    brk1 = pool_ref_breaks(np.maximum(z1, 0), np.maximum(c0[0], 0), i1)
    brk2 = pool_ref_breaks(np.maximum(z2, 0), np.maximum(c0[2], 0), i2)
    for b in range(3):
        print(f"       image {b}: sum deeplift = {sums[b]:+.6f}, logit_t(x)-logit_t(0) = {gap[b]:+.6f}, "
              f"rel err {rel[b]:.2e}")
    print(f"       pool windows where x's arg-max is not a max of the zero image's window "
          f"(pool1, pool2): {brk1}, {brk2}")
    report("DeepLIFT summation-to-delta, random net, max rel err", rel.max(), 5e-2)
    print(f"       max|deeplift - gradient_x_input| = {np.max(np.abs(dl - x * gnew)):.3e}, "
          f"max|deeplift - IG| = {np.max(np.abs(dl - ig)):.3e}")

    # 6b. same net with conv2 reduced to its centre taps: the zero image's conv2 output is then
    #     constant per channel, every reference pool window is tied, and summation is exact.
    pc = dict(p)
    pc["conv2.weight"] = np.zeros_like(p["conv2.weight"])
    pc["conv2.weight"][:, :, 1, 1] = p["conv2.weight"][:, :, 1, 1] * 3.0
    lc, cc = forward(pc, x)
    lc0, cc0 = forward(pc, np.zeros_like(x))
    tc = np.argmax(lc, axis=1)
    dlc = deeplift(pc, x, tc)
    gapc = lc[np.arange(3), tc] - lc0[np.arange(3), tc]
    sumsc = dlc.reshape(3, -1).sum(axis=1)
    relc = np.abs(sumsc - gapc) / np.maximum(np.abs(gapc), 1e-12)
    brkc = (pool_ref_breaks(np.maximum(cc[0], 0), np.maximum(cc0[0], 0), cc[1])
            + pool_ref_breaks(np.maximum(cc[2], 0), np.maximum(cc0[2], 0), cc[3]))
    print(f"       centre-tap conv2 net: gaps {', '.join(f'{v:+.4f}' for v in gapc)}, "
          f"{brkc} pool windows break the arg-max condition")
    report("DeepLIFT summation-to-delta, centre-tap conv2 net (all reference windows tied), max rel err",
           relc.max(), 1e-10)

    # 8. bilinear upsampling 14 -> 28 (align_corners=False) on a hand case: with
    #    src = (o + 0.5)/2 - 0.5 the output rows/columns 0..3 read input (0) | .75(0)+.25(1) |
    #    .25(0)+.75(1) | .75(1)+.25(2), and every input index has total weight 2 per axis.
    hin = np.zeros((14, 14))
    hin[0, 1], hin[1, 2] = 1.8, 1.0
    up = bilinear_upsample(hin)
    bil_expect = [((0, 2), 0.75 * 1.8), ((0, 3), 0.75 * 1.8), ((3, 4), 0.5625 * 1.0),
                  ((2, 3), 0.1875 * 1.8 + 0.1875 * 1.0)]
    err = max(abs(up[rc] - v) for rc, v in bil_expect)
    err = max(err, abs(up.sum() - 4 * 2.8))
    print(f"       bilinear hand case: out[0,2] = {up[0, 2]:.4f}, out[0,3] = {up[0, 3]:.4f}, "
          f"out[3,4] = {up[3, 4]:.4f}, out[2,3] = {up[2, 3]:.4f}, sum = {up.sum():.4f} (expect 11.2)")
    report("bilinear upsampling hand case (4 entries and the sum), max abs err", err, 1e-12)

    # 9. occlusion
    # 9a. hand-built net, predicted class 2: logit_2 = relu(A - 0.5) = 0.4 with A = max of
    #     x[0:4, 0:4] (= x[1,2] = 0.9). Only the windows (0,0) and (0,2) cover (1,2); they drop
    #     logit_2 to relu(-0.5) = 0 (drop 0.4), every other window drops 0 (logit_2 does not
    #     read B). A pixel's share of dropping windows: rows 0-1 are covered only by window row
    #     0 (1), rows 2-3 by rows 0 and 2 (1/2); columns 0-3 only by columns 0 and/or 2 (1),
    #     columns 4-5 by columns 2 and 4 (1/2). So the map is 0.4 * rowfac (x) colfac with
    #     rowfac = [1,1,.5,.5,0,...], colfac = [1,1,1,1,.5,.5,0,...], sum 0.4 * 3 * 5 = 6.
    htp = np.argmax(hlog, axis=1)
    occ_h = occlusion(hp, hx, htp)[0, 0]
    rowfac = np.zeros(28)
    rowfac[:4] = [1.0, 1.0, 0.5, 0.5]
    colfac = np.zeros(28)
    colfac[:6] = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    occ_expect = 0.4 * np.outer(rowfac, colfac)
    print(f"       hand-built case, occlusion (predicted class {int(htp[0])}): (1,2) = {occ_h[1, 2]:.4f}, "
          f"(3,3) = {occ_h[3, 3]:.4f}, (1,4) = {occ_h[1, 4]:.4f}, (3,5) = {occ_h[3, 5]:.4f}, "
          f"sum = {occ_h.sum():.4f} (expect 0.4, 0.2, 0.2, 0.1, 6)")
    report("hand-built case, occlusion vs hand-derived, max abs err",
           float(np.max(np.abs(occ_h - occ_expect))) if htp[0] == 2 else np.inf, 1e-12)
    # 9b. random net: vectorised occlusion vs a loop over windows and pixels
    occ = occlusion(p, x, preds)
    occ_loop = np.zeros_like(occ)
    for b in range(2):
        t = preds[b]
        drops = {}
        for r in range(0, 25, 2):
            for c in range(0, 25, 2):
                xo = x[b : b + 1].copy()
                xo[0, 0, r : r + 4, c : c + 4] = 0.0
                drops[(r, c)] = logits[b, t] - forward(p, xo)[0][0, t]
        for i in range(28):
            for j in range(28):
                cov = [v for (r, c), v in drops.items() if r <= i < r + 4 and c <= j < c + 4]
                occ_loop[b, 0, i, j] = np.mean(cov) if cov else 0.0
    report("occlusion, vectorised vs loop over windows (random net, 2 images), max abs diff",
           float(np.max(np.abs(occ[:2] - occ_loop[:2]))), 1e-12)
    report("occlusion chunk-size invariance, max abs diff",
           float(np.max(np.abs(occ - occlusion(p, x, preds, chunk_images=37)))), 1e-12)

    # 10. Grad-CAM
    # 10a. G = d logit_t / d A vs central FD of the logit as a function of A, on entries whose
    #      pool window has a clear top-1 (FD must stay on one linear piece; checked).
    a2, G, _ = conv2_activation_gradient(p, x, preds)
    _, i2_ref = maxpool2_forward(a2)

    def fwd_a(a):
        m2, idx = maxpool2_forward(a)
        z = m2.reshape(m2.shape[0], -1) @ p["fc1.weight"].T + p["fc1.bias"]
        return np.maximum(z, 0.0) @ p["fc2.weight"].T + p["fc2.bias"], idx, z > 0

    report("forward from A vs forward from x, max abs diff",
           float(np.max(np.abs(forward_from_conv2_activation(p, a2) - logits))), 1e-12)
    win = np.sort(a2.reshape(3, 64, 7, 2, 7, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 64, 7, 7, 4), axis=-1)
    gap_win = win[..., 3] - win[..., 2]  # [3,64,7,7]
    n_tied = int(np.sum(gap_win <= 1e-4))
    h = 1e-6
    worst, n_chk, n_pat = 0.0, 0, 0
    for b in range(3):
        clear = np.repeat(np.repeat(gap_win[b] > 1e-4, 2, axis=1), 2, axis=2)  # [64,14,14]
        cand_nz = np.argwhere(clear & (G[b] != 0))
        cand_z = np.argwhere(clear & (G[b] == 0))
        pick = [cand_nz[i] for i in rng.choice(len(cand_nz), 20, replace=False)]
        pick += [cand_z[i] for i in rng.choice(len(cand_z), 10, replace=False)]
        _, idx0, mask0 = fwd_a(a2[b : b + 1])
        for (k, r, c) in pick:
            ap_, am_ = a2[b : b + 1].copy(), a2[b : b + 1].copy()
            ap_[0, k, r, c] += h
            am_[0, k, r, c] -= h
            (lp, ip, mp), (lm, im, mm) = fwd_a(ap_), fwd_a(am_)
            n_pat += int(not (np.array_equal(ip, idx0) and np.array_equal(im, idx0)
                              and np.array_equal(mp, mask0) and np.array_equal(mm, mask0)))
            fd = (lp[0, preds[b]] - lm[0, preds[b]]) / (2 * h)
            worst = max(worst, abs(fd - G[b, k, r, c]) / max(abs(fd), abs(G[b, k, r, c]), 1e-3))
            n_chk += 1
    print(f"       Grad-CAM layer: {n_tied} of {3 * 64 * 49} conv2 pool windows tied (gap <= 1e-4, "
          f"excluded from the per-entry FD); {n_chk} entries checked")
    report("Grad-CAM FD points that changed the pool/ReLU pattern (must be 0)", float(n_pat), 0.0)
    report("Grad-CAM G vs central FD on A (h=1e-6), max rel err", worst, 1e-5)
    # 10b. alpha_k = mean_hw G_k is a directional derivative: (1/196) d/de logit_t(A + e*1_k).
    #      A shift that is constant over a channel keeps every pool arg-max (ties included), so
    #      this covers all entries of G, tied windows too, in 64 directions per image.
    he = 1e-5
    alpha_fd = np.zeros((3, 64))
    n_pat = 0
    for b in range(3):
        _, idx0, mask0 = fwd_a(a2[b : b + 1])
        for k in range(64):
            ap_, am_ = a2[b : b + 1].copy(), a2[b : b + 1].copy()
            ap_[0, k] += he
            am_[0, k] -= he
            (lp, ip, mp), (lm, im, mm) = fwd_a(ap_), fwd_a(am_)
            n_pat += int(not (np.array_equal(ip, idx0) and np.array_equal(im, idx0)
                              and np.array_equal(mp, mask0) and np.array_equal(mm, mask0)))
            alpha_fd[b, k] = (lp[0, preds[b]] - lm[0, preds[b]]) / (2 * he) / 196.0
    alpha = G.mean(axis=(2, 3))
    report("Grad-CAM channel-shift FD points that changed the pattern (must be 0)", float(n_pat), 0.0)
    report("Grad-CAM alpha vs channel-shift FD, max abs err / max |alpha|",
           float(np.max(np.abs(alpha - alpha_fd)) / np.max(np.abs(alpha))), 1e-6)
    # 10c. the whole map from the FD alphas, with the upsampling written as a per-pixel loop
    gc, cam = grad_cam(p, x, preds)
    cam_fd = np.maximum(np.einsum("bk,bkhw->bhw", alpha_fd, a2), 0.0)
    up_loop = np.zeros((3, 28, 28))
    for o_r in range(28):
        sr = max((o_r + 0.5) * 0.5 - 0.5, 0.0)
        r0 = int(sr)
        r1, fr = min(r0 + 1, 13), sr - r0
        for o_c in range(28):
            sc = max((o_c + 0.5) * 0.5 - 0.5, 0.0)
            c0 = int(sc)
            c1, fc = min(c0 + 1, 13), sc - c0
            up_loop[:, o_r, o_c] = ((1 - fr) * ((1 - fc) * cam_fd[:, r0, c0] + fc * cam_fd[:, r0, c1])
                                    + fr * ((1 - fc) * cam_fd[:, r1, c0] + fc * cam_fd[:, r1, c1]))
    print(f"       Grad-CAM random net: cam > 0 at {int(np.sum(cam > 0))} of {3 * 196} positions, "
          f"max map {gc.max():.3e}")
    report("grad_cam vs (FD alphas, loop upsampling), max abs err / max map",
           float(np.max(np.abs(gc[:, 0] - up_loop)) / np.max(np.abs(gc))), 1e-6)
    # 10d. hand-built net, predicted class 2: A_0 is the pool1 map (0.9 at (0,1), 0.5 at (1,2)),
    #      the other channels are 0; G_0 = 1 at (0,1) only (B does not reach logit_2), so
    #      alpha_0 = 1/196 and cam = A_0 / 196, i.e. the bilinear hand case above / 392.
    #      guided backprop is 1 at (1,2) (see 5a's derivation for target 2), and the upsampled cam
    #      there is .75*.75*0.9/196 (rows/cols 1 and 2 read input (0) and (1) with .75 on 0 and 1).
    hgc, _ = grad_cam(hp, hx, htp)
    hgg = input_gradient(hp, hx, htp, rule="guided")[0] * hgc
    hgg_expect = np.zeros((28, 28))
    hgg_expect[1, 2] = 0.5625 * 0.9 / 196.0
    report("hand-built case, grad_cam vs bilinear hand case / 392, max abs err",
           float(np.max(np.abs(hgc[0, 0] - up / 392.0))), 1e-15)
    report("hand-built case, guided_grad_cam = .5625*.9/196 at (1,2), 0 elsewhere, max abs err",
           float(np.max(np.abs(hgg[0, 0] - hgg_expect))), 1e-15)

    # 7. safetensors round trip through the hand-written reader
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.safetensors")
        write_safetensors(path, p)
        q = load_params(path)
        err = max(np.max(np.abs(q[k] - p[k].astype(np.float32))) for k in p)
    report("safetensors round trip, max abs err", err, 0.0)

    print("self-test:", "OK" if ok else "FAILED")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="fmnist_cnn weights (.safetensors, PyTorch names)")
    ap.add_argument("--images", help=".npy images, float32 [N,1,28,28] in [0,1] or uint8")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--self-test", action="store_true", help="run the numerical self-checks")
    args = ap.parse_args(argv)

    if args.self_test:
        return self_test()
    if not (args.weights and args.images and args.out):
        ap.error("--weights, --images and --out are required (or --self-test)")

    t0 = time.perf_counter()
    p = load_params(args.weights)
    x = load_images(args.images)
    res = compute_all(p, x)
    os.makedirs(args.out, exist_ok=True)
    for name in ("gradient", "gradient_x_input", "integrated_gradients", "guided_backprop", "deconvnet",
                 "deeplift", "grad_cam", "guided_grad_cam", "occlusion"):
        np.save(os.path.join(args.out, f"{name}.npy"), res[name].astype(np.float32))
    np.save(os.path.join(args.out, "preds.npy"), res["preds"].astype(np.int64))
    np.save(os.path.join(args.out, "logits.npy"), res["logits"].astype(np.float32))
    print(f"wrote {x.shape[0]} images' maps to {args.out} in {time.perf_counter() - t0:.2f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
