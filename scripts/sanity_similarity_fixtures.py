#!/usr/bin/env python3
"""Reference similarities of the sanity checks (tests/fixtures/sanity/similarity.safetensors).

Adebayo et al. ("Sanity checks for saliency maps", NeurIPS 2018) compare a saliency map of the
trained model with the map of a randomised model by four similarities. Their code
(github.com/adebayoj/sanity_checks_saliency, notebooks/inceptionv3_cascading_randomization.ipynb,
cell 34; requirements: scikit-image 0.15.0, saliency 0.0.4, scipy 1.3.1) computes, for masks of
shape (H, W, C):

    spearman      spr(diverging_norm(a).flatten(), diverging_norm(b).flatten())
    spearman_abs  spr(abs_grayscale_norm(a).flatten(), abs_grayscale_norm(b).flatten())
    ssim          compare_ssim(normalize_image(a), normalize_image(b),
                               gaussian_weights=True, multichannel=True)
    hog           spr(hog(normalize_image(a), pixels_per_cell=(16, 16)),
                      hog(normalize_image(b), pixels_per_cell=(16, 16)))

where diverging_norm / abs_grayscale_norm are PAIR's saliency.VisualizeImageDiverging /
VisualizeImageGrayscale for 3-D masks (transcribed below: the package needs TensorFlow 1) and
normalize_image is (x - min) / (max - min) over the whole mask. This script computes the same,
with these deliberate choices, which fragility's src/sanity/similarity.rs follows:

- in float64 throughout (Adebayo's normalize_image casts to float32; the maps here are float32,
  widened exactly);
- SSIM with data_range=2: what compare_ssim of scikit-image 0.15 used for float32 images (its
  dtype_range[np.float32] is (-1, 1)); scikit-image 0.26 requires it explicitly;
- the HOG comparison is Pearson's correlation (as the paper's text says and the name
  `hog_pearson` promises; the notebook computes Spearman's), via Quantus' correlation_pearson;
- the HOG cell is 16 pixels (Adebayo's) halved until 3 whole cells fit along each side (their
  299x299 images; a 28x28 Fashion-MNIST map has 3 cells of 8); the orientations (9), the 3x3
  cells per block and L2-Hys are scikit-image's defaults, which Adebayo kept. Even cells only, so
  scikit-image 0.15 and 0.26 (which differ on odd cells) agree.

Spearman values come from Quantus 0.6.0's correlation_spearman (scipy.stats.spearmanr, average
ranks), Pearson from its correlation_pearson; SSIM and HOG from scikit-image itself.

How the committed fixture was made:

    /work/torchenv/bin/python scripts/sanity_similarity_fixtures.py

with the versions written into the file's metadata (`fixture`: sorted JSON).

Keys, per pair NAME (F32 maps [C,H,W] channel-major, as fragility's attribution rows):

    NAME/a, NAME/b      F32 [C,H,W]  the two signed maps
    NAME/scores         F64 [4]      spearman, spearman_abs, ssim, hog_pearson (NaN: undefined)
    NAME/p99            F64 [2,2]    np.percentile(., 99) of the diverging (signed channel sum)
                                     and grayscale (sum of |.|) 2-D maps, rows a, b
    NAME/hog            F64 [2,N]    the HOG feature vectors of a and b (absent if undefined)
"""

import json
import os
import sys

import numpy as np

if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, removed in numpy 2.4
    np.trapz = np.trapezoid

import quantus
import scipy
import skimage
from quantus.functions.similarity_func import correlation_pearson, correlation_spearman
from safetensors.numpy import save_file
from skimage.feature import hog
from skimage.metrics import structural_similarity

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "sanity", "similarity.safetensors")
NAMES = ["spearman", "spearman_abs", "ssim", "hog_pearson"]


def visualize_image_grayscale(image_3d, percentile=99):
    """PAIR saliency 0.0.4, saliency/visualization.py, verbatim."""
    image_2d = np.sum(np.abs(image_3d), axis=2)
    vmax = np.percentile(image_2d, percentile)
    vmin = np.min(image_2d)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)


def visualize_image_diverging(image_3d, percentile=99):
    """PAIR saliency 0.0.4, saliency/visualization.py, verbatim."""
    image_2d = np.sum(image_3d, axis=2)
    span = abs(np.percentile(image_2d, percentile))
    vmin = -span
    vmax = span
    return np.clip((image_2d - vmin) / (vmax - vmin), -1, 1)


def normalize_image(x):
    """Adebayo's normalize_image, in float64."""
    x = np.array(x).astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def hog_cell(h, w):
    cell = 16
    while min(h, w) < 3 * cell:
        cell //= 2
    return cell if cell >= 2 else None


def hog_features(unit):
    cell = hog_cell(*unit.shape[:2])
    return hog(unit, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(3, 3),
               block_norm="L2-Hys", channel_axis=-1)


def similarities(a, b):
    """The four scores and the intermediates of the [C,H,W] maps a, b."""
    ha, hb = (np.transpose(m, (1, 2, 0)).astype(np.float64) for m in (a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        div = [visualize_image_diverging(m) for m in (ha, hb)]
        gray = [visualize_image_grayscale(m) for m in (ha, hb)]
        unit = [normalize_image(m) for m in (ha, hb)]
    p99 = np.array([[np.percentile(np.sum(m, axis=2), 99), np.percentile(np.sum(np.abs(m), axis=2), 99)]
                    for m in (ha, hb)])

    def defined(*ms):
        return all(np.all(np.isfinite(m)) for m in ms)

    scores = [np.nan] * 4
    hogs = None
    if defined(*div):
        scores[0] = correlation_spearman(div[0].flatten(), div[1].flatten())
    if defined(*gray):
        scores[1] = correlation_spearman(gray[0].flatten(), gray[1].flatten())
    if defined(*unit):
        scores[2] = structural_similarity(unit[0], unit[1], gaussian_weights=True, channel_axis=-1,
                                          data_range=2.0)
        hogs = np.stack([hog_features(u) for u in unit])
        if np.ptp(hogs[0]) > 0 and np.ptp(hogs[1]) > 0:
            scores[3] = correlation_pearson(hogs[0], hogs[1])
    return np.array(scores, dtype=np.float64), p99, hogs


def pairs(rng):
    """Named pairs of signed float32 maps [C,H,W]."""
    def noise(*shape):
        return rng.standard_normal(shape)

    def smooth(c, h, w):
        # Saliency-like: a smooth blob times noise, so that HOG and SSIM see structure.
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-(((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2))
        return blob[None] * (1.0 + 0.5 * noise(c, h, w))

    out = {}
    a = smooth(1, 28, 28) * np.sign(noise(1, 28, 28) + 0.3)
    out["fmnist_noise"] = (a, a + 0.3 * noise(1, 28, 28))
    # Ties: rectified, rounded maps (many zeros, few levels).
    a = np.maximum(0, np.round(2 * noise(1, 28, 28)))
    b = np.where(rng.random((1, 28, 28)) < 0.8, a, np.round(noise(1, 28, 28)))
    out["fmnist_ties"] = (a, b)
    # Outliers: 12 pixels (more than 1% of 784) 100 times larger, so that the 99th-percentile
    # clip ties them at the top.
    a, b = smooth(1, 28, 28) * noise(1, 28, 28), smooth(1, 28, 28) * noise(1, 28, 28)
    for m in (a, b):
        idx = rng.choice(784, 12, replace=False)
        m.reshape(-1)[idx] *= 100.0
        m.reshape(-1)[idx[:3]] = -np.abs(m.reshape(-1)[idx[:3]]) * 10.0
    out["fmnist_outliers"] = (a, b + 0.5 * a)
    a = smooth(3, 32, 36) * noise(3, 32, 36)
    out["rgb_32x36"] = (a, 0.7 * a + 0.3 * smooth(3, 32, 36) * noise(3, 32, 36))
    a = smooth(3, 50, 52) * noise(3, 50, 52)
    a.reshape(-1)[rng.choice(a.size, 40, replace=False)] *= 50.0
    out["rgb_50x52_outliers"] = (a, a + smooth(3, 50, 52) * noise(3, 50, 52))
    a = smooth(1, 64, 70)
    out["gray_64x70"] = (a, a + 0.2 * noise(1, 64, 70))
    out["constant"] = (np.full((1, 12, 12), 0.5), noise(1, 12, 12))
    return {k: (x.astype(np.float32), y.astype(np.float32)) for k, (x, y) in out.items()}


def main():
    rng = np.random.default_rng(22)
    tensors = {}
    for name, (a, b) in pairs(rng).items():
        scores, p99, hogs = similarities(a, b)
        tensors[f"{name}/a"], tensors[f"{name}/b"] = a, b
        tensors[f"{name}/scores"] = scores
        tensors[f"{name}/p99"] = p99
        if hogs is not None:
            tensors[f"{name}/hog"] = hogs
        print(name, a.shape, dict(zip(NAMES, np.round(scores, 6))), file=sys.stderr)
    versions = {"numpy": np.__version__, "scipy": scipy.__version__, "skimage": skimage.__version__,
                "quantus": quantus.__version__, "seed": 22}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, OUT,
              metadata={"fixture": json.dumps(versions, sort_keys=True)})
    print(OUT, os.path.getsize(OUT), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
