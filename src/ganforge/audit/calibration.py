"""Checks of the audit's calibration: how often honest sets pass and planted copies fail, at full size.

An audit is judged by two rates: honest sets (images drawn like the training images, never trained on)
must pass about ``1 - test_level`` of the time, and sets holding 1% copies of training images must fail
every time. Measuring them takes hundreds of audits of 1,000 images; most of their cost is each image's
nearest training image, which does not depend on the other images of its set. So ``score_pools`` finds
it once for every image of a pool (exactly as ``run_audit`` does, refined below the flag threshold), and
``failures`` draws sets from the pools and decides each with the audit's own ``score`` and ``decide``:
the verdict ``run_audit`` would give that set, at a fraction of the cost.

``strokes`` draws pen-stroke images whose "official held-out split" can be made to differ (thicker
strokes, another ink), the situation where a test split written by other people fails honest sets
(issue 25); ``plant`` makes the copies the audit is built to catch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ganforge.audit.invariant import Match
from ganforge.audit.memorization import (
    AuditThresholds,
    Baseline,
    NearestSearch,
    audit_space,
    baseline_distances,
    chunked_hashes,
    decide,
    image_hashes,
    plan_audit,
    score,
)

KINDS = ("exact", "noisy", "mirrored", "shifted")  # the planted copies: as issue 14 and issue 25 name them


def strokes(n: int, seed: int, thick: tuple[float, float] = (1.0, 2.0), ink: float = 255.0, size: int = 28,
            segments: int = 3) -> torch.Tensor:
    """``n`` uint8 (n, 1, size, size) images of ``segments`` straight anti-aliased pen strokes on black.

    Each stroke joins two uniform points at least 4 px inside the border, ``thick`` (a uniform range) px
    wide, drawn at ``ink`` (0-255). Seeded: the same arguments give the same images.
    """
    g = torch.Generator().manual_seed(seed)
    ends = torch.rand(n, segments, 2, 2, generator=g) * (size - 8) + 4
    width = thick[0] + torch.rand(n, segments, 1, generator=g) * (thick[1] - thick[0])
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    pix = torch.stack([yy.flatten(), xx.flatten()], 1)  # (P, 2)
    out = torch.empty(n, size * size)
    for s in range(0, n, 2048):  # (chunk, segments, P) temporaries stay small
        a, b = ends[s : s + 2048, :, 0, None, :], ends[s : s + 2048, :, 1, None, :]
        ab = b - a
        u = (((pix - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0, 1)
        d = (a + u[..., None] * ab - pix).norm(dim=-1)  # each pixel's distance to each stroke
        out[s : s + 2048] = (width[s : s + 2048] + 0.5 - d).clamp(0, 1).amax(1)
    return (out * ink).round().to(torch.uint8).reshape(n, 1, size, size)


def plant(kind: str, src: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Copies of uint8 ``src`` (n, C, H, W) of one ``KINDS`` kind: exact, noisy (Gaussian, sigma 5% of the
    range), mirrored, or shifted by 1-2 px along at least one axis with zero fill."""
    if kind == "exact":
        return src.clone()
    if kind == "noisy":
        return (src.float() + torch.randn(src.shape, generator=g) * 0.05 * 255).round().clamp(0, 255).to(torch.uint8)
    if kind == "mirrored":
        return torch.flip(src, dims=[-1])
    if kind != "shifted":
        raise ValueError(f"unknown kind of copy {kind!r}; one of {', '.join(KINDS)}")
    out = torch.zeros_like(src)
    h, w = src.shape[-2:]
    for i in range(len(src)):
        dy, dx = 0, 0
        while (dy, dx) == (0, 0):
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
        out[i, :, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
            src[i, :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


@dataclass(frozen=True)
class PoolScores:
    """Every pool image's nearest training image against one baseline, and whether it equals a training image."""

    baseline: Baseline
    th: AuditThresholds
    nearest: dict[str, Match]
    exact: dict[str, torch.Tensor]  # (n,) bool per pool: the image's bytes equal a training image's (or mirror's)


def score_pools(train: torch.Tensor, heldout: torch.Tensor | None, pools: dict[str, torch.Tensor],
                th: AuditThresholds | None = None, metric: str = "l2") -> PoolScores:
    """The baseline (``heldout``, or leave-one-out when None) and each pool's nearest training images, found as
    ``run_audit`` finds them: exact wherever a flag or the quantile could change."""
    th = (th or AuditThresholds()).resolved(*train.shape[-2:])
    first = next(iter(pools.values()))
    plan = plan_audit(first, train, heldout, "pixels", th)
    space = audit_space("pixels", th, first[:1], train, plan, plan.images(train, heldout), 64)
    search = NearestSearch(th, metric, space.pad, None, 1024, 8192, "cpu")  # type: ignore[arg-type]
    base = baseline_distances(plan, space, search, train, metric)
    near = max(base.flag_threshold(), base.quantile_threshold(th.baseline_quantile))
    known = set(chunked_hashes(train, mirror=th.invariance != "none"))  # as count_exact_duplicates sees them
    nearest, exact = {}, {}
    for name, images in pools.items():
        q = space.embed(images, name)
        match = search.exact_below(search.nearest(q, space.train, f"k-NN {name} to train"), near, q, space.train)
        nearest[name] = match
        exact[name] = torch.tensor([h in known for h in image_hashes(images)], dtype=torch.bool)
    return PoolScores(base, th, nearest, exact)


def _take(match: Match, idx: torch.Tensor) -> Match:
    return Match(match.dist[idx], match.index[idx], match.flipped[idx], match.shift[idx],
                 None if match.lower is None else match.lower[idx])


def failures(pools: PoolScores, honest: str, runs: int, set_size: int = 1000, planted: str | None = None,
             n_planted: int = 0, seed: int = 0, disjoint: bool = False) -> list[list[str]]:
    """The audit's reasons to fail (empty: it passed) for ``runs`` sets of ``set_size`` images: honest images
    of pool ``honest`` and ``n_planted`` of pool ``planted``, drawn at random (seeded); with ``disjoint``, the
    honest images of different sets never repeat (the pool must hold ``runs * set_size``)."""
    g = torch.Generator().manual_seed(seed)
    n_honest = set_size - n_planted
    order = torch.randperm(len(pools.nearest[honest].dist), generator=g)
    if disjoint and len(order) < runs * n_honest:
        raise ValueError(f"{runs} disjoint sets need {runs * n_honest} honest images; the pool has {len(order)}")
    out = []
    for r in range(runs):
        pick = order[r * n_honest : (r + 1) * n_honest] if disjoint else \
            torch.randperm(len(order), generator=g)[:n_honest]
        parts = [(honest, pick)]
        if planted is not None and n_planted:
            parts.append((planted, torch.randperm(len(pools.nearest[planted].dist), generator=g)[:n_planted]))
        out.append(decide_set(pools, parts))
    return out


def decide_set(pools: PoolScores, parts: list[tuple[str, torch.Tensor]]) -> list[str]:
    """The audit's reasons to fail (empty: it passed) for the set of pool images ``parts`` ((pool, indices), in
    order): ``score`` and ``decide`` of their nearest training images, as ``run_audit`` of that set decides."""
    matches = [_take(pools.nearest[name], i) for name, i in parts]
    match = Match(torch.cat([m.dist for m in matches]), torch.cat([m.index for m in matches]),
                  torch.cat([m.flipped for m in matches]), torch.cat([m.shift for m in matches]))
    dups = sum(int(pools.exact[name][i].sum()) for name, i in parts)
    return decide(replace(score(match, pools.baseline, pools.th), exact_duplicates=dups), pools.th)
