"""Cut the first 1,000 test images and labels of Fashion-MNIST into small gzipped idx files.

Run from the crate root: python3 assets/fashion-mnist/make_subset.py
Needs only the standard library. The output is byte-for-byte reproducible (gzip mtime=0).
"""
import gzip
import struct

SRC = "/usr/share/datasets/fashion-mnist/"  # Debian package dataset-fashion-mnist
OUT = "assets/fashion-mnist/"
N = 1000

img = gzip.open(SRC + "t10k-images-idx3-ubyte.gz").read()
lab = gzip.open(SRC + "t10k-labels-idx1-ubyte.gz").read()
# idx magic: 00 00 08 (ubyte) 03/01 (ndim), then big-endian u32 dims.
assert struct.unpack(">I3I", img[:16]) == (0x803, 10000, 28, 28)
assert struct.unpack(">II", lab[:8]) == (0x801, 10000)

with open(OUT + "t10k-images-1000-idx3-ubyte.gz", "wb") as f:
    body = struct.pack(">I3I", 0x803, N, 28, 28) + img[16 : 16 + N * 28 * 28]
    f.write(gzip.compress(body, compresslevel=9, mtime=0))
with open(OUT + "t10k-labels-1000-idx1-ubyte.gz", "wb") as f:
    body = struct.pack(">II", 0x801, N) + lab[8 : 8 + N]
    f.write(gzip.compress(body, compresslevel=9, mtime=0))
