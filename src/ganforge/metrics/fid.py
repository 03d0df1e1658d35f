"""Fréchet Inception Distance: pure float64 maths, accumulated through torcheval.

FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) between Gaussians fitted to two sets of
features (Heusel et al. 2017).

Numerics. torcheval's ``FrechetInceptionDistance`` (0.0.7) keeps float32 states ``sum x`` and
``sum x x^T`` and forms the covariance as ``(sum x x^T - n mu mu^T) / (n - 1)``. That one-pass formula
cancels catastrophically when |mu| >> sigma: in float32 the sums carry ~1e-7 relative error, i.e. an
absolute covariance error of ~1e-7 * mu^2, which for mu ~ 1e3 swamps unit variances. Inception pool
features are moderate (0..~10), so plain torcheval is usually fine there, but other backbones are not.
``Float64FID`` subclasses it: the same update/merge/compute, states in float64 (error ~1e-16 * mu^2),
features fed directly as (N, D) tensors (extraction lives in ``ganforge.metrics.features``), and the
trace term by ``frechet_distance`` (symmetric eigen-decompositions, float64) instead of torcheval's
eigenvalues of the non-symmetric product.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    # torcheval 0.0.7 scripts a helper at import, and torch deprecates torch.jit.script: not ours to fix.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from torcheval.metrics import FrechetInceptionDistance

from ganforge.errors import GanforgeError


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of features, in float64 and two-pass (no cancellation).

    Args:
        features: (N, D) tensor, N >= 2.

    Returns:
        (mu (D,), sigma (D, D)), float64.
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise GanforgeError(f"FID statistics need (N, D) features with N >= 2, got {tuple(features.shape)}; "
                            "use at least 2 images (thousands for a meaningful FID)")
    x = features.double()
    mu = x.mean(0)
    xc = x - mu
    return mu, (xc.T @ xc) / (x.shape[0] - 1)


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of
    S1^(1/2) S2 S1^(1/2), which is symmetric PSD and has the same eigenvalues as S1 S2; eigenvalues a
    rounding error below zero are clamped, so rank-deficient covariances (N < D) give a finite result.

    Args:
        mu1: (D,) mean of the first Gaussian.
        sigma1: (D, D) covariance of the first Gaussian.
        mu2: (D,) mean of the second Gaussian.
        sigma2: (D, D) covariance of the second Gaussian.

    Returns:
        The distance (>= 0 up to rounding) as a Python float.
    """
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise GanforgeError(f"FID statistics disagree in size: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                            f"sigma {tuple(s1.shape)}/{tuple(s2.shape)}; compute both with the same backbone")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_sqrt)


class Float64FID(FrechetInceptionDistance):
    """torcheval's FID with float64 states, fed (N, D) features instead of images.

    Use ``update(features, is_real)`` with features from a ``FeatureExtractor``; ``merge_state`` and
    ``compute`` are torcheval's, ``compute`` returning a float64 scalar tensor.
    """

    def __init__(self, feature_dim: int, device: str | torch.device | None = None):
        """Create the metric for ``feature_dim``-d features."""
        device = torch.device(device) if isinstance(device, str) else device  # torcheval's Metric.to() does so too
        super().__init__(model=torch.nn.Identity(), feature_dim=feature_dim, device=device)
        # Re-register torcheval's sums in float64 (see the module docstring for why).
        for name in ("real_sum", "fake_sum"):
            self._add_state(name, torch.zeros(feature_dim, dtype=torch.float64, device=device))
        for name in ("real_cov_sum", "fake_cov_sum"):
            self._add_state(name, torch.zeros((feature_dim, feature_dim), dtype=torch.float64, device=device))
        self.feature_dim = feature_dim

    def _FID_update_input_check(self, images: torch.Tensor, is_real: bool) -> None:
        # torcheval checks for (N, 3, H, W) images; here the "images" are (N, D) features, and the
        # identity model passes them on. Casting here makes the sums float64 products, not float32.
        if not torch.is_tensor(images) or images.ndim != 2 or images.shape[1] != self.feature_dim:
            raise GanforgeError(f"FID update wants ({'N'}, {self.feature_dim}) features, got "
                                f"{tuple(getattr(images, 'shape', ()))}; extract them with the same backbone")
        if not isinstance(is_real, bool):
            raise GanforgeError("is_real must be True or False")

    @torch.inference_mode()
    def update(self, images: torch.Tensor, is_real: bool) -> Float64FID:
        """Add a batch of (N, D) features of real (``is_real=True``) or generated images."""
        self._FID_update_input_check(images, is_real)
        return super().update(images.to(self.device, torch.float64), is_real)

    def _calculate_frechet_distance(self, mu1, sigma1, mu2, sigma2) -> torch.Tensor:
        return torch.tensor(frechet_distance(mu1, sigma1, mu2, sigma2), dtype=torch.float64)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1024) -> float:
    """FID between two (N, D) feature sets, accumulated in batches through ``Float64FID``.

    Args:
        real: (N_real, D) features of real images, N_real >= 2.
        fake: (N_fake, D) features of generated images, N_fake >= 2.
        batch_size: rows per update; the result does not depend on it beyond float64 rounding.

    Returns:
        The FID.
    """
    for name, f in (("real", real), ("generated", fake)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise GanforgeError(f"FID needs at least 2 {name} feature rows (N, D), got {tuple(f.shape)}; "
                                "pass more images")
    if real.shape[1] != fake.shape[1]:
        raise GanforgeError(f"real features are {real.shape[1]}-d, generated {fake.shape[1]}-d; "
                            "extract both with the same backbone")
    metric = Float64FID(real.shape[1])
    for feats, is_real in ((real, True), (fake, False)):
        for s in range(0, feats.shape[0], batch_size):
            metric.update(feats[s : s + batch_size], is_real)
    return float(metric.compute())


def fid_from_images(real: torch.Tensor, fake: torch.Tensor, extractor, batch_size: int = 64) -> float:
    """FID of uint8 image sets through a backbone, streamed: extract a batch, update torcheval, repeat.

    Args:
        real: uint8 (N_real, C, H, W) real images.
        fake: uint8 (N_fake, C, H, W) generated images.
        extractor: a ``ganforge.metrics.features.FeatureExtractor`` with a known ``dim``.
        batch_size: images per forward pass and per update.

    Returns:
        The FID; record ``extractor.record()`` beside it.
    """
    dim = extractor.dim if extractor.dim is not None else int(extractor.extract(real[:1]).shape[1])
    if len(real) < 2 or len(fake) < 2:
        raise GanforgeError(f"FID needs at least 2 real and 2 generated images, got {len(real)} and {len(fake)}; "
                            "pass more images")
    metric = Float64FID(dim)
    for images, is_real in ((real, True), (fake, False)):
        for s in range(0, len(images), batch_size):
            metric.update(extractor.extract(images[s : s + batch_size], batch_size), is_real)
    return float(metric.compute())


def fid(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Registry entry: FID of generated against real features.

    Args:
        real: (N_real, D) features of real images.
        fake: (N_fake, D) features of generated images.
        batch_size: rows per torcheval update.

    Returns:
        {"fid": value}.
    """
    return {"fid": fid_from_features(real, fake, batch_size)}
