"""What a source hands to ingest: a ``Source`` (labels, splits and a random-access image reader).

A source is random-access so that ingest can filter classes and draw a seeded ``--limit`` subset
from the labels alone, then read only the images it keeps, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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
        keys: optional (N,) provenance of each image (a relative path, an index in the file).
        details: facts worth keeping in the manifest (file hash, file name, ...), no secrets.
    """

    name: str
    class_names: list[str]
    labels: np.ndarray
    splits: np.ndarray | None
    read: ImageReader
    keys: np.ndarray | None = None
    details: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)
