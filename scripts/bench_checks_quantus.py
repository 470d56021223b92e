#!/usr/bin/env python3
"""Sanity checks and faithfulness measures, fragility against Quantus 0.6.0, side by side in one run.

The evaluation (issue 22, item 5): four methods that both tools have, on the same images, the same
model weights and the same CPU threads, scored by

    MPRT cascading        quantus.MPRT(layer_order="top_down")     [sanity] tests = ["cascading"]
    random logit          quantus.RandomLogit(num_classes=K)       [sanity] tests = ["random_logit"]
    pixel flipping        quantus.PixelFlipping                    [faithfulness] pixel_flipping
    region perturbation   quantus.RegionPerturbation               [faithfulness] region_perturbation
    ROAD (MoRF)           quantus.ROAD                             [faithfulness] road_morf

Methods: fragility's gradient, gradient_x_input, integrated_gradients (50 Gauss-Legendre steps,
zero baseline) and guided_backprop; Captum 0.9's Saliency (abs=False), InputXGradient,
IntegratedGradients (n_steps=50, method="gausslegendre", zero baseline) and GuidedBackprop, called
by the explain function Quantus is given. Quantus gets, per method, the signed attributions
[B,C,H,W] as a_batch for MPRT and RandomLogit and the saliency map (|attribution| summed over the
channels, [B,1,H,W], what fragility ranks) for the three faithfulness measures; both are computed
once per method and timed as "maps", as fragility's stage 1 computes the clean maps once.

Two workloads:

  fmnist    the shipped fmnist_cnn and the first --images (200) correctly classified images of the
            shipped Fashion-MNIST test file (the ids fragility's run studied, read from its
            run.json, so both sides score the same images), every setting at Quantus' default
            except ROAD's percentages (10, 20, ..., 90 on both sides) and pixel flipping's
            features_in_step (28 on both sides, FMNIST_PF_STEP; --pf-step 1 for both tools'
            default).
  resnet18  torchvision's resnet18 with random weights (torch.manual_seed(0), saved as
            safetensors, which fragility's builder loads), --resnet-images images at 224x224x3
            (shipped Fashion-MNIST test images, grey repeated over three channels and resized by
            bilinear interpolation, written as float32 npy for both sides), no normalisation,
            all images kept (random weights: correct_only = false). Pixel flipping flips
            1,024 pixels per step on both sides (Quantus asserts that features_in_step divides
            the size of the [B,1,H,W] map it is given, 50,176).

Timing: wall clock (time.perf_counter) around each Quantus metric call (all methods), the
explanations, and the whole; fragility's side is one `fragility run` of a generated config with
[sanity] and [faithfulness] only (no attacks), its per-stage seconds from run.json's timings_s,
its whole from the process's wall clock (loading the model and images included).

Usage (release binary built first; both sides in one run, one after the other):

    cargo build --release
    OMP_NUM_THREADS=2 /work/torchenv/bin/python scripts/bench_checks_quantus.py \
        --fragility target/release/fragility --threads 2 --out /tmp/bench_checks.md

It prints a Markdown table per workload and writes them to --out.
"""

import argparse
import gzip
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

if not hasattr(np, "trapz"):  # Quantus 0.6.0 calls np.trapz, removed in numpy 2.4
    np.trapz = np.trapezoid

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import quantus  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
WEIGHTS = os.path.join(ROOT, "assets/models/fmnist_cnn.safetensors")
IMAGES = os.path.join(ROOT, "assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz")
LABELS = os.path.join(ROOT, "assets/fashion-mnist/t10k-labels-1000-idx1-ubyte.gz")
METHODS = ["gradient", "gradient_x_input", "integrated_gradients", "guided_backprop"]
IG_STEPS = 50
ROAD_PERCENTAGES = list(range(10, 100, 10))  # fragility's default (the paper's); Quantus': 1, 3, ..., 99
BATCH = 50  # fragility's chunk and Quantus' batch_size
# Pixels flipped per step on Fashion-MNIST: one row of 28 (28 steps), not Quantus' default of 1: at 1,
# Quantus took 24 s per image (784 model calls per batch, each with its per-step checks), ~80 min
# for 200 images.
FMNIST_PF_STEP = 28
METRICS = ["cascading", "random_logit", "pixel_flipping", "region_perturbation", "road_morf"]


class FmnistCnn(nn.Module):
    """src/model/fmnist_cnn.rs in PyTorch, with its state_dict names; ReLUs as modules, which
    Captum's GuidedBackprop hooks."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc1 = nn.Linear(3136, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.relu1(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(self.relu2(self.conv2(x)), 2)
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def signed(method, model, x, targets):
    """The method's signed attributions [B,C,H,W] (float32 numpy), as Captum computes them."""
    x = torch.as_tensor(x, dtype=torch.float32)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    if method == "gradient":
        a = Saliency(model).attribute(x, target=targets, abs=False)
    elif method == "gradient_x_input":
        a = InputXGradient(model).attribute(x, target=targets)
    elif method == "integrated_gradients":
        a = IntegratedGradients(model).attribute(x, target=targets, baselines=0.0, n_steps=IG_STEPS,
                                                 method="gausslegendre")
    elif method == "guided_backprop":
        a = GuidedBackprop(model).attribute(x, target=targets)
    else:
        raise ValueError(method)
    return a.detach().numpy().astype(np.float32)


def explain_signed(model, inputs, targets, **kwargs):
    """Quantus' explain_func for the sanity checks: the signed attributions."""
    return signed(kwargs["xai"], model, inputs, targets)


def explain_saliency(model, inputs, targets, **kwargs):
    """Quantus' explain_func for the faithfulness measures: |attribution| summed over channels."""
    return np.abs(signed(kwargs["xai"], model, inputs, targets)).sum(1, keepdims=True)


def quantus_side(model, x, y, num_classes, pf_step):
    """Every metric for every method; seconds per metric (all methods) and of the maps."""
    seconds = {"maps": 0.0, **{m: 0.0 for m in METRICS}}
    scores = {m: {} for m in METRICS}
    common = dict(model=model, x_batch=x, y_batch=y, channel_first=True, device="cpu", batch_size=BATCH)
    for xai in METHODS:
        t = time.perf_counter()
        a_signed = np.concatenate([signed(xai, model, x[i:i + BATCH], y[i:i + BATCH])
                                   for i in range(0, len(x), BATCH)])
        a_saliency = np.abs(a_signed).sum(1, keepdims=True)
        seconds["maps"] += time.perf_counter() - t
        runs = [
            ("cascading", quantus.MPRT(layer_order="top_down", disable_warnings=True),
             a_signed, explain_signed),
            ("random_logit", quantus.RandomLogit(num_classes=num_classes, disable_warnings=True),
             a_signed, explain_signed),
            ("pixel_flipping", quantus.PixelFlipping(features_in_step=pf_step, return_auc_per_sample=True,
                                                     disable_warnings=True), a_saliency, explain_saliency),
            ("region_perturbation", quantus.RegionPerturbation(disable_warnings=True),
             a_saliency, explain_saliency),
            ("road_morf", quantus.ROAD(percentages=ROAD_PERCENTAGES, disable_warnings=True),
             a_saliency, explain_saliency),
        ]
        for name, metric, a, explain in runs:
            t = time.perf_counter()
            out = metric(a_batch=a, explain_func=explain, explain_func_kwargs={"xai": xai}, softmax=True, **common)
            seconds[name] += time.perf_counter() - t
            scores[name][xai] = summary(name, out)
            print(f"  quantus {xai} {name}: {time.perf_counter() - t:.2f} s, {scores[name][xai]}", flush=True)
    seconds["whole"] = sum(seconds.values())
    return seconds, scores


def summary(name, out):
    """A short mean of a Quantus return value, to eyeball beside fragility's tables."""
    if isinstance(out, dict):  # MPRT: layer -> per-sample similarity; ROAD: percentage -> accuracy
        return {str(k): round(float(np.nanmean(v)), 4) for k, v in list(out.items())[:6]}
    return round(float(np.nanmean(np.asarray(out, dtype=np.float64))), 4)


def config_text(model, weights, images, labels, count, correct_only, pf_step):
    label_line = f'labels = "{labels}"\n' if labels else ""
    return f"""# Generated by scripts/bench_checks_quantus.py: the checks only, no attacks.
seed = 0
device = "cpu"
out = "out"
batch_size = {BATCH}

[model]
name = "{model}"
weights = "{weights}"

[data]
images = "{images}"
{label_line}count = {count}
correct_only = {str(correct_only).lower()}

[methods]
names = {json.dumps(METHODS)}
integrated_gradients = {{ steps = {IG_STEPS}, quadrature = "gauss_legendre" }}

[sanity]
tests = ["cascading", "random_logit"]
similarities = ["spearman_abs", "ssim"]

[faithfulness]
measures = ["pixel_flipping", "region_perturbation", "road_morf"]
[faithfulness.pixel_flipping]
features_in_step = {pf_step}
[faithfulness.road_morf]
percentages = {json.dumps(ROAD_PERCENTAGES)}
"""


def fragility_side(binary, threads, folder, config):
    path = os.path.join(folder, "bench.toml")
    with open(path, "w") as f:
        f.write(config)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t = time.perf_counter()
    subprocess.run([binary, "run", "--quiet", path, "--force"], check=True, env=env, cwd=folder)
    whole = time.perf_counter() - t
    with open(os.path.join(folder, "out", "run.json")) as f:
        run = json.load(f)
    timings = run["timings_s"]
    seconds = {"maps": timings["maps"], **timings["sanity"], **timings["faithfulness"], "whole": whole,
               "load": timings["load"], "run_total": timings["total"]}
    return seconds, run


def table(title, ours, theirs, n_images):
    rows = [f"### {title}", "",
            "| stage | fragility (s) | Quantus 0.6.0 (s) | ratio | fragility s/image | Quantus s/image |",
            "|---|---|---|---|---|---|"]
    for key in ["maps"] + METRICS + ["whole"]:
        o, q = ours[key], theirs[key]
        rows.append(f"| {key} | {o:.2f} | {q:.2f} | {q / o:.1f}x | {o / n_images:.4f} | {q / n_images:.4f} |")
    rows.append("")
    rows.append(f"fragility's whole is the process's wall clock (loading {ours['load']:.2f} s included; run.json's "
                f"total {ours['run_total']:.2f} s); Quantus' whole is the sum of its maps and metrics.")
    return "\n".join(rows) + "\n"


def fmnist(args, folder):
    config = config_text("fmnist_cnn", WEIGHTS, IMAGES, LABELS, args.images, True, args.pf_step)
    ours, run = fragility_side(args.fragility, args.threads, folder, config)
    ids = run["images"]["ids"]
    x = (read_idx(IMAGES)[ids].astype(np.float32) / np.float32(255.0))[:, None]
    net = FmnistCnn()
    net.load_state_dict(load_file(WEIGHTS), strict=True)
    net.eval()
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    labels = read_idx(LABELS)[ids]
    if not (y == labels).all():
        raise RuntimeError("PyTorch misclassifies an image fragility studied as correctly classified")
    theirs, scores = quantus_side(net, x, y, 10, args.pf_step)
    return table(f"fmnist_cnn, {len(ids)} images", ours, theirs, len(ids)), ours, theirs, scores


def resnet(args, folder):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.eval()
    weights = os.path.join(folder, "resnet18.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    grey = read_idx(IMAGES)[: args.resnet_images].astype(np.float32) / np.float32(255.0)
    x = torch.nn.functional.interpolate(torch.from_numpy(grey)[:, None], size=(224, 224), mode="bilinear",
                                        align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    images = os.path.join(folder, "resnet_images.npy")
    np.save(images, x)
    pf_step = 1024  # pixels per step; Quantus 0.6.0 counts the [B,1,H,W] map's values, also 1024
    config = config_text("resnet18", weights, images, None, args.resnet_images, False, pf_step)
    ours, _ = fragility_side(args.fragility, args.threads, folder, config)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    for m in net.modules():  # torchvision's in-place ReLUs break Captum's backward hooks
        if isinstance(m, nn.ReLU):
            m.inplace = False
    theirs, scores = quantus_side(net, x, y, 1000, pf_step)
    return table(f"resnet18 at 224x224x3, {len(x)} images", ours, theirs, len(x)), ours, theirs, scores


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fragility", default=os.path.join(ROOT, "target/release/fragility"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--pf-step", type=int, default=FMNIST_PF_STEP,
                   help="fmnist: pixels flipped per step on both sides (1 = Quantus' and fragility's default)")
    p.add_argument("--resnet-images", type=int, default=2)
    p.add_argument("--only", choices=["fmnist", "resnet18"], default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--json", default=None, help="also write every figure and Quantus score here")
    args = p.parse_args()
    args.fragility = os.path.abspath(args.fragility)
    torch.set_num_threads(args.threads)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    head = (f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {platform.machine()}, {os.cpu_count()} CPUs ({cpu}); "
            f"{args.threads} threads each (RAYON_NUM_THREADS / torch.set_num_threads); "
            + ", ".join(f"{k} {importlib.metadata.version(k)}" for k in ("quantus", "torch", "torchvision",
                                                                          "captum", "numpy", "scipy",
                                                                          "scikit-image"))
            + f"; Python {platform.python_version()}\n")
    print(head, flush=True)
    parts, record = [head], {}
    with tempfile.TemporaryDirectory() as folder:
        for name, fn in (("fmnist", fmnist), ("resnet18", resnet)):
            if args.only and args.only != name:
                continue
            text, ours, theirs, scores = fn(args, folder)
            print(text, flush=True)
            parts.append(text)
            record[name] = {"fragility": ours, "quantus": theirs, "quantus_scores": scores}
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(parts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
