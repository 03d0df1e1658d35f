"""Dataset sources by name: each module turns one kind of input into a ``Source`` (see ``base``).

``SOURCES`` is the one list of source names: ingest's choices, its help and the pipeline's ``source``
parameter read it. A new source is one module here plus one line in ``SOURCES``.
"""

from __future__ import annotations

from typing import Callable

from ganforge.data.sources import celeba, cifar10, digits, folder, galaxy10, quickdraw, torchvision_idx
from ganforge.data.sources.base import ImageReader, RowKeys, Source
from ganforge.errors import GanforgeError

__all__ = ["SOURCES", "SOURCE_NAMES", "ImageReader", "RowKeys", "Source", "open_source"]

# name -> opener(input_path: str | None, download: bool) -> Source
SOURCES: dict[str, Callable[[str | None, bool], Source]] = {
    "mnist": torchvision_idx.open_mnist,
    "fashion-mnist": torchvision_idx.open_fashion_mnist,
    "kmnist": torchvision_idx.open_kmnist,
    "galaxy10": galaxy10.open_galaxy10,
    "folder": folder.open_folder,
    "digits": digits.open_digits,
    "quickdraw": quickdraw.open_quickdraw,
    "cifar10": cifar10.open_cifar10,
    "celeba": celeba.open_celeba,
}
SOURCE_NAMES = tuple(SOURCES)


def open_source(name: str, input_path: str | None = None, download: bool = False) -> Source:
    """Open the source called ``name``; unknown names list the valid ones."""
    if name not in SOURCES:
        raise GanforgeError(f"unknown source {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](input_path, download)
