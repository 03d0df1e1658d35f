"""A directory of image files: one sub-directory per class (torchvision ImageFolder) or flat.

Listing follows ``torchvision.datasets.ImageFolder``: class names are the sorted sub-directory names,
files are found recursively in sorted order, and extensions are torchvision's ``IMG_EXTENSIONS``
(case-insensitive). Unlike ImageFolder, hidden entries (``.git``, macOS ``._x.jpg`` sidecars) are
skipped, and a directory without sub-directories is one class named after the directory.
Images are decoded only when read, so a large folder opens fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ganforge.data.sources.base import Source
from ganforge.errors import GanforgeError

LAYOUT_HELP = "one sub-directory of images per class, or images directly in the directory for one class"


def open_folder(input_path: str | None, download: bool) -> Source:
    """Open a directory of images.

    Args:
        input_path: the directory; required.
        download: ignored, there is nothing to download.

    Returns:
        A ``Source`` without splits; ``keys`` are the files' paths relative to the directory (posix).

    Raises:
        GanforgeError: the directory is missing, not a directory, has no images, has an empty class
            folder, or mixes loose images with class folders.
    """
    del download  # a local folder has no remote copy
    if not input_path:
        raise GanforgeError(f"the folder source needs an input path: a directory with {LAYOUT_HELP}")
    root = Path(input_path).expanduser()
    if not root.exists():
        raise GanforgeError(f"image folder {root} does not exist; give a directory with {LAYOUT_HELP}")
    if not root.is_dir():
        raise GanforgeError(f"{root} is not a directory; give a directory with {LAYOUT_HELP}")
    class_names, files_per_class, layout = _list_classes(root)
    keys = np.array([rel for files in files_per_class for rel in files])
    labels = np.concatenate(
        [np.full(len(files), label, dtype=np.int64) for label, files in enumerate(files_per_class)]
    )

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return [decode_image(root / rel) for rel in keys[np.asarray(indices, dtype=np.int64)]]

    return Source(
        name="folder",
        class_names=class_names,
        labels=labels,
        splits=None,
        read=read,
        keys=keys,
        details={"directory": _folder_name(root), "layout": layout, "files": len(keys)},
    )


def decode_image(path: Path) -> np.ndarray:
    """Decode one file as (H, W, C) uint8: grey stays C=1, everything else becomes RGB (C=3).

    16-bit grey is scaled to 8 bits with rounding; transparency is composited on black; EXIF
    orientation is applied so photos come out the way viewers show them.

    Raises:
        GanforgeError: the file will not decode.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            return _to_array(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise GanforgeError(f"cannot decode image {path} ({reason}); remove or replace the file") from err


def is_image_file(name: str) -> bool:
    """True for a visible file with one of torchvision's image extensions, in any case."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _list_classes(root: Path) -> tuple[list[str], list[list[str]], str]:
    """Class names, per class its files relative to ``root``, and the layout; raises on unusable ones."""
    subdirs = _subdirs(root)
    loose = sorted(entry.name for entry in os.scandir(root) if entry.is_file() and is_image_file(entry.name))
    if not subdirs:
        if not loose:
            raise GanforgeError(f"no images found in {root}; give a directory with {LAYOUT_HELP}")
        return [_folder_name(root)], [loose], "flat"
    if loose:
        raise GanforgeError(
            f"{root} has {len(loose)} image(s) beside its class folders (e.g. {loose[0]}); move them into a "
            "class folder or remove them"
        )
    files_per_class = []
    for name in subdirs:
        files = _list_images(root, root / name)
        if not files:
            raise GanforgeError(f"class folder {root / name} has no images; add images or remove the folder")
        files_per_class.append(files)
    return subdirs, files_per_class, "class folders"


def _subdirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _list_images(root: Path, folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, in sorted order, as posix paths relative to ``root``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        # Sorting in place fixes the walk order, so keys and labels do not depend on the filesystem.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        found += [(rel_dir / name).as_posix() for name in sorted(filenames) if is_image_file(name)]
    return found


def _folder_name(root: Path) -> str:
    return root.resolve().name


def _to_array(img) -> np.ndarray:
    """A decoded PIL image as (H, W, C) uint8, C in {1, 3}."""
    mode = img.mode
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"))[..., None]
    if mode in ("LA", "La"):
        return _composite_on_black(np.asarray(img.convert("LA")))
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit grey (PNG, TIFF): scale 0..65535 to 0..255, rounding half up.
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)[..., None]
    if mode == "F":
        # Float grey has no agreed range; take it as 0..255 like PIL's own convert("L").
        return np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8)[..., None]
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return _composite_on_black(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"))


def _composite_on_black(with_alpha: np.ndarray) -> np.ndarray:
    """(H, W, C+1) uint8 with alpha last -> (H, W, C) uint8 over a black background."""
    colour = with_alpha[..., :-1].astype(np.uint32)
    alpha = with_alpha[..., -1:].astype(np.uint32)
    return ((colour * alpha + 127) // 255).astype(np.uint8)
