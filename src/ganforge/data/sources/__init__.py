"""Dataset sources: each module turns one kind of input into a ``Source``.

A source is random-access so that ingest can filter classes and draw a seeded ``--limit`` subset
from the labels alone, then read only the images it keeps, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

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


# name -> opener(input_path: str | None, download: bool) -> Source. Filled below, one line per module.
SOURCES: dict[str, Callable[..., Source]] = {}


def open_source(name: str, input_path: str | None = None, download: bool = False) -> Source:
    """Open the source called ``name``; unknown names list the valid ones."""
    from ganforge.errors import GanforgeError

    _register_all()
    if name not in SOURCES:
        raise GanforgeError(f"unknown source {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](input_path, download)


def _register_all() -> None:
    if SOURCES:
        return
    from ganforge.data.sources import digits, folder, galaxy10, torchvision_idx

    SOURCES["digits"] = digits.open_digits
    SOURCES["folder"] = folder.open_folder
    SOURCES["galaxy10"] = galaxy10.open_galaxy10
    SOURCES["mnist"] = torchvision_idx.open_mnist
    SOURCES["fashion-mnist"] = torchvision_idx.open_fashion_mnist
    SOURCES["kmnist"] = torchvision_idx.open_kmnist


SOURCE_NAMES = ("mnist", "fashion-mnist", "kmnist", "galaxy10", "folder", "digits")
