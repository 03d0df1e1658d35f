"""KID and precision/recall/density/coverage against brute-force NumPy references and known cases."""

import numpy as np
import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics import METRICS, compute_metrics, get_metric, metric_key
from ganforge.metrics.kid import kid, mmd2_unbiased
from ganforge.metrics.prdc import prdc


def np_mmd2(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()


def np_prdc(real, fake, k):
    """Naeem et al.'s reference algorithm with full distance matrices."""
    dist = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731
    r_rad = np.sort(dist(real, real), axis=1)[:, k]
    f_rad = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    return {
        "precision": (d < r_rad[:, None]).any(0).mean(),
        "recall": (d < f_rad[None, :]).any(1).mean(),
        "density": (d < r_rad[:, None]).sum(0).mean() / k,
        "coverage": (d.min(1) < r_rad).mean(),
    }


def test_mmd_hand_value():
    # d=1, x = (0, 1), y = (0, 0): k(0, .) = 1, k(1, 1) = 8.
    # Kxx off-diagonal: 1 + 1; Kyy off-diagonal: 1 + 1; Kxy all 1 -> (2 + 2) / 2 - 2 * 4 / 4 = 0.
    assert mmd2_unbiased(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [0.0]])) == pytest.approx(0.0)
    # x = (1, 2), y = (0, 0): Kxx off = 2 * (2 + 1)^3, Kyy off = 2, Kxy all 1 -> 56 / 2 - 2 * 4 / 4 = 26.
    assert mmd2_unbiased(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]])) == pytest.approx(26.0)


def test_kid_matches_numpy_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(np_mmd2(x.double().numpy(), y.double().numpy()), rel=1e-10)
    one = kid(y, x, num_subsets=1, subset_size=40)  # full sets: one subset is the whole sample
    assert one["kid_mean"] == pytest.approx(np_mmd2(x.double().numpy(), y.double().numpy()), rel=1e-10)
    assert one["kid_std"] == 0.0
    a, b = kid(y, x, num_subsets=10, subset_size=20, seed=3), kid(y, x, num_subsets=10, subset_size=20, seed=3)
    assert a == b and a["kid_std"] > 0


def test_prdc_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(37, 4, generator=g), torch.randn(29, 4, generator=g) * 1.3 + 0.4
    ref = np_prdc(real.double().numpy(), fake.double().numpy(), 3)
    for chunk in (5, 16, 1000):
        got = prdc(real, fake, nearest_k=3, chunk=chunk)
        assert got == pytest.approx(ref, abs=1e-12)


def test_prdc_known_cases():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 3, generator=g)
    same = prdc(x, x.clone(), nearest_k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(x, x + 1000.0, nearest_k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_registry_and_keys():
    assert set(METRICS) == {"fid", "kid", "prdc"}
    with pytest.raises(GanforgeError, match="use one of fid, kid, prdc"):
        get_metric("fdi")
    x = torch.randn(20, 3)
    out = compute_metrics(["fid", "kid", "prdc"], x, x + 0.1)
    assert set(out) == {"fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage"}
    assert metric_key("fid", 10000, "train") == "fid_10k_train"
    assert metric_key("precision", 500, "test") == "precision_500_test"


def test_too_few_images():
    with pytest.raises(GanforgeError, match="at least 6 real and 6 generated"):
        prdc(torch.randn(5, 2), torch.randn(9, 2), nearest_k=5)
    with pytest.raises(GanforgeError, match="at least 2 real and 2 generated"):
        kid(torch.randn(1, 2), torch.randn(9, 2))
