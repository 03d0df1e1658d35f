"""Quick, Draw! numpy bitmaps: one ``.npy`` file per category of 28x28 grey drawings.

Google's quickdraw_dataset publishes ``full/numpy_bitmap/<category>.npy`` (downloaded under names such as
``full_numpy_bitmap_camel.npy``): a uint8 array (N, 784), each row a drawing rasterised to 28x28, row
after row, strokes bright on a black background as in MNIST. A file holds 100,000 drawings or more, so
files are memory-mapped: opening one reads its header only, and ingest reads just the rows it keeps.
The class of a drawing is its file's category (the file name less ``full_numpy_bitmap_``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganforge.data.sources.base import RowKeys, Source, read_by_part
from ganforge.errors import GanforgeError

PREFIX = "full_numpy_bitmap_"
SIDE = 28
NPY_MAGIC = b"\x93NUMPY"
WHERE = "https://console.cloud.google.com/storage/browser/quickdraw_dataset/full/numpy_bitmap"
LAYOUT = f"a {PREFIX}<category>.npy file (uint8, shape (N, {SIDE * SIDE})) or a folder of them"


def open_quickdraw(input_path: str | None, download: bool) -> Source:
    """Open one Quick, Draw! ``.npy`` bitmap file, or every ``.npy`` file of a folder (one class each).

    Args:
        input_path: the ``.npy`` file or the folder; required.
        download: ignored; get the files from the quickdraw_dataset bucket (see ``WHERE``).

    Returns:
        A ``Source`` of (28, 28, 1) uint8 images without splits; class names are the categories (sorted
        for a folder); ``keys`` are ``<category>/<row in its file>``.

    Raises:
        GanforgeError: no input, no ``.npy`` file, a file that is not a uint8 (N, 784) array, holds no
            drawing, or two files of one category.
    """
    del download  # the bucket is not downloaded by ganforge
    if not input_path:
        raise GanforgeError(f"the quickdraw source needs an input path: {LAYOUT}, from {WHERE}")
    files = _list_files(Path(input_path).expanduser())
    categories = [category(f) for f in files]
    for name in categories:
        if categories.count(name) > 1:
            same = [f.name for f in files if category(f) == name]
            raise GanforgeError(f"{' and '.join(same)} are both category {name!r}; keep one of them")
    arrays = [_open_array(f) for f in files]
    counts = [len(a) for a in arrays]
    starts = np.cumsum([0, *counts]).astype(np.int64)

    def read_part(p: int, rows: np.ndarray) -> np.ndarray:
        try:  # a memory map reads only these rows' pages
            return np.asarray(arrays[p][rows]).reshape(-1, SIDE, SIDE, 1)
        except (OSError, ValueError) as err:
            raise GanforgeError(f"{files[p]} cannot be read ({err}); get the file again") from err

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return read_by_part(starts, indices, read_part)

    return Source(
        name="quickdraw",
        class_names=categories,
        labels=np.repeat(np.arange(len(files), dtype=np.int64), counts),
        splits=None,
        read=read,
        keys=RowKeys(categories, counts),
        details={"files": [{"name": f.name, "drawings": n} for f, n in zip(files, counts)]},
    )


def category(path: Path) -> str:
    """The category of a bitmap file: ``full_numpy_bitmap_hot air balloon.npy`` -> ``hot air balloon``."""
    return path.stem.removeprefix(PREFIX) or path.stem


def _list_files(path: Path) -> list[Path]:
    """The ``.npy`` file given, or the visible ``.npy`` files of a folder sorted by category."""
    if not path.exists():
        raise GanforgeError(f"{path} does not exist; give {LAYOUT}")
    if path.is_file():
        return [path]
    files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".npy" and not p.name.startswith(".")]
    if not files:
        raise GanforgeError(f"no .npy files in {path}; give {LAYOUT}, from {WHERE}")
    return sorted(files, key=lambda f: (category(f), f.name))


def _open_array(path: Path) -> np.ndarray:
    """``path`` memory-mapped as a (N, 784) uint8 array with N >= 1, its pixels not read yet."""
    fix = f"expected {LAYOUT}; get the file again from {WHERE}"
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
        array = np.load(path, mmap_mode="r", allow_pickle=False) if magic == NPY_MAGIC else None
    except (OSError, ValueError, EOFError) as err:  # a short header, a file shorter than its header says
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise GanforgeError(f"{path} is not a whole .npy array ({reason}); {fix}") from err
    if array is None:  # a .npz, a pickle or text, renamed .npy
        raise GanforgeError(f"{path} is not a .npy array file; {fix}")
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != SIDE * SIDE:
        shape = "x".join(map(str, array.shape)) or "scalar"
        raise GanforgeError(f"{path} holds a {array.dtype} array of shape {shape}; {fix}")
    if len(array) == 0:
        raise GanforgeError(f"{path} holds no drawings (shape 0x{SIDE * SIDE}); {fix}")
    return array
