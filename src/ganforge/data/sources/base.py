"""What a source hands to ingest: a ``Source`` (labels, splits and a random-access image reader).

A source is random-access so that ingest can filter classes and draw a seeded ``--limit`` subset
from the labels alone, then read only the images it keeps, in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, overload

import numpy as np


class ImageReader(Protocol):
    def __call__(self, indices: np.ndarray) -> list[np.ndarray]:
        """Return the images at ``indices`` (sorted, int64) as (H, W, C) uint8 arrays, C in {1, 3}."""


@dataclass
class Source:
    """What ingest needs from a source.

    Attributes:
        name: the source's registry name (``mnist``, ``galaxy10``, ...).
        class_names: name of each label id; ``labels`` index into it.
        labels: (N,) int64 label of every image, in source order.
        splits: (N,) array of split names (``train``/``test``) or None when the source has no split
            (ingest then draws ``train``/``val`` with ``--split-seed``/``--val-fraction``).
        read: reads images by index; called with sorted chunks of a few thousand indices.
        keys: optional (N,) provenance of each image (a relative path, an index in the file), as an
            array or as ``RowKeys`` (made on demand) for sources of millions of rows.
        details: facts worth keeping in the manifest (file hash, file name, ...), no secrets.
        attribute_names: names of per-image yes/no attributes (CelebA's ``Smiling``, ...), or None when
            the source has none; ingest stores them in the manifest, in this order.
        attributes: (N, A) bool, image i has attribute j, or None (exactly when ``attribute_names`` is).
    """

    name: str
    class_names: list[str]
    labels: np.ndarray
    splits: np.ndarray | None
    read: ImageReader
    keys: np.ndarray | RowKeys | None = None
    details: dict = field(default_factory=dict)
    attribute_names: list[str] | None = None
    attributes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


class RowKeys:
    """The keys ``<part>/<row>`` of rows stored part after part (files, batches), made when asked for.

    A source of tens of millions of rows (every Quick, Draw! category) would otherwise hold a Python-sized
    string per row; this holds one offset per part. Indexed like a (N,) array: an int gives one key, an
    integer array an array of keys.
    """

    def __init__(self, parts: list[str], counts: list[int]):
        self.parts = list(parts)
        self.starts = np.cumsum([0, *counts]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @overload
    def __getitem__(self, index: int | np.integer) -> str: ...
    @overload
    def __getitem__(self, index: np.ndarray) -> np.ndarray: ...
    def __getitem__(self, index):
        rows = np.asarray(index, dtype=np.int64)
        if ((rows < 0) | (rows >= len(self))).any():
            raise IndexError(f"row {index} outside 0..{len(self) - 1}")
        part = np.searchsorted(self.starts, rows, side="right") - 1
        if rows.ndim == 0:
            return f"{self.parts[int(part)]}/{int(rows - self.starts[part])}"
        return np.array([f"{self.parts[p]}/{r - self.starts[p]}" for p, r in zip(part.tolist(), rows.tolist())],
                        dtype=str)


def read_by_part(starts: np.ndarray, indices: np.ndarray,
                 read_part: Callable[[int, np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Images ``indices`` of files laid end to end (``starts``: each file's first index, then the total),
    each file read once for all its rows: ``read_part(p, rows)`` gives file ``p``'s images at ``rows``."""
    indices = np.asarray(indices, dtype=np.int64)
    part = np.searchsorted(starts, indices, side="right") - 1
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(indices)
    for p in np.unique(part).tolist():
        at = np.flatnonzero(part == p)
        for k, image in zip(at.tolist(), read_part(p, indices[at] - starts[p])):
            out[k] = image
    return out
