"""Writes the JPEG fixtures of tests/fixtures/jpeg: small JPEGs and the pixels PIL decodes.

Why: torchvision pipelines open images with PIL, which decodes JPEG with libjpeg-turbo (ISLOW
inverse DCT, fancy chroma upsampling); src/data/jpeg.rs must give the same pixels, and the test
`jpeg_pixels_equal_pils` in src/data/jpeg.rs compares them case by case.

Each case `<name>.jpg` comes with `<name>.npy`: uint8, H×W×3 (colour) or H×W (grey), what
`numpy.asarray(PIL.Image.open(f))` gives (PIL's `convert("RGB")` is the identity on these).
Cases: baseline and progressive, each with 4:4:4, 4:2:2, 4:2:0 chroma and greyscale. Sizes
are odd and not multiples of 16 so that partial blocks and edge upsampling are exercised.

Run (a throwaway venv is enough):
    python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow numpy
    /tmp/pil/bin/python scripts/jpeg_fixtures.py
"""

import pathlib

import numpy as np
from PIL import Image, features

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "jpeg"
H, W = 29, 37


def picture() -> np.ndarray:
    """Smooth gradients, sharp edges and noise: every IDCT coefficient and the chroma matter."""
    rng = np.random.default_rng(24)
    y, x = np.mgrid[0:H, 0:W]
    r = 255 * x / (W - 1)
    g = 255 * (0.5 + 0.5 * np.sin(y / 3.0 + x / 5.0))
    b = np.where((x // 6 + y // 5) % 2 == 0, 230.0, 25.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 18, (H, W, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(picture(), "RGB")
    grey = rgb.convert("L")
    for mode in ("baseline", "progressive"):
        cases = [("444", rgb, 0), ("422", rgb, 1), ("420", rgb, 2), ("grey", grey, None)]
        for chroma, img, subsampling in cases:
            name = f"{mode}_{chroma}"
            path = OUT / f"{name}.jpg"
            kwargs = {"quality": 85, "progressive": mode == "progressive"}
            if subsampling is not None:
                kwargs["subsampling"] = subsampling
            img.save(path, "JPEG", **kwargs)
            with Image.open(path) as decoded:
                assert decoded.mode == img.mode, (name, decoded.mode)
                np.save(OUT / f"{name}.npy", np.asarray(decoded))
            print(name, path.stat().st_size, "bytes")
    print("Pillow", Image.__version__, "libjpeg-turbo", features.version("libjpeg_turbo"))


if __name__ == "__main__":
    main()
