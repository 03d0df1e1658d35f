"""Ingest throughput and load time against torchvision ImageFolder + DataLoader, on the same images.

Sets: 70k 28x28 grey (real Fashion-MNIST from Debian's dataset-fashion-mnist package when installed,
else synthetic IDX files of the same shape) and 5k 128x128 RGB (synthetic smooth images written as a
PNG folder). For each set it prints ingest images/s and one pass over the data through
``ganforge.data.load`` (first: decoding Parquet; cached: the local pixel cache) and through
``ImageFolder`` + ``DataLoader(num_workers=2)`` over the same images as PNG files.

Usage: python benchmarks/ingest.py [--workdir DIR] [--small]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
import time

import numpy as np
import torch
from PIL import Image

from ganforge.data import load
from ganforge.data.ingest import ingest

FASHION = "/usr/share/datasets/fashion-mnist"


def fashion_root(work: str, n_train: int, n_test: int) -> tuple[str, str]:
    """A torchvision root with Fashion-MNIST IDX files; real ones when the Debian package is there."""
    raw = os.path.join(work, "tv", "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if os.path.isdir(FASHION) and n_train == 60000:
        for name in names:
            with gzip.open(os.path.join(FASHION, name + ".gz")) as src, open(os.path.join(raw, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
        return os.path.join(work, "tv"), "Fashion-MNIST (real, Debian dataset-fashion-mnist)"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = (rng.random((n, 28, 28)) ** 3 * 255).astype(np.uint8)
        with open(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes())
        with open(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 2049, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    return os.path.join(work, "tv"), "synthetic 28x28 IDX (dataset-fashion-mnist not installed)"


def rgb_folder(work: str, n: int, size: int = 128, classes: int = 5) -> str:
    """``n`` smooth random RGB images (bilinear-upsampled noise) as PNGs in class sub-directories."""
    root = os.path.join(work, "rgb-folder")
    if os.path.isdir(root):
        shutil.rmtree(root)
    rng = np.random.default_rng(1)
    for i in range(n):
        d = os.path.join(root, f"class{i % classes}")
        os.makedirs(d, exist_ok=True)
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        # Sensor-like noise: photographs (and Galaxy10) do not compress like pure gradients.
        noisy = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(os.path.join(d, f"{i:05d}.png"))
    return root


def export_png_folder(uri: str, root: str) -> None:
    """Write a dataset's images as ImageFolder PNGs, for the torchvision baseline."""
    if os.path.isdir(root):
        shutil.rmtree(root)
    for split in load(uri, "train").manifest["counts"]["splits"]:
        data = load(uri, split)
        for i, (im, lbl) in enumerate(zip(data.images, data.labels)):
            d = os.path.join(root, f"class{int(lbl)}")
            os.makedirs(d, exist_ok=True)
            arr = im.permute(1, 2, 0).numpy()
            Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(os.path.join(d, f"{split}{i:06d}.png"))


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def load_pass(uri: str, use_cache: bool) -> int:
    """Every image of every split in memory; a cached load is memory-mapped, so touch every page."""
    n = 0
    for split in load(uri, "train").manifest["counts"]["splits"]:
        images = load(uri, split, use_cache=use_cache).images
        int(images.view(-1)[::4096].sum())  # one byte per 4 KiB page: all pages read in
        n += images.shape[0]
    return n


def dataloader_pass(root: str) -> int:
    from torchvision import datasets, transforms

    ds = datasets.ImageFolder(root, transform=transforms.PILToTensor())
    dl = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=2)
    return sum(int(x.shape[0]) for x, _ in dl)


def bench_set(name: str, uri: str, png_root: str, ingest_fn) -> dict:
    if os.path.isdir(uri):
        shutil.rmtree(uri)
    t_ingest, res = timed(ingest_fn)
    n = res.manifest["counts"]["total"]
    os.environ["GANFORGE_CACHE_DIR"] = os.path.join(os.path.dirname(uri), f"cache-{name}")
    shutil.rmtree(os.environ["GANFORGE_CACHE_DIR"], ignore_errors=True)
    t_first, _ = timed(lambda: load_pass(uri, use_cache=True))  # decodes and fills the cache
    t_cached, n_cached = timed(lambda: load_pass(uri, use_cache=True))
    export_png_folder(uri, png_root)
    t_dl, n_dl = timed(lambda: dataloader_pass(png_root))
    assert n_cached == n_dl == n, (n_cached, n_dl, n)
    return dict(name=name, n=n, ingest_s=t_ingest, ingest_ips=n / t_ingest, first_s=t_first,
                cached_s=t_cached, dataloader_s=t_dl, speedup=t_dl / t_cached)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/ganforge-bench-ingest")
    ap.add_argument("--small", action="store_true", help="10x smaller sets, for a quick check")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    scale = 10 if args.small else 1
    root, what = fashion_root(args.workdir, 60000 // scale, 10000 // scale)
    rgb = rgb_folder(args.workdir, 5000 // scale)
    w = args.workdir
    rows = [
        bench_set("28x28 grey", os.path.join(w, "ds-fashion"), os.path.join(w, "png-fashion"),
                  lambda: ingest("fashion-mnist", os.path.join(w, "ds-fashion"), input=root)),
        bench_set("128x128 RGB", os.path.join(w, "ds-rgb"), os.path.join(w, "png-rgb"),
                  lambda: ingest("folder", os.path.join(w, "ds-rgb"), input=rgb, val_fraction=0)),
    ]
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}; 28x28 set: {what}")
    print(f"{'set':<12} {'images':>7} {'ingest s':>9} {'ingest img/s':>13} {'load first s':>13} "
          f"{'load cached s':>14} {'ImageFolder+DL(2) s':>20} {'DL/cached':>10}")
    for r in rows:
        print(f"{r['name']:<12} {r['n']:>7} {r['ingest_s']:>9.2f} {r['ingest_ips']:>13.0f} {r['first_s']:>13.2f} "
              f"{r['cached_s']:>14.3f} {r['dataloader_s']:>20.2f} {r['speedup']:>9.0f}x")


if __name__ == "__main__":
    main()
