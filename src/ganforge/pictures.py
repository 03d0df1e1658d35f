"""Pictures: image tensors as uint8 arrays, sample grids, PNG files and metric curves, drawn in one place.

The training loop's grids (``grids/``, ``samples/final.png``), its ``loss_curve.png`` and the copy
of that plot the tracker logs to MLflow, its ``fid_curve.png``, ``ganforge latent``'s grids, ``ganforge
encode --plot``'s scatter and ``ganforge generate``'s files are all drawn here. Images come in as (N, C, H, W) floats in [-1, 1] and leave as (H, W, C) uint8.

This module sits beside ``ganforge.tracking`` (which logs the loss plot it draws) and below inference and
training: it imports only ``ganforge.outputs``; torch, torchvision, PIL and matplotlib load when a picture
is drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ganforge.outputs import write_bytes_atomic

if TYPE_CHECKING:
    import torch

LOSS_PLOT = "loss_curve.png"  # in a run's --output and at the root of its MLflow artifacts
FID_PLOT = "fid_curve.png"  # beside it, when the run's FID probe (--fid-every) measured


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    import torch

    x = ((images.clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_columns(n: int) -> int:
    """Columns of a grid of ``n`` images: the smallest divisor of ``n`` at least its square root, so grids
    come out full (24 as 6 x 4, the Galaxy10 seed's snapshot; 25 as 5 x 5); ceil(sqrt(n)) for a prime."""
    root = math.isqrt(n - 1) + 1 if n > 1 else 1
    for c in range(root, min(n, 2 * root) + 1):
        if n % c == 0:
            return c
    return root


def grid_image(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array, ``nrow`` per row."""
    from torchvision.utils import make_grid

    n = images.shape[0]
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    g = make_grid(images.float(), nrow=nrow, padding=padding, pad_value=-1.0)
    return to_uint8(g.unsqueeze(0))[0]


def encode_image(image: np.ndarray, image_format: str = "PNG") -> bytes:
    """An (H, W, C) uint8 image as the bytes of an image file (PIL's ``image_format``: PNG, JPEG, ...)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format=image_format)
    return buf.getvalue()


def save_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, C) uint8 image as PNG, atomically."""
    write_bytes_atomic(Path(path), encode_image(image))


def loss_plot_png(history: dict[str, list[tuple[int, float]]]) -> bytes:
    """PNG bytes of one line per ``key -> [(step, value)]`` (700 x 400 px), keys in sorted order."""
    import matplotlib

    matplotlib.use("Agg")  # no display inside pipelines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        for key, points in sorted(history.items()):
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display inside pipelines
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def fid_plot_png(series: dict[str, list[tuple[int, float]]]) -> bytes:
    """PNG bytes of FID per epoch (700 x 400 px): one line with a marker per measurement for each
    ``key -> [(epoch, value)]`` (the key names the budget and reference, ``train/fid_1k_train``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        for key, points in sorted(series.items()):
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("FID")
        ax.legend()
        return _png(fig)
    finally:
        plt.close(fig)


def latent_scatter_png(z: np.ndarray, labels: np.ndarray, class_names: list[str], axes: tuple[str, str],
                       title: str) -> bytes:
    """PNG bytes of points ``z`` (N, 2) coloured by class (800 x 700 px), with a legend of class names.

    Args:
        z: (N, 2) coordinates.
        labels: (N,) class ids into ``class_names``.
        class_names: the name of each class id; only classes present are in the legend.
        axes: the two axis labels.
        title: what the points are.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    try:
        present = sorted(set(labels.tolist()))
        cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
        for c in present:
            pts = z[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=4 if len(z) > 2000 else 12, alpha=0.6, color=cmap(c % cmap.N),
                       label=class_names[c] if c < len(class_names) else str(c))
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        ax.set_title(title)
        ax.legend(markerscale=2, fontsize="small", loc="best")
        return _png(fig)
    finally:
        plt.close(fig)
