#!/usr/bin/env python3
"""PyTorch + Captum side of the `fragility` speed comparison.

What a PyTorch + Captum user would write for the same work as this crate, so that the two
can be timed side by side on the same machine. It is NOT part of the test suite and nothing
in the crate calls it; run it by hand.

Two parts (``--part methods|study|all``):

* ``methods``: throughput of each attribution method (maps = images per second) at batch
  sizes ``--batches`` (default 64,256), the counterpart of ``cargo bench --bench throughput``:
  forward (logits, no grad), gradient (``Saliency(abs=False)``: the raw signed gradient of the
  target logit), gradient_x_input (``InputXGradient``), integrated_gradients
  (``IntegratedGradients``, 50 Gauss-Legendre steps, zero baseline), smoothgrad
  (``NoiseTunnel(Saliency)``, 50 samples, sigma 0.15), guided_backprop (``GuidedBackprop``),
  grad_cam (``LayerGradCam`` on the conv2 ReLU output, upsampled bilinearly with
  ``LayerAttribution.interpolate``), deeplift (``DeepLift``, zero baseline), occlusion
  (``Occlusion``, 4x4 window, stride 2, baseline 0; at ``--occlusion-batches``), and the
  ``top_k`` attack against the gradient map in image-iterations per second; with
  scikit-learn installed also lime (``Lime``, ridge alpha 1, exponential cosine kernel of
  width 0.25) and kernel_shap (``KernelShap``) on a 4x4-pixel grid of 49 features, 1000
  samples, baseline 0, at ``--surrogate-batches`` (default 16). Targets are the
  predicted classes. Each measurement is warmed up once, then timed ``--reps`` times; the
  table shows the BEST repetition (the JSON also has the median).

* ``study``: experiments/fragility.toml end to end, the way a straightforward script does it:
  the first 200 correctly classified test images in chunks of 50; clean maps of gradient,
  gradient_x_input, integrated_gradients and smoothgrad; the attacks random_sign (20 draws)
  and top_k (k = 100, 100 signed steps of 0.1*eps, softplus(beta=10) surrogate for the
  second-order gradient, against the gradient map) at eps in {0.01, 0.02, 0.05, 0.1}; every
  method recomputed on every perturbed image; every (clean map, perturbed map) pair scored
  with Spearman, Kendall tau-b, Pearson, cosine, SSIM, top-100 intersection, centre-of-mass
  shift and MSE of the sum-one maps (plus the top_k objective's mass before/after, as the
  crate's samples table has it). Prints per-stage wall-clock times (loading reported apart)
  and the mean top-100 intersection and Spearman per (method, attack, eps) over label-kept
  rows, and writes one CSV row per image x method x attack x eps (``--out``) with the column
  names of the crate's ``samples.parquet``.

Definitions follow the crate (src/attack/*.rs, src/metric/*.rs, src/run.rs): a map is
|attribution| summed over channels; metrics compare the clean and the perturbed map of the
same method; the top_k attack keeps, per row, the best label-keeping iterate ranked on the
real (ReLU) model by (top-k intersection with the clean top-k set, then mass on that set),
the clean image being the fallback. Known differences are listed at the end of this
docstring.

Setup (Python >= 3.9; CPU wheels are enough):

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch captum numpy scipy
    /work/torchenv/bin/pip install scikit-learn   # optional: the lime / kernel_shap rows

(tested with torch 2.15.0, captum 0.9.0, numpy 2.4.6, scipy 1.17.1; scipy is used only for
``scipy.stats.rankdata`` and ``scipy.stats.kendalltau``). The weights are read from the
safetensors file by hand (no ``safetensors`` package needed).

Run from anywhere (paths default to this repository's assets):

    /work/torchenv/bin/python benches/pytorch_captum.py --part all --threads 2 \\
        --json /tmp/pytorch_captum.json
    # quick check (seconds):
    /work/torchenv/bin/python benches/pytorch_captum.py --part all --threads 2 --images 8 \\
        --batch-size 4 --iterations 5 --batches 8 --occlusion-batches 4 --reps 1

Known differences from the crate (by design: this is what plain Captum does):

* DeepLift: Captum rescales max-pooling by its own rule (pooled difference over input
  difference); the crate routes the multiplier to the arg-max of the real input, as Ghorbani
  et al.'s code. The maps may differ where the two rules disagree (with the zero baseline
  they agreed on every checked image, see below); DeepLift is only timed, not studied.
* Randomness (random_sign signs, SmoothGrad noise) comes from torch's generator seeded by
  ``--seed``, not from the crate's per-image ChaCha streams; the numbers agree in
  distribution, not bit for bit. The crate also keys SmoothGrad noise to the image and holds
  it fixed while attacking; here NoiseTunnel draws fresh noise on every call (it is only
  re-measured, never attacked, in the default study).
* torch.nn.Softplus(beta=10) switches to the identity where beta*z > 20 (threshold=20); the
  crate's softplus has no threshold. The difference in the derivative is below 3e-9.
* top_k attacks all rows of a chunk (4 eps x 50 images) as one batch; the crate chunks the
  second-order graph into 64-row pieces. Results are the same (rows are independent).
* random_sign draws from one generator for the whole run, so a row's draws depend on the
  chunking; the crate seeds each row from (seed, image id, attack, eps).

Pass sizes: ``--ig-internal-batch`` (Captum's ``internal_batch_size``, rows per pass, raised
to the batch if smaller), ``--sg-samples-batch`` (``nt_samples_batch_size``) and
``--occlusion-ppe`` (``perturbations_per_eval``) bound memory and set how many rows each
forward/backward pass sees. The defaults (256 / 2 / 2, i.e. a few hundred rows per pass) were
picked from a quick, noisy check on the 2-core machine, where passes of 1,000+ rows were
clearly slower; retune them per machine if in doubt.

Checked against the crate: on experiments/regression.toml's settings (24 images, eps 0.02 and
0.1, 20 top_k iterations, IG 16 steps, SmoothGrad 16 samples) the top_k rows agree with
reports/regression-baseline/samples.parquet image by image (44 of 48 gradient rows give the
same Spearman to 1e-4 and top-k mass to 1e-5; the rest differ by float rounding in the signs;
mean top-100 intersection of the gradient map 0.550 / 0.212 against the crate's 0.55 /
0.214), and the clean maps agree to 1e-7 (topk_mass_before of gradient, IG, DeepLift).
On reports/ghorbani2019 (100 images) the clean maps' mass on their own top-100 pixels agrees
within 1e-6 for gradient, guided_backprop, grad_cam, deeplift and occlusion, so the Captum
calls timed in part 1 compute the crate's maps.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import struct
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy import stats

import captum
from captum.attr import (
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

REPO = Path(__file__).resolve().parent.parent
H = W = 28

# ----------------------------------------------------------------------------------------
# Model and data
# ----------------------------------------------------------------------------------------


class FmnistCnn(nn.Module):
    """fmnist_cnn (src/model/fmnist_cnn.rs), one activation module per use so hooks work."""

    def __init__(self, act=nn.ReLU):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = act()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = act()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(3136, 128)
        self.relu3 = act()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(x.flatten(1)))
        return self.fc2(x)


_ST_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path: Path) -> dict:
    """Named tensors of a safetensors file: u64 LE header size, JSON header, raw LE data."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = bytearray(data[base + start : base + end])
        t = torch.frombuffer(buf, dtype=_ST_DTYPES[info["dtype"]]) if buf else torch.empty(0)
        out[name] = t.reshape(info["shape"]).to(torch.float32)
    return out


def load_model(weights: Path, device, act=nn.ReLU) -> FmnistCnn:
    model = FmnistCnn(act)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def read_idx(path: Path) -> np.ndarray:
    """A gzip'd idx file (u8 data) as an array of its shape."""
    raw = gzip.open(path, "rb").read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not a u8 idx file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(images: Path, labels: Path):
    x = read_idx(images).astype(np.float32) / 255.0
    y = read_idx(labels).astype(np.int64)
    return torch.from_numpy(x).reshape(-1, 1, H, W), torch.from_numpy(y)


@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 256):
    logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    return logits.argmax(1), torch.softmax(logits, 1)


# ----------------------------------------------------------------------------------------
# Attribution methods (Captum)
# ----------------------------------------------------------------------------------------


def make_methods(model: FmnistCnn, args) -> dict:
    """name -> f(x, targets) returning raw attributions [B,C,H,W] (grad_cam: [B,1,H,W])."""
    saliency = Saliency(model)
    ixg = InputXGradient(model)
    ig = IntegratedGradients(model)
    nt = NoiseTunnel(Saliency(model))
    gbp = GuidedBackprop(model)
    gc = LayerGradCam(model, model.relu2)
    dl = DeepLift(model)
    occ = Occlusion(model)

    def grad_cam(x, t):
        cam = gc.attribute(x, target=t, relu_attributions=True)  # [B,1,14,14]
        return LayerAttribution.interpolate(cam, (H, W), interpolate_mode="bilinear")

    return {
        "gradient": lambda x, t: saliency.attribute(x, target=t, abs=False),
        "gradient_x_input": lambda x, t: ixg.attribute(x, target=t),
        "integrated_gradients": lambda x, t: ig.attribute(
            x,
            baselines=0.0,
            target=t,
            n_steps=args.ig_steps,
            method="gausslegendre",
            internal_batch_size=max(args.ig_internal_batch, len(x)),
        ),
        "smoothgrad": lambda x, t: nt.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=args.sg_samples,
            nt_samples_batch_size=args.sg_samples_batch,
            stdevs=args.sg_sigma,  # pixel range is [0,1]
            target=t,
            abs=False,
        ),
        "guided_backprop": lambda x, t: gbp.attribute(x, target=t),
        "grad_cam": grad_cam,
        "deeplift": lambda x, t: dl.attribute(x, baselines=0.0, target=t),
        "occlusion": lambda x, t: occ.attribute(
            x,
            sliding_window_shapes=(1, 4, 4),
            strides=(1, 2, 2),
            baselines=0.0,
            target=t,
            perturbations_per_eval=args.occlusion_ppe,
        ),
    }


def grid_mask(cell: int) -> torch.Tensor:
    """[1,1,H,W] feature ids of a square grid of cell x cell pixels (the crate's
    `segments = "grid"`, row-major cell numbering)."""
    per_row = -(-W // cell)
    rows = torch.arange(H).div(cell, rounding_mode="floor")
    cols = torch.arange(W).div(cell, rounding_mode="floor")
    return (rows[:, None] * per_row + cols[None, :]).reshape(1, 1, H, W)


def surrogate_methods(model: FmnistCnn, args) -> dict:
    """LIME and KernelSHAP as Captum runs them, on the crate's default features (4x4 grid,
    49 features, baseline 0) and sample count (1000). Captum fits its surrogates with
    scikit-learn; without it they are left out (with a notice)."""
    try:
        from captum._utils.models.linear_model import SkLearnRidge
        import sklearn  # noqa: F401  (SkLearnRidge imports it lazily)
    except ImportError:
        print("  lime and kernel_shap skipped: scikit-learn is not installed "
              "(pip install scikit-learn)", file=sys.stderr, flush=True)
        return {}
    from captum.attr import KernelShap, Lime
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    mask = grid_mask(args.lime_cell)
    lime = Lime(model, interpretable_model=SkLearnRidge(alpha=1.0),
                similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.25))
    shap = KernelShap(model)

    def per_image(explainer):
        # Captum fits one surrogate per example and, given a batch, loops over it itself
        # (with a warning recommending one example per call); the loop here is the same.
        def run(x, t):
            return torch.cat([
                explainer.attribute(x[i : i + 1], target=int(t[i]), feature_mask=mask.to(x.device),
                                    baselines=0.0, n_samples=args.lime_samples,
                                    perturbations_per_eval=args.lime_ppe)
                for i in range(len(x))
            ])
        return run

    return {"lime": per_image(lime), "kernel_shap": per_image(shap)}


def saliency_map(attr: torch.Tensor) -> torch.Tensor:
    """The paper's post-processing: |attribution| summed over channels, flattened [B,H*W]."""
    return attr.detach().abs().sum(1).flatten(1)


def normalized(s: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum to one (an all-zero row stays zero)."""
    return s / s.sum(1, keepdim=True).clamp_min(1e-30)


# ----------------------------------------------------------------------------------------
# Attacks
# ----------------------------------------------------------------------------------------


def project(x, x0, eps_col):
    """Onto {x' : |x' - x0|_inf <= eps, 0 <= x' <= 1}: clamp to the ball, then to [0,1]."""
    return torch.max(torch.min(x, x0 + eps_col), x0 - eps_col).clamp(0.0, 1.0)


@torch.no_grad()
def random_sign(model, x0, targets, eps, tries, gen):
    """x' = clip(x + eps*sign(n)), n ~ N(0,I); a draw that changes the label is redrawn, up to
    `tries` draws; a row that never keeps its label returns its last draw."""
    rows = len(x0)
    eps_col = eps.view(rows, 1, 1, 1)
    best = x0.clone()
    kept = torch.zeros(rows, dtype=torch.bool, device=x0.device)
    iterations = torch.zeros(rows, dtype=torch.int64, device=x0.device)
    for _ in range(max(tries, 1)):
        pending = ~kept
        if not pending.any():
            break
        z = torch.randn(x0.shape, generator=gen, device="cpu").to(x0.device)
        signs = torch.where(z >= 0, 1.0, -1.0)
        cand = project(x0 + signs * eps_col, x0, eps_col)
        ok = model(cand).argmax(1) == targets
        iterations += pending.long()
        kept |= pending & ok
        best[pending] = cand[pending]
    return best, kept, iterations


def top_k_sets(maps: np.ndarray, k: int) -> np.ndarray:
    """Indices [R,k] of each row's k largest values, ties to the lower index."""
    return np.argsort(-maps, axis=1, kind="stable")[:, :k]


def set_mask(idx: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros((len(idx), n), dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def top_k_attack(model, surrogate, x0, targets, eps, k, iterations, step, saliency):
    """Ghorbani et al.'s top-k attack on the gradient map (src/attack/{steer,topk}.rs).

    Minimises the normalised surrogate map's mass on the clean map's top-k pixels with signed
    steps of step*eps, projected onto the eps-ball and [0,1]. Each iterate is judged on the
    real model: never kept if the label changed, otherwise kept if it beats the best so far
    by (top-k intersection with the clean set, then mass on the set), lower is better.
    Returns (x_adv, label_kept, iterations)."""
    rows = len(x0)
    eps_col = eps.view(rows, 1, 1, 1)
    alpha = (eps * step).view(rows, 1, 1, 1)

    def real_maps(x):
        return normalized(saliency_map(saliency.attribute(x, target=targets, abs=False))).cpu().numpy()

    clean = real_maps(x0)
    kset = set_mask(top_k_sets(clean, k), H * W)  # [R,784] bool
    mask = torch.from_numpy(kset).to(x0.device, torch.float32)

    def rank(maps):
        hits = np.take_along_axis(kset, top_k_sets(maps, k), axis=1).sum(1)
        mass = (maps.astype(np.float64) * kset).sum(1)
        return hits, mass

    best = x0.clone()
    best_hits, best_mass = rank(clean)
    x = x0.clone()
    sel = targets.view(-1, 1)
    for _ in range(iterations):
        xv = x.detach().requires_grad_(True)
        logit = surrogate(xv).gather(1, sel).sum()
        (g,) = torch.autograd.grad(logit, xv, create_graph=True)
        s = normalized(g.abs().sum(1).flatten(1))
        loss = (s * mask).sum()
        (d,) = torch.autograd.grad(loss, xv)
        x = project(x - alpha * d.sign(), x0, eps_col).detach()

        with torch.no_grad():
            ok = (model(x).argmax(1) == targets).cpu().numpy()
        hits, mass = rank(real_maps(x))
        better = ok & ((hits < best_hits) | ((hits == best_hits) & (mass < best_mass)))
        if better.any():
            b = torch.from_numpy(better).to(x0.device)
            best[b] = x[b]
            best_hits = np.where(better, hits, best_hits)
            best_mass = np.where(better, mass, best_mass)
    with torch.no_grad():
        kept = model(best).argmax(1) == targets
    its = torch.full((rows,), iterations, dtype=torch.int64)
    return best, kept, its


# ----------------------------------------------------------------------------------------
# Metrics (src/metric/*.rs), row-wise on [n, H*W] maps; NaN where the crate gives null
# ----------------------------------------------------------------------------------------


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    da = a - a.mean(1, keepdims=True)
    db = b - b.mean(1, keepdims=True)
    var_a, var_b = (da * da).sum(1), (db * db).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((da * db).sum(1) / np.sqrt(var_a * var_b), -1.0, 1.0)


def _ssim_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM over all pixels: maps min-max scaled to [0,1], 11x11 Gaussian window
    (sigma 1.5) cut and renormalised at the borders, population statistics, L = 1."""

    def unit(m):
        lo, hi = m.min(1, keepdims=True), m.max(1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        return (m - lo) / span, (hi == lo)[:, 0]

    (ua, ca), (ub, cb) = unit(a), unit(b)
    n = len(a)
    d = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-(d * d) / (2 * 1.5 * 1.5))
    kern = torch.from_numpy(np.outer(g, g)).view(1, 1, 11, 11)
    planes = np.stack([ua, ub, ua * ua, ub * ub, ua * ub], 1).reshape(n * 5, 1, H, W)
    blur = torch.nn.functional.conv2d(torch.from_numpy(planes), kern, padding=5)
    norm = torch.nn.functional.conv2d(torch.ones(1, 1, H, W, dtype=torch.float64), kern, padding=5)
    mu_a, mu_b, aa, bb, ab = (blur / norm).view(n, 5, H * W).numpy().transpose(1, 0, 2)
    c1, c2 = 0.01**2, 0.03**2
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    out = np.clip((num / den).mean(1), -1.0, 1.0)
    out[ca | cb] = np.nan
    return out


def score(clean: np.ndarray, pert: np.ndarray, k: int) -> dict:
    """Every metric for each row pair of `clean` and `pert` (float32 [n, H*W])."""
    a, b = clean.astype(np.float64), pert.astype(np.float64)
    n, p = a.shape
    finite = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    const_a, const_b = (a == a[:, :1]).all(1), (b == b[:, :1]).all(1)
    nonconst = ~const_a & ~const_b
    out = {}

    ra = stats.rankdata(a, method="average", axis=1)
    rb = stats.rankdata(b, method="average", axis=1)
    out["spearman"] = np.where(nonconst, _pearson_rows(ra, rb), np.nan)
    out["kendall"] = np.array(
        [stats.kendalltau(a[i], b[i], variant="b").statistic if nonconst[i] else np.nan for i in range(n)]
    )
    out["pearson"] = np.where(nonconst, _pearson_rows(a, b), np.nan)
    na, nb = (a * a).sum(1), (b * b).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["cosine"] = np.where((na > 0) & (nb > 0), np.clip((a * b).sum(1) / np.sqrt(na * nb), -1, 1), np.nan)
    out["ssim"] = _ssim_rows(a, b)
    kk = min(k, p)
    ka = set_mask(top_k_sets(clean, kk), p)
    out[f"top{k}_intersection"] = np.take_along_axis(ka, top_k_sets(pert, kk), 1).sum(1) / kk
    rr, cc = np.divmod(np.arange(p), W)
    sa, sb = a.sum(1), b.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ca = np.stack([(a * rr).sum(1) / sa, (a * cc).sum(1) / sa], 1)
        cb = np.stack([(b * rr).sum(1) / sb, (b * cc).sum(1) / sb], 1)
        shift = np.sqrt(((ca - cb) ** 2).sum(1))
        mse = (((a / sa[:, None]) - (b / sb[:, None])) ** 2).mean(1)
    has_mass = (sa > 0) & (sb > 0)
    nonneg = (a >= 0).all(1) & (b >= 0).all(1)
    out["center_shift_px"] = np.where(has_mass & nonneg, shift, np.nan)
    out["mse_normalized"] = np.where((sa != 0) & (sb != 0), mse, np.nan)
    for key in out:
        out[key] = np.where(finite, out[key], np.nan)
    return out


# ----------------------------------------------------------------------------------------
# Part 1: throughput per method
# ----------------------------------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps, device):
    fn()  # warm-up
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def part_methods(args, model, surrogate, x_all, preds_all, ids, device):
    methods = {**make_methods(model, args), **surrogate_methods(model, args)}
    saliency = Saliency(model)
    results = []
    order = ["forward"] + list(methods) + ["top_k_attack"]
    for name in order:
        batches = (args.occlusion_batches if name == "occlusion"
                   else args.surrogate_batches if name in ("lime", "kernel_shap") else args.batches)
        for bsz in batches:
            # The study's images, repeated to fill the batch.
            sel = torch.tensor([ids[i % len(ids)] for i in range(bsz)])
            x, t = x_all[sel].to(device), preds_all[sel].to(device)
            if name == "forward":

                def fn():
                    with torch.no_grad():
                        model(x)

                work = bsz
            elif name == "top_k_attack":
                eps = torch.full((bsz,), args.attack_eps, device=device)

                def fn():
                    top_k_attack(model, surrogate, x, t, eps, args.k, args.attack_iterations, args.step, saliency)

                work = bsz * args.attack_iterations
            else:
                f = methods[name]

                def fn():
                    f(x, t)

                work = bsz
            times = timed(fn, args.reps, device)
            best, median = min(times), float(np.median(times))
            row = {
                "method": name,
                "batch": bsz,
                "unit": "image-iterations/s" if name == "top_k_attack" else "maps/s",
                "best_per_s": work / best,
                "median_per_s": work / median,
                "seconds": times,
            }
            results.append(row)
            print(
                f"  {name:22s} batch {bsz:4d}: {row['best_per_s']:10.1f} {row['unit']} (best of {args.reps}), "
                f"median {row['median_per_s']:.1f}",
                file=sys.stderr,
                flush=True,
            )
    # Markdown table: rows = methods, columns = batch sizes (best of reps).
    cols = sorted({r["batch"] for r in results})
    print(f"\n### Throughput, best of {args.reps} repetitions after one warm-up "
          f"(torch {torch.__version__}, captum {captum.__version__}, {args.threads} threads, {device})\n")
    print("| method | " + " | ".join(f"batch {c}" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name in order:
        cells = []
        for c in cols:
            r = next((r for r in results if r["method"] == name and r["batch"] == c), None)
            cells.append("—" if r is None else f"{r['best_per_s']:,.1f} /s")
        label = f"top_k attack (image-it/s, {args.attack_iterations} it, eps {args.attack_eps})" if name == "top_k_attack" else name
        print(f"| {label} | " + " | ".join(cells) + " |")
    return results


# ----------------------------------------------------------------------------------------
# Part 2: the default study
# ----------------------------------------------------------------------------------------

STUDY_METHODS = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]
METRIC_COLUMNS = ["spearman", "kendall", "pearson", "cosine", "ssim", None, "center_shift_px", "mse_normalized"]


def part_study(args, model, surrogate, x_all, y_all, preds_all, probs_all, ids, device, t_load):
    methods = make_methods(model, args)
    methods = {m: methods[m] for m in args.methods}
    saliency = Saliency(model)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # NoiseTunnel's noise
    attacks = args.attacks
    eps_list = args.epsilons
    E = len(eps_list)
    metric_cols = [c if c else f"top{args.metric_k}_intersection" for c in METRIC_COLUMNS]
    stage = {"clean_maps": 0.0}
    for a in attacks:
        stage[f"attack:{a}"] = 0.0
        stage[f"remeasure:{a}"] = 0.0
        stage[f"metrics:{a}"] = 0.0
    rows = []
    t_study = time.perf_counter()
    for c0 in range(0, len(ids), args.batch_size):
        chunk = ids[c0 : c0 + args.batch_size]
        B = len(chunk)
        idx = torch.tensor(chunk)
        x = x_all[idx].to(device)
        targets = preds_all[idx].to(device)

        t = time.perf_counter()
        clean = {m: saliency_map(f(x, targets)).cpu().numpy() for m, f in methods.items()}
        sync(device)
        stage["clean_maps"] += time.perf_counter() - t
        # The top_k objective's measure (mass of the sum-one map on the clean top-k set) for
        # every method, as the crate reports it for every method and attack.
        ksets = {m: set_mask(top_k_sets(clean[m], args.k), H * W) for m in methods}
        mass_before = {m: (normalized(torch.from_numpy(clean[m])).numpy().astype(np.float64) * ksets[m]).sum(1) for m in methods}

        # Rows are eps-major: row e*B + i is image i at eps_e.
        xs = x.repeat(E, 1, 1, 1)
        row_t = targets.repeat(E)
        row_eps = torch.tensor([e for e in eps_list for _ in range(B)], dtype=torch.float32, device=device)
        for a in attacks:
            t = time.perf_counter()
            if a == "random_sign":
                x_adv, kept, its = random_sign(model, xs, row_t, row_eps, args.tries, gen)
            elif a == "top_k":
                x_adv, kept, its = top_k_attack(
                    model, surrogate, xs, row_t, row_eps, args.k, args.iterations, args.step, saliency
                )
            else:
                raise ValueError(a)
            with torch.no_grad():
                conf_after = torch.softmax(model(x_adv), 1).gather(1, row_t.view(-1, 1))[:, 0].cpu().numpy()
            linf = (x_adv - xs).abs().flatten(1).amax(1).cpu().numpy()
            kept, its = kept.cpu().numpy(), its.cpu().numpy()
            sync(device)
            stage[f"attack:{a}"] += time.perf_counter() - t

            t = time.perf_counter()
            after = {m: saliency_map(f(x_adv, row_t)).cpu().numpy() for m, f in methods.items()}
            sync(device)
            stage[f"remeasure:{a}"] += time.perf_counter() - t

            t = time.perf_counter()
            for mi, m in enumerate(methods):
                ref = np.tile(clean[m], (E, 1))
                scores = score(ref, after[m], args.metric_k)
                mass_after = (normalized(torch.from_numpy(after[m])).numpy().astype(np.float64) * np.tile(ksets[m], (E, 1))).sum(1)
                for r in range(E * B):
                    e, i = divmod(r, B)
                    img = chunk[i]
                    row = {
                        "image_id": img,
                        "label": int(y_all[img]),
                        "predicted": int(preds_all[img]),
                        "method": m,
                        "attack": a,
                        "target_method": "gradient" if a == "top_k" else "",
                        "epsilon": eps_list[e],
                        "label_kept": bool(kept[r]),
                        "iterations": int(its[r]),
                        "linf": float(linf[r]),
                        "confidence_before": float(probs_all[img, preds_all[img]]),
                        "confidence_after": float(conf_after[r]),
                    }
                    for col in metric_cols:
                        row[col] = float(scores[col][r])
                    row["topk_mass_before"] = float(mass_before[m][i])
                    row["topk_mass_after"] = float(mass_after[r])
                    row["_order"] = (mi, attacks.index(a), img, e)
                    rows.append(row)
            stage[f"metrics:{a}"] += time.perf_counter() - t
        print(f"  chunk {c0 // args.batch_size + 1}/{-(-len(ids) // args.batch_size)} done "
              f"({time.perf_counter() - t_study:.1f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - t_study

    rows.sort(key=lambda r: r["_order"])
    fields = [
        "image_id", "label", "predicted", "method", "attack", "target_method", "epsilon", "label_kept",
        "iterations", "linf", "confidence_before", "confidence_after",
    ] + metric_cols + ["topk_mass_before", "topk_mass_after"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()})

    # Means over label-kept rows with a value (as the crate's summary.parquet).
    summary = []
    for m in methods:
        for a in attacks:
            for e in eps_list:
                grp = [r for r in rows if r["method"] == m and r["attack"] == a and r["epsilon"] == e]
                kept_rows = [r for r in grp if r["label_kept"]]
                ent = {"method": m, "attack": a, "epsilon": e, "rows": len(grp),
                       "label_kept_rate": len(kept_rows) / max(len(grp), 1)}
                for col in metric_cols:
                    v = np.array([r[col] for r in kept_rows], dtype=np.float64)
                    v = v[np.isfinite(v)]
                    ent[col] = float(v.mean()) if len(v) else None
                summary.append(ent)

    topcol = f"top{args.metric_k}_intersection"
    print(f"\n### Study: {len(ids)} images, chunks of {args.batch_size}, methods {', '.join(methods)}; "
          f"attacks {', '.join(attacks)}; eps {eps_list}; top_k {args.iterations} iterations\n")
    print("| stage | seconds |")
    print("|---|---|")
    print(f"| loading (model, data, predictions; not in total) | {t_load:.2f} |")
    for k_, v in stage.items():
        print(f"| {k_} | {v:.2f} |")
    print(f"| **total (study, wall clock)** | **{total:.2f}** |")
    print(f"\nMean {topcol} / Spearman over label-kept rows, per (method, attack, eps):\n")
    print("| method | attack | eps | " + topcol + " | spearman | label kept |")
    print("|---|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    for s in summary:
        print(f"| {s['method']} | {s['attack']} | {s['epsilon']} | {fmt(s[topcol])} | {fmt(s['spearman'])} | "
              f"{100 * s['label_kept_rate']:.0f}% |")
    if set(attacks) >= {"random_sign", "top_k"}:
        print(f"\nMean {topcol}, random_sign / top_k (the README's table):\n")
        print("| method | " + " | ".join(f"ε = {e}" for e in eps_list) + " |")
        print("|---|" + "---|" * len(eps_list))
        for m in methods:
            cells = []
            for e in eps_list:
                get = lambda a: next(s for s in summary if s["method"] == m and s["attack"] == a and s["epsilon"] == e)[topcol]
                cells.append(f"{fmt(get('random_sign'))} / **{fmt(get('top_k'))}**")
            print(f"| `{m}` | " + " | ".join(cells) + " |")
    print(f"\nrows written: {len(rows)} -> {out}")
    return {"images": len(ids), "rows": len(rows), "csv": str(out), "load_s": t_load,
            "stages_s": stage, "total_s": total, "summary": summary}


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def csv_list(kind):
    return lambda s: [kind(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["methods", "study", "all"], default="all")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (interop threads: 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=str(REPO / "assets/models/fmnist_cnn.safetensors"))
    p.add_argument("--images-file", default=str(REPO / "assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz"))
    p.add_argument("--labels-file", default=str(REPO / "assets/fashion-mnist/t10k-labels-1000-idx1-ubyte.gz"))
    p.add_argument("--images", type=int, default=200, help="first N correctly classified images")
    # Method settings (experiments/fragility.toml).
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--ig-internal-batch", type=int, default=256,
                   help="Captum internal_batch_size of IntegratedGradients (rows per pass; at least the batch)")
    p.add_argument("--sg-samples", type=int, default=50)
    p.add_argument("--sg-sigma", type=float, default=0.15)
    p.add_argument("--sg-samples-batch", type=int, default=2, help="NoiseTunnel nt_samples_batch_size")
    p.add_argument("--occlusion-ppe", type=int, default=2, help="Occlusion perturbations_per_eval")
    p.add_argument("--lime-samples", type=int, default=1000, help="LIME / KernelSHAP n_samples")
    p.add_argument("--lime-cell", type=int, default=4, help="LIME / KernelSHAP grid cell (pixels)")
    p.add_argument("--lime-ppe", type=int, default=250, help="LIME / KernelSHAP perturbations_per_eval")
    # Part 1.
    p.add_argument("--batches", type=csv_list(int), default=[64, 256])
    p.add_argument("--occlusion-batches", type=csv_list(int), default=[64])
    p.add_argument("--surrogate-batches", type=csv_list(int), default=[16],
                   help="batch sizes of lime and kernel_shap (one Captum call per image)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--attack-iterations", type=int, default=5, help="top_k iterations per timed call (part 1)")
    p.add_argument("--attack-eps", type=float, default=0.05, help="eps of the timed top_k attack (part 1)")
    # Part 2.
    p.add_argument("--batch-size", type=int, default=50, help="images per chunk")
    p.add_argument("--methods", type=csv_list(str), default=STUDY_METHODS)
    p.add_argument("--attacks", type=csv_list(str), default=["random_sign", "top_k"])
    p.add_argument("--epsilons", type=csv_list(float), default=[0.01, 0.02, 0.05, 0.1])
    p.add_argument("--tries", type=int, default=20, help="random_sign draws")
    p.add_argument("--k", type=int, default=100, help="top_k attack's k")
    p.add_argument("--iterations", type=int, default=100, help="top_k iterations")
    p.add_argument("--step", type=float, default=0.1, help="top_k step as a fraction of eps")
    p.add_argument("--beta", type=float, default=10.0, help="softplus beta of the surrogate")
    p.add_argument("--metric-k", type=int, default=100, help="k of the top-k intersection metric")
    p.add_argument("--out", default="/tmp/pytorch_study.csv", help="per-row CSV of the study")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    warnings.filterwarnings("ignore")  # Captum's hook / requires_grad notices
    device = torch.device(args.device)

    t0 = time.perf_counter()
    model = load_model(Path(args.weights), device)
    surrogate = load_model(Path(args.weights), device, act=lambda: nn.Softplus(beta=args.beta))
    x_all, y_all = load_data(Path(args.images_file), Path(args.labels_file))
    preds_all, probs_all = predict(model, x_all.to(device))
    preds_all, probs_all = preds_all.cpu(), probs_all.cpu()
    correct = (preds_all == y_all).nonzero()[:, 0].tolist()
    ids = correct[: args.images]
    t_load = time.perf_counter() - t0
    print(f"torch {torch.__version__}, captum {captum.__version__}, numpy {np.__version__}, "
          f"python {platform.python_version()}, {args.threads} threads, device {device}; "
          f"{len(x_all)} images, {len(correct)} correct, using {len(ids)}; loading {t_load:.2f} s",
          file=sys.stderr, flush=True)

    report = {
        "torch": torch.__version__, "captum": captum.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "threads": args.threads, "device": str(device), "args": vars(args),
    }
    if args.part in ("methods", "all"):
        report["methods"] = part_methods(args, model, surrogate, x_all, preds_all, ids, device)
    if args.part in ("study", "all"):
        report["study"] = part_study(args, model, surrogate, x_all, y_all, preds_all, probs_all, ids, device, t_load)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
