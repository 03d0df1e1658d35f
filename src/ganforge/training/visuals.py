"""Images for humans made by sampling: latent interpolation strips, and ``ganforge generate``'s files.

Sampling itself (latents, labels, a generator's forward in eval mode) is ``ganforge.inference``; grids,
PNG files and the loss plot are ``ganforge.pictures``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ganforge.inference import interpolation_latents, sample
from ganforge.outputs import write_bytes_atomic
from ganforge.pictures import encode_image, grid_image, to_uint8

MAX_IMAGES = 100_000  # ganforge generate's --n: all images are held in memory at once


def interpolation_strip(
    generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, steps: int = 10, mode: str = "slerp"
) -> np.ndarray:
    """One row of ``steps`` images walking from latent ``z[0]`` to ``z[1]`` (label of ``z[0]``) by ``mode``."""
    path = interpolation_latents(z, steps, mode)
    lab = labels[:1].repeat(steps) if labels is not None else None
    return grid_image(sample(generator, path, lab), nrow=steps)


GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # --out as one grid image


def check_generate_flags(n: int, seed: int, out: str) -> None:
    """``ganforge generate``'s own limits and ``--out``, checked before the checkpoint is read.

    Raises:
        GanforgeError: ``n`` or ``seed`` out of range, or ``out`` not writable (see ``check_out``).
    """
    from ganforge.errors import GanforgeError
    from ganforge.training.config import MAX_SEED

    if not 1 <= n <= MAX_IMAGES:
        raise GanforgeError(f"--n must be from 1 to {MAX_IMAGES} (images are made in memory), got {n}; "
                            "for more, call again with another --seed")
    if not 0 <= seed <= MAX_SEED:
        raise GanforgeError(f"--seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    check_out(out)


def check_out(out: str) -> None:
    """Fail before any work when ``--out`` cannot be written; creates nothing.

    Raises:
        GanforgeError: a grid path that is a directory or whose folder cannot be written, or a directory
            path that is a file or cannot be created.
    """
    from pathlib import Path

    from ganforge.errors import GanforgeError
    from ganforge.outputs import check_output_dir

    path = Path(out)
    if not out.strip():
        raise GanforgeError("--out is empty; pass grid.png for one grid or a directory for one PNG per image")
    if path.suffix.lower() in GRID_SUFFIXES:
        if path.is_dir():
            raise GanforgeError(f"--out {out} is a directory; pass a file name such as grid.png, or a directory "
                                "without an image suffix")
        check_output_dir(path.parent, flag="--out's folder")
    else:
        check_output_dir(path, flag="--out")


def save_images(images: torch.Tensor, out: str, nrow: int | None = None) -> list[str]:
    """Write one grid (``out`` ends in an image suffix, see ``GRID_SUFFIXES``) or one PNG per image into
    directory ``out``; return the paths.

    Each file is written under a temp name and renamed; a new directory is filled under a temp name and
    renamed, so a reader never sees a half-written image or a partly filled new directory.
    """
    import os
    import shutil
    from pathlib import Path

    from PIL import Image

    def _save(image: np.ndarray, final: Path) -> None:
        write_bytes_atomic(final, encode_image(image, Image.registered_extensions()[final.suffix.lower()]))

    path = Path(out)
    if path.suffix.lower() in GRID_SUFFIXES:
        _save(grid_image(images, nrow), path)
        return [str(path)]
    fresh = not path.exists()
    target = path.with_name(f".tmp-{path.name}-{os.getpid()}") if fresh else path
    target.mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.png" for i in range(images.shape[0])]
    try:
        for name, a in zip(names, to_uint8(images)):
            _save(a, target / name)
        if fresh:
            target.rename(path)
    finally:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
    return [str(path / name) for name in names]
