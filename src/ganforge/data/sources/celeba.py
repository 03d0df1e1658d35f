"""CelebA: aligned face images with 40 yes/no attributes per image (``Smiling``, ``Eyeglasses``, ...).

The layout of the CelebA release (and of ``torchvision.datasets.CelebA``'s ``celeba/`` folder):
``img_align_celeba/`` of JPEGs (``000001.jpg`` ...), ``list_attr_celeba.txt`` (line 1 the number of
images, line 2 the attribute names, then one line per image: its file name and 1 or -1 per attribute),
and optionally ``list_eval_partition.txt`` (file name, then 0 train, 1 validation, 2 test). Kaggle's copy
has the same tables as CSV (``list_attr_celeba.csv``: a header ``image_id,<names>``, then a row per image;
``list_eval_partition.csv``: ``image_id,partition``) and the images one folder deeper; both are read.

The attribute table defines the dataset: every image it lists must be there, images it does not list are
left out. The attributes are kept per image (``Source.attributes``) so that ingest stores them and
``ganforge reconstruct --attribute Smiling`` can do the latent arithmetic of Generative Deep Learning ch. 3.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ganforge.data.sources.base import Source
from ganforge.data.sources.folder import decode_image, is_image_file
from ganforge.errors import GanforgeError

ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
IMAGE_FOLDERS = ("img_align_celeba/img_align_celeba", "img_align_celeba", ".")  # Kaggle's copy nests it twice
PARTITIONS = {"0": "train", "1": "val", "2": "test"}  # ganforge's split names for CelebA's 0, 1, 2
LAYOUT = (
    "a folder with list_attr_celeba.txt (or .csv) and the images it lists (in img_align_celeba/ or beside it), "
    "optionally list_eval_partition.txt"
)


def open_celeba(input_path: str | None, download: bool) -> Source:
    """Open a CelebA-style folder: images, their attribute table and (if present) their partition.

    Args:
        input_path: the folder holding ``list_attr_celeba.txt`` (or a ``celeba/`` folder that does); required.
        download: ignored; CelebA is distributed by its authors (Google Drive), not fetched by ganforge.

    Returns:
        A ``Source`` of RGB images (decoded on read; 178x218 in the release, so ingest them with
        ``--image-size``), one class named after the image folder, splits from the partition file or
        None, ``keys`` the file names, and ``attribute_names``/``attributes`` from the table.

    Raises:
        GanforgeError: no table, a malformed one (wrong count, a line of the wrong length, a value other
            than 1 or -1, a repeated file name or attribute), a listed image that is missing, or a partition
            file that leaves a listed image out or names a partition other than 0, 1, 2.
    """
    del download  # not fetched by ganforge
    if not input_path:
        raise GanforgeError(f"the celeba source needs an input path: {LAYOUT}")
    root = _resolve_root(Path(input_path).expanduser())
    table = _first_existing(root, ATTRIBUTE_FILES)
    if table is None:
        raise GanforgeError(f"no {' or '.join(ATTRIBUTE_FILES)} in {root}; give {LAYOUT}")
    names, files, values = _read_attributes(table)
    images = _image_folder(root, table, files)
    partition = _first_existing(root, PARTITION_FILES)
    splits = _read_partition(partition, files) if partition is not None else None
    keys = np.array(files, dtype=str)

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return [decode_image(images / name) for name in keys[np.asarray(indices, dtype=np.int64)]]

    listed = set(files)
    unlisted = sum(1 for e in os.scandir(images) if e.is_file() and is_image_file(e.name) and e.name not in listed)
    return Source(
        name="celeba",
        class_names=[images.resolve().name],
        labels=np.zeros(len(files), dtype=np.int64),
        splits=splits,
        read=read,
        keys=keys,
        details={"attribute_file": table.name, "partition_file": partition.name if partition else None,
                 "image_folder": images.relative_to(root).as_posix(), "images": len(files),
                 "unlisted_images": unlisted},
        attribute_names=names,
        attributes=values,
    )


def _resolve_root(path: Path) -> Path:
    if not path.is_dir():
        raise GanforgeError(f"{path} {'is not a folder' if path.exists() else 'does not exist'}; give {LAYOUT}")
    if _first_existing(path, ATTRIBUTE_FILES) is None and (path / "celeba").is_dir():
        return path / "celeba"  # torchvision's root
    return path


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_file()), None)


def _rows(path: Path, counted: bool) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header fields, [(line number, fields)]) of a CelebA table, .txt (whitespace) or .csv (a header line).

    ``counted``: the .txt starts with the number of rows and a header line (the attribute table; the
    count is checked here); else the .txt has neither and the header comes back empty.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise GanforgeError(f"{path} is not text ({err.reason}); get the file again") from err
    if path.suffix.lower() == ".csv":
        lines = [(k, row) for k, row in enumerate(csv.reader(io.StringIO(text)), 1) if any(f.strip() for f in row)]
        if not lines:
            raise GanforgeError(f"{path} is empty; it needs a header line image_id,... and a row per image")
        return [f.strip() for f in lines[0][1]], [(k, [f.strip() for f in row]) for k, row in lines[1:]]
    lines = [(k, line.split()) for k, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not counted:
        return [], lines
    if len(lines) < 2 or len(lines[0][1]) != 1 or not lines[0][1][0].isdigit():
        raise GanforgeError(f"{path} does not start with a line holding the number of images, then the attribute "
                            "names; get the file again")
    count, rows = int(lines[0][1][0]), lines[2:]
    if count != len(rows):
        raise GanforgeError(f"{path} says {count} images on line 1 but lists {len(rows)}; the file is cut short or "
                            "edited, get it again (or fix line 1)")
    return ["image_id", *lines[1][1]], rows


def _read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, (N, A) bool) from the attribute table; raises naming the bad line."""
    header, rows = _rows(path, counted=True)
    names = header[1:]
    if not names or not all(names):
        raise GanforgeError(f"{path} names no attributes (or an empty one) in its header; get the file again")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GanforgeError(f"{path} names attribute {repeated[0]!r} twice; get the file again")
    if not rows:
        raise GanforgeError(f"{path} lists no images; it needs a line per image")
    for k, fields in rows:
        if len(fields) != 1 + len(names):
            raise GanforgeError(f"{path} line {k} has {len(fields) - 1} values for {len(names)} attributes; each line "
                                "is a file name and 1 or -1 per attribute, fix or remove it")
    values = np.array([fields[1:] for _, fields in rows])
    bad = np.flatnonzero(~np.isin(values, ["1", "-1"]).all(axis=1))
    if len(bad):
        k, fields = rows[bad[0]]
        value = next(v for v in fields[1:] if v not in ("1", "-1"))
        raise GanforgeError(f"{path} line {k} holds {value!r}; attributes are 1 (has it) or -1 (has not), fix the line")
    files = [fields[0] for _, fields in rows]
    seen: set[str] = set()
    for k, name in zip((k for k, _ in rows), files):
        if name in seen:
            raise GanforgeError(f"{path} line {k} lists {name} again; keep one line per image")
        seen.add(name)
    return names, files, values == "1"


def _image_folder(root: Path, table: Path, files: list[str]) -> Path:
    """The folder holding the listed images; raises naming the first missing one."""
    candidates = [root / sub for sub in IMAGE_FOLDERS if (root / sub).is_dir()]
    folder = next((c for c in candidates if (c / files[0]).is_file()), None)
    if folder is None:
        where = " or ".join(str(c) for c in candidates)
        raise GanforgeError(f"{table.name} lists {files[0]}, which is not in {where}; put the images in "
                            f"{root / 'img_align_celeba'}")
    present = {e.name for e in os.scandir(folder) if e.is_file()}
    missing = [f for f in files if f not in present and not (folder / f).is_file()]
    if missing:
        raise GanforgeError(f"{table.name} lists {len(missing)} image(s) missing from {folder} (first: {missing[0]}); "
                            f"restore them or remove their lines from {table.name}")
    return folder


def _read_partition(path: Path, files: list[str]) -> np.ndarray:
    """The split of each listed image, from the partition file; every listed image must be in it."""
    header, rows = _rows(path, counted=False)
    if path.suffix.lower() == ".csv" and len(header) != 2:
        raise GanforgeError(f"{path} has header {','.join(header)}; expected image_id,partition")
    part: dict[str, str] = {}
    for k, fields in rows:
        if len(fields) != 2 or fields[1] not in PARTITIONS:
            raise GanforgeError(f"{path} line {k} is {' '.join(fields)!r}; each line is a file name and 0 (train), "
                                "1 (val) or 2 (test), fix the line")
        part[fields[0]] = PARTITIONS[fields[1]]
    left_out = [f for f in files if f not in part]
    if left_out:
        raise GanforgeError(f"{path.name} leaves out {len(left_out)} listed image(s) (first: {left_out[0]}); add them "
                            f"or remove {path.name} to draw a val split instead")
    return np.array([part[f] for f in files])
