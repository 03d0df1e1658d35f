"""Images for humans: sample batches, grids and latent interpolation strips as uint8 arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MAX_IMAGES = 100_000  # ganforge generate's --n: all images are held in memory at once


@torch.no_grad()
def sample(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, batch: int = 256) -> torch.Tensor:
    """Generate images for latents ``z`` (N, latent) in eval mode, in chunks of ``batch``.

    Eval mode makes batch norm use its running statistics, so sampling never changes the
    generator's state (resumed and uninterrupted runs stay identical).

    Returns:
        (N, C, H, W) float images in [-1, 1] on the CPU.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    out = []
    try:
        for i in range(0, z.shape[0], batch):
            lab = labels[i : i + batch].to(device) if labels is not None else None
            out.append(generator(z[i : i + batch].to(device), lab).float().cpu())
    finally:
        generator.train(was_training)
    return torch.cat(out).clamp_(-1, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_image(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array, ``nrow`` per row."""
    from torchvision.utils import make_grid

    n = images.shape[0]
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    g = make_grid(images.float(), nrow=nrow, padding=padding, pad_value=-1.0)
    return to_uint8(g.unsqueeze(0))[0]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (latent,) at fractions ``t`` (K,).

    Gaussian latents live near a sphere; a straight line between two passes through its low-norm
    interior, which the generator rarely saw.
    """
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.acos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_latents(z: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """(steps, latent) latents from ``z[0]`` to ``z[1]``."""
    return slerp(z[0], z[1], torch.linspace(0, 1, steps))


def interpolation_strip(
    generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, steps: int = 10
) -> np.ndarray:
    """One row of ``steps`` images walking from latent ``z[0]`` to ``z[1]`` (label of ``z[0]``)."""
    path = interpolation_latents(z, steps)
    lab = labels[:1].repeat(steps) if labels is not None else None
    return grid_image(sample(generator, path, lab), nrow=steps)


def _label_ids(labels: list[str], class_names: list[str]) -> list[int]:
    """Label ids from ids or class names, as the user typed them."""
    from ganforge.errors import GanforgeError

    ids = []
    for lab in labels:
        if lab in class_names:
            ids.append(class_names.index(lab))
        elif lab.lstrip("-").isdigit() and 0 <= int(lab) < len(class_names):
            ids.append(int(lab))
        else:
            raise GanforgeError(f"unknown label {lab!r}; use an id 0..{len(class_names) - 1} or one of {class_names}")
    return ids


def generate(
    checkpoint: str,
    n: int = 64,
    labels: list[str] | None = None,
    seed: int = 0,
    interpolate: bool = False,
    weights: str | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """Images from a checkpoint's generator: ``n`` random latents, or ``n`` steps of one interpolation.

    Args:
        checkpoint: a ``ckpt-<step>`` directory or a run's output directory.
        n: number of images.
        labels: class ids or names, cycled over the images (conditional models; default: all classes).
        seed: seed of the latents.
        interpolate: walk from one latent to another in ``n`` steps instead of drawing ``n``.
        weights: ``ema``, ``raw``, or None: ``ema`` when the checkpoint has EMA weights, else ``raw``.
        device: where to run the generator.

    Returns:
        (n, C, H, W) images in [-1, 1].

    Raises:
        GanforgeError: bad checkpoint or ``weights``, labels for an unconditional model, or unknown labels.
    """
    from ganforge.errors import GanforgeError
    from ganforge.training.checkpoint import check_weights, load_generator
    from ganforge.training.distributed import select_device

    if n < 1:
        raise GanforgeError(f"--n must be at least 1, got {n}")
    dev = select_device(device)
    check_weights(weights)
    generator, spec, meta = load_generator(checkpoint, weights, dev)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(max(n, 2), spec.latent_dim, generator=g)
    z = interpolation_latents(z, n) if interpolate else z[:n]
    names = meta.get("class_names") or [str(i) for i in range(spec.num_classes)]
    if labels and not spec.conditional:
        raise GanforgeError("--labels given but the checkpoint's model is not conditional; drop --labels")
    ids = None
    if spec.conditional:
        pool = _label_ids(labels, names) if labels else list(range(spec.num_classes))
        ids = torch.tensor([pool[0]] * n if interpolate else [pool[i % len(pool)] for i in range(n)])
    return sample(generator, z, ids)


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

    def _pil(a: np.ndarray) -> Image.Image:
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    def _save(image: Image.Image, final: Path) -> None:
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            image.save(tmp, format=Image.registered_extensions()[final.suffix.lower()])
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    path = Path(out)
    if path.suffix.lower() in GRID_SUFFIXES:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(_pil(grid_image(images, nrow)), path)
        return [str(path)]
    fresh = not path.exists()
    target = path.with_name(f".tmp-{path.name}-{os.getpid()}") if fresh else path
    target.mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.png" for i in range(images.shape[0])]
    try:
        for name, a in zip(names, to_uint8(images)):
            _save(_pil(a), target / name)
        if fresh:
            target.rename(path)
    finally:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
    return [str(path / name) for name in names]
