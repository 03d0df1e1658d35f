"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) on features.

Each sample gets a k-NN radius: the Euclidean distance to its k-th nearest neighbour in its own set
(itself excluded). With real radii r_i and generated radii f_j, and D the real x generated distances:

- precision = share of generated j inside some real ball: exists i with D_ij < r_i
- recall    = share of real i inside some generated ball: exists j with D_ij < f_j
- density   = sum over generated j of #{i : D_ij < r_i}, divided by k * N_generated
- coverage  = share of real i whose ball holds some generated sample: exists j with D_ij < r_i

Strict ``<`` as in Naeem et al.'s reference code (``prdc``). D is formed block by block
(``chunk`` x ``chunk`` float64), so memory does not grow with N_real * N_generated; the radii come from
``ganforge.metrics.knn`` (same bounded memory).
"""

from __future__ import annotations

import torch

from ganforge.errors import GanforgeError
from ganforge.metrics.knn import knn


def knn_radii(features: torch.Tensor, nearest_k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance of each row to its ``nearest_k``-th nearest other row, float64 (N,)."""
    # The (k+1)-th smallest distance including the row itself (distance 0) is the k-th excluding it,
    # also with duplicated rows.
    dist, _ = knn(features, features, k=nearest_k + 1, metric="l2", query_chunk=chunk, ref_chunk=4 * chunk)
    return dist[:, nearest_k]


def _dist_block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0).sqrt_()


def prdc(real: torch.Tensor, fake: torch.Tensor, nearest_k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Registry entry: precision, recall, density and coverage.

    Args:
        real: (N_real, D) features of real images, N_real > nearest_k.
        fake: (N_fake, D) features of generated images, N_fake > nearest_k.
        nearest_k: k of the k-NN radii (5 in both papers' defaults for density/coverage, 3 in
            StyleGAN2-ADA's pr50k3).
        chunk: rows per distance block; peak memory ~ chunk^2 float64.

    Returns:
        {"precision", "recall", "density", "coverage"}.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise GanforgeError(f"precision/recall need (N, D) features of the same D, got {tuple(real.shape)} and "
                            f"{tuple(fake.shape)}; extract both with the same backbone")
    need = nearest_k + 1
    if real.shape[0] < need or fake.shape[0] < need:
        raise GanforgeError(f"precision/recall with k={nearest_k} need at least {need} real and {need} generated "
                            f"images, got {real.shape[0]} and {fake.shape[0]}; pass more images or lower k")
    real, fake = real.double(), fake.double()
    r_rad, f_rad = knn_radii(real, nearest_k, chunk), knn_radii(fake, nearest_k, chunk)
    n_r, n_f = real.shape[0], fake.shape[0]
    precision_hit = torch.zeros(n_f, dtype=torch.bool)
    density_count = torch.zeros(n_f, dtype=torch.float64)
    recall_hit = torch.zeros(n_r, dtype=torch.bool)
    coverage_hit = torch.zeros(n_r, dtype=torch.bool)
    for rs in range(0, n_r, chunk):
        rr = r_rad[rs : rs + chunk, None]
        for fs in range(0, n_f, chunk):
            d = _dist_block(real[rs : rs + chunk], fake[fs : fs + chunk])  # (nr, nf)
            inside_real = d < rr  # generated j inside real ball i
            precision_hit[fs : fs + chunk] |= inside_real.any(0)
            density_count[fs : fs + chunk] += inside_real.sum(0)
            coverage_hit[rs : rs + chunk] |= inside_real.any(1)
            recall_hit[rs : rs + chunk] |= (d < f_rad[None, fs : fs + chunk]).any(1)
    return {
        "precision": float(precision_hit.double().mean()),
        "recall": float(recall_hit.double().mean()),
        "density": float(density_count.sum() / (nearest_k * n_f)),
        "coverage": float(coverage_hit.double().mean()),
    }
