"""scikit-learn's bundled handwritten digits: 1,797 8x8 grey images, no network needed.

The embedded default dataset: it ships inside scikit-learn, so the whole pipeline runs offline.
"""

from __future__ import annotations

import numpy as np

from ganforge.data.sources.base import Source


def open_digits(input_path: str | None, download: bool) -> Source:
    """Open ``sklearn.datasets.load_digits`` as a source.

    Pixel values 0..16 are scaled to uint8 0..255 as ``round(v * 255 / 16)`` (halves round up).

    Args:
        input_path: ignored; the data is bundled with scikit-learn.
        download: ignored; nothing to download.

    Returns:
        A ``Source`` of (8, 8, 1) uint8 images, class names ``"0"``..``"9"``, no splits; ``keys`` are
        row indices in scikit-learn's array.
    """
    from sklearn.datasets import load_digits

    del input_path, download  # bundled data: no path, no download
    bunch = load_digits()
    # Values are whole numbers 0..16 stored as float; integer maths keeps the rounding exact.
    values = np.rint(bunch.images).astype(np.int64)
    images = ((values * 255 + 8) // 16).astype(np.uint8)[..., None]

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return list(images[np.asarray(indices, dtype=np.int64)])

    return Source(
        name="digits",
        class_names=[str(name) for name in bunch.target_names],
        labels=bunch.target.astype(np.int64),
        splits=None,
        read=read,
        keys=np.arange(len(images), dtype=np.int64),
        details={"dataset": "sklearn.datasets.load_digits"},
    )
