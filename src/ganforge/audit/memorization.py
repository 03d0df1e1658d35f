"""Nearest-neighbour memorisation audit: statistics, verdict, JSON report and a sheet of closest pairs.

For every generated image, its nearest training image (exact k-NN, ``ganforge.audit.knn``); for
every held-out real image (never trained on), the same. The held-out distances are the baseline of
what "close" means for this data. From them:

- ``generated_to_train`` / ``heldout_to_train``: min, 1st/5th/50th percentiles, mean of NN distances.
- ``fraction_below_baseline``: share of generated images nearer to a training image than the
  held-out distances' ``baseline_quantile`` (1st percentile by default). A fresh sample from the data
  distribution scores about that quantile (1 %); a copier scores up to 1.
- ``exact_duplicates``: generated images equal, pixel for pixel (uint8 bytes hashed), to a training image.
- ``z_u``: the data-copying statistic of Meehan, Chaudhuri & Dasgupta (2020, "A non-parametric test to
  detect data-copying in generative models"): the Mann-Whitney U of generated-to-train against
  held-out-to-train NN distances, normalised to a z-score (tie-corrected normal approximation).
  Z_U << 0: generated images sit closer to the training set than unseen real images do (copying);
  Z_U >> 0: farther (underfitting). Over the whole space (one cell) always; with ``cells > 0`` also
  the paper's C_T: k-means cells fitted on (a subsample of) the training set in the audit space,
  generated and held-out images assigned to their nearest centre, Z_U per cell, and C_T = the mean of
  the per-cell Z_U weighted by the held-out share of each cell, over cells holding at least
  ``min_cell_samples`` generated and held-out images. Deviation from the paper: the distances are to
  the nearest image of the whole training set, not of the cell's training images only.

Flips. A horizontal flip of a training image is not near that image in pixel space, so with
``check_flips`` (default) the references are the training set plus its mirror images, for generated
and held-out images alike (the baseline stays comparable), and duplicates are hashed against both.

Distances see through the mirror image and shifts of up to ``max_shift`` pixels with the default
``invariance="shift"`` (``ganforge.audit.invariant``).

Per-image flags (conformal). With baseline scores h_1..h_n (held-out images against train, or each
training image against the others: ``baseline``), a generated image scoring s gets
p = (1 + #{h_j <= s}) / (n + 1) and is flagged when p <= alpha. For an image drawn like the baseline
images and scored the same way, P(p <= alpha) <= alpha whatever the distribution.

Set-level test. With k = floor(alpha (n + 1)), an image is flagged exactly when s < h_(k) (the k-th
smallest baseline score), and F(h_(k)) ~ Beta(k, n + 1 - k); so under honest generation the number of
flags among N images is Beta-Binomial(N, k, n + 1 - k) (conservative with ties). A plain binomial
would ignore the randomness of the threshold and fail honest sets too often. The audit fails when
P(X >= observed) < ``test_level``.

Verdict: fail if any of exact_duplicates > max_exact_duplicates, the flag test, fraction_below_baseline >
max_fraction_below_baseline, z_u < min_z_u, or (with cells) c_t < min_z_u (``AuditThresholds``);
otherwise pass.

Baseline. The held-out split when it has at least 1/alpha - 1 images (fewer cannot reach p <= alpha);
otherwise leave-one-out within the training set: each training image (a seeded sample of at most
``max_baseline``) scored against the others, never against itself or its own mirror image. Its
distances are to M - 1 images instead of M, a negligible difference for a few hundred images or more.
The calibration holds when the baseline images are drawn like the generated ones would be by an honest
generator: from the training source (an ``audit`` split carved at ingest, or leave-one-out), not an
official split drawn apart (``ganforge.audit.run.choose_baseline``). Baseline images within the
near-duplicate radius of a training image (``NearDuplicates``) are left out: the same picture, not an
unseen one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator
from scipy.stats import betabinom, rankdata

from ganforge.audit.invariant import VERSION, Match, blur_radius, nearest_train, pixel_space, refine
from ganforge.errors import GanforgeError
from ganforge.metrics.knn import knn
from ganforge.outputs import save_npy_atomic, write_text_atomic

DEFAULT_ALPHA = 0.001
BaselineKind = Literal["heldout", "leave-one-out"]  # what calibrates the flags (``plan_baseline``)


class AuditThresholds(BaseModel):
    """Pass/fail thresholds of the memorisation audit and the sample sizes it needs."""

    max_exact_duplicates: int = Field(0, ge=0, description="generated images allowed to equal a training "
                                      "image (or its mirror image with check_flips) pixel for pixel")
    baseline_quantile: float = Field(0.01, gt=0, lt=0.5, description="quantile of held-out-to-train NN "
                                     "distances used as the 'too close' threshold (0.01 = 1st percentile)")
    max_fraction_below_baseline: float = Field(0.05, ge=0, le=1, description="largest share of generated "
                                               "images allowed below that threshold; a fresh sample scores "
                                               "about baseline_quantile")
    min_z_u: float = Field(-3.0, description="smallest data-copying Z_U allowed (Meehan et al. 2020); "
                           "unseen real images score ~N(0, 1)")
    cells: int = Field(0, ge=0, description="k-means cells for Meehan et al.'s C_T; 0 computes only the "
                       "global Z_U")
    min_cell_samples: int = Field(10, ge=2, description="fewest generated and held-out images a cell needs "
                                  "to enter C_T")
    alpha: float | None = Field(None, gt=0, lt=0.5, description="per-image flag level: an image is flagged when "
                                "fewer than a fraction alpha of unseen images are as close to the training set. "
                                "None: 0.001, or 1/(n+1) for a baseline of n < 999 images")
    test_level: float = Field(0.01, gt=0, lt=0.5, description="level of the set-level Beta-Binomial test on the "
                              "number of flags (the chance that an honest set fails it)")
    invariance: Literal["none", "mirror", "shift"] = Field("shift", description="transformations seen through: "
                                                           "none, mirror, or mirror + shifts (pixels only)")
    levels: float = Field(0.05, ge=0, lt=0.5, description="dead zone at both ends of the pixel range, as a fraction "
                          "of it: values that close to black or white become black or white before the blur (noise "
                          "clipped at black or white leaves a veil no blur removes); 0 keeps every value")
    blur: float | Literal["auto"] = Field("auto", description="Gaussian blur sigma in pixels applied before pixel "
                                          "distances (noise on a copy averages out); 0 compares raw pixels; auto: the "
                                          "largest of 1.5, 1, 0.5, 0 that leaves at least half the image compared "
                                          "(resolved_blur)")
    max_shift: int = Field(2, ge=0, le=8, description="largest shift in pixels along each axis (shift)")
    candidates: int = Field(16, ge=1, le=4096, description="exactly compared candidates per shift (shift)")
    projection_dims: int = Field(32, ge=1, le=1024, description="principal directions of the lower-bound "
                                 "projection (shift)")
    min_generated: int = Field(20, ge=2, description="fewest generated images audited (Z_U's normal approximation)")
    max_baseline: int = Field(10_000, ge=2, description="most training images scored for a leave-one-out baseline")

    @field_validator("blur", mode="before")
    @classmethod
    def _blur(cls, v):
        return check_blur(v)

    def resolved(self, height: int, width: int) -> AuditThresholds:
        """These thresholds with ``blur`` a number for images of ``height`` x ``width`` px."""
        if self.blur != "auto":
            return self
        return self.model_copy(update={"blur": resolved_blur(height, width, self.max_shift if self.invariance ==
                                                             "shift" else 0)})


def check_blur(v):
    """``blur``: a sigma in [0, 8] pixels or "auto" (text from a flag or config file is read as either)."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    try:
        sigma = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"blur {v!r} is neither a sigma in pixels nor auto; pass e.g. 1.5 or auto") from None
    if not 0 <= sigma <= 8:
        raise ValueError(f"blur {sigma:g} is outside [0, 8]; pass a sigma in pixels or auto")
    return sigma


# Measured in benchmarks/audit.py (planted noisy copies, sigma = 0.05 of the range): on 28 px Fashion-MNIST
# blur 1.5 flags more of them than 1 (which flags 92 of 100); on 16 px digits 1.5 leaves a 6 px window
# and misses 3 of 10 while 1 flags all. Wider blurs were not measured, so auto stops at 1.5.
AUTO_BLURS = (1.5, 1.0, 0.5, 0.0)


def resolved_blur(height: int, width: int, max_shift: int) -> float:
    """``blur="auto"``: the largest sigma of ``AUTO_BLURS`` whose shift and blur border
    (``max_shift + ceil(2 sigma)`` on each side) leaves at least half the image side compared."""
    side = min(height, width)
    for sigma in AUTO_BLURS:
        if side - 2 * (max_shift + blur_radius(sigma)) >= side / 2:
            return sigma
    return 0.0


class DistanceSummary(BaseModel):
    """Summary of a set of nearest-neighbour distances."""

    n: int
    min: float
    p1: float
    p5: float
    p50: float
    mean: float


class NearestPair(BaseModel):
    """A generated image and its nearest training image (after the best mirror/shift)."""

    generated_index: int
    train_index: int
    flipped: bool = Field(description="the match is the training image's mirror image")
    shift: tuple[int, int] = Field((0, 0), description="(dy, dx) pixels the generated image was moved to match")
    distance: float
    p_value: float | None = Field(None, description="conformal p-value (flagged images)")


class AuditReport(BaseModel):
    """Result of ``run_audit``; ``to_json()`` is the report artefact."""

    verdict: Literal["pass", "fail"]
    reasons: list[str] = Field(description="why it failed; empty when it passed")
    space: str = Field(description="'pixels' or the backbone name")
    space_sha256: str = Field(description="weights hash of the backbone (descriptor hash for pixels)")
    metric: Literal["l2", "l1"]
    invariance: str
    n_generated: int
    n_train: int
    n_heldout: int
    baseline: Literal["heldout", "leave-one-out"] = Field(description="what calibrated the flags")
    baseline_split: str | None = Field(None, description="the split whose images calibrated the flags (None: "
                                       "training images left out one at a time)")
    baseline_reason: str = Field("", description="why this baseline")
    n_baseline: int = Field(description="baseline distances that calibrate (held-out images, or training images "
                            "left out), near-duplicates of training images left out")
    duplicate_radius: float = Field(0.0, description="near-duplicate radius: as far as a training image can be from "
                                    "a copy of it with Gaussian noise of 5% of the range (the farthest of 256), at "
                                    "most a fifth of the baseline's median distance")
    baseline_near_duplicates: int = Field(0, description="baseline images within the radius of a training image: "
                                          "the same picture, not an unseen one, so left out of the baseline")
    train_near_duplicates: int = Field(0, description="of train_checked training images, those with another "
                                       "training image within the radius")
    train_checked: int = Field(0, description="training images checked for a near-duplicate in the training set")
    train_exact_duplicates: int = Field(0, description="training images equal, byte for byte, to another one")
    baseline_cached: bool = Field(False, description="the baseline distances came from the cache")
    alpha: float = Field(description="per-image flag level used")
    flag_threshold: float = Field(description="k-th smallest baseline distance, k = floor(alpha (n+1)): "
                                  "images nearer than this are flagged")
    flagged: list[NearestPair] = Field(description="flagged images, smallest p-value first")
    n_flagged: int
    expected_flagged: float = Field(description="flags expected from honest images: N k / (n + 1)")
    flag_test_p_value: float = Field(description="P(X >= n_flagged), X ~ Beta-Binomial(N, k, n + 1 - k)")
    generated_to_train: DistanceSummary
    heldout_to_train: DistanceSummary
    baseline_threshold: float = Field(description="held-out NN distance at baseline_quantile")
    fraction_below_baseline: float
    exact_duplicates: int
    z_u: float
    c_t: float | None = Field(None, description="Meehan et al.'s cell-averaged Z_U; None without cells")
    cells_used: int = Field(0, description="cells that entered C_T")
    nearest_pairs: list[NearestPair] = Field(description="closest generated/training pairs, closest first")
    brute_force_queries: int = Field(0, description="queries whose nearest image was found by brute force")
    thresholds: AuditThresholds

    def to_json(self) -> str:
        """The report as indented JSON."""
        return self.model_dump_json(indent=2)


# ---- pure statistics -------------------------------------------------------------------------------


def summarize(dist: torch.Tensor) -> DistanceSummary:
    """min, 1st/5th/50th percentiles (linear interpolation) and mean of distances (N,)."""
    d = dist.double().flatten()
    q = torch.quantile(d, torch.tensor([0.01, 0.05, 0.5], dtype=torch.float64))
    return DistanceSummary(n=d.numel(), min=float(d.min()), p1=float(q[0]), p5=float(q[1]), p50=float(q[2]),
                           mean=float(d.mean()))


def fraction_below_baseline(gen_dist: torch.Tensor, heldout_dist: torch.Tensor, quantile: float) -> tuple[float, float]:
    """(threshold, share): the held-out distances' quantile and the share of generated below it."""
    threshold = float(torch.quantile(heldout_dist.double().flatten(), quantile))
    return threshold, float((gen_dist.double().flatten() < threshold).double().mean())


def conformal_p_values(scores: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """p_i = (1 + #{baseline_j <= scores_i}) / (n + 1): small when an image is nearer than unseen ones are.

    Args:
        scores: (N,) distances of the judged images.
        baseline: (n,) distances of images never trained on, scored the same way.

    Returns:
        (N,) float64 p-values in [1/(n+1), 1].
    """
    b = torch.sort(baseline.double().flatten()).values
    below = torch.searchsorted(b, scores.double().flatten(), right=True)
    return (1.0 + below.double()) / (len(b) + 1.0)


def calibration_rank(alpha: float, n_baseline: int) -> int:
    """k = floor(alpha (n + 1)): p <= alpha exactly when a score is below the k-th smallest baseline score."""
    return math.floor(alpha * (n_baseline + 1) + 1e-9)


def flag_test(n_flagged: int, n_generated: int, n_baseline: int, alpha: float) -> tuple[float, float]:
    """(expected flags, p-value P(X >= n_flagged)) with X ~ Beta-Binomial(N, k, n + 1 - k).

    Raises:
        GanforgeError: alpha below 1/(n+1), where no image can ever be flagged.
    """
    k = calibration_rank(alpha, n_baseline)
    if k < 1:
        raise GanforgeError(f"alpha={alpha:g} needs at least {math.ceil(1 / alpha) - 1} baseline images, the baseline "
                            f"has {n_baseline}; pass --alpha {1 / (n_baseline + 1):.4g} or more")
    a, b = k, n_baseline + 1 - k
    return n_generated * a / (a + b), float(betabinom.sf(n_flagged - 1, n_generated, a, b))


def min_generated_for_test(n_baseline: int, alpha: float, level: float, limit: int = 1_000_000) -> int:
    """Fewest generated images for which the flag test can fail at all: P(X >= N) < level when all N flag."""
    k = calibration_rank(alpha, n_baseline)
    n = 1
    while n <= limit and float(betabinom.pmf(n, n, k, n_baseline + 1 - k)) >= level:
        n *= 2
    lo, hi = n // 2 + 1, n  # bisect the last doubling step (P(all flagged) decreases with N)
    while lo < hi:
        mid = (lo + hi) // 2
        if float(betabinom.pmf(mid, mid, k, n_baseline + 1 - k)) < level:
            hi = mid
        else:
            lo = mid + 1
    return max(1, lo)


def mann_whitney_z(gen_dist: torch.Tensor, heldout_dist: torch.Tensor) -> float:
    """Meehan et al.'s Z_U: z-score of U = #{(i, j): gen_i > heldout_j} + ties / 2.

    Args:
        gen_dist: (m,) generated-to-train NN distances.
        heldout_dist: (n,) held-out-to-train NN distances.

    Returns:
        (U - m n / 2) / sqrt(var U), var U tie-corrected; 0.0 when all distances are equal.
    """
    g, h = gen_dist.double().flatten().numpy(), heldout_dist.double().flatten().numpy()
    m, n = len(g), len(h)
    ranks = rankdata(np.concatenate([g, h]))  # average ranks for ties
    u = ranks[:m].sum() - m * (m + 1) / 2
    _, counts = np.unique(np.concatenate([g, h]), return_counts=True)
    total = m + n
    var = m * n / 12.0 * ((total + 1) - float((counts**3 - counts).sum()) / (total * (total - 1)))
    return 0.0 if var <= 0 else float((u - m * n / 2.0) / math.sqrt(var))


def cell_z_u(
    gen_dist: torch.Tensor, heldout_dist: torch.Tensor, gen_cell: torch.Tensor, heldout_cell: torch.Tensor,
    min_cell_samples: int,
) -> tuple[float | None, int]:
    """Meehan et al.'s C_T: per-cell Z_U averaged with the held-out share of each cell as weight.

    Args:
        gen_dist: (m,) generated-to-train NN distances.
        heldout_dist: (n,) held-out-to-train NN distances.
        gen_cell: (m,) cell id of each generated image.
        heldout_cell: (n,) cell id of each held-out image.
        min_cell_samples: a cell enters only with at least this many generated and held-out images.

    Returns:
        (C_T or None when no cell qualifies, number of cells used).
    """
    num, den, used = 0.0, 0.0, 0
    for c in torch.unique(torch.cat([gen_cell, heldout_cell])):
        g, h = gen_dist[gen_cell == c], heldout_dist[heldout_cell == c]
        if len(g) >= min_cell_samples and len(h) >= min_cell_samples:
            w = len(h) / len(heldout_dist)
            num, den, used = num + w * mann_whitney_z(g, h), den + w, used + 1
    return (num / den if used else None), used


def _assign_cells(train_v, gen_v, held_v, cells: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on a seeded subsample (<= 10k) of the training vectors; nearest-centre cell ids."""
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(0)
    sub = train_v[torch.randperm(len(train_v), generator=g)[:10_000]].reshape(min(len(train_v), 10_000), -1)
    if len(sub) < cells:
        raise GanforgeError(f"{cells} cells need at least {cells} training images, got {len(sub)}; use fewer cells")
    centres = KMeans(n_clusters=cells, n_init=1, random_state=0).fit(sub.double().numpy()).cluster_centers_
    centres = torch.from_numpy(centres)
    kw = dict(k=1, device=device, progress=None)  # a few centres: quick, no display
    return knn(gen_v, centres, **kw)[1][:, 0], knn(held_v, centres, **kw)[1][:, 0]


def image_hashes(images: torch.Tensor) -> list[str]:
    """SHA-256 of each uint8 image's (C, H, W) bytes, shape included."""
    x = images.contiguous().numpy()
    return [hashlib.sha256(repr(x.shape[1:]).encode() + x[i].tobytes()).hexdigest() for i in range(len(x))]


def chunked_hashes(images: torch.Tensor, mirror: bool = False):
    """``image_hashes`` of uint8 images (and, with ``mirror``, of their mirror images), hashed in chunks so no
    second copy of a large training set is made."""
    for s in range(0, len(images), 4096):
        chunk = images[s : s + 4096]
        yield from image_hashes(chunk)
        if mirror:
            yield from image_hashes(torch.flip(chunk, dims=[-1]))


def count_exact_duplicates(generated: torch.Tensor, references: torch.Tensor, mirror: bool = False) -> int:
    """Generated uint8 images whose bytes equal some reference image's (or, with ``mirror``, its mirror's)."""
    known = set(chunked_hashes(references, mirror))
    return sum(h in known for h in image_hashes(generated))


# ---- sheet -----------------------------------------------------------------------------------------


def nearest_pairs_sheet(
    generated: torch.Tensor,
    train: torch.Tensor,
    idx: torch.Tensor,
    dist: torch.Tensor,
    n_pairs: int,
    path: str | Path,
    pairs_per_row: int = 4,
    flipped: torch.Tensor | None = None,
    first: list[int] | None = None,
) -> Path:
    """PNG sheet of generated/training pairs side by side: ``first`` (flagged images), then closest first.

    Args:
        generated: uint8 (N, C, H, W) generated images.
        train: uint8 (M, C, H, W) reference images that ``idx`` points into.
        idx: (N,) or (N, k) nearest reference index per generated image (first column used).
        dist: (N,) or (N, k) the matching distances.
        n_pairs: pairs shown (at most N).
        path: where the PNG goes (parent folders are created).
        pairs_per_row: pairs per sheet row; within a pair the generated image is on the left.
        flipped: (N,) bool, the match is the training image's mirror image (drawn mirrored).
        first: generated indices shown before the others, in this order.

    Returns:
        The PNG's path.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    idx, dist = idx.reshape(len(generated), -1)[:, 0], dist.reshape(len(generated), -1)[:, 0]
    shown = list(first or [])
    rest = set(shown)
    shown += [int(j) for j in torch.sort(dist.double(), stable=True).indices if int(j) not in rest]
    order = shown[: max(1, min(n_pairs, len(generated)))]

    def match(j):
        ref = train[idx[j]]
        return torch.flip(ref, dims=[-1]) if flipped is not None and bool(flipped[j]) else ref

    tiles = torch.stack([t for j in order for t in (generated[j], match(j))])
    grid = make_grid(tiles.float() / 255.0, nrow=2 * pairs_per_row, padding=2, pad_value=1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path


# ---- the audit, step by step: plan, space, baseline, scoring, decision, report ----------------------


def _check_images(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        raise GanforgeError(f"{name} images must be a uint8 tensor (N, C, H, W), got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}; "
                            "convert them to 0..255 uint8")


def plan_baseline(n_train: int, n_heldout: int | None, th: AuditThresholds) -> tuple[BaselineKind, int, float]:
    """(baseline kind, its size, alpha): held-out when it can reach alpha, else leave-one-out in train.

    Raises:
        GanforgeError: neither the held-out split nor the training set can calibrate the asked alpha.
    """
    alpha = th.alpha if th.alpha is not None else DEFAULT_ALPHA
    need = math.ceil(1.0 / alpha - 1e-9) - 1  # n + 1 >= 1/alpha: the smallest p-value reaches alpha
    if n_heldout is not None and n_heldout >= max(need, 2):
        return "heldout", n_heldout, alpha
    n_loo = min(n_train, th.max_baseline)
    if n_loo >= max(need, 2):
        return "leave-one-out", n_loo, alpha
    best = max(n_heldout or 0, n_loo)
    if th.alpha is None and best >= 2:  # the default alpha follows a small baseline down to what it can reach
        kind: BaselineKind = "heldout" if n_heldout is not None and n_heldout >= n_loo else "leave-one-out"
        return kind, best, 1.0 / (best + 1)
    raise GanforgeError(f"alpha={alpha:g} needs at least {need} baseline images; the held-out split has "
                        f"{n_heldout or 0} and a leave-one-out baseline {n_loo}; pass --alpha "
                        f"{1.0 / (best + 1):.4g} or more, or use a larger dataset")


def check_generated_count(n_generated: int, n_baseline: int, alpha: float, th: AuditThresholds) -> None:
    """Enough generated images for Z_U and for the flag test to be able to fail at ``test_level``.

    Raises:
        GanforgeError: too few generated images, naming how many are needed.
    """
    need = max(th.min_generated, min_generated_for_test(n_baseline, alpha, th.test_level))
    if n_generated < need:
        raise GanforgeError(f"the audit needs at least {need} generated images, got {n_generated}; generate more (--n)")


def baseline_key(th: AuditThresholds, kind: str, split: str | None, space: str, space_sha: str, metric: str,
                 n_baseline: int, alpha: float) -> str:
    """File name (no suffix) of cached baseline distances: everything that changes them, hashed."""
    k_ref = _tail_rank(alpha, n_baseline, th)
    parts = {"baseline": kind, "split": split, "space": space, "space_sha256": space_sha, "metric": metric,
             "invariance": th.invariance, "blur": th.blur if space == "pixels" else 0,
             "levels": th.levels if space == "pixels" else 0, "max_shift": th.max_shift, "candidates": th.candidates,
             "projection_dims": th.projection_dims, "n": n_baseline, "tail": k_ref, "version": VERSION,
             "duplicates": (DUPLICATE_NOISE, DUPLICATE_SAMPLE, DUPLICATE_SHARE, TRAIN_DUPLICATE_SAMPLE)}
    digest = hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()[:16]
    return f"{split or 'train'}-{kind}-{space}-{metric}-{th.invariance}-{digest}"


def _tail_rank(alpha: float, n: int, th: AuditThresholds) -> int:
    """Baseline distances made exact: the k smallest for the flags and the baseline_quantile tail."""
    return min(n, max(calibration_rank(alpha, n), math.ceil(th.baseline_quantile * (n + 1)) + 1))


@dataclass(frozen=True)
class BaselinePlan:
    """What calibrates the flags (``plan_baseline``): the held-out split, or training images left out."""

    kind: BaselineKind
    n: int  # baseline images
    alpha: float  # the per-image flag level it can reach
    own: torch.Tensor | None = None  # (n,) sorted indices of the left-out training images (leave-one-out)

    def images(self, train: torch.Tensor, heldout: torch.Tensor | None) -> torch.Tensor:
        """The baseline's uint8 (n, C, H, W) images."""
        if self.own is not None:
            return train[self.own]
        assert heldout is not None, "a held-out baseline is planned only with held-out images"
        return heldout


def plan_audit(generated: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor | None, space,
               th: AuditThresholds) -> BaselinePlan:
    """Every check before a distance is computed, and the baseline: ``run_audit``'s first step.

    Raises:
        GanforgeError: bad images or mismatched sizes, too few images for the statistics, shift invariance
            in a feature space, or an unknown space name.
    """
    for name, x in (("generated", generated), ("train", train), ("held-out", heldout)):
        if x is not None:
            _check_images(name, x)
    shapes = {"generated": generated.shape[1:], "train": train.shape[1:]}
    if heldout is not None:
        shapes["held-out"] = heldout.shape[1:]
    if len(set(shapes.values())) > 1:
        raise GanforgeError(f"image shapes differ: {', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())}; "
                            "use one size")
    if len(train) < 2:
        raise GanforgeError(f"the training split has {len(train)} images; the audit needs at least 2")
    kind, n_base, alpha = plan_baseline(len(train), None if heldout is None else len(heldout), th)
    check_generated_count(len(generated), n_base, alpha, th)
    if th.invariance == "shift" and not isinstance(space, str):
        raise GanforgeError(f"--invariance shift compares pixels; with --space {space.name} use --invariance "
                            "mirror or none")
    if isinstance(space, str) and space != "pixels":
        raise GanforgeError(f"unknown audit space {space!r}; use 'pixels' or pass a FeatureExtractor")
    if kind == "heldout":
        return BaselinePlan(kind, n_base, alpha)
    # a seeded sample of the training set: the same images, so the same cached distances, on every run
    own = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n_base].sort().values
    return BaselinePlan(kind, n_base, alpha, own)


@dataclass
class AuditSpace:
    """The images where distances are measured: uint8 pixels after levels and blur, or a backbone's features."""

    name: str  # "pixels" or the backbone's name
    sha256: str  # the backbone's weights hash (the pixel descriptor's for pixels)
    generated: torch.Tensor  # (N, ...) the generated images in the space
    train: torch.Tensor  # (M, ...) the training images in the space
    embed: Callable[[torch.Tensor, str], torch.Tensor]  # images -> the space; the str names them in progress lines
    base_images: torch.Tensor  # uint8 (n, C, H, W) the baseline's images, embedded when first needed (``baseline``)
    pad: int = 0  # pixels a blur reaches: left out beyond the shift margin (pixels only)
    train_mirror: torch.Tensor | None = None  # the mirrored training images' features (a feature space, mirror)
    _baseline: torch.Tensor | None = None

    def baseline(self, label: str) -> torch.Tensor:
        """The baseline images in the space; a feature space extracts them on first use only, so a cached
        baseline without cells never runs the backbone on them."""
        if self._baseline is None:
            self._baseline = self.embed(self.base_images, label)
        return self._baseline


def audit_space(space, th: AuditThresholds, generated: torch.Tensor, train: torch.Tensor, plan: BaselinePlan,
                base_images: torch.Tensor, batch_size: int) -> AuditSpace:
    """The generated and training images in the audit space (``"pixels"`` or a ``FeatureExtractor``)."""
    if isinstance(space, str):
        from ganforge.metrics.features import get_extractor

        sigma = th.blur
        assert not isinstance(sigma, str), "thresholds resolved for the image size first (AuditThresholds.resolved)"

        def embed(x, _label):  # uint8 in and out: distances are exact integers, the training set one byte per pixel
            return pixel_space(x, th.levels, sigma)

        return AuditSpace("pixels", get_extractor("pixels").sha256, embed(generated, ""), embed(train, ""), embed,
                          base_images, pad=blur_radius(sigma))

    def extract(x, label):
        return space.extract(x, batch_size, progress=f"extract {space.name} {label}")

    out = AuditSpace(space.name, space.sha256, extract(generated, "generated"), extract(train, "train"), extract,
                     base_images)
    if plan.own is not None:
        out._baseline = out.train[plan.own]
    if th.invariance == "mirror":
        out.train_mirror = extract(torch.flip(train, dims=[-1]), "mirrored train")
    return out


@dataclass(frozen=True)
class NearestSearch:
    """How nearest training images are found (``ganforge.audit.invariant``): invariance, metric, k-NN blocks."""

    th: AuditThresholds
    metric: Literal["l2", "l1"]
    pad: int
    train_mirror: torch.Tensor | None
    query_chunk: int
    ref_chunk: int
    device: str | torch.device

    def nearest(self, queries: torch.Tensor, train: torch.Tensor, progress: str,
                own: torch.Tensor | None = None) -> Match:
        """``nearest_train`` of ``queries`` (leave-one-out: ``own``, their indices in ``train``)."""
        th = self.th
        return nearest_train(queries, train, invariance=th.invariance, metric=self.metric, max_shift=th.max_shift,
                             candidates=th.candidates, dims=th.projection_dims, pad=self.pad, own=own,
                             train_mirror=self.train_mirror, query_chunk=self.query_chunk, ref_chunk=self.ref_chunk,
                             device=self.device, progress=progress)

    def exact_below(self, match: Match, threshold: float, queries: torch.Tensor, train: torch.Tensor,
                    own: torch.Tensor | None = None) -> Match:
        """``match`` with every answer that may lie at or below ``threshold`` made exact (``refine``)."""
        if match.lower is None:  # every answer is exact already
            return match
        return refine(match, match.lower <= threshold, queries, train, metric=self.metric, max_shift=self.th.max_shift,
                      pad=self.pad, own=own, query_chunk=self.query_chunk, ref_chunk=self.ref_chunk, device=self.device)


@dataclass(frozen=True)
class NearDuplicates:
    """Pictures the dataset holds twice: what makes every baseline tighter than fresh draws would be.

    Two images are near-duplicates when they are at most ``radius`` apart: as close as a training image and
    a copy of it with Gaussian noise of ``DUPLICATE_NOISE`` of the pixel range can be (the farthest of a
    seeded sample of ``DUPLICATE_SAMPLE`` such copies, in the audit space: the copies the audit is built to
    catch), or closer (exact, mirrored or shifted copies are at distance 0); but at most
    ``DUPLICATE_SHARE`` of the baseline's median distance. On small, smooth images (16 px digits) or in a
    low-dimensional feature space a noisy copy can be as far from its source as the nearest natural
    neighbours are from each other, and those are no duplicates: leaving them out of the baseline would
    flag honest images. Measured nearest natural neighbours sit at 0.26 (16 px digits), 0.33 (28 px
    Fashion-MNIST) and 0.53 (a 32-d projection of the digits) of the median, so pairs within a fifth of
    it are copies on any of them.
    """

    radius: float
    baseline: int = 0  # baseline images within the radius of a training image: left out of the baseline
    train_checked: int = 0  # training images whose nearest other training image was looked up
    train_near: int = 0  # of those, with another training image within the radius
    train_exact: int = 0  # training images equal, byte for byte, to another training image (all of them)


DUPLICATE_NOISE = 0.05  # sigma of the noisy copies that set the near-duplicate radius, as a share of the range
DUPLICATE_SAMPLE = 256  # noisy copies measured for the radius
DUPLICATE_SHARE = 0.2  # the radius is at most this share of the baseline's median distance
TRAIN_DUPLICATE_SAMPLE = 1_000  # training images checked for a near-duplicate in train (besides a leave-one-out baseline)


def duplicate_radius(train: torch.Tensor, space: AuditSpace, th: AuditThresholds, metric: str) -> float:
    """The near-duplicate radius before its cap (``NearDuplicates``): the largest distance between a training
    image and a copy of it with Gaussian noise of ``DUPLICATE_NOISE`` of the range, over a seeded sample.

    The copy is compared with its own source, untransformed, over the window the search compares (an upper
    bound of its distance under the invariance).
    """
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(train), generator=g)[:DUPLICATE_SAMPLE].sort().values
    noise = torch.randn(train[idx].shape, generator=g) * (DUPLICATE_NOISE * 255)
    copies = (train[idx].float() + noise).round().clamp(0, 255).to(torch.uint8)
    a, b = space.embed(copies, "noisy copies"), space.train[idx]
    if space.name == "pixels" and th.invariance == "shift":
        from ganforge.audit.invariant import central

        a, b = central(a, th.max_shift + space.pad), central(b, th.max_shift + space.pad)
    diff = (a.double() - b.double()).reshape(len(a), -1)
    return float((diff.norm(dim=1) if metric == "l2" else diff.abs().sum(1)).max())


@dataclass(frozen=True)
class Baseline:
    """The baseline images' distances to their nearest training image: what calibrates the flags.

    ``raw`` holds every baseline image's distance; ``distances`` leaves out the baseline images that are
    near-duplicates of a training image (within ``near.radius``): the same picture as one in the training
    set is not an unseen draw, and a handful of them would drag the flag threshold to zero.
    """

    plan: BaselinePlan
    raw: torch.Tensor  # (n,) float64: every baseline image
    near: NearDuplicates
    alpha: float  # the per-image flag level the kept distances reach
    cached: bool = False  # read from the cache file
    brute_force: int = 0  # queries answered by brute force

    @property
    def distances(self) -> torch.Tensor:
        """(n_kept,) the distances that calibrate: near-duplicates of training images left out."""
        return self.raw[self.raw > self.near.radius]

    def flag_threshold(self) -> float:
        """The k-th smallest distance, k = floor(alpha (n+1)): generated images nearer than it are flagged."""
        d = self.distances
        return float(torch.sort(d).values[calibration_rank(self.alpha, len(d)) - 1])

    def quantile_threshold(self, quantile: float) -> float:
        """The distances' ``quantile`` (``baseline_quantile``): 'too close' for ``fraction_below_baseline``."""
        return fraction_below_baseline(self.distances, self.distances, quantile)[0]


def _kept_alpha(plan: BaselinePlan, n_kept: int, th: AuditThresholds) -> float:
    """The flag level once near-duplicates left the baseline: the plan's, or (default alpha) what n_kept reaches.

    Raises:
        GanforgeError: an asked alpha the kept baseline cannot reach.
    """
    if calibration_rank(plan.alpha, n_kept) >= 1:
        return plan.alpha
    if th.alpha is None and n_kept >= 2:
        return 1.0 / (n_kept + 1)
    raise GanforgeError(f"alpha={plan.alpha:g} needs {math.ceil(1 / plan.alpha) - 1} baseline images; {plan.n - n_kept} "
                        f"of the {plan.n} are near-duplicates of training images, leaving {n_kept}; pass --alpha "
                        f"{1.0 / (max(n_kept, 1) + 1):.4g} or more, or de-duplicate the dataset")


def baseline_distances(plan: BaselinePlan, space: AuditSpace, search: NearestSearch, train: torch.Tensor,
                       metric: str, cache: str | Path | None = None) -> Baseline:
    """Each baseline image's nearest training distance, exact in the tail the flags and the quantile read and
    below the near-duplicate radius, and the dataset's near-duplicates (``NearDuplicates``).

    ``train``: the uint8 training images. ``cache``: an ``.npy`` file of the distances, read when present, else
    written (temp file, then rename), with the near-duplicate counts beside it (``.json``).

    Raises:
        GanforgeError: the cache holds another number of distances than the baseline has images, or the
            near-duplicates leave too few baseline images for an asked alpha.
    """
    th = search.th
    cache = Path(cache) if cache is not None else None
    side = cache.with_suffix(".json") if cache is not None else None
    if cache is not None and side is not None and cache.is_file() and side.is_file():
        raw = torch.from_numpy(np.load(cache))
        if len(raw) != plan.n:
            raise GanforgeError(f"cached baseline {cache} holds {len(raw)} distances, expected {plan.n}; "
                                "delete it")
        near = NearDuplicates(**json.loads(side.read_text()))
        return Baseline(plan, raw, near, _kept_alpha(plan, int((raw > near.radius).sum()), th), cached=True)
    radius = duplicate_radius(train, space, th, metric)
    base = space.baseline("held-out")
    match = search.nearest(base, space.train, f"k-NN {plan.kind} baseline to train", own=plan.own)
    if match.lower is not None:  # make the tail the flags and the quantile use, and the duplicates, exact
        tail = float(torch.sort(match.dist).values[_tail_rank(plan.alpha, plan.n, th) - 1])
        match = search.exact_below(match, max(tail, radius), base, space.train, own=plan.own)
    raw = match.dist
    radius = min(radius, DUPLICATE_SHARE * float(torch.median(raw)))
    if plan.own is not None:  # leave-one-out: the baseline images are training images
        checked, within = plan.n, int((raw <= radius).sum())
    else:
        checked, within = _train_near_duplicates(space, search, radius)
    near = NearDuplicates(radius, int((raw <= radius).sum()), checked, within, count_repeated(train))
    if cache is not None and side is not None:
        save_npy_atomic(cache, raw.numpy())
        write_text_atomic(side, json.dumps(asdict(near)))
    return Baseline(plan, raw, near, _kept_alpha(plan, plan.n - near.baseline, th),
                    brute_force=match.brute_force)


def _train_near_duplicates(space: AuditSpace, search: NearestSearch, radius: float) -> tuple[int, int]:
    """(checked, near): a seeded sample of training images, how many have another within ``radius``."""
    n = len(space.train)
    own = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:TRAIN_DUPLICATE_SAMPLE].sort().values
    q = space.train[own]
    match = search.nearest(q, space.train, "k-NN near-duplicates in train", own=own)
    match = search.exact_below(match, radius, q, space.train, own=own)
    return len(own), int((match.dist <= radius).sum())


def count_repeated(images: torch.Tensor) -> int:
    """Images whose uint8 bytes equal another image's (every member of a repeated group counts)."""
    return sum(c for c in Counter(chunked_hashes(images)).values() if c > 1)


@dataclass(frozen=True)
class Scores:
    """The generated images against the baseline: their nearest training images and the numbers the
    decision reads."""

    nearest: Match  # (N,) each generated image's nearest training image
    alpha: float  # the per-image flag level
    p_values: torch.Tensor  # (N,) conformal p-values
    flagged: list[int]  # generated images with p <= alpha: smallest p, then distance, first
    flag_threshold: float
    expected_flagged: float
    flag_test_p_value: float
    baseline_threshold: float  # the baseline's baseline_quantile
    fraction_below_baseline: float
    z_u: float
    exact_duplicates: int = 0
    c_t: float | None = None
    cells_used: int = 0


def score(nearest: Match, baseline: Baseline, th: AuditThresholds) -> Scores:
    """The flags, their Beta-Binomial test, the fraction below the baseline's quantile and Z_U of the
    generated images' distances ``nearest.dist`` against ``baseline`` (exact duplicates and C_T: none)."""
    d_gen, d_base, alpha = nearest.dist, baseline.distances, baseline.alpha
    threshold, frac = fraction_below_baseline(d_gen, d_base, th.baseline_quantile)
    p = conformal_p_values(d_gen, d_base)
    flagged = [int(j) for j in torch.nonzero(p <= alpha + 1e-12).flatten()]
    flagged.sort(key=lambda j: (float(p[j]), float(d_gen[j]), j))
    expected, test_p = flag_test(len(flagged), len(d_gen), len(d_base), alpha)
    return Scores(nearest, alpha, p, flagged, baseline.flag_threshold(), expected, test_p, threshold, frac,
                  mann_whitney_z(d_gen, d_base))


def score_generated(generated: torch.Tensor, train: torch.Tensor, space: AuditSpace, baseline: Baseline,
                    search: NearestSearch) -> Scores:
    """Each generated image's nearest training image, exact wherever a flag or the quantile could change,
    scored (``score``), with exact duplicates of the uint8 images and, with ``cells``, C_T."""
    th = search.th
    match = search.nearest(space.generated, space.train, "k-NN generated to train")
    near = max(baseline.flag_threshold(), baseline.quantile_threshold(th.baseline_quantile))
    scores = score(search.exact_below(match, near, space.generated, space.train), baseline, th)
    dups = count_exact_duplicates(generated, train, mirror=th.invariance != "none")
    c_t, cells_used = None, 0
    if th.cells:
        gen_cell, base_cell = _assign_cells(space.train, space.generated, space.baseline("baseline"), th.cells,
                                            search.device)
        base_cell = base_cell[baseline.raw > baseline.near.radius]  # the kept baseline images' cells
        c_t, cells_used = cell_z_u(scores.nearest.dist, baseline.distances, gen_cell, base_cell, th.min_cell_samples)
    return replace(scores, exact_duplicates=dups, c_t=c_t, cells_used=cells_used)


def decide(scores: Scores, th: AuditThresholds) -> list[str]:
    """Why the audit fails, one reason per threshold crossed (``AuditThresholds``); empty: it passes."""
    reasons = []
    if scores.exact_duplicates > th.max_exact_duplicates:
        reasons.append(f"{scores.exact_duplicates} generated images are exact copies of training images "
                       f"(max {th.max_exact_duplicates})")
    if scores.flag_test_p_value < th.test_level:
        reasons.append(f"{len(scores.flagged)} generated images are flagged as copies where "
                       f"{scores.expected_flagged:.2g} are expected at alpha={scores.alpha:g} (Beta-Binomial "
                       f"p = {scores.flag_test_p_value:.2g} < {th.test_level:g})")
    if scores.fraction_below_baseline > th.max_fraction_below_baseline:
        reasons.append(f"{scores.fraction_below_baseline:.1%} of generated images are nearer to a training image "
                       f"than the baseline's {th.baseline_quantile:.0%} quantile "
                       f"(max {th.max_fraction_below_baseline:.1%})")
    if scores.z_u < th.min_z_u:
        reasons.append(f"data-copying Z_U = {scores.z_u:.2f} < {th.min_z_u} (generated images sit closer to the "
                       "training set than unseen real images)")
    if scores.c_t is not None and scores.c_t < th.min_z_u:
        reasons.append(f"cell-averaged data-copying C_T = {scores.c_t:.2f} < {th.min_z_u} over "
                       f"{scores.cells_used} cells")
    return reasons


def audit_report(scores: Scores, baseline: Baseline, reasons: list[str], space: AuditSpace, th: AuditThresholds,
                 metric: Literal["l2", "l1"], n_train: int, n_heldout: int, n_pairs: int,
                 baseline_split: str | None = None, baseline_reason: str = "") -> AuditReport:
    """The ``AuditReport``: verdict (fail when there is a reason), the numbers, the flagged images and the
    ``n_pairs`` closest pairs (closest first; a pair's p-value only when it is flagged)."""
    match, p = scores.nearest, scores.p_values

    def pair(j: int, with_p: bool) -> NearestPair:
        return NearestPair(generated_index=j, train_index=int(match.index[j]), flipped=bool(match.flipped[j]),
                           shift=tuple(int(v) for v in match.shift[j]), distance=float(match.dist[j]),
                           p_value=float(p[j]) if with_p else None)

    closest = torch.sort(match.dist, stable=True).indices[:n_pairs]
    return AuditReport(
        verdict="fail" if reasons else "pass", reasons=reasons, space=space.name, space_sha256=space.sha256,
        metric=metric, invariance=th.invariance, n_generated=len(match.dist), n_train=n_train, n_heldout=n_heldout,
        baseline=baseline.plan.kind, baseline_split=baseline_split, baseline_reason=baseline_reason,
        n_baseline=len(baseline.distances), duplicate_radius=baseline.near.radius,
        baseline_near_duplicates=baseline.near.baseline, train_near_duplicates=baseline.near.train_near,
        train_checked=baseline.near.train_checked, train_exact_duplicates=baseline.near.train_exact,
        baseline_cached=baseline.cached, alpha=scores.alpha,
        flag_threshold=scores.flag_threshold, flagged=[pair(j, True) for j in scores.flagged],
        n_flagged=len(scores.flagged), expected_flagged=scores.expected_flagged,
        flag_test_p_value=scores.flag_test_p_value, generated_to_train=summarize(match.dist),
        heldout_to_train=summarize(baseline.distances), baseline_threshold=scores.baseline_threshold,
        fraction_below_baseline=scores.fraction_below_baseline, exact_duplicates=scores.exact_duplicates,
        z_u=scores.z_u, c_t=scores.c_t, cells_used=scores.cells_used,
        nearest_pairs=[pair(int(j), bool(p[j] <= scores.alpha + 1e-12)) for j in closest],
        brute_force_queries=baseline.brute_force + match.brute_force, thresholds=th,
    )


def run_audit(
    generated: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor | None,
    space="pixels",
    thresholds: AuditThresholds | None = None,
    metric: Literal["l2", "l1"] = "l2",
    n_pairs: int = 16,
    sheet_path: str | Path | None = None,
    batch_size: int = 64,
    query_chunk: int = 1024,
    ref_chunk: int = 8192,
    device: str | torch.device = "cpu",
    baseline_cache: str | Path | None = None,
    baseline_split: str | None = None,
    baseline_reason: str = "",
) -> AuditReport:
    """Audit generated images for memorised training images, image by image and as a set.

    The steps: ``plan_audit`` (checks, baseline), ``audit_space``, ``baseline_distances``, ``score_generated``,
    ``decide``, ``audit_report``.

    Args:
        generated: uint8 (N, C, H, W) generated images.
        train: uint8 (M, C, H, W) the training split.
        heldout: uint8 (H, C, H, W) real images never trained on (test/validation split), or None:
            a leave-one-out baseline within ``train`` (also used when the held-out split is too small).
        space: "pixels", or a ``FeatureExtractor`` whose features are compared.
        thresholds: ``AuditThresholds``; None uses the defaults.
        metric: "l2" or "l1" distance.
        n_pairs: pairs drawn on the sheet (flagged first) and closest pairs kept in the report.
        sheet_path: where to write the PNG sheet; None writes none.
        batch_size: images per backbone forward pass (feature spaces only).
        query_chunk: k-NN query block size.
        ref_chunk: k-NN reference block size.
        device: where k-NN and features are computed.
        baseline_cache: ``.npy`` file of the baseline distances: read when present, else written
            (temp file, then rename), the near-duplicate counts beside it (``.json``). The caller keys it
            (``baseline_key``) by everything that changes them.
        baseline_split: name of the split ``heldout`` is (recorded in the report).
        baseline_reason: why that baseline (recorded in the report).

    Returns:
        The ``AuditReport``.

    Raises:
        GanforgeError: bad images, mismatched sizes, too few images for the statistics, or shift
            invariance in a feature space.
    """
    th = (thresholds or AuditThresholds()).resolved(*train.shape[-2:])
    plan = plan_audit(generated, train, heldout, space, th)
    vectors = audit_space(space, th, generated, train, plan, plan.images(train, heldout), batch_size)
    search = NearestSearch(th, metric, vectors.pad, vectors.train_mirror, query_chunk, ref_chunk, device)
    baseline = baseline_distances(plan, vectors, search, train, metric, baseline_cache)
    scores = score_generated(generated, train, vectors, baseline, search)
    reasons = decide(scores, th)
    if sheet_path is not None:
        match = scores.nearest
        nearest_pairs_sheet(generated, train, match.index, match.dist, n_pairs, sheet_path, flipped=match.flipped,
                            first=scores.flagged)
    if plan.kind != "heldout":
        baseline_split = None
    return audit_report(scores, baseline, reasons, vectors, th, metric, len(train),
                        0 if heldout is None else len(heldout), n_pairs, baseline_split, baseline_reason)
