"""FID maths against float64 SciPy and closed forms; float64 accumulation through torcheval."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torcheval.metrics import FrechetInceptionDistance

from ganforge.errors import GanforgeError
from ganforge.metrics.features import get_extractor
from ganforge.metrics.fid import (
    Float64FID,
    feature_stats,
    fid_from_features,
    fid_from_images,
    frechet_distance,
)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((ma - mb) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(scipy.linalg.sqrtm(sa @ sb).real))


def test_closed_form_diagonal_gaussians():
    # Commuting (diagonal) covariances: FID = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, abs=1e-12)


def test_isotropic_hand_value():
    # N(0, 4 I_2) vs N((3, 4), I_2): 25 + 2 * (2 - 1)^2 = 27.
    assert frechet_distance(torch.zeros(2), 4 * torch.eye(2), torch.tensor([3.0, 4.0]), torch.eye(2)) == pytest.approx(27.0)


def test_matches_scipy_reference_on_correlated_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(250, 6, generator=g, dtype=torch.float64) * 1.5 + 0.3
    ref = scipy_fid(a.numpy(), b.numpy())
    assert fid_from_features(a, b) == pytest.approx(ref, rel=1e-10)
    mu, sigma = feature_stats(a)
    assert torch.allclose(sigma, torch.from_numpy(np.cov(a.numpy(), rowvar=False)), atol=1e-12)
    assert torch.allclose(mu, a.mean(0))


def test_same_features_give_zero_and_batch_size_does_not_matter():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 5, generator=g)
    b = torch.randn(150, 5, generator=g) + 0.5
    assert abs(fid_from_features(a, a)) < 1e-9
    values = [fid_from_features(a, b, batch_size=bs) for bs in (1, 7, 64, 1000)]
    assert max(values) - min(values) < 1e-10


def test_large_magnitude_features_float64_beats_plain_float32_torcheval():
    # Unit-variance features around 3000: the one-pass covariance cancels badly in float32.
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2000, 6, generator=g, dtype=torch.float64) + 3000.0
    b = torch.randn(2000, 6, generator=g, dtype=torch.float64) * 1.2 + 3000.5
    ref = scipy_fid(a.numpy(), b.numpy())

    class AsFeatures(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], -1)

    plain = FrechetInceptionDistance(model=AsFeatures(), feature_dim=6)  # wants (N, 3, H, W): pack 6 as 3x2x1
    for s in range(0, 2000, 100):
        plain.update(a[s : s + 100].float().reshape(-1, 3, 2, 1), is_real=True)
        plain.update(b[s : s + 100].float().reshape(-1, 3, 2, 1), is_real=False)
    plain_err = abs(float(plain.compute()) - ref)
    ours_err = abs(fid_from_features(a, b, batch_size=100) - ref)
    assert ours_err < 1e-6 * ref
    assert plain_err > 1e3 * ours_err and plain_err > 1e-3 * ref


def test_float64_states_and_merge():
    m1, m2 = Float64FID(4), Float64FID(4)
    x = torch.randn(10, 4)
    m1.update(x[:5], True).update(x[5:], False)
    m2.update(x[:5], False).update(x[5:], True)
    assert m1.real_cov_sum.dtype == torch.float64
    m1.merge_state([m2])
    assert int(m1.num_real_images) == 10 and int(m1.num_fake_images) == 10
    assert abs(float(m1.compute())) < 1e-9


def test_fid_from_images_streams_through_a_backbone():
    g = torch.Generator().manual_seed(3)
    real = torch.randint(0, 256, (12, 1, 3, 3), dtype=torch.uint8, generator=g)
    fake = torch.randint(0, 200, (9, 1, 3, 3), dtype=torch.uint8, generator=g)
    ext = get_extractor("pixels")
    expected = scipy_fid(real.reshape(12, -1).double().numpy() / 255, fake.reshape(9, -1).double().numpy() / 255)
    assert fid_from_images(real, fake, ext, batch_size=4) == pytest.approx(expected, rel=1e-6)  # float32 pixels


def test_user_mistakes():
    with pytest.raises(GanforgeError, match="at least 2"):
        fid_from_features(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(GanforgeError, match="same backbone"):
        fid_from_features(torch.zeros(4, 3), torch.zeros(5, 2))
