#!/usr/bin/env python3
"""Reference faithfulness curves (tests/fixtures/faithfulness/fmnist_cnn.safetensors).

Four measures of how faithful a saliency map is to the model, each by its authors' code:

- deletion and insertion (Petsiuk, Das and Saenko, "RISE: Randomized input sampling for
  explanation of black-box models", BMVC 2018): `CausalMetric.single_run`, `gkern` and `auc` of
  github.com/eclique/RISE evaluation.py (commit fac5d54), transcribed below (RISE is no package;
  its code calls .cuda() and plots), for C channels and H*W pixels instead of 3 and 224*224;
- pixel flipping (Bach et al. 2015) and region perturbation (Samek et al. 2017) by Quantus 0.6.0
  itself (`quantus.PixelFlipping`, `quantus.RegionPerturbation`).

How the committed fixture was made (the venv of scripts/lrp_fixtures.py, plus Quantus from PyPI):

    /work/torchenv/bin/pip install quantus==0.6.0
    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/faithfulness_fixtures.py

with quantus 0.6.0, torch 2.15.0+cu132, numpy 2.4.6, scipy 1.17.1, safetensors 0.8.0, on CPU, one
thread; the versions used are written into the file's metadata (`fixture`: sorted JSON). Quantus
0.6.0 calls np.trapz, which numpy 2.4 removed: the script aliases np.trapz = np.trapezoid (the
same composite trapezoidal rule).

Model: the shipped fmnist_cnn (assets/models/fmnist_cnn.safetensors) rebuilt in PyTorch
(conv 1->32 3x3 pad 1, ReLU, max-pool 2, conv 32->64 3x3 pad 1, ReLU, max-pool 2, flatten,
fc 3136->128, ReLU, fc 128->10), float32, eval mode. Images: the shipped test images IDS
(assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz, byte/255); the last one is rescaled to
0.1 + 0.8 x, so that its minimum is 0.1 and Quantus' "black" baseline (the image's minimum) is not 0.
Classes: the model's argmax (RISE's `c`; Quantus gets them as y_batch). Maps: |d logit[class]/dx|
summed over channels (fragility's `saliency` of its `gradient` method), float32. The script checks
that no map has ties (neither as given nor after Quantus' normalise_by_max), that the region sums'
ranking is the same in float64 as in Quantus' float32, and that the model is the one Rust loads
(its logits are stored).

Keys (F32 unless said; B = 4 images):

    x                       [B,1,28,28]  the images
    classes                 I64 [B]      the argmax classes
    logits                  [B,10]
    maps                    [B,28,28]    the gradient maps
    gkern                   [11,11]      RISE's gkern(11, 5)[0, 0]: scipy's gaussian_filter of a
                                         delta, sigma 5, mode 'reflect', truncate 4 (radius 20)
    blurred                 [B,1,28,28]  RISE's insertion substrate: conv2d(x, gkern, padding=5)
    deletion                F64 [B,29]   RISE single_run, mode 'del', step 28, substrate zeros
    deletion_auc            F64 [B]      RISE auc(curve)
    insertion, insertion_auc             mode 'ins', step 28, substrate the blurred image
    pixel_flipping          F64 [B,28]   PixelFlipping(features_in_step=28), other settings default
    pixel_flipping_auc      F64 [B]      the same with return_auc_per_sample=True
    pixel_flipping@features_in_step=1        F64 [B,784]  Quantus' default step
    pixel_flipping_auc@features_in_step=1    F64 [B]
    region_perturbation     F64 [B,49]   RegionPerturbation(patch_size=4), other settings default
                                         (order morf, regions_evaluation 100: all 49 patches)
    region_perturbation_auc F64 [B]      quantus.helpers.utils.calculate_auc of each curve (the terms
                                         of get_auc_score's mean)
    region_perturbation@patch_size=8          F64 [B,16]  Quantus' default patch: 28 % 8 = 4, so
                                         Quantus pads 2 pixels on each side (16 patches)
    region_perturbation_auc@patch_size=8      F64 [B]
    region_perturbation@regions_evaluation=10 F64 [B,10] patch_size=4, the first 10 regions

(Quantus returns Python floats: its curves are float32 values, its pixel-flipping AUC a float32
np.trapz, its region AUC here np.trapz of the curve in float64; all stored as F64.)
"""

import gzip
import importlib.metadata
import json
import os

import numpy as np
import safetensors
import scipy
import torch
import torch.nn as nn
from safetensors.numpy import save_file
from safetensors.torch import load_file
from scipy.ndimage import gaussian_filter

if not hasattr(np, "trapz"):  # Quantus 0.6.0 calls np.trapz, removed in numpy 2.4
    np.trapz = np.trapezoid

import quantus  # noqa: E402
from quantus.helpers import utils as qutils  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
WEIGHTS = os.path.join(ROOT, "assets/models/fmnist_cnn.safetensors")
IMAGES = os.path.join(ROOT, "assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz")
OUT = os.path.join(ROOT, "tests/fixtures/faithfulness/fmnist_cnn.safetensors")
IDS = [0, 1, 2, 3]
STEP = 28  # RISE step and Quantus features_in_step: one row of 28 pixels per step
KLEN, KSIG = 11, 5  # RISE's blur


class FmnistCnn(nn.Module):
    """src/model/fmnist_cnn.rs in PyTorch, with its state_dict names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(3136, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def load_images(ids):
    with gzip.open(IMAGES, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(3))
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w)
    return pixels[ids].astype(np.float32) / np.float32(255.0)


# --- RISE, evaluation.py (eclique/RISE), transcribed for C channels and H*W pixels ---------------

def gkern(klen, nsig, channels):
    """Returns a Gaussian kernel array. Convolution with it results in image blurring."""
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((channels, channels, klen, klen))
    for c in range(channels):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def auc(arr):
    """Returns normalized Area Under Curve of the array."""
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def single_run(model, mode, step, substrate_fn, img_tensor, explanation):
    """CausalMetric.single_run without .cuda() and plotting; HW and the channel count from the image."""
    _, channels, h, w = img_tensor.shape
    hw = h * w
    pred = model(img_tensor)
    top, c = torch.max(pred, 1)
    c = c.cpu().numpy()[0]
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start = img_tensor.clone()
        finish = substrate_fn(img_tensor)
    elif mode == "ins":
        start = substrate_fn(img_tensor)
        finish = img_tensor.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        pred = model(start)
        scores[i] = pred[0, c]
        if i < n_steps:
            coords = salient_order[:, step * i: step * (i + 1)]
            start.cpu().numpy().reshape(1, channels, hw)[0, :, coords] = \
                finish.cpu().numpy().reshape(1, channels, hw)[0, :, coords]
    return scores, int(c)


# -------------------------------------------------------------------------------------------------

def gradient_maps(net, x, classes):
    xt = torch.from_numpy(x).requires_grad_(True)
    logits = net(xt)
    logits.gather(1, torch.from_numpy(classes)[:, None]).sum().backward()
    return xt.grad.abs().sum(1).numpy().astype(np.float32)


def check_no_ties(maps):
    normalised = qutils_normalise(maps)
    for b, m in enumerate(maps):
        for what, a in (("map", m), ("normalised map", normalised[b])):
            if np.unique(a).size != a.size:
                raise RuntimeError(f"image {b}: the {what} has ties")


def qutils_normalise(maps):
    """Quantus' default normalise_by_max over the whole a_batch, as the metrics apply it."""
    return quantus.normalise_func.normalise_by_max(maps[:, None])[:, 0]


def check_region_order(maps, patch):
    """Quantus sums the normalised float32 map per patch (numpy, float32); fragility sums the raw map
    in float64. Both must rank the patches alike, with a margin."""
    normalised = qutils_normalise(maps)
    b, h, w = maps.shape
    lo = (-(h % patch) % patch) // 2
    pad = np.pad(maps.astype(np.float64), ((0, 0), (lo, -(h + lo) % patch), (lo, -(w + lo) % patch)))
    npad = np.pad(normalised, ((0, 0), (lo, -(h + lo) % patch), (lo, -(w + lo) % patch)))
    hp, wp = pad.shape[1:]
    sums64 = pad.reshape(b, hp // patch, patch, wp // patch, patch).sum((2, 4)).reshape(b, -1)
    sums32 = npad.reshape(b, hp // patch, patch, wp // patch, patch).sum((2, 4)).reshape(b, -1)
    for i in range(b):
        if not (np.argsort(-sums64[i], kind="stable") == np.argsort(-sums32[i])).all():
            raise RuntimeError(f"patch {patch}, image {i}: float64 and float32 patch rankings differ")
        gap = np.min(np.diff(np.sort(sums64[i]))) / sums64[i].max()
        print(f"  patch {patch}, image {i}: smallest relative gap between patch sums {gap:.2e}", flush=True)


def versions():
    return {
        "quantus": importlib.metadata.version("quantus"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "safetensors": safetensors.__version__,
    }


def quantus_curves(metric, net, x, classes, maps):
    out = metric(model=net, x_batch=x, y_batch=classes, a_batch=maps[:, None], channel_first=True,
                 device="cpu", softmax=True)
    return out  # Quantus' own return value: a list (per image) of lists of Python floats, or of floats


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    print(", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    net = FmnistCnn()
    net.load_state_dict(load_file(WEIGHTS), strict=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    x = load_images(IDS)
    x[-1] = np.float32(0.1) + np.float32(0.8) * x[-1]
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    classes = logits.argmax(1).astype(np.int64)
    maps = gradient_maps(net, x, classes)
    check_no_ties(maps)
    print(f"classes {classes.tolist()}; image minima {x.reshape(len(IDS), -1).min(1).tolist()}", flush=True)

    out = {"x": x, "classes": classes, "logits": logits.astype(np.float32), "maps": maps}

    # RISE deletion and insertion.
    kern = gkern(KLEN, KSIG, 1)
    blur = lambda t: nn.functional.conv2d(t, kern, padding=KLEN // 2)  # noqa: E731
    softmax_model = nn.Sequential(net, nn.Softmax(dim=1))
    out["gkern"] = kern[0, 0].numpy()
    with torch.no_grad():
        out["blurred"] = blur(torch.from_numpy(x)).numpy()
        for mode, key, substrate in (("del", "deletion", torch.zeros_like), ("ins", "insertion", blur)):
            curves, aucs = [], []
            for b in range(len(IDS)):
                scores, c = single_run(softmax_model, mode, STEP, substrate, torch.from_numpy(x[b:b + 1].copy()),
                                       maps[b])
                if c != classes[b]:
                    raise RuntimeError(f"{key}: RISE's class {c} is not the argmax {classes[b]}")
                curves.append(scores)
                aucs.append(auc(scores))
            out[key] = np.stack(curves).astype(np.float64)
            out[f"{key}_auc"] = np.array(aucs, dtype=np.float64)
            print(f"{key}: auc {', '.join(f'{a:.6f}' for a in aucs)}", flush=True)

    # Quantus pixel flipping and region perturbation.
    for fis in (STEP, 1):
        suffix = "" if fis == STEP else f"@features_in_step={fis}"
        curve = quantus_curves(quantus.PixelFlipping(features_in_step=fis, disable_warnings=True), net, x, classes, maps)
        area = quantus_curves(quantus.PixelFlipping(features_in_step=fis, return_auc_per_sample=True,
                                                    disable_warnings=True), net, x, classes, maps)
        out[f"pixel_flipping{suffix}"] = np.array(curve, dtype=np.float64)
        out[f"pixel_flipping_auc{suffix}"] = np.array(area, dtype=np.float64)
        print(f"pixel_flipping{suffix}: {len(curve[0])} points, auc {area}", flush=True)
    for suffix, kwargs in (("", {"patch_size": 4}), ("@patch_size=8", {"patch_size": 8}),
                           ("@regions_evaluation=10", {"patch_size": 4, "regions_evaluation": 10})):
        check_region_order(maps, kwargs["patch_size"])
        curve = quantus_curves(quantus.RegionPerturbation(disable_warnings=True, **kwargs), net, x, classes, maps)
        out[f"region_perturbation{suffix}"] = np.array(curve, dtype=np.float64)
        if "regions_evaluation" not in kwargs:
            area = np.array([qutils.calculate_auc(np.array(c)) for c in curve], dtype=np.float64)
            out[f"region_perturbation_auc{suffix}"] = area
            print(f"region_perturbation{suffix}: {len(curve[0])} points, auc {area.tolist()}", flush=True)

    meta = dict(versions())
    meta.update({"made_by": "scripts/faithfulness_fixtures.py", "ids": IDS, "step": STEP,
                 "rise": "eclique/RISE evaluation.py (fac5d54), transcribed", "gkern": [KLEN, KSIG]})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(out, OUT, metadata={"fixture": json.dumps(meta, sort_keys=True)})
    print(f"{OUT} ({os.path.getsize(OUT)} bytes, {len(out)} tensors)", flush=True)


if __name__ == "__main__":
    main()
