"""Pixel-level helpers shared by ingest and the loader: resize, channel conversion, PNG, hashing."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from ganforge.errors import GanforgeError


def prepare(image: np.ndarray, image_size: int | None, channels: int | None, aspect: str) -> np.ndarray:
    """Bring one (H, W, C) uint8 image to the dataset's shape.

    Args:
        image: (H, W, C) uint8 with C in {1, 3}.
        image_size: output side in pixels (square), or None to keep the size.
        channels: 1 (ITU-R 601 luma) or 3 (grey replicated), or None to keep the channels.
        aspect: ``crop`` centre-crops to a square before resizing; ``pad`` keeps the whole image and
            pads the short side with black (letterbox). Ignored when already square.

    Returns:
        (S, S, channels) uint8, C-contiguous.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected (H, W, 1|3) uint8, got {image.dtype} {image.shape}")
    h, w, c = image.shape
    if (channels is None or channels == c) and (image_size is None or image_size == h == w):
        return np.ascontiguousarray(image)  # nothing to do: skip the PIL round trip
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    if channels is not None:
        pil = pil.convert("L" if channels == 1 else "RGB")
    if image_size is not None:
        w, h = pil.size
        if w != h:
            pil = _crop_square(pil) if aspect == "crop" else _pad_square(pil)
        if pil.size != (image_size, image_size):
            # LANCZOS filters over the whole footprint when shrinking, i.e. antialiased.
            pil = pil.resize((image_size, image_size), Image.Resampling.LANCZOS)
    out = np.asarray(pil)
    return np.ascontiguousarray(out[:, :, None] if out.ndim == 2 else out)


def check_image(image, key) -> np.ndarray:
    """``image`` if it is what sources must return, (H, W, 1|3) uint8 with H, W >= 1; ``key`` names it.

    Raises:
        GanforgeError: anything else (an empty or oddly shaped image in the source's files).
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3) or 0 in arr.shape[:2]:
        shape = "x".join(map(str, arr.shape)) or "scalar"
        raise GanforgeError(
            f"image {key} is {shape} {arr.dtype}, not an H x W x 1|3 uint8 image with H, W >= 1; "
            "fix or remove it in the source"
        )
    return arr


def _crop_square(pil: Image.Image) -> Image.Image:
    w, h = pil.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return pil.crop((left, top, left + s, top + s))


def _pad_square(pil: Image.Image) -> Image.Image:
    w, h = pil.size
    s = max(w, h)
    canvas = Image.new(pil.mode, (s, s), 0)
    canvas.paste(pil, ((s - w) // 2, (s - h) // 2))
    return canvas


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, C) uint8 image.

    compress_level=1: PNG is lossless at every level, and level 1 encodes several times faster
    than the default 6 for a few percent more bytes.
    """
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes, channels: int) -> np.ndarray:
    """(H, W, C) uint8 from PNG bytes written by :func:`encode_png`."""
    with Image.open(io.BytesIO(data)) as pil:
        arr = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def pixel_sha256(image: np.ndarray) -> str:
    """SHA-256 of the decoded pixels, shape included so that equal bytes of other shapes differ."""
    h = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}x{image.shape[2]}:".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def check_uniform(shapes: set[tuple[int, int, int]]) -> None:
    """The loader stacks images into one tensor, so a dataset has one shape."""
    if len(shapes) > 1:
        sample = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
        raise GanforgeError(f"images have different shapes ({sample}, ...); pass --image-size and --channels")
