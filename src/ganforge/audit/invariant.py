"""Nearest training image under small transformations: the mirror image and shifts of up to a few pixels.

A copy shifted by one pixel or mirrored is far from its source in plain pixel distance, so the audit
scores each image by its distance to the nearest training image *after* the best of a small set of
transformations (``invariance``). With shifts, windows are compared, never fill values:

    d(q, train) = min over r in train, f in {identity, mirror}, |dy|, |dx| <= max_shift
                  || window_(dy, dx)(f(q)) - central(r) ||

where central(r) leaves out a border of ``margin`` = max_shift + pad pixels and window_(dy, dx) is that
central window moved by (dy, dx). A copy whose content moved by up to max_shift pixels (zero filled,
rolled or cropped) is then at distance 0 from its source.

- ``none``: plain distance to the training images (exact chunked k-NN, ``ganforge.audit.knn``).
- ``mirror``: also to their mirror images (exact k-NN against train + mirrored train).
- ``shift``: mirror and shifts, pixels only. Brute force is (2 max_shift + 1)^2 times the k-NN of
  ``mirror``; instead, each shifted query is projected onto the training set's top principal
  directions (an orthonormal projection never lengthens a vector, so projected distances are lower
  bounds), the ``candidates`` nearest references of each shift in that space get the exact float64
  distance, and the smallest projected distance left out is a proven lower bound ``lower`` of the
  exact answer. A query whose best exact distance is below that bound is exact; the others hold an
  upper bound (the best candidate) and a lower bound. ``refine`` answers chosen queries by brute
  force: the audit refines every query whose lower bound falls below its flagging threshold, so
  flags and thresholds are exact, while distances far above the threshold may be upper bounds.

Mirroring the query or the reference is the same thing here (the windows are symmetric), so a match is
reported as (training index, mirrored, (dy, dx) by which the query's content moved).
Ties go to the lowest training index (mirror images after all originals), then to the first
transformation in ``shift_offsets`` order (the identity first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganforge.errors import GanforgeError
from ganforge.metrics.knn import Metric, knn
from ganforge.progress import progress_bar

INVARIANCES = ("none", "mirror", "shift")
VERSION = 2  # of the scoring below; part of the baseline cache key, so a change never reads old scores


@dataclass
class Match:
    """Nearest training image of each query: distance, index, mirrored, shift (dy, dx) of the query."""

    dist: torch.Tensor  # (N,) float64
    index: torch.Tensor  # (N,) int64 into the training images
    flipped: torch.Tensor  # (N,) bool
    shift: torch.Tensor  # (N, 2) int64
    lower: torch.Tensor | None = None  # (N,) float64 proven lower bound of the exact distance ("shift")
    brute_force: int = 0  # queries answered by brute force (``refine``)

    @property
    def exact(self) -> torch.Tensor:
        """(N,) bool: the distance is proven exact (lower bound reached)."""
        return torch.ones_like(self.dist, dtype=torch.bool) if self.lower is None else self.lower >= self.dist


def shift_offsets(max_shift: int) -> list[tuple[int, int]]:
    """(dy, dx) offsets with |dy|, |dx| <= max_shift, the identity first, then by size."""
    r = range(-max_shift, max_shift + 1)
    return sorted(((dy, dx) for dy in r for dx in r), key=lambda o: (abs(o[0]) + abs(o[1]), o))


def shifted(x: torch.Tensor, offsets: list[tuple[int, int]], margin: int) -> torch.Tensor:
    """Windows of (B, C, H, W) images at every offset: (B, T, C*(H-2 margin)*(W-2 margin)).

    The window at (dy, dx) is the central (H - 2 margin) x (W - 2 margin) window moved by (dy, dx), so
    for |dy|, |dx| <= margin it never leaves the image: no fill value is ever compared. A copy whose
    content moved by (dy, dx) (by a crop, a roll or a zero-filled shift) has, at that offset, exactly
    the central window of its source.
    """
    h, w = x.shape[-2:]
    return torch.stack([x[..., margin + dy : h - margin + dy, margin + dx : w - margin + dx] for dy, dx in offsets],
                       1).flatten(2)


def central(x: torch.Tensor, margin: int) -> torch.Tensor:
    """The central window of (N, C, H, W) images, ``margin`` pixels in from every side."""
    h, w = x.shape[-2:]
    return x[..., margin : h - margin, margin : w - margin]


def blur_radius(sigma: float) -> int:
    """Pixels a blur of ``sigma`` reaches on each side (its kernel's radius; 0 without blur): the border a
    blurred image adds to the shift margin."""
    return math.ceil(2 * sigma) if sigma > 0 else 0


def _gauss(sigma: float) -> torch.Tensor:
    r = blur_radius(sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (separable, radius ceil(2 sigma), zero padding) of (N, C, H, W) images, float32."""
    x = x.float()
    if sigma <= 0:
        return x
    g, c = _gauss(sigma), x.shape[1]
    r = (len(g) - 1) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), g.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r)), g.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def pixel_space(x: torch.Tensor, levels: float = 0.0, sigma: float = 0.0) -> torch.Tensor:
    """The audit's pixel space of uint8 (N, C, H, W) images: levels, then blur, rounded back to uint8.

    - ``levels``: values within ``levels`` of the range's ends become black or white (the rest is
      stretched linearly). Noise on a copy is clipped where the source is black or white, so there it
      has a mean (a grey veil) that no blur removes; the dead zone removes it.
    - ``sigma``: Gaussian blur. Noise independent from pixel to pixel averages out while the picture
      survives (sigma = 1 shrinks white noise about 3.5 times). Both steps commute with shifts and the
      mirror, so windows of a transformed copy still match its source exactly when the blur radius is
      at most the shift margin.
    - Rounding to uint8 keeps every distance an exact integer (float64 arithmetic) and the training set
      at one byte per pixel; the rounding error (1/sqrt(12) of a level) is far below what blur leaves of noise.
    """
    if levels <= 0 and sigma <= 0:
        return x
    out = torch.empty(x.shape, dtype=torch.uint8)  # filled in place: no full-size float copy
    for s in range(0, len(x), 2048):  # chunks: the float temporaries stay small
        b = x[s : s + 2048].float()
        if levels > 0:
            b = ((b - 255 * levels) / (1 - 2 * levels)).clamp_(0, 255)
        out[s : s + 2048] = blur(b, sigma).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _mirror_refs(train: torch.Tensor) -> torch.Tensor:
    return torch.cat([train, torch.flip(train, dims=[-1])])


def nearest_train(
    queries: torch.Tensor,
    train: torch.Tensor,
    invariance: str = "shift",
    metric: Metric = "l2",
    max_shift: int = 2,
    candidates: int = 16,
    dims: int = 32,
    pad: int = 0,
    own: torch.Tensor | None = None,
    train_mirror: torch.Tensor | None = None,
    query_chunk: int = 1024,
    ref_chunk: int = 8192,
    device: str | torch.device = "cpu",
    progress: str | None = "k-NN",
) -> Match:
    """Nearest training image of each query under ``invariance`` (see the module docstring).

    Args:
        queries: (N, ...) images (uint8 pixels) or feature vectors.
        train: (M, ...) the training images or their features, same per-row size.
        invariance: "none", "mirror" or "shift" (shift: uint8 (N, C, H, W) pixels only).
        metric: "l2" or "l1".
        max_shift: largest shift in pixels along each axis ("shift").
        candidates: candidates per shift that get the exact distance ("shift").
        dims: principal directions of the lower-bound projection ("shift").
        pad: pixels left out beyond ``max_shift`` on every side ("shift"): the radius of a blur applied
            before, whose zero padding would otherwise differ between a shifted copy and its source.
        own: (N,) index of each query in ``train`` (leave-one-out: query j is training image own[j] and
            never matches it or its mirror image); None for images outside the training set.
        train_mirror: features of the mirrored training images ("mirror" in a feature space); None
            mirrors ``train``'s pixels.
        query_chunk: k-NN query block size.
        ref_chunk: k-NN reference block size.
        device: where distances are computed.
        progress: label of the progress display; None shows none.

    Returns:
        The ``Match`` of every query.

    Raises:
        GanforgeError: an unknown invariance, shift on non-pixel inputs, or bad sizes.
    """
    if invariance not in INVARIANCES:
        raise GanforgeError(f"unknown invariance {invariance!r}; use one of {', '.join(INVARIANCES)}")
    n, m = len(queries), len(train)
    if invariance == "shift":
        if queries.ndim != 4:
            raise GanforgeError("shift invariance compares pixels: pass (N, C, H, W) images, or use "
                                "--invariance mirror with a feature space")
        return _shift_nearest(queries, train, metric, max_shift, candidates, own, query_chunk, ref_chunk, device,
                              progress, dims, pad)
    if invariance == "mirror":
        refs = torch.cat([train, train_mirror]) if train_mirror is not None else _mirror_refs(train)
    else:
        refs = train
    drop = 2 if invariance == "mirror" else 1
    k = min(len(refs), 1 + drop) if own is not None else 1
    d, i = knn(queries, refs, k=k, metric=metric, query_chunk=query_chunk, ref_chunk=ref_chunk, device=device,
               progress=progress)
    if own is not None:
        bad = (i % m) == own[:, None]
        d = d.masked_fill(bad, float("inf"))
        j = torch.argmin(d, 1, keepdim=True)  # first of the remaining: nearest, lowest index on ties
        d, i = d.gather(1, j), i.gather(1, j)
    d, i = d[:, 0], i[:, 0]
    return Match(d, i % m, i >= m, torch.zeros(n, 2, dtype=torch.long))


def _basis(train: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and top ``dims`` principal directions (orthonormal rows, float64) of train + mirror.

    Fitted on a seeded subsample of at most 4096 images; the basis only decides which candidates are
    examined and which queries are certified, never a distance, so its rounding cannot change a result.
    """
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train), generator=g)[:2048]
    x = torch.cat([train[pick], torch.flip(train[pick], dims=[-1])]).double().flatten(1)  # central windows
    mu = x.mean(0)
    vh = torch.linalg.svd(x - mu, full_matrices=False).Vh
    return mu, vh[: min(dims, vh.shape[0])]


def _project(x: torch.Tensor, mu: torch.Tensor, basis: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """(N, dims) float64 projections, chunked; ``mirror`` projects the mirror images (flipped per chunk)."""
    out = torch.empty(len(x), basis.shape[0], dtype=torch.float64)
    for s in range(0, len(x), 4096):
        b = torch.flip(x[s : s + 4096], dims=[-1]) if mirror else x[s : s + 4096]
        out[s : s + 4096] = (b.double().flatten(1) - mu) @ basis.T
    return out


def _shift_nearest(queries, train, metric, max_shift, candidates, own, query_chunk, ref_chunk, device, progress,
                   dims, pad) -> Match:
    """Exact nearest (train + mirror) image over every shift of each query, by certified pruning.

    A projection onto orthonormal directions never lengthens a vector, so the projected distance of
    a shifted query to a reference is a lower bound of its pixel distance (L2, hence also L1). For each
    shift the ``candidates`` references nearest in the projection are examined exactly; every other
    reference is at least ``tau`` = the smallest, over the shifts, of the last kept projected distance
    away. A query whose best exact distance is below ``tau`` has its exact answer; the others are
    redone by brute force over all references (``benchmarks/audit.py`` reports how many).
    """
    if max_shift < 0:
        raise GanforgeError(f"max_shift must be 0 or more, got {max_shift}")
    n, m = len(queries), len(train)
    margin = max_shift + pad
    if min(queries.shape[-2:]) <= 2 * margin:
        raise GanforgeError(f"images of {queries.shape[-1]}x{queries.shape[-2]} px are too small for shifts of "
                            f"{max_shift} px; use a smaller --max-shift or --invariance mirror")
    offsets = shift_offsets(max_shift)
    nt = len(offsets)
    train = central(train, margin)  # references: central windows; queries: windows at every offset
    mu, basis = _basis(train, dims)
    refs_p = torch.cat([_project(train, mu, basis), _project(train, mu, basis, mirror=True)])
    kc = min(2 * m, candidates + (2 if own is not None else 0))
    d_out = torch.empty(n, dtype=torch.float64)
    i_out = torch.empty(n, dtype=torch.long)
    t_out = torch.empty(n, dtype=torch.long)
    lower = torch.empty(n, dtype=torch.float64)
    dim = queries[0].numel()
    block = max(1, 4096 // nt)  # queries per projected k-NN call: ~4k shifted rows
    sub = max(1, (4 << 20) // ((nt + nt * kc) * dim))  # keeps the float64 (B, T + T kc, D) block ~32 MB
    with progress_bar(progress or "k-NN", n, "query", enabled=progress is not None and n > block) as bar:
        for s0 in range(0, n, block):
            q0 = queries[s0 : s0 + block]
            qp = _project(shifted(q0, offsets, margin).reshape(len(q0) * nt, -1), mu, basis)
            lb0, cand0 = knn(qp, refs_p, k=kc, metric="l2", query_chunk=query_chunk, ref_chunk=ref_chunk,
                             device=device, progress=None)
            lb0, cand0 = lb0.reshape(len(q0), nt, kc), cand0.reshape(len(q0), nt * kc)
            for s1 in range(0, len(q0), sub):
                s, q = s0 + s1, q0[s1 : s1 + sub]
                b = len(q)
                c = torch.sort(cand0[s1 : s1 + b], dim=1).values  # lowest index first: ties go to it
                mask = torch.zeros_like(c, dtype=torch.bool)
                mask[:, 1:] = c[:, 1:] == c[:, :-1]  # duplicates: examined once
                if own is not None:
                    mask |= (c % m) == own[s : s + b, None]
                ref = train[c % m]
                ref = torch.where((c >= m)[..., None, None, None], torch.flip(ref, dims=[-1]), ref)
                d = _shifted_dist(q.to(device), ref.to(device), offsets, margin, metric)  # (B, T, T * kc)
                d = d.masked_fill(mask.to(device)[:, None, :], float("inf"))
                best_t = d.argmin(1)  # first offset on ties: the identity first
                best_d = d.gather(1, best_t[:, None, :])[:, 0]
                j = best_d.argmin(1, keepdim=True)  # first candidate on ties: the lowest index
                dist = best_d.gather(1, j)[:, 0].cpu()
                d_out[s : s + b] = dist
                i_out[s : s + b] = c.gather(1, j.cpu())[:, 0]
                t_out[s : s + b] = best_t.gather(1, j)[:, 0].cpu()
                # every reference left out is at least tau away (projected distances are Euclidean,
                # so compare in that unit); a best distance below tau is proven exact
                exact = dist.sqrt() if metric == "l2" else dist
                tau = lb0[s1 : s1 + b, :, -1].min(1).values * (1 - 1e-9)
                proven = (exact < tau) if kc < 2 * m else torch.ones(b, dtype=torch.bool)
                lower[s : s + b] = torch.where(proven, exact, torch.minimum(tau, exact))
            bar.update(s0 + len(q0))
    if metric == "l2":
        d_out = d_out.sqrt()
    shifts = torch.tensor(offsets, dtype=torch.long)[t_out]
    return Match(d_out, i_out % m, i_out >= m, shifts, lower=lower)


def refine(match: Match, which: torch.Tensor, queries: torch.Tensor, train: torch.Tensor, metric: Metric = "l2",
           max_shift: int = 2, pad: int = 0, own: torch.Tensor | None = None, query_chunk: int = 1024, ref_chunk: int = 8192,
           device: str | torch.device = "cpu") -> Match:
    """Make the answers of the queries ``which`` (bool (N,)) exact by brute force; returns a new Match.

    Queries already proven exact are skipped. The audit calls this for the queries whose lower bound
    lies below the flagging threshold, so every flag and the threshold itself are exact.
    """
    todo = torch.nonzero(which & ~match.exact).flatten()
    if not len(todo):
        return match
    assert match.lower is not None  # a match is inexact only below its lower bound
    m = len(train)
    offsets = shift_offsets(max_shift)
    d, i, t = _brute_shift(queries[todo], train, offsets, max_shift + pad, metric, None if own is None else own[todo], query_chunk,
                           ref_chunk, device)
    dist, index, flipped, shift, lower = (x.clone() for x in (match.dist, match.index, match.flipped, match.shift,
                                                                match.lower))
    dist[todo] = d.sqrt() if metric == "l2" else d
    index[todo], flipped[todo] = i % m, i >= m
    shift[todo] = torch.tensor(offsets, dtype=torch.long)[t]
    lower[todo] = dist[todo]
    return Match(dist, index, flipped, shift, lower=lower, brute_force=match.brute_force + len(todo))


def _brute_shift(q, train, offsets, margin, metric, own, query_chunk, ref_chunk, device):
    """Exact answer for a few queries: every shift against every (train + mirror) image.

    Returns squared L2 (or L1) distances, indices into train + mirror and offset indices.
    """
    nt, m = len(offsets), len(train)
    refs = _mirror_refs(central(train, margin))
    k = 3 if own is not None else 1  # leave-one-out: the image and its mirror can come first
    d, i = knn(shifted(q, offsets, margin).reshape(len(q) * nt, -1), refs, k=min(k, len(refs)), metric=metric,
               query_chunk=query_chunk, ref_chunk=ref_chunk, device=device, progress=None)
    d, i = d.reshape(len(q), nt, -1), i.reshape(len(q), nt, -1)
    if own is not None:
        d = d.masked_fill((i % m) == own[:, None, None], float("inf"))
    d = d.square() if metric == "l2" else d
    # nearest first; ties: lowest reference index, then first offset
    flat_d, flat_i = d.reshape(len(q), -1), i.reshape(len(q), -1)
    t_idx = torch.arange(nt)[:, None].expand(nt, d.shape[2]).reshape(-1)
    key = torch.stack([flat_d, flat_i.double(), t_idx.double().expand_as(flat_d)], -1)
    firsts = []
    for row in key:  # a few uncertified queries only
        order = sorted(range(len(row)), key=lambda j: (row[j, 0].item(), row[j, 1].item(), row[j, 2].item()))
        firsts.append(order[0])
    best = torch.tensor(firsts)
    rows = torch.arange(len(q))
    return flat_d[rows, best], flat_i[rows, best], t_idx[best]


def _shifted_dist(q: torch.Tensor, ref: torch.Tensor, offsets, margin: int, metric: str) -> torch.Tensor:
    """Float64 distances of every shift of each query to its own references: (B, T, kc).

    Squared L2 by expansion in float64, exact for uint8 pixels (integers far below 2^53); L1 by cdist.
    """
    tq = shifted(q.double(), offsets, margin)  # (B, T, D)
    r = ref.double().flatten(2)  # (B, kc, D)
    if metric == "l1":
        return torch.cdist(tq, r, p=1)
    d = torch.baddbmm((r * r).sum(2)[:, None, :], tq, r.transpose(1, 2), alpha=-2.0)
    return d.add_((tq * tq).sum(2)[:, :, None]).clamp_min_(0)
