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

Verdict: fail if any of exact_duplicates > max_exact_duplicates, fraction_below_baseline >
max_fraction_below_baseline, z_u < min_z_u, or (with cells) c_t < min_z_u (``AuditThresholds``);
otherwise pass.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from scipy.stats import rankdata

from ganforge.audit.knn import knn
from ganforge.errors import GanforgeError


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
    check_flips: bool = Field(True, description="also compare against horizontally flipped training images")
    min_generated: int = Field(20, ge=2, description="fewest generated images audited (Z_U's normal approximation)")
    min_heldout: int = Field(100, ge=2, description="fewest held-out images for the baseline (at least "
                             "1/baseline_quantile are needed in any case)")


class DistanceSummary(BaseModel):
    """Summary of a set of nearest-neighbour distances."""

    n: int
    min: float
    p1: float
    p5: float
    p50: float
    mean: float


class NearestPair(BaseModel):
    """A generated image and its nearest training image."""

    generated_index: int
    train_index: int
    flipped: bool = Field(description="the match is the training image's mirror image")
    distance: float


class AuditReport(BaseModel):
    """Result of ``run_audit``; ``to_json()`` is the report artefact."""

    verdict: Literal["pass", "fail"]
    reasons: list[str] = Field(description="why it failed; empty when it passed")
    space: str = Field(description="'pixels' or the backbone name")
    space_sha256: str = Field(description="weights hash of the backbone (descriptor hash for pixels)")
    metric: Literal["l2", "l1"]
    n_generated: int
    n_train: int
    n_heldout: int
    generated_to_train: DistanceSummary
    heldout_to_train: DistanceSummary
    baseline_threshold: float = Field(description="held-out NN distance at baseline_quantile")
    fraction_below_baseline: float
    exact_duplicates: int
    z_u: float
    c_t: float | None = Field(None, description="Meehan et al.'s cell-averaged Z_U; None without cells")
    cells_used: int = Field(0, description="cells that entered C_T")
    nearest_pairs: list[NearestPair] = Field(description="closest generated/training pairs, closest first")
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


def count_exact_duplicates(generated: torch.Tensor, references: torch.Tensor) -> int:
    """Generated uint8 images whose bytes equal some reference image's."""
    known = set(image_hashes(references))
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
) -> Path:
    """PNG sheet of the closest generated/training pairs side by side, closest first.

    Args:
        generated: uint8 (N, C, H, W) generated images.
        train: uint8 (M, C, H, W) reference images that ``idx`` points into.
        idx: (N,) or (N, k) nearest reference index per generated image (first column used).
        dist: (N,) or (N, k) the matching distances.
        n_pairs: pairs shown (at most N).
        path: where the PNG goes (parent folders are created).
        pairs_per_row: pairs per sheet row; within a pair the generated image is on the left.

    Returns:
        The PNG's path.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    idx, dist = idx.reshape(len(generated), -1)[:, 0], dist.reshape(len(generated), -1)[:, 0]
    order = torch.sort(dist.double(), stable=True).indices[: max(1, min(n_pairs, len(generated)))]
    tiles = torch.stack([t for j in order for t in (generated[j], train[idx[j]])])
    grid = make_grid(tiles.float() / 255.0, nrow=2 * pairs_per_row, padding=2, pad_value=1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path


# ---- the audit -------------------------------------------------------------------------------------


def _check_images(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        raise GanforgeError(f"{name} images must be a uint8 tensor (N, C, H, W), got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}; "
                            "convert them to 0..255 uint8")


def run_audit(
    generated: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    space="pixels",
    thresholds: AuditThresholds | None = None,
    metric: Literal["l2", "l1"] = "l2",
    n_pairs: int = 16,
    sheet_path: str | Path | None = None,
    batch_size: int = 64,
    query_chunk: int = 1024,
    ref_chunk: int = 8192,
    device: str | torch.device = "cpu",
) -> AuditReport:
    """Audit generated images for memorised training images.

    Args:
        generated: uint8 (N, C, H, W) generated images.
        train: uint8 (M, C, H, W) the training split.
        heldout: uint8 (H, C, H, W) real images never trained on (test/validation split).
        space: "pixels", or a ``FeatureExtractor`` whose features are compared.
        thresholds: ``AuditThresholds``; None uses the defaults.
        metric: "l2" or "l1" distance.
        n_pairs: closest pairs kept in the report and drawn on the sheet.
        sheet_path: where to write the PNG sheet of closest pairs; None writes none.
        batch_size: images per backbone forward pass (feature spaces only).
        query_chunk: k-NN query block size.
        ref_chunk: k-NN reference block size.
        device: where k-NN and features are computed.

    Returns:
        The ``AuditReport``.

    Raises:
        GanforgeError: bad images, mismatched sizes, or too few images for the statistics.
    """
    th = thresholds or AuditThresholds()
    for name, x in (("generated", generated), ("train", train), ("held-out", heldout)):
        _check_images(name, x)
    if not (generated.shape[1:] == train.shape[1:] == heldout.shape[1:]):
        raise GanforgeError(f"image shapes differ: generated {tuple(generated.shape[1:])}, train "
                            f"{tuple(train.shape[1:])}, held-out {tuple(heldout.shape[1:])}; use one size")
    need_heldout = max(th.min_heldout, math.ceil(1.0 / th.baseline_quantile))
    if len(heldout) < need_heldout:
        raise GanforgeError(f"the audit baseline needs at least {need_heldout} held-out images, got "
                            f"{len(heldout)}; pass a larger held-out split")
    if len(generated) < th.min_generated:
        raise GanforgeError(f"the audit needs at least {th.min_generated} generated images, got "
                            f"{len(generated)}; generate more (--n)")
    if len(train) < 1:
        raise GanforgeError("the training split is empty; pass the dataset's train split")

    refs = torch.cat([train, torch.flip(train, dims=[3])]) if th.check_flips else train
    if isinstance(space, str):
        if space != "pixels":
            raise GanforgeError(f"unknown audit space {space!r}; use 'pixels' or pass a FeatureExtractor")
        from ganforge.metrics.features import get_extractor

        space_name, space_sha = "pixels", get_extractor("pixels").sha256
        gen_v, held_v, ref_v = generated, heldout, refs  # uint8: k-NN distances are exact integers
    else:
        space_name, space_sha = space.name, space.sha256
        sets = (("generated", generated), ("held-out", heldout), ("train", refs))
        gen_v, held_v, ref_v = (space.extract(x, batch_size, progress=f"extract {space.name} {name}")
                                for name, x in sets)

    kw = dict(k=1, metric=metric, query_chunk=query_chunk, ref_chunk=ref_chunk, device=device)
    d_gen, i_gen = knn(gen_v, ref_v, progress="k-NN generated to train", **kw)
    d_held, _ = knn(held_v, ref_v, progress="k-NN held-out to train", **kw)
    d_gen, i_gen, d_held = d_gen[:, 0], i_gen[:, 0], d_held[:, 0]

    threshold, frac = fraction_below_baseline(d_gen, d_held, th.baseline_quantile)
    dups = count_exact_duplicates(generated, refs)
    z_u = mann_whitney_z(d_gen, d_held)
    c_t, cells_used = None, 0
    if th.cells:
        train_v = ref_v[: len(train)]  # cells of the training images proper, mirror images aside
        gen_cell, held_cell = _assign_cells(train_v, gen_v, held_v, th.cells, device)
        c_t, cells_used = cell_z_u(d_gen, d_held, gen_cell, held_cell, th.min_cell_samples)
    reasons = []
    if dups > th.max_exact_duplicates:
        reasons.append(f"{dups} generated images are exact copies of training images (max {th.max_exact_duplicates})")
    if frac > th.max_fraction_below_baseline:
        reasons.append(f"{frac:.1%} of generated images are nearer to a training image than the held-out "
                       f"{th.baseline_quantile:.0%} quantile (max {th.max_fraction_below_baseline:.1%})")
    if z_u < th.min_z_u:
        reasons.append(f"data-copying Z_U = {z_u:.2f} < {th.min_z_u} (generated images sit closer to the "
                       "training set than unseen real images)")
    if c_t is not None and c_t < th.min_z_u:
        reasons.append(f"cell-averaged data-copying C_T = {c_t:.2f} < {th.min_z_u} over {cells_used} cells")

    m = len(train)
    order = torch.sort(d_gen, stable=True).indices[:n_pairs]
    pairs = [NearestPair(generated_index=int(j), train_index=int(i_gen[j]) % m, flipped=bool(i_gen[j] >= m),
                         distance=float(d_gen[j])) for j in order]
    if sheet_path is not None:
        nearest_pairs_sheet(generated, refs, i_gen, d_gen, n_pairs, sheet_path)
    return AuditReport(
        verdict="fail" if reasons else "pass", reasons=reasons, space=space_name, space_sha256=space_sha,
        metric=metric, n_generated=len(generated), n_train=m, n_heldout=len(heldout),
        generated_to_train=summarize(d_gen), heldout_to_train=summarize(d_held), baseline_threshold=threshold,
        fraction_below_baseline=frac, exact_duplicates=dups, z_u=z_u, c_t=c_t,
        cells_used=cells_used, nearest_pairs=pairs, thresholds=th,
    )
