"""Image-generation metrics, registered by name.

A metric takes real and generated features (N, D) from one backbone (``ganforge.metrics.features``)
plus keyword options and returns named values. Extraction, batching and caching of real statistics
happen in the caller; logged keys state budget and reference (``metric_key``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ganforge.errors import GanforgeError
from ganforge.metrics.fid import fid
from ganforge.metrics.kid import kid
from ganforge.metrics.prdc import prdc

METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "fid": fid,
    "kid": kid,
    "prdc": prdc,
}


def get_metric(name: str) -> Callable[..., dict[str, float]]:
    """The registered metric function; an unknown name lists the valid ones."""
    if name not in METRICS:
        raise GanforgeError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}")
    return METRICS[name]


def compute_metrics(names: list[str], real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Run several registered metrics on the same features; names are checked before any work."""
    fns = [get_metric(n) for n in names]
    out: dict[str, float] = {}
    for fn in fns:
        out.update(fn(real, fake))
    return out


def metric_key(value_name: str, n: int, reference: str) -> str:
    """Key stating budget and reference, e.g. ("fid", 10000, "train") -> "fid_10k_train"."""
    budget = f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
    return f"{value_name}_{budget}_{reference}"
