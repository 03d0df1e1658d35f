"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel.

k(x, y) = (x . y / d + 1)^3. Over ``num_subsets`` random subsets of ``subset_size`` rows from each set
(drawn without replacement within a subset, from a seeded generator), the unbiased estimator

    MMD^2 = [sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i,j} k(x_i, y_j) / m^2

is averaged; its standard deviation over subsets (population, ddof=0, as torch-fidelity's ``kid_std``)
is reported too. As in StyleGAN2-ADA and torch-fidelity, the subset size is capped by the smaller set.
"""

from __future__ import annotations

import torch

from ganforge.errors import GanforgeError


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(x . y / d + 1)^3 for rows x (n, d), y (m, d) -> (n, m), in float64."""
    x, y = x.double(), y.double()
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between equal-size samples x, y (m, d), m >= 2, with the cubic kernel."""
    m = x.shape[0]
    if m < 2 or y.shape[0] != m:
        raise GanforgeError(f"unbiased MMD needs two samples of the same size >= 2, got {x.shape[0]} and {y.shape[0]}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(off - 2.0 * kxy.sum() / (m * m))


def kid(
    real: torch.Tensor, fake: torch.Tensor, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Registry entry: KID mean and standard deviation over random subsets.

    Args:
        real: (N_real, D) features of real images.
        fake: (N_fake, D) features of generated images.
        num_subsets: number of subset pairs drawn.
        subset_size: rows per subset; capped at min(N_real, N_fake).
        seed: seed of the subset draws (same seed, same value).

    Returns:
        {"kid_mean": ..., "kid_std": ...}; kid_std is 0 for one subset.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise GanforgeError(f"KID needs (N, D) features of the same D, got {tuple(real.shape)} and "
                            f"{tuple(fake.shape)}; extract both with the same backbone")
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise GanforgeError(f"KID needs at least 2 real and 2 generated images, got {real.shape[0]} and "
                            f"{fake.shape[0]}; pass more images")
    if num_subsets < 1:
        raise GanforgeError(f"num_subsets must be positive, got {num_subsets}")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(num_subsets):
        x = fake[torch.randperm(fake.shape[0], generator=g)[:m]]
        y = real[torch.randperm(real.shape[0], generator=g)[:m]]
        vals.append(mmd2_unbiased(x, y))
    t = torch.tensor(vals, dtype=torch.float64)
    return {"kid_mean": float(t.mean()), "kid_std": float(t.std(correction=0))}
