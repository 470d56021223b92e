#!/usr/bin/env python3
"""Reference maps of the CAM family by pytorch-grad-cam (tests/fixtures/torchvision/cam_<arch>.safetensors).

How the committed fixtures were made (the throwaway venv of scripts/torchvision_fixtures.py,
plus pytorch-grad-cam from PyPI):

    /work/torchenv/bin/pip install --no-deps grad-cam==1.5.7 ttach
    /work/torchenv/bin/pip install opencv-python-headless tqdm scikit-learn matplotlib
    FIXTURE_THREADS=1 /work/torchenv/bin/python scripts/cam_fixtures.py

For resnet18 and mobilenet_v2: the network, synthetic weights, input x [2,3,64,64] and
targets (the argmax classes) of scripts/torchvision_fixtures.py, in float64, and the layer
that script uses for Grad-CAM (pytorch-grad-cam's README choice: `layer4[-1]`,
`features[-1]`), and an inner layer (`layer3`, `features.14.conv.1`) under the keys `<method>@<layer>`:
at the default layers the gradient is constant over positions (global average pooling and a
linear layer follow), so there HiResCAM and XGrad-CAM equal Grad-CAM; not inside. Each map is pytorch-grad-cam 1.5.7's own output for
`ClassifierOutputTarget(target)`: rectified, resized to 64x64 (cv2 bilinear) and min-max
scaled per image, [2,64,64] float32:

    grad_cam, grad_cam_plus_plus, xgrad_cam, hires_cam, layer_cam   (GradCAM, GradCAMPlusPlus,
        XGradCAM, HiResCAM, LayerCAM)
    score_cam     ScoreCAM (masks upsampled with align_corners=True, min-max per channel,
                  softmax of the target logits over channels), batch_size 64
    eigen_cam     EigenCAM with the sign of the principal component fixed as Seg-Eigen-CAM
                  does (pytorch-grad-cam's get_2d_projection_with_sign_correction: flipped when
                  |min| > |max|); plain EigenCAM's sign is whatever LAPACK returns
    eigen_cam_raw plain EigenCAM, for the record (equal to eigen_cam up to that sign)
    ablation_cam  AblationCAM (every channel ablated, batch_size 32); every layer here ends in a
                  ReLU or ReLU6 whose activations reach 0, checked, so that its ablation value is
                  0 (elsewhere pytorch-grad-cam uses min - 1e7)
"""

import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_weights import synthetic  # noqa: E402
from torchvision_fixtures import GRAD_CAM_LAYER, INPUT_SHAPE, OUT_DIR, build  # noqa: E402

import pytorch_grad_cam  # noqa: E402
from pytorch_grad_cam import (  # noqa: E402
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction  # noqa: E402


class SignedEigenCAM(EigenCAM):
    """EigenCAM with the principal component's sign fixed (Seg-Eigen-CAM's Eq. 13)."""

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
        return get_2d_projection_with_sign_correction(activations)


METHODS = {
    "grad_cam": GradCAM,
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "xgrad_cam": XGradCAM,
    "hires_cam": HiResCAM,
    "layer_cam": LayerCAM,
    "score_cam": ScoreCAM,
    "eigen_cam": SignedEigenCAM,
    "eigen_cam_raw": EigenCAM,
    "ablation_cam": AblationCAM,
}


INNER_LAYER = {"resnet18": "layer3", "mobilenet_v2": "features.14.conv.1"}


def make(arch):
    model, _, _ = build(arch)
    for p in model.parameters():
        p.requires_grad_(True)
    x = torch.from_numpy(synthetic("input", INPUT_SHAPE, scale="u")).double()
    with torch.no_grad():
        targets = model(x).argmax(dim=1)
    out = {"x": x.numpy().astype(np.float32), "targets": targets.numpy().astype(np.int64)}
    for layer_name, suffix in [(GRAD_CAM_LAYER[arch], ""), (INNER_LAYER[arch], "@" + INNER_LAYER[arch])]:
        layer = dict(model.named_modules())[layer_name]
        seen = {}
        handle = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
        with torch.no_grad():
            model(x)
        handle.remove()
        if seen["a"].min().item() != 0.0:
            raise RuntimeError(f"{arch} {layer_name}: activations do not reach 0 (AblationCAM would not zero)")
        for name, cls in METHODS.items():
            cam = cls(model=model, target_layers=[layer])
            if name == "score_cam":
                cam.batch_size = 64
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            key = name + suffix
            out[key] = np.asarray(maps, dtype=np.float32)
            if not np.isfinite(out[key]).all() or not out[key].max() > 0:
                raise RuntimeError(f"{arch} {key}: {out[key].min()} .. {out[key].max()}")
    meta = {
        "pytorch_grad_cam": getattr(pytorch_grad_cam, "__version__", "1.5.7"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "layers": f"{GRAD_CAM_LAYER[arch]}, {INNER_LAYER[arch]}",
    }
    path = os.path.join(OUT_DIR, f"cam_{arch}.safetensors")
    save_file(out, path, metadata=meta)
    print(f"{arch}: {path} ({os.path.getsize(path)} bytes), targets {targets.tolist()}")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    for arch in sys.argv[1:] or ["resnet18", "mobilenet_v2"]:
        make(arch)
