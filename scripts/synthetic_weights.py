#!/usr/bin/env python3
"""Deterministic pseudo-random weights from a formula, shared by Python and Rust.

The torchvision fixtures (tests/fixtures/torchvision/) are made with these weights so that the
Rust side can regenerate exactly the same parameters from the state_dict keys and shapes alone,
without committing any weight file. The Rust twin is `tests/integration/synthetic.rs`; the two
must stay bit-for-bit identical (everything is computed in float64 and cast to float32 at the end).

Formula, for a state_dict key K (UTF-8) of shape S with n = prod(S) elements:

    h  = FNV-1a 64 of K's bytes (offset 0xcbf29ce484222325, prime 0x100000001b3, mod 2^64)
    for i in 0..n (row-major / C order of S):
        x = h + i * 0x9E3779B97F4A7C15                      (mod 2^64)
        z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9             (mod 2^64)
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB             (mod 2^64)
        z =  z ^ (z >> 31)
        u = (z >> 40) / 2^24                                   in [0, 1), exact in float64
        r = 2u - 1                                             in [-1, 1)

Scaling by key (first matching rule):

    ends with "running_var"            0.5 + u
    ends with "running_mean"           0.1 * r
    ends with "num_batches_tracked"    not part of the formula (left as torch has it)
    ends with "bias"                   0.05 * r
    ends with "weight", rank 1 (BN)    1 + 0.1 * r
    ends with "weight", rank >= 2      r * sqrt(3 / fan_in), fan_in = prod(S[1:])  (variance 1/fan_in)
    ends with "layer_scale"            1 + 0.1 * r  (ConvNeXt's per-channel [C,1,1] residual scale;
                                                    torchvision initialises it to 1e-6, which would
                                                    make every block almost the identity)
    ends with "class_token"            0.5 * r      (the Vision Transformer's [1,1,D] class token and
    or "pos_embedding"                              its [1,T,D] position embedding; torchvision starts
                                                    them at 0 and N(0, 0.02^2), which would make the
                                                    class token input-free and positions almost
                                                    invisible next to the patch embeddings, whose
                                                    entries the formula's weights give a standard
                                                    deviation of about 0.6 on the fixtures' input)
    "input" (the fixture images)       u            (use scale="u")

`python3 scripts/synthetic_weights.py` prints the first values the Rust test asserts:

    layer1.0.conv1.weight [64, 64, 3, 3]: 0.0006196533213, 0.0492830798, 0.01056705695, 0.05060167983, 0.008198796771
    bn1.running_var [64]: 1.06532836, 1.14230752, 1.286753416, 1.470778823, 0.9438512325
"""

import math

import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK = (1 << 64) - 1
CHUNK = 1 << 22


def fnv1a64(key):
    h = FNV_OFFSET
    for b in key.encode("utf-8"):
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def uniform(key, n):
    """u in [0, 1) as float64, n values for `key`."""
    h = np.uint64(fnv1a64(key))
    out = np.empty(n, dtype=np.float64)
    golden, m1, m2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)
    s30, s27, s31, s40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
    with np.errstate(over="ignore"):
        for start in range(0, n, CHUNK):
            i = np.arange(start, min(n, start + CHUNK), dtype=np.uint64)
            x = h + i * golden
            z = (x ^ (x >> s30)) * m1
            z = (z ^ (z >> s27)) * m2
            z = z ^ (z >> s31)
            out[start : start + len(i)] = (z >> s40).astype(np.float64) / float(1 << 24)
    return out


def synthetic_f64(key, shape, scale=None):
    """The formula's values for `key` of `shape`, float64, shaped.

    `scale` overrides the key-based rule: "u" gives u in [0, 1) (used for the input images).
    """
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    u = uniform(key, n)
    if scale == "u":
        v = u
    elif scale is not None:
        raise ValueError(f"unknown scale {scale!r}")
    else:
        r = 2.0 * u - 1.0
        if key.endswith("running_var"):
            v = 0.5 + u
        elif key.endswith("running_mean"):
            v = 0.1 * r
        elif key.endswith("num_batches_tracked"):
            raise ValueError(f"{key}: num_batches_tracked is not part of the formula")
        elif key.endswith("bias"):
            v = 0.05 * r
        elif key.endswith("weight") and len(shape) == 1:
            v = 1.0 + 0.1 * r
        elif key.endswith("weight") and len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            v = r * math.sqrt(3.0 / fan_in)
        elif key.endswith("layer_scale"):
            # Added with the ConvNeXt fixture; no earlier key ends so, their values are unchanged.
            v = 1.0 + 0.1 * r
        elif key.endswith("class_token") or key.endswith("pos_embedding"):
            # Added with the ViT fixture (vit_b_16); no earlier key ends so, their values are unchanged.
            v = 0.5 * r
        else:
            raise ValueError(f"{key} {list(shape)}: no rule in the formula")
    return v.reshape(shape)


def synthetic(key, shape, scale=None):
    """The formula's values as float32 (computed in float64, cast once)."""
    return synthetic_f64(key, shape, scale).astype(np.float32)


def checksum(values):
    """Order-sensitive checksum of float32 values, bit-exact: sum_i (bits_i + 1) * (2i + 1) mod 2^64,
    bits_i the IEEE-754 pattern of values[i] as an unsigned integer. Written into the fixtures'
    .keys.json so the Rust side can check every generated tensor bit for bit."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32)
    total = 0
    with np.errstate(over="ignore"):
        for start in range(0, len(bits), CHUNK):
            b = bits[start : start + CHUNK].astype(np.uint64) + np.uint64(1)
            i = np.arange(start, start + len(b), dtype=np.uint64)
            total += int((b * (np.uint64(2) * i + np.uint64(1))).sum(dtype=np.uint64))
    return total & MASK


def main():
    for key, shape in (("layer1.0.conv1.weight", [64, 64, 3, 3]), ("bn1.running_var", [64])):
        v = synthetic(key, shape).reshape(-1)[:5]
        print(f"{key} {shape}: " + ", ".join(f"{float(x):.10g}" for x in v))


if __name__ == "__main__":
    main()
