"""Exact k-nearest neighbours by chunked matrix products, in bounded memory.

``knn(queries, refs, k)`` finds, for each of N queries, the k nearest of M references under L2 or L1,
never holding more than a ``(query_chunk, ref_chunk)`` block of distances: both sides are chunked and
a running top-k' per query is merged chunk by chunk.

Exactness. The bulk pass runs in float32 (fast GEMM on CPU and GPU) and keeps k' = k + ``extra``
candidates per query. Float32 can misorder near neighbours, so each query gets a rigorous bound B on
the float32 error (from the standard dot-product error bound, ``gamma_D * sum|q_l r_l|``, plus input
rounding): if the kept k'-th approximate distance exceeds the k-th by more than 2B, every reference
left out is provably farther than the true k-th neighbour, and re-ranking the k' candidates with
float64 distances computed from the original values is exact. Queries that fail the check (many
near-ties, e.g. duplicated references) are redone by a float64 pass over all references. For uint8
pixels the float64 distances are exact integers, so ties are real ties; they are broken by the lowest
reference index.
"""

from __future__ import annotations

from typing import Literal

import torch

from ganforge.errors import GanforgeError
from ganforge.progress import progress_bar

DISTANCES = ("l2", "l1")  # the `metric` argument: a distance, not an image metric of ganforge.metrics
Metric = Literal["l2", "l1"]  # one of DISTANCES
_U32 = 2.0**-24  # unit roundoff of float32


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise GanforgeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor")
    if x.ndim < 2:
        raise GanforgeError(f"{name} must have shape (N, ...), got {tuple(x.shape)}; add a batch dimension")
    return x.reshape(x.shape[0], -1)


def _block(q: torch.Tensor, r: torch.Tensor, metric: str, q_sq=None, r_sq=None) -> torch.Tensor:
    """Distances between two chunks in their dtype: squared L2 by expansion, or L1."""
    if metric == "l1":
        return torch.cdist(q, r, p=1)
    # ||q||^2 + ||r||^2 - 2 q.r: one GEMM instead of an (n, m, D) difference tensor, built in place so
    # the block is the only (n, m) allocation.
    d = torch.addmm(r_sq[None, :], q, r.T, beta=1.0, alpha=-2.0)
    return d.add_(q_sq[:, None]).clamp_min_(0)


def _norms(x: torch.Tensor, metric: str) -> torch.Tensor:
    return x.abs().sum(1) if metric == "l1" else (x * x).sum(1)


def _lex_topk(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest per row, ties broken by the lowest index (sort by index, then stable by value)."""
    order = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = torch.sort(vals, dim=1, stable=True).indices[:, :k]
    return vals.gather(1, order), idx.gather(1, order)


def _exact_dist(q: torch.Tensor, r: torch.Tensor, metric: str) -> torch.Tensor:
    """Float64 distances from differences: q (n, D), r (n, c, D) -> (n, c); exact for integer pixels."""
    diff = r.double().sub_(q.double()[:, None, :])
    return diff.abs_().sum(2) if metric == "l1" else diff.square_().sum(2)


def _ref_blocks(q: torch.Tensor, refs: torch.Tensor, metric: str, ref_chunk: int, device, dtype):
    """Yield (first reference index, (n, chunk) distances) over the references, ``ref_chunk`` at a time."""
    qd = q.to(device, dtype)
    q_sq = _norms(qd, metric)
    for start in range(0, refs.shape[0], ref_chunk):
        r = refs[start : start + ref_chunk].to(device, dtype)
        yield start, _block(qd, r, metric, q_sq, _norms(r, metric))


def _float64_pass(q: torch.Tensor, refs: torch.Tensor, k: int, metric: str, ref_chunk: int, device):
    """Exact top-k of a few queries against all references in float64, chunked over references."""
    best_v = torch.empty(q.shape[0], 0, dtype=torch.float64, device=device)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=device)
    for start, d in _ref_blocks(q, refs, metric, ref_chunk, device, torch.float64):
        ids = torch.arange(start, start + d.shape[1], device=device).expand(q.shape[0], -1)
        best_v, best_i = _lex_topk(torch.cat([best_v, d], 1), torch.cat([best_i, ids], 1), k)
    # Re-derive the winners' distances from differences, then re-sort: the expansion above is exact
    # for integer pixels but can round for float inputs.
    exact = _exact_dist(q, refs[best_i.cpu()].to(device), metric)
    return _lex_topk(exact, best_i, k)


def knn(
    queries: torch.Tensor,
    refs: torch.Tensor,
    k: int = 1,
    metric: Metric = "l2",
    query_chunk: int = 1024,
    ref_chunk: int = 4096,
    device: str | torch.device = "cpu",
    extra: int = 8,
    progress: str | None = "k-NN",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest references of each query, chunked so memory is bounded by the chunk sizes.

    Args:
        queries: (N, ...) tensor, any real dtype (uint8 pixels welcome); flattened per row.
        refs: (M, ...) tensor with the same per-row size as ``queries``.
        k: neighbours per query, 1 <= k <= M.
        metric: "l2" (Euclidean) or "l1" (sum of absolute differences).
        query_chunk: queries per block; peak memory grows with query_chunk * (ref_chunk + k + extra).
        ref_chunk: references per block.
        device: where the blocks are computed ("cpu", "cuda"); inputs may stay on the CPU.
        extra: candidates kept beyond k for the float64 re-ranking; more makes the float64 fallback rarer.
        progress: label of the progress display (queries done, ``ganforge.progress``), shown when there
            is more than one block; None shows none.

    Returns:
        (dist, idx): float64 (N, k) distances (Euclidean for l2, not squared) and int64 (N, k) reference
        indices, nearest first; equal distances are ordered by the lowest reference index.

    Raises:
        GanforgeError: on a bad metric, k, chunk size or mismatched shapes.
    """
    if metric not in DISTANCES:
        raise GanforgeError(f"unknown k-NN metric {metric!r}; use one of {', '.join(DISTANCES)}")
    q_all, r_all = _flat(queries, "queries"), _flat(refs, "refs")
    n, m = q_all.shape[0], r_all.shape[0]
    if q_all.shape[1] != r_all.shape[1]:
        raise GanforgeError(
            f"queries have {q_all.shape[1]} values per row but refs have {r_all.shape[1]}; "
            "use images of the same size and channels"
        )
    if not 1 <= k <= m:
        raise GanforgeError(f"k={k} must be between 1 and the number of references ({m}); lower k")
    if query_chunk < 1 or ref_chunk < 1:
        raise GanforgeError("query_chunk and ref_chunk must be positive; pass e.g. 1024 and 8192")
    device = torch.device(device)
    dim = q_all.shape[1]
    kk = min(m, k + max(extra, 0))
    # Error bound factor of the float32 pass: dot products of length D (gamma_D), the three-term sum and
    # the rounding of the inputs to float32; doubled for safety. See the module docstring.
    gamma = 2.0 * (dim + 8) * _U32 / (1.0 - (dim + 8) * _U32)

    # Largest reference norm, for the per-query error bound; one float64 pass over the references.
    step = min(ref_chunk, 1024)
    r_max = max(float(_norms(r_all[s : s + step].double(), metric).max()) for s in range(0, m, step))

    out_d = torch.empty(n, k, dtype=torch.float64)
    out_i = torch.empty(n, k, dtype=torch.long)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would void the float32 error bound
    blocks = -(-n // query_chunk) * -(-m // ref_chunk)
    try:
        with progress_bar(progress or "k-NN", n, "query", enabled=progress is not None and blocks > 1) as bar:
            for qs in range(0, n, query_chunk):
                q = q_all[qs : qs + query_chunk]
                d, i = _chunk_knn(q, r_all, k, kk, metric, ref_chunk, device, gamma, r_max, bar, qs)
                out_d[qs : qs + q.shape[0]], out_i[qs : qs + q.shape[0]] = d.cpu(), i.cpu()
                bar.update(qs + q.shape[0])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if metric == "l2":
        out_d = out_d.sqrt()
    return out_d, out_i


def _chunk_knn(q, refs, k, kk, metric, ref_chunk, device, gamma, r_max, bar, done):
    """One query chunk: float32 candidates, the error-bound check, float64 re-ranking and fallback.

    ``bar`` counts the chunk's queries in proportion to the references scanned, from ``done``.
    """
    best_v = torch.empty(q.shape[0], 0, dtype=torch.float32, device=device)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=device)
    for start, d in _ref_blocks(q, refs, metric, ref_chunk, device, torch.float32):
        # Reduce the block to its own top-k' first, so the merge touches only (n, 2k') values.
        top = torch.topk(d, min(kk, d.shape[1]), dim=1, largest=False, sorted=False)
        del d
        vals = torch.cat([best_v, top.values], 1)
        ids = torch.cat([best_i, top.indices + start], 1)
        top = torch.topk(vals, min(kk, vals.shape[1]), dim=1, largest=False, sorted=True)
        best_v, best_i = top.values, ids.gather(1, top.indices)
        bar.update(done + q.shape[0] * min(start + ref_chunk, refs.shape[0]) / refs.shape[0])

    # Candidates are sufficient when the kept k'-th approximate distance beats the k-th by 2B
    # (or when every reference was kept).
    bound = gamma * (_norms(q.double(), metric).to(device) + r_max)
    if kk >= refs.shape[0]:
        ok = torch.ones(q.shape[0], dtype=torch.bool, device=device)
    else:
        ok = (best_v[:, -1].double() - best_v[:, k - 1].double()) > 2.0 * bound
    out_d = torch.empty(q.shape[0], k, dtype=torch.float64, device=device)
    out_i = torch.empty(q.shape[0], k, dtype=torch.long, device=device)
    sub = max(1, (1 << 20) // max(1, kk * q.shape[1]))  # keeps the gathered (sub, k', D) float64 block ~8 MB
    good = torch.nonzero(ok).flatten()
    for s in range(0, good.numel(), sub):
        rows = good[s : s + sub]
        cand = best_i[rows]
        exact = _exact_dist(q[rows.cpu()].to(device), refs[cand.cpu()].to(device), metric)
        out_d[rows], out_i[rows] = _lex_topk(exact, cand, k)
    bad = torch.nonzero(~ok).flatten()
    if bad.numel():
        out_d[bad], out_i[bad] = _float64_pass(q[bad.cpu()], refs, k, metric, ref_chunk, device)
    return out_d, out_i
