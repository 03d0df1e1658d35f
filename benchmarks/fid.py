"""FID cost: ganforge's evaluation path vs torcheval's FrechetInceptionDistance used the plain way.

On the same images (n Fashion-MNIST train images as "real", n test images as "generated"; synthetic
28x28 images when Debian's dataset-fashion-mnist is missing) it prints, in one run:

- images/s of ganforge's feature extraction (inception-tf, channels_last, batches of --batch-size);
- wall time of FID n vs n through ganforge (both feature passes, float64 statistics);
- wall time of the same FID through ``torcheval.metrics.FrechetInceptionDistance(model=...)`` fed
  batch by batch with ``update(images, is_real)`` (its default loop, float32 sums, NCHW input);
- wall time of ganforge with the real features already cached (what every later evaluation pays);
- both FID values: close when n is well above the 2048 feature dimensions; below that the covariances
  are singular and the two matrix square roots (torcheval's vs ganforge's eigendecomposition) differ.

Usage: python benchmarks/fid.py [--n 10000] [--batch-size 64] [--backbone-weights PATH]
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F

FASHION = "/usr/share/datasets/fashion-mnist"


def images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(real, generated) uint8 (n, 1, 28, 28) each."""
    def idx(name: str) -> np.ndarray:
        with gzip.open(os.path.join(FASHION, name)) as f:
            _, count, h, w = struct.unpack(">IIII", f.read(16))
            return np.frombuffer(f.read(), np.uint8).reshape(count, 1, h, w)

    if os.path.isdir(FASHION):
        real, fake = idx("train-images-idx3-ubyte.gz")[:n], idx("t10k-images-idx3-ubyte.gz")[:n]
        what = "Fashion-MNIST train vs test"
    else:
        rng = np.random.default_rng(0)
        real, fake = (rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8) for _ in range(2))
        what = "synthetic noise (dataset-fashion-mnist not installed)"
    return torch.from_numpy(real.copy()), torch.from_numpy(fake.copy()), what


class TorchevalInput(torch.nn.Module):
    """What torcheval's plain use needs: [0, 1] RGB in, backbone features out (same backbone)."""

    def __init__(self, extractor):
        super().__init__()
        self.module, self.contract = extractor.module, extractor.contract

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x * 255.0, size=self.contract.size, mode="bilinear", align_corners=False)
        lo, hi = self.contract.value_range
        return self.module(x * ((hi - lo) / 255.0) + lo)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone-weights", default=None)
    args = ap.parse_args()

    from torcheval.metrics import FrechetInceptionDistance

    from ganforge.metrics.features import get_extractor
    from ganforge.metrics.fid import fid_from_features

    real, fake, what = images(args.n)
    ext = get_extractor("inception-tf", args.backbone_weights)
    ext.extract(real[:8], 8)  # warm-up: TorchScript's profiling executor optimises on early calls

    t_real, real_f = timed(lambda: ext.extract(real, args.batch_size))
    t_fake, fake_f = timed(lambda: ext.extract(fake, args.batch_size))
    t_fid, ours = timed(lambda: fid_from_features(real_f, fake_f))
    ganforge_s = t_real + t_fake + t_fid
    cached_s = t_fake + t_fid  # real features come from the cache (a file read, ~ms)

    def torcheval_plain() -> float:
        metric = FrechetInceptionDistance(model=TorchevalInput(ext).eval(), feature_dim=2048)
        for batch, is_real in ((real, True), (fake, False)):
            for s in range(0, len(batch), args.batch_size):
                x = batch[s : s + args.batch_size].float().div(255).expand(-1, 3, -1, -1)
                metric.update(x, is_real=is_real)
        return float(metric.compute())

    with torch.inference_mode():
        te_s, theirs = timed(torcheval_plain)

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"images: {what}, n={args.n} vs {args.n}; backbone inception-tf {ext.sha256[:12]}")
    print(f"feature extraction (ganforge): {2 * args.n / (t_real + t_fake):.1f} images/s")
    print(f"{'path':<44} {'wall s':>9} {'FID':>10}")
    print(f"{'torcheval FrechetInceptionDistance (plain)':<44} {te_s:>9.1f} {theirs:>10.4f}")
    print(f"{'ganforge (both feature passes, float64)':<44} {ganforge_s:>9.1f} {ours:>10.4f}")
    print(f"{'ganforge, real features cached':<44} {cached_s:>9.1f} {ours:>10.4f}")
    print(f"speed-up vs torcheval: {te_s / ganforge_s:.2f}x uncached, {te_s / cached_s:.2f}x cached; "
          f"|FID difference| {abs(ours - theirs):.2e}")


if __name__ == "__main__":
    main()
