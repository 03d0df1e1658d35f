"""k-NN for the memorisation audit: ganforge's chunked exact k-NN vs scikit-learn's brute force.

10k "generated" vs 60k "training" 28x28 grey uint8 images in pixel space (L2, k=1), MNIST-sized.
The images are scikit-learn's 8x8 digits upscaled to 28x28 with random shifts and noise, so
neighbours have real structure (no download). Each method runs in its own subprocess so its peak
resident memory is its own: the peak RSS (VmHWM) is reset just before the k-NN call, with the data
already loaded, and "extra" is that peak minus the RSS at the reset. Both results are checked against each other. Not part of the tests.

    .venv/bin/python benchmarks/audit.py [--n-gen 10000] [--n-train 60000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def make_images(n: int, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) uint8 digit-like images: upscaled sklearn digits, shifted, with noise."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    base = F.interpolate(digits, size=(24, 24), mode="bilinear", align_corners=False)
    pick = rng.integers(0, len(base), n)
    out = np.zeros((n, 1, 28, 28), dtype=np.float32)
    dy, dx = rng.integers(0, 5, n), rng.integers(0, 5, n)
    b = base[pick].numpy()
    for i in range(n):
        out[i, :, dy[i] : dy[i] + 24, dx[i] : dx[i] + 24] = b[i]
    out += rng.normal(0, 0.05, out.shape).astype(np.float32)
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


# (query_chunk, ref_chunk): the defaults, and small chunks to show memory follows the chunk sizes.
CHUNKS = {"ganforge": (1024, 4096), "ganforge-small": (256, 1024)}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> float:
    """Reset the peak RSS (Linux: writing 5 to clear_refs) and return the current RSS in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def worker(method: str, data: str, out: str) -> None:
    """Run one method in this process and write its timing, memory and answer to ``out``."""
    with np.load(data) as z:
        gen, train = z["gen"], z["train"]
    n_gen, n_train = len(gen), len(train)
    if method.startswith("ganforge"):
        import torch

        from ganforge.audit.knn import knn

        q, r = torch.from_numpy(gen), torch.from_numpy(train)
        chunks = CHUNKS[method]
        knn(q[:64], r[:64], k=1)  # warm-up: loads kernels/code pages, which are not working memory
        before = _reset_peak()
        t0 = time.perf_counter()
        dist, idx = knn(q, r, k=1, metric="l2", query_chunk=chunks[0], ref_chunk=chunks[1])
        wall = time.perf_counter() - t0
        dist, idx = dist.numpy()[:, 0], idx.numpy()[:, 0]
    else:
        from sklearn.neighbors import NearestNeighbors

        # float32 is scikit-learn's own fast path (it upcasts blocks to float64 internally).
        q, r = gen.reshape(n_gen, -1).astype(np.float32), train.reshape(n_train, -1).astype(np.float32)
        NearestNeighbors(n_neighbors=1, algorithm="brute").fit(r[:64]).kneighbors(q[:64])  # warm-up
        before = _reset_peak()
        t0 = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(r)
        dist, idx = nn.kneighbors(q)
        wall = time.perf_counter() - t0
        dist, idx = dist[:, 0], idx[:, 0]
    peak = _status_mb("VmHWM")
    np.savez(out, dist=dist, idx=idx)
    print(json.dumps({"method": method, "wall_s": wall, "peak_rss_mb": peak, "extra_mb": peak - before}))


def main() -> None:
    """Run both methods in subprocesses and print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-gen", type=int, default=10_000)
    p.add_argument("--n-train", type=int, default=60_000)
    p.add_argument("--threads", type=int, default=2, help="threads for both (OMP/MKL/torch)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.data, a.out)
        return
    data = f"/tmp/ganforge-bench-audit-{os.getpid()}-data.npz"
    np.savez(data, gen=make_images(a.n_gen, 1), train=make_images(a.n_train, 2))
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               OPENBLAS_NUM_THREADS=str(a.threads))
    rows, answers = [], {}
    for method in ("ganforge", "ganforge-small", "sklearn-brute"):
        out = f"/tmp/ganforge-bench-audit-{os.getpid()}-{method}.npz"
        res = subprocess.run(
            [sys.executable, __file__, "--worker", method, "--out", out, "--data", data],
            env=env, capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        answers[method] = np.load(out)
        os.unlink(out)
    os.unlink(data)
    g, s = answers["ganforge"], answers["sklearn-brute"]
    assert np.array_equal(g["idx"], answers["ganforge-small"]["idx"]), "chunk sizes changed the answer"
    same_idx = float(np.mean(g["idx"] == s["idx"]))
    max_dd = float(np.max(np.abs(g["dist"] - s["dist"])))
    print(f"k-NN (L2, k=1): {a.n_gen} generated vs {a.n_train} training 28x28 uint8 images, "
          f"{a.threads} threads")
    print(f"{'method (chunks)':<24}{'wall s':>10}{'peak RSS MB':>14}{'extra MB':>11}")
    for r in rows:
        chunks = "x".join(map(str, CHUNKS[r["method"]])) if r["method"] in CHUNKS else ""
        print(f"{r['method'] + (' ' + chunks if chunks else ''):<24}{r['wall_s']:>10.2f}{r['peak_rss_mb']:>14.0f}{r['extra_mb']:>11.0f}")
    print(f"same nearest index: {same_idx:.4%}   max |dist difference|: {max_dd:.3g}")
    print("(index differences can only be exact ties or float rounding in scikit-learn; "
          "ganforge's distances are exact for uint8 pixels)")


if __name__ == "__main__":
    main()
