#!/usr/bin/env python3
"""PyTorch side of ``cargo bench --bench models``: torchvision models at 224x224 on the CPU.

The same workloads as benches/models.rs, written as a PyTorch user would write them with
plain autograd (Captum is not needed; what each workload computes is spelled out below), for
timing the two side by side on the same machine with the same number of threads. Not part
of the test suite; nothing in the crate calls it.

Models: torchvision ``resnet18``, ``resnet50``, ``squeezenet1_1`` (the default), and
``efficientnet_b0``, ``mobilenet_v3_large``, ``convnext_tiny`` (``weights=None``, 1000
classes, eval mode, parameters with ``requires_grad=False``), re-initialised with the rule
benches/models.rs applies to its state_dict (values differ, statistics match): conv and
linear weights and biases U(+-1/sqrt(fan_in)) (PyTorch's default init of Conv2d / Linear),
batch norm gamma 1 + U(+-0.1), beta U(+-0.1), running mean U(+-0.1), running variance
1 + U(0, 0.1), layer norm gamma 1 + U(+-0.1), beta U(+-0.1), ConvNeXt's layer scale
U(0.5, 1). With ``--weights-dir DIR`` both sides run the very same weights instead:
``cargo bench --bench models -- --save-weights DIR`` writes them (the JSON of both then has
the logits of a grey image, which must agree to float rounding). ImageNet normalisation ((x - mean) / std) is the model's first step, as in
the crate (``Normalize::imagenet()``), so images stay in [0,1]. Images: seeded uniform
pixels in [0,1]; targets: the model's own predictions. Workloads, at each batch size:

* ``forward``: logits under ``torch.inference_mode()``; images/s, and GFLOP/s from the
  published MAC counts (resnet18 1.82, resnet50 4.11, squeezenet1_1 0.35 GMAC per 224x224
  image, as ptflops / fvcore-style counters give them; torchvision's docs list 1.81 / 4.09 /
  0.35 under "GFLOPS"; 1 MAC = 2 FLOP). At other sizes they are scaled by this script's own
  count of conv + linear MACs (forward hooks), which is printed beside them.
* ``gradient``: d logit_target / d x by ``torch.autograd.grad`` (input gradient only).
* ``integrated_gradients``: 50 Gauss-Legendre nodes on [0,1] (numpy's ``leggauss``), zero
  baseline, the path points' gradients in passes of ``--ig-internal-batch`` rows (default:
  the batch size), weighted, times x.
* ``grad_cam``: the layer's output (resnet ``layer4``, squeezenet ``features.12``, the
  crate's defaults) made a leaf by a forward hook, the target logit's gradient w.r.t. it
  (the backward pass stops at the layer), channel weights = spatial means, ReLU of the
  weighted sum, ``F.interpolate`` bilinear (align_corners=False) to the input size.
* ``top_k``: the top-k attack (k = 1000) against the gradient map, as in
  benches/pytorch_captum.py's study part: a softplus(beta=10) copy of the model (every
  nn.ReLU replaced); per iteration the gradient of the target logit with
  ``create_graph=True``, the normalised map |g| summed over channels, its mass on the clean
  map's top-k set, the gradient of that mass w.r.t. x (second order), a signed step of
  0.1*eps, the projection, then the real model's map and prediction at the new point (one
  forward + backward: the prediction comes from the map's own logits, as in the crate) and
  the best-iterate bookkeeping. The clean maps are computed once per call, then
  ``--attack-iterations`` iterations (default 2); image-iterations/s.

Each workload runs ``--warmup`` times untimed (default 1), then ``--reps`` times (default
3); the table shows the best repetition and the median. Peak RSS: VmHWM of
/proc/self/status, reset per workload through /proc/self/clear_refs after glibc's
``malloc_trim(0)``.

Setup: a venv with torch 2.x, torchvision and numpy (``pip install torch torchvision
numpy``; tested with torch 2.15.0 and torchvision 0.29.2, CPU). Run with passive OpenMP
waiting: with OMP_WAIT_POLICY unset (OpenMP's default), idle OpenMP threads spin, and a
helper measured that spinning slowing everything badly when cores are shared. The script
sets ``OMP_WAIT_POLICY=PASSIVE`` itself unless the variable is already set (the JSON
records the value used); export it explicitly to be sure:

    OMP_WAIT_POLICY=PASSIVE /work/torchenv/bin/python benches/pytorch_models.py --threads 2 \\
        --json /tmp/pytorch_models.json
    # smoke test (seconds):
    OMP_WAIT_POLICY=PASSIVE /work/torchenv/bin/python benches/pytorch_models.py --threads 2 \\
        --size 64 --batches 1 --reps 1 --models resnet18
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import platform
import struct
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

PUBLISHED_GMAC = {"resnet18": 1.82, "resnet50": 4.11, "squeezenet1_1": 0.35,
                  # torchvision's model docs ("GFLOPS", the same quantity as above)
                  "efficientnet_b0": 0.39, "mobilenet_v3_large": 0.22, "convnext_tiny": 4.46,
                  "vgg11": 7.61}
DEFAULT_LAYER = {"resnet18": "layer4", "resnet50": "layer4", "squeezenet1_1": "features.12",
                 "efficientnet_b0": "features.8", "mobilenet_v3_large": "features.16",
                 "convnext_tiny": "features.7", "vgg11": "features.19"}
ALL_METHODS = ["forward", "gradient", "integrated_gradients", "grad_cam", "top_k"]
# The rest of the CAM family, by pytorch-grad-cam 1.5.7 (not run by default): its classes at
# the same layer, ClassifierOutputTarget(prediction), its own resize and scaling included,
# the input made the graph's leaf (compute_input_gradient) since the weights need no gradient.
PGC_METHODS = {
    "grad_cam_plus_plus": "GradCAMPlusPlus",
    "xgrad_cam": "XGradCAM",
    "hires_cam": "HiResCAM",
    "layer_cam": "LayerCAM",
    "score_cam": "ScoreCAM",
    "eigen_cam": "EigenCAM",
    "ablation_cam": "AblationCAM",
}
# LRP by zennit 0.5.1 (not run by default): its composite with the model's canonizer (ResNet:
# batch norm merged, residual sums as zennit Sums; VGG: batch norm merged), attr_output =
# one_hot(prediction) * logits, the hooks registered once outside the timed calls. The
# normalisation is arithmetic in Normalized.forward, so zennit differentiates through it (the
# map differs from ours by the per-channel factor 1/std; the work is the same).
ZENNIT_METHODS = {"lrp_epsilon_plus_flat": "EpsilonPlusFlat", "lrp_epsilon_plus": "EpsilonPlus",
                  "lrp_epsilon_gamma_box": "EpsilonGammaBox", "lrp_epsilon_alpha2_beta1": "EpsilonAlpha2Beta1",
                  "lrp_epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------


class Normalized(nn.Module):
    """(x - mean) / std, then the torchvision model ``net``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


@torch.no_grad()
def randomize(model: nn.Module, gen: torch.Generator) -> None:
    """benches/models.rs's rule (see the docstring), module by module."""

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            b = 1.0 / float(np.sqrt(m.weight[0].numel()))
            uniform(m.weight, -b, b)
            if m.bias is not None:
                uniform(m.bias, -b, b)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, 0.9, 1.1)
            uniform(m.bias, -0.1, 0.1)
            uniform(m.running_mean, -0.1, 0.1)
            uniform(m.running_var, 1.0, 1.1)
        elif isinstance(m, nn.LayerNorm):  # ConvNeXt's LayerNorm2d is a subclass
            uniform(m.weight, 0.9, 1.1)
            uniform(m.bias, -0.1, 0.1)
        elif type(m).__name__ == "CNBlock":
            uniform(m.layer_scale, 0.5, 1.0)


def softplus_copy(model: nn.Module, beta: float) -> nn.Module:
    """The same weights with every nn.ReLU module replaced by nn.Softplus(beta)."""
    s = copy.deepcopy(model)
    for parent in s.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    return s


_ST_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32}


def load_safetensors(path: str) -> dict:
    """Named tensors of a safetensors file: u64 LE header size, JSON header, raw LE data."""
    with open(path, "rb") as fh:
        data = fh.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = bytearray(data[8 + n + start : 8 + n + end])
        t = torch.frombuffer(buf, dtype=_ST_DTYPES[info["dtype"]]) if buf else torch.empty(0, dtype=_ST_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def build(name: str, seed: int, weights_dir: str | None) -> nn.Module:
    net = getattr(torchvision.models, name)(weights=None)
    if weights_dir:
        net.load_state_dict(load_safetensors(os.path.join(weights_dir, f"{name}.safetensors")), strict=True)
    else:
        randomize(net, torch.Generator().manual_seed(seed))
    model = Normalized(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def count_gmac(model: nn.Module, size: int) -> float:
    """Conv + linear multiply-accumulates per image at size x size, in GMAC."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out[0].numel() * m.weight[0].numel()
        else:
            total[0] += m.weight.numel()

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0] / 1e9


def images(b: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand((b, 3, size, size), generator=torch.Generator().manual_seed(seed + 1))


# ----------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------


def input_gradient(model, x, targets, create_graph=False):
    """(logits, d sum_b logit_b[target_b] / dx)."""
    xv = x if x.requires_grad else x.detach().requires_grad_(True)
    logits = model(xv)
    (g,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), xv, create_graph=create_graph)
    return logits, g


def integrated_gradients(model, x, targets, steps, rows):
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((nodes + 1) / 2, dtype=x.dtype)
    w = torch.tensor(weights / 2, dtype=x.dtype)
    b = len(x)
    total = torch.zeros_like(x)
    n = steps * b
    for start in range(0, n, rows):
        r = torch.arange(start, min(start + rows, n))
        step, img = r // b, r % b
        pts = alphas[step].view(-1, 1, 1, 1) * x[img]
        _, g = input_gradient(model, pts, targets[img])
        total.index_add_(0, img, g * w[step].view(-1, 1, 1, 1))
    return total * x


class GradCam:
    """Grad-CAM at the module ``layer`` of ``model``; the backward pass stops there."""

    def __init__(self, model, layer: str):
        self.model = model
        self.act = None
        self.capture = False
        model.net.get_submodule(layer).register_forward_hook(self._hook)

    def _hook(self, module, inp, out):
        if not self.capture:
            return None
        self.act = out.detach().requires_grad_(True)
        return self.act

    def __call__(self, x, targets):
        self.capture = True
        try:
            logits = self.model(x)
        finally:
            self.capture = False
        a = self.act
        (g,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), a)
        cam = F.relu((a.detach() * g.mean((2, 3), keepdim=True)).sum(1, keepdim=True))
        return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)


def zennit_lrp(model, name, method, x, targets):
    """A function that computes zennit's LRP map of `x` under `method`'s composite (the
    composite entered once, here: canonizers applied and hooks registered, as a user would)."""
    import zennit.composites
    import zennit.torchvision
    from zennit.attribution import Gradient as ZennitGradient

    canonizer = zennit.torchvision.ResNetCanonizer() if name.startswith("resnet") else zennit.torchvision.VGGCanonizer()
    kwargs = {"low": 0.0, "high": 1.0} if method == "lrp_epsilon_gamma_box" else {}
    composite = getattr(zennit.composites, ZENNIT_METHODS[method])(canonizers=[canonizer], **kwargs)
    attributor = ZennitGradient(model=model, composite=composite)
    attributor.__enter__()  # main() calls fn.close() after timing: the hooks come off again
    one_hot = F.one_hot(targets, 1000).to(x)

    def fn():
        attributor(x.detach().clone(), lambda out: one_hot * out)
    fn.close = lambda: attributor.__exit__(None, None, None)
    return fn


def normalized(s):
    return s / s.sum(1, keepdim=True).clamp_min(1e-30)


def top_k_sets(maps: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-maps, axis=1, kind="stable")[:, :k]


def set_mask(idx: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros((len(idx), n), dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def top_k_attack(model, surrogate, x0, targets, eps, k, iterations, step, chunk):
    """benches/pytorch_captum.py's top_k_attack with plain autograd maps (see the docstring);
    the second-order pass runs `chunk` rows at a time (rows are independent)."""
    rows = len(x0)
    hw = x0.shape[2] * x0.shape[3]
    eps_col = torch.full((rows, 1, 1, 1), eps)
    alpha = eps_col * step

    def real(x):
        logits, g = input_gradient(model, x, targets)
        return normalized(g.abs().sum(1).flatten(1)).numpy(), (logits.argmax(1) == targets).numpy()

    clean, _ = real(x0)
    kset = set_mask(top_k_sets(clean, k), hw)
    mask = torch.from_numpy(kset).float()

    def rank(maps):
        hits = np.take_along_axis(kset, top_k_sets(maps, k), axis=1).sum(1)
        return hits, (maps.astype(np.float64) * kset).sum(1)

    best = x0.clone()
    best_hits, best_mass = rank(clean)
    x = x0.clone()
    chunk = chunk or rows
    for _ in range(iterations):
        parts = []
        for c in range(0, rows, chunk):
            xv = x[c : c + chunk].detach().requires_grad_(True)
            _, g = input_gradient(surrogate, xv, targets[c : c + chunk], create_graph=True)
            loss = (normalized(g.abs().sum(1).flatten(1)) * mask[c : c + chunk]).sum()
            parts.append(torch.autograd.grad(loss, xv)[0])
        d = torch.cat(parts) if len(parts) > 1 else parts[0]
        x = torch.max(torch.min(x - alpha * d.sign(), x0 + eps_col), x0 - eps_col).clamp(0, 1).detach()
        maps, ok = real(x)
        hits, mass = rank(maps)
        better = ok & ((hits < best_hits) | ((hits == best_hits) & (mass < best_mass)))
        if better.any():
            b = torch.from_numpy(better)
            best[b] = x[b]
            best_hits = np.where(better, hits, best_hits)
            best_mass = np.where(better, mass, best_mass)
    return best


# ----------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def reset_peak_rss() -> bool:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def csv_list(kind):
    return lambda s: [kind(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (interop threads: 1)")
    p.add_argument("--models", type=csv_list(str), default=list(PUBLISHED_GMAC))
    p.add_argument("--methods", type=csv_list(str), default=ALL_METHODS)
    p.add_argument("--batches", type=csv_list(int), default=[16, 8])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--ig-internal-batch", type=int, default=0,
                   help="rows per integrated-gradients pass (0: the batch size)")
    p.add_argument("--attack-iterations", type=int, default=2)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--attack-rows", type=int, default=0,
                   help="rows per second-order pass of the top_k attack (0: the whole batch; the crate "
                        "uses up to 64), to bound its memory")
    p.add_argument("--step", type=float, default=0.1, help="top_k step as a fraction of eps")
    p.add_argument("--beta", type=float, default=10.0, help="softplus beta of the surrogate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--weights-dir", help="load DIR/<model>.safetensors (written by `cargo bench --bench "
                   "models -- --save-weights DIR`) instead of this script's own random weights")
    args = p.parse_args(argv)
    known = set(ALL_METHODS) | set(PGC_METHODS) | set(ZENNIT_METHODS)
    bad = [m for m in args.methods if m not in known] + [m for m in args.models if m not in PUBLISHED_GMAC]
    if bad:
        p.error(f"unknown: {', '.join(bad)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    s = args.size
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, python "
          f"{platform.python_version()}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, mkldnn {torch.backends.mkldnn.is_available()}; "
          f"{s}x{s}, batches {args.batches}, {args.reps} reps after {args.warmup} warm-up",
          file=sys.stderr, flush=True)
    x_all = images(max(args.batches), s, args.seed)
    results, models = [], []
    rss_reset = True
    for name in args.models:
        t = time.perf_counter()
        model = build(name, args.seed, args.weights_dir)
        surrogate = softplus_copy(model, args.beta) if "top_k" in args.methods else None
        cam = GradCam(model, DEFAULT_LAYER[name])
        at_size, at_224 = count_gmac(model, s), count_gmac(model, 224)
        gmac = PUBLISHED_GMAC[name] * at_size / at_224
        print(f"{name}: built in {time.perf_counter() - t:.1f} s; conv+linear {at_224:.3f} GMAC at 224 "
              f"(published {PUBLISHED_GMAC[name]}), {gmac:.3f} GMAC per image used at {s}",
              file=sys.stderr, flush=True)
        # A cross-check for shared weights (--weights-dir): the logits of a uniformly grey image.
        with torch.inference_mode():
            grey = model(torch.full((1, 3, s, s), 0.5))[0]
        models.append({"model": name, "gmac_published_224": PUBLISHED_GMAC[name], "gmac_counted_224": at_224,
                       "gmac_counted": at_size, "gmac_used": gmac, "weights_dir": args.weights_dir,
                       "grey_logits_first5": grey[:5].tolist(), "grey_argmax": int(grey.argmax())})
        for b in args.batches:
            x = x_all[:b].contiguous()
            with torch.no_grad():  # not inference_mode: autograd reads the targets
                t_ = model(x).argmax(1)
            rows = args.ig_internal_batch or b
            for method in args.methods:
                work = b
                if method == "forward":
                    def fn():
                        with torch.inference_mode():
                            model(x)
                elif method == "gradient":
                    def fn():
                        input_gradient(model, x, t_)
                elif method == "integrated_gradients":
                    def fn():
                        integrated_gradients(model, x, t_, args.ig_steps, rows)
                elif method == "grad_cam":
                    def fn():
                        cam(x, t_)
                elif method in PGC_METHODS:
                    import pytorch_grad_cam
                    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

                    pgc = getattr(pytorch_grad_cam, PGC_METHODS[method])(
                        model=model, target_layers=[model.net.get_submodule(DEFAULT_LAYER[name])])
                    if method in ("score_cam", "ablation_cam"):
                        pgc.batch_size = 64
                    # The parameters do not require grad here: let the graph start at the input
                    # (no weight gradients, the cheaper way to run it).
                    pgc.compute_input_gradient = True

                    def fn(pgc=pgc):
                        pgc(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in t_])
                elif method in ZENNIT_METHODS:
                    fn = zennit_lrp(model, name, method, x, t_)
                else:
                    work = b * args.attack_iterations

                    def fn():
                        top_k_attack(model, surrogate, x, t_, args.eps, min(args.k, s * s),
                                     args.attack_iterations, args.step, args.attack_rows)
                rss_reset &= reset_peak_rss()
                times = timed(fn, args.warmup, args.reps)
                getattr(fn, "close", lambda: None)()
                best, med = min(times), float(np.median(times))
                row = {
                    "model": name, "method": method, "batch": b,
                    "unit": "image-iterations/s" if method == "top_k" else "images/s",
                    "work": work, "best_per_s": work / best, "median_per_s": work / med, "seconds": times,
                    "gflops_best": 2 * gmac * work / best if method == "forward" else None,
                    "peak_rss_mb": peak_rss_mb(),
                }
                results.append(row)
                extra = f" ({row['gflops_best']:.1f} GFLOP/s)" if row["gflops_best"] else ""
                rss = "—" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f} MB"
                print(f"  {name:14s} {method:22s} batch {b:3d}: {row['best_per_s']:9.2f} {row['unit']} best, "
                      f"{row['median_per_s']:9.2f} median{extra}, peak RSS {rss}", file=sys.stderr, flush=True)
        del model, surrogate, cam

    print(f"\n### PyTorch {torch.__version__}, {s}x{s}, {args.threads} threads: best (median) of "
          f"{args.reps} repetitions after {args.warmup} warm-up\n")
    print("| model | workload | " + " | ".join(f"batch {b}" for b in args.batches)
          + " | GFLOP/s (forward, best) | peak RSS (MB) |")
    print("|---|---|" + "---|" * len(args.batches) + "---|---|")
    for name in args.models:
        for method in args.methods:
            of = {r["batch"]: r for r in results if r["model"] == name and r["method"] == method}
            cells = [f"{of[b]['best_per_s']:.2f} ({of[b]['median_per_s']:.2f})" if b in of else "—"
                     for b in args.batches]
            gf = [f"{of[b]['gflops_best']:.1f}" for b in args.batches if b in of and of[b]["gflops_best"]]
            rss = max((of[b]["peak_rss_mb"] or 0 for b in of), default=0)
            label = {"top_k": f"top_k attack, image-it/s ({args.attack_iterations} it, k {args.k})",
                     "integrated_gradients": f"integrated_gradients ({args.ig_steps} steps)"}.get(method, method)
            print(f"| {name} | {label} | " + " | ".join(cells) + f" | {' / '.join(gf) or '—'} | {rss:.0f} |")

    if args.json:
        report = {
            "bench": "pytorch_models", "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "mkldnn": torch.backends.mkldnn.is_available(),
            "size": s, "reps": args.reps, "warmup": args.warmup, "args": vars(args),
            "normalize": "imagenet", "peak_rss_reset_per_workload": rss_reset,
            "models": models, "results": results,
        }
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"figures written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
