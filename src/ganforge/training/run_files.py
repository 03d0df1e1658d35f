"""What a run leaves in its output directory besides checkpoints, tracked or not.

``grids/step-<step>.png`` or ``grids/epoch-<epoch>.png`` (the fixed-latent grids), ``metrics.csv``
(every logged metric, one row per logged step), ``loss_curve.png`` and, when the FID probe measured,
``fid_curve.png`` (FID per epoch). Each file is written through a
temp name and a rename (``ganforge.outputs``), so a kill never leaves half of one; the pictures are
drawn by ``ganforge.pictures``, which also draws the loss plot the tracker logs.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ganforge.outputs import write_bytes_atomic, write_text_atomic
from ganforge.pictures import FID_PLOT, LOSS_PLOT, fid_plot_png, loss_plot_png

METRICS_CSV = "metrics.csv"
GRIDS_DIR = "grids"  # beside samples/ (final.png, interpolation.png), which is uploaded to MLflow whole
GRID_PATTERNS = ("step-*.png", "epoch-*.png")


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
    path = Path(output) / LOSS_PLOT
    write_bytes_atomic(path, loss_plot_png(history))
    return path


def write_fid_plot(output: str | Path, series: dict[str, list[tuple[int, float]]]) -> Path:
    """Plot ``key -> [(epoch, FID)]`` into ``fid_curve.png`` in ``output``."""
    path = Path(output) / FID_PLOT
    write_bytes_atomic(path, fid_plot_png(series))
    return path


def clear_outputs(output: str | Path) -> None:
    """Remove a previous run's grids, metrics and plots (a fresh run with --overwrite must not mix with it)."""
    out = Path(output)
    for pattern in GRID_PATTERNS:
        for p in (out / GRIDS_DIR).glob(pattern):
            p.unlink(missing_ok=True)
    for name in (METRICS_CSV, LOSS_PLOT, FID_PLOT):
        (out / name).unlink(missing_ok=True)
