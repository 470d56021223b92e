#!/usr/bin/env python3
"""Writes assets/fashion-mnist/folder/: the first 3 shipped test images of each class as 28×28
grey PNG files in class sub-folders, plus classes.txt beside it, for the README's quick start ("your own
model in five minutes": a folder of images and a model file).

The folders are named after the classes, so sorted by name they are NOT in the model's label
order (Ankle_boot, Bag, Coat, ... against T-shirt_top = 0, Trouser = 1, ...): classes.txt lists
them in label order, as a user must for their own model. Standard-library Python only; the PNG
encoder is deterministic, so the output is reproducible byte for byte.

    python3 assets/fashion-mnist/make_folder.py
"""
import gzip, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
PER_CLASS = 3


def png(width, height, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    images = gzip.open(os.path.join(HERE, "t10k-images-1000-idx3-ubyte.gz")).read()[16:]
    labels = gzip.open(os.path.join(HERE, "t10k-labels-1000-idx1-ubyte.gz")).read()[8:]
    out = os.path.join(HERE, "folder")
    taken = {k: 0 for k in range(10)}
    for i, label in enumerate(labels):
        if taken[label] == PER_CLASS:
            continue
        taken[label] += 1
        pixels = images[i * 784:(i + 1) * 784]
        rows = [pixels[r * 28:(r + 1) * 28] for r in range(28)]
        folder = os.path.join(out, NAMES[label])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"test{i:04d}.png"), "wb") as f:
            f.write(png(28, 28, rows))
    with open(os.path.join(HERE, "classes.txt"), "w") as f:
        f.write("\n".join(NAMES) + "\n")


if __name__ == "__main__":
    main()
