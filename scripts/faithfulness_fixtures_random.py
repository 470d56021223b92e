#!/usr/bin/env python3
"""Reference values of the three random faithfulness measures
(tests/fixtures/faithfulness/random_measures.safetensors), with the random draws they used.

- ROAD (Rong, Leemann, Nguyen, Fiedler, Haghighi, Kasneci, "A consistent and efficient evaluation
  strategy for attribution methods", ICML 2022): Quantus 0.6.0's `noisy_linear_imputation`
  (its port of github.com/tleemann/road_evaluation's NoisyLinearImputer, solved by scipy's
  `spsolve`) with noise 0, the imputed images run through the model for the class's softmax
  probability and top-1, MoRF (`argsort(-map)[:k]`) and LeRF (`argsort(map)[:k]`) at 10..90 %,
  k = int(H*W*p/100) as Quantus' `ROAD.evaluate_batch`. `quantus.ROAD(noise=0)` itself is run
  too and must give the same MoRF accuracies. The noise (sigma 0.01, numpy's global stream in
  Quantus) is not part of the reference: fragility draws it from its own keyed stream, and its
  tests check the noise's statistics separately.
- Faithfulness correlation (Bhatt, Weller and Moura, IJCAI 2020): `quantus.FaithfulnessCorrelation`
  with its defaults (subset_size 224, perturb_baseline "black", Pearson, abs False, normalise
  True, logits: softmax False) but nr_runs = NR_RUNS (default 100) to keep the file small, on the
  signed gradient attributions. Its subsets come from numpy's global stream
  (`np.random.choice(C*H*W, 224, replace=False)`, run-major, image-minor, and per run one
  `np.random.uniform(size=B)` that get_baseline_dict draws and discards); the script seeds
  that stream, replays it to export the subsets, and checks that its own recomputation from
  them equals Quantus' output.
- Infidelity (Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (in)fidelity and sensitivity of
  explanations", NeurIPS 2019): `captum.metrics.infidelity(normalize=True, n_perturb_samples=10)`
  on the logits, with the perturbation of Captum's docstring (I ~ N(0, sigma^2) per input value,
  perturbed input x - I) at SIGMA_INFID; the draws are recorded and exported.

    /work/torchenv/bin/pip install quantus==0.6.0 captum==0.9.0
    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/faithfulness_fixtures_random.py

Model, images (the same four as scripts/faithfulness_fixtures.py), classes (argmax) and maps
(|gradient|) as in scripts/faithfulness_fixtures.py; `attributions` are the signed gradients.

Keys (F32 unless said; B = 4 images, P = 9 fractions):

    x [B,1,28,28], classes I64 [B], maps [B,28,28], attributions [B,1,28,28]
    road_morf, road_lerf            F64 [B,P]  p(class) of the noise-free imputed image
    road_morf_top1, road_lerf_top1  I64 [B,P]  1 where the class is the imputed image's argmax
    road_imputed                    [B,2,784]  the imputed images at 90 % (MoRF, LeRF)
    fc_subsets                      I16 [B,NR_RUNS,224]  Quantus' random subsets (flat C*H*W indices)
    fc_drops, fc_sums               F64 [B,NR_RUNS]  logit drop and attribution sum per run (recomputed)
    faithfulness_correlation        F64 [B]    Quantus' output
    infid_noise                     [B,10,784] the perturbations I
    infidelity                      F64 [B]    Captum's output
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faithfulness_fixtures as ff  # noqa: E402  (the model, images and maps; also aliases np.trapz)
import quantus  # noqa: E402
from quantus.functions.perturb_func import noisy_linear_imputation  # noqa: E402
from captum.metrics import infidelity  # noqa: E402
import captum  # noqa: E402

OUT = os.path.join(ff.ROOT, "tests/fixtures/faithfulness/random_measures.safetensors")
PERCENTAGES = list(range(10, 100, 10))
NR_RUNS, SUBSET = 50, 224
FC_SEED, INFID_SEED = 1234, 5678
N_PERTURB, SIGMA_INFID = 10, 0.1


def softmax_top1(net, images, classes):
    with torch.no_grad():
        logits = net(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
    p = torch.softmax(logits, 1).double().numpy()
    rows = np.arange(len(classes))
    return p[rows, classes], (logits.numpy().argmax(1) == classes).astype(np.int64)


def road(net, x, classes, maps, out):
    b, c, h, w = x.shape
    for order, rank in (("morf", lambda m: np.argsort(-m)), ("lerf", lambda m: np.argsort(m))):
        probs, tops = np.zeros((b, len(PERCENTAGES))), np.zeros((b, len(PERCENTAGES)), dtype=np.int64)
        for j, pct in enumerate(PERCENTAGES):
            k = int(h * w * pct / 100)
            imputed = np.stack([noisy_linear_imputation(x[i], rank(maps[i].reshape(-1))[:k], noise=0.0)
                                for i in range(b)]).astype(np.float32)
            probs[:, j], tops[:, j] = softmax_top1(net, imputed, classes)
            if pct == 90:
                out.setdefault("road_imputed", np.zeros((b, 2, c * h * w), dtype=np.float32))
                out["road_imputed"][:, 0 if order == "morf" else 1] = imputed.reshape(b, -1)
        out[f"road_{order}"], out[f"road_{order}_top1"] = probs, tops
        print(f"road {order}: p {np.round(probs, 4).tolist()}", flush=True)
    acc = quantus.ROAD(percentages=PERCENTAGES, noise=0.0, disable_warnings=True)(
        model=net, x_batch=x, y_batch=classes, a_batch=maps[:, None], channel_first=True, device="cpu")
    want = out["road_morf_top1"].mean(0)
    if not np.allclose([acc[p] for p in PERCENTAGES], want):
        raise RuntimeError(f"quantus.ROAD accuracies {acc} differ from the script's {want}")


def faithfulness_correlation(net, x, classes, attributions, out):
    b = len(classes)
    n = attributions[0].size
    metric = quantus.FaithfulnessCorrelation(nr_runs=NR_RUNS, subset_size=SUBSET, return_aggregate=False,
                                             disable_warnings=True)
    np.random.seed(FC_SEED)
    got = np.array(metric(model=net, x_batch=x, y_batch=classes, a_batch=attributions, channel_first=True,
                          device="cpu"), dtype=np.float64)
    np.random.seed(FC_SEED)
    subsets = np.zeros((b, NR_RUNS, SUBSET), dtype=np.int64)
    for r in range(NR_RUNS):
        for i in range(b):
            subsets[i, r] = np.random.choice(n, SUBSET, replace=False)
        np.random.uniform(0.0, 1.0, size=b)  # get_baseline_dict draws its "uniform" entry on every call
    flat = x.reshape(b, -1)
    with torch.no_grad():
        clean = net(torch.from_numpy(x)).numpy()[np.arange(b), classes].astype(np.float64)
    drops, sums = np.zeros((b, NR_RUNS)), np.zeros((b, NR_RUNS))
    for i in range(b):
        perturbed = np.repeat(flat[i:i + 1], NR_RUNS, 0)
        for r in range(NR_RUNS):
            perturbed[r, subsets[i, r]] = flat[i].min()
            sums[i, r] = attributions[i].reshape(-1)[subsets[i, r]].astype(np.float64).sum()
        with torch.no_grad():
            logits = net(torch.from_numpy(perturbed.reshape(NR_RUNS, *x.shape[1:]))).numpy()
        drops[i] = clean[i] - logits[:, classes[i]]
    mine = np.array([np.corrcoef(sums[i], drops[i])[0, 1] for i in range(b)])
    if not np.allclose(mine, got, rtol=1e-4, atol=1e-6):
        raise RuntimeError(f"replayed subsets give {mine}, Quantus {got}")
    out["fc_subsets"] = subsets.astype(np.int16)
    out["fc_drops"], out["fc_sums"], out["faithfulness_correlation"] = drops, sums, got
    print(f"faithfulness correlation {got.tolist()} (replayed {mine.tolist()})", flush=True)


def infid(net, x, classes, attributions, out):
    rng = np.random.default_rng(INFID_SEED)
    drawn = []

    def perturb(inputs):
        noise = torch.from_numpy(rng.normal(0.0, SIGMA_INFID, tuple(inputs.shape)).astype(np.float32))
        drawn.append(noise)
        return noise, inputs - noise

    got = infidelity(net, perturb, torch.from_numpy(x), torch.from_numpy(attributions),
                     target=torch.from_numpy(classes), n_perturb_samples=N_PERTURB, normalize=True)
    if len(drawn) != 1:
        raise RuntimeError(f"captum drew {len(drawn)} batches of perturbations, expected one")
    # Captum repeat_interleaves the inputs: row i*N + k is image i's k-th perturbation.
    out["infid_noise"] = drawn[0].numpy().reshape(len(classes), N_PERTURB, -1)
    out["infidelity"] = got.double().numpy()
    print(f"infidelity {out['infidelity'].tolist()}", flush=True)


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    net = ff.FmnistCnn()
    net.load_state_dict(load_file(ff.WEIGHTS), strict=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = ff.load_images(ff.IDS)
    x[-1] = np.float32(0.1) + np.float32(0.8) * x[-1]
    with torch.no_grad():
        classes = net(torch.from_numpy(x)).numpy().argmax(1).astype(np.int64)
    maps = ff.gradient_maps(net, x, classes)
    ff.check_no_ties(maps)
    xt = torch.from_numpy(x).requires_grad_(True)
    net(xt).gather(1, torch.from_numpy(classes)[:, None]).sum().backward()
    attributions = xt.grad.numpy().astype(np.float32)
    out = {"x": x, "classes": classes, "maps": maps, "attributions": attributions}
    road(net, x, classes, maps, out)
    faithfulness_correlation(net, x, classes, attributions, out)
    infid(net, x, classes, attributions, out)
    meta = dict(ff.versions())
    meta.update({"captum": captum.__version__, "made_by": "scripts/faithfulness_fixtures_random.py",
                 "ids": ff.IDS, "percentages": PERCENTAGES, "nr_runs": NR_RUNS, "subset_size": SUBSET,
                 "fc_seed": FC_SEED, "infid_seed": INFID_SEED, "n_perturb_samples": N_PERTURB,
                 "infid_sigma": SIGMA_INFID})
    save_file(out, OUT, metadata={"fixture": json.dumps(meta, sort_keys=True)})
    print(f"{OUT} ({os.path.getsize(OUT)} bytes, {len(out)} tensors)", flush=True)


if __name__ == "__main__":
    main()
