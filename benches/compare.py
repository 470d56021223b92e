#!/usr/bin/env python3
"""fragility against PyTorch + Captum, side by side, in one run on this machine.

Runs, one after the other (never concurrently, so neither slows the other):

1. ``cargo bench --bench throughput`` for every method, the top_k attack on the gradient
   map and the matmul rate (criterion medians, from target/criterion/*/new/);
2. ``benches/pytorch_captum.py --part methods`` (medians of its repetitions);
3. the default study, ``experiments/fragility.toml``, with the release binary (into a
   temporary folder), timed;
4. ``benches/pytorch_captum.py --part study``, the same study in PyTorch + Captum, timed;

then prints one markdown report (``--out`` also writes it): per-method maps/s with the
ratio to PyTorch and the share of the measured matmul rate, and the two studies' wall
times per stage. Standard library only; the PyTorch side needs a Python with torch,
captum, numpy and scipy (see benches/pytorch_captum.py), given by ``--torch-python``.

    python3 benches/compare.py --torch-python /work/torchenv/bin/python \\
        --out reports/bench/compare.md

Not part of the test suite. ``--skip-bench`` reuses criterion's last results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# ~MFLOP of one input gradient of fmnist_cnn (forward 8.5 + backward 8.5: conv2 dominates).
GRADIENT_MFLOP = 17.0
# Each method's cost in gradient-equivalents for the GFLOP/s column (forward = 0.5).
PASSES = {
    "forward": 0.5, "gradient": 1, "gradient_x_input": 1, "guided_backprop": 1, "deconvnet": 1,
    "deeplift": 1.5, "grad_cam": 1, "guided_grad_cam": 2, "integrated_gradients": 50,
    "smoothgrad": 50, "smoothgrad_sq": 50, "vargrad": 50, "occlusion": 0.5 * 170,
    "lime": 0.5 * 1000, "kernel_shap": 0.5 * 1000,
}


def run(cmd, **kw):
    print("+", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def criterion_rates() -> dict:
    """{(group, function, value): per-second rate} from criterion's last results."""
    rates = {}
    root = REPO / "target" / "criterion"
    for bench in root.glob("*/*/*/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        elements = meta.get("throughput", {}).get("Elements")
        if elements:
            key = (meta["group_id"], meta["function_id"], meta["value_str"])
            rates[key] = elements / (est["median"]["point_estimate"] * 1e-9)
    return rates


def timed_study(cmd) -> float:
    start = time.monotonic()
    run(cmd, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-python", required=True, help="a python with torch, captum, numpy, scipy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-bench", action="store_true", help="reuse criterion's last results")
    p.add_argument("--out", help="also write the markdown report here")
    args = p.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    work = Path(tempfile.mkdtemp(prefix="fragility-compare-"))

    run(["cargo", "build", "--release"], cwd=REPO)
    if not args.skip_bench:
        run(["cargo", "bench", "--bench", "throughput", "--", "methods/|attacks/top_k/gradient/|matmul/"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    ours = criterion_rates()
    torch_json = work / "torch_methods.json"
    run([args.torch_python, str(REPO / "benches/pytorch_captum.py"), "--part", "methods",
         "--threads", str(args.threads), "--batches", "64,256", "--occlusion-batches", "64,256",
         "--json", str(torch_json)], stdout=subprocess.DEVNULL)
    theirs = {(r["method"], r["batch"]): r["median_per_s"] for r in json.loads(torch_json.read_text())["methods"]}

    config = work / "fragility.toml"
    text = (REPO / "experiments/fragility.toml").read_text()
    text = text.replace('out = "../reports/fragility"', f'out = "{work / "ours"}"')
    for rel in ("../assets/models/", "../assets/fashion-mnist/"):
        text = text.replace(f'"{rel}', f'"{REPO / rel[3:]}/')
    config.write_text(text)
    ours_s = timed_study([str(REPO / "target/release/fragility"), "run", str(config), "--quiet", "--force"])
    ours_run = json.loads((work / "ours" / "run.json").read_text())
    study_json = work / "torch_study.json"
    theirs_s = timed_study([args.torch_python, str(REPO / "benches/pytorch_captum.py"), "--part", "study",
                            "--threads", str(args.threads), "--json", str(study_json),
                            "--out", str(work / "torch_study.csv")])
    theirs_study = json.loads(study_json.read_text())["study"]

    matmul = ours.get(("matmul", "f32", "1024x1024x1024"))
    lines = [
        f"## {datetime.date.today()} — fragility against PyTorch + Captum, one run of benches/compare.py",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads "
        f"(RAYON_NUM_THREADS / torch.set_num_threads), f32.",
        f"- Matmul rate (candle f32 matmul = the `gemm` crate, 1024³, {args.threads} threads): "
        + (f"{matmul / 1e9:.0f} GFLOP/s" if matmul else "not measured"),
        "- Medians: criterion's for fragility (release profile), of 5 repetitions for PyTorch.",
        "",
        "| method | fragility b64 | fragility b256 | PyTorch b64 | PyTorch b256 | ratio (b256) | GFLOP/s (b256) | of matmul rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = ["forward", "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_sq",
             "vargrad", "guided_backprop", "deconvnet", "deeplift", "grad_cam", "guided_grad_cam", "occlusion",
             "lime", "kernel_shap"]
    for name in names:
        mine = {b: ours.get(("methods", name, str(b))) for b in (16, 64, 256)}
        torch_rate = {b: theirs.get((name, b)) for b in (16, 64, 256)}
        fmt = lambda v: "—" if v is None else f"{v:,.1f}"
        best_b = 256 if mine[256] else (64 if mine[64] else 16)
        ratio = (f"{mine[best_b] / torch_rate[best_b]:.1f}×" if mine[best_b] and torch_rate.get(best_b) else "—")
        gflops = mine[best_b] * PASSES[name] * GRADIENT_MFLOP / 1e3 if mine[best_b] else None
        share = f"{gflops * 1e9 / matmul:.0%}" if gflops and matmul else "—"
        label = name if best_b == 256 else f"{name} (b{best_b})"
        # A method benched at batch 16 only (lime, kernel_shap) shows it in the b64 columns.
        small = 64 if best_b != 16 else 16
        lines.append(f"| {label} | {fmt(mine[small])} | {fmt(mine[256])} | {fmt(torch_rate[small])} | "
                     f"{fmt(torch_rate[256])} | {ratio} | {fmt(gflops)} | {share} |")
    attack = {b: ours.get(("attacks", "top_k/gradient", str(b))) for b in (64, 256)}
    torch_attack = {b: theirs.get(("top_k_attack", b)) for b in (64, 256)}
    lines.append(f"| top_k attack on gradient (image-it/s) | {attack[64] or 0:,.1f} | {attack[256] or 0:,.1f} | "
                 f"{torch_attack[64] or 0:,.1f} | {torch_attack[256] or 0:,.1f} | "
                 + (f"{attack[256] / torch_attack[256]:.1f}×" if attack[256] and torch_attack[256] else "—")
                 + " | — | — |")
    lines += [
        "",
        "Rows marked (b16) were run at batch 16 only, shown in the b64 columns; (b64) rows at 64 "
        "only. Ratios and GFLOP/s are at the largest batch measured. The top_k attack row is in "
        "image-iterations per second. GFLOP/s counts each method's arithmetic as full passes "
        "(17 MFLOP per gradient, 8.5 per forward); occlusion's is the effective rate, since "
        "fragility recomputes only the part of each pass a window changes (about a quarter).",
        "",
        "The default study (`experiments/fragility.toml`: 200 images, 4 methods, random_sign and top_k at 4 ε, "
        "100 top-k iterations), wall clock:",
        "",
        "| | fragility | PyTorch + Captum |",
        "|---|---|---|",
        f"| whole study | {ours_s:.1f} s | {theirs_s:.1f} s (study {theirs_study['total_s']:.1f} s) |",
        f"| random_sign (attack, re-measure, metrics) | {ours_run['timings_s']['attacks']['random_sign']:.1f} s | "
        f"{sum(v for k, v in theirs_study['stages_s'].items() if k.endswith('random_sign')):.1f} s |",
        f"| top_k (attack, re-measure, metrics) | {ours_run['timings_s']['attacks']['top_k → gradient']:.1f} s | "
        f"{sum(v for k, v in theirs_study['stages_s'].items() if k.endswith('top_k')):.1f} s |",
        f"| **speed-up** | **{theirs_s / ours_s:.2f}×** | |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
