"""What a run leaves in its output directory besides checkpoints, tracked or not.

``grids/step-<step>.png`` or ``grids/epoch-<epoch>.png`` (the fixed-latent grids), ``metrics.csv``
(every logged metric, one row per logged step) and ``loss_curve.png``. Each file is written through a
temp name and a rename (``ganforge.outputs``), so a kill never leaves half of one.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ganforge.outputs import write_bytes_atomic, write_text_atomic

METRICS_CSV = "metrics.csv"
LOSS_PLOT = "loss_curve.png"
GRIDS_DIR = "grids"  # beside samples/ (final.png, interpolation.png), which is uploaded to MLflow whole
GRID_PATTERNS = ("step-*.png", "epoch-*.png")


def grid_columns(n: int) -> int:
    """Columns of a grid of ``n`` images: the smallest divisor of ``n`` at least its square root, so grids
    come out full (24 as 6 x 4, the Galaxy10 seed's snapshot; 25 as 5 x 5); ceil(sqrt(n)) for a prime."""
    root = math.isqrt(n - 1) + 1 if n > 1 else 1
    for c in range(root, min(n, 2 * root) + 1):
        if n % c == 0:
            return c
    return root


def save_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, C) uint8 image as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    write_bytes_atomic(Path(path), buf.getvalue())


def write_metrics_csv(output: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` (each a dict with ``step`` and metric values) as ``metrics.csv``; columns: step, then
    every metric name in sorted order (a metric missing from a row is an empty cell)."""
    keys = sorted({k for r in rows for k in r if k != "step"})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", *keys])
    for r in rows:
        w.writerow([r["step"], *(repr(float(r[k])) if k in r else "" for k in keys)])
    path = Path(output) / METRICS_CSV
    write_text_atomic(path, buf.getvalue())
    return path


def read_metrics_csv(output: str | Path) -> list[dict]:
    """The rows of ``metrics.csv`` in ``output`` (none when it is missing)."""
    path = Path(output) / METRICS_CSV
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"step": int(r.pop("step")), **{k: float(v) for k, v in r.items() if v != ""}})
    return rows


def write_loss_plot(output: str | Path, history: dict[str, list[tuple[int, float]]]) -> Path:
    """Plot ``key -> [(step, value)]`` into ``loss_curve.png`` in ``output``."""
    import matplotlib

    matplotlib.use("Agg")  # no display inside pipelines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, points in sorted(history.items()):
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = Path(output) / LOSS_PLOT
    write_bytes_atomic(path, buf.getvalue())
    return path


def clear_outputs(output: str | Path) -> None:
    """Remove a previous run's grids, metrics and plot (a fresh run with --overwrite must not mix with it)."""
    out = Path(output)
    for pattern in GRID_PATTERNS:
        for p in (out / GRIDS_DIR).glob(pattern):
            p.unlink(missing_ok=True)
    for name in (METRICS_CSV, LOSS_PLOT):
        (out / name).unlink(missing_ok=True)
