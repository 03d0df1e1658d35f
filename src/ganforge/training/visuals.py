"""Images for humans: sample batches, grids and latent interpolation strips as uint8 arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


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
    from ganforge.training.checkpoint import load_generator

    if n < 1:
        raise GanforgeError(f"--n must be at least 1, got {n}")
    generator, spec, meta = load_generator(checkpoint, weights, device)
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


def save_images(images: torch.Tensor, out: str, nrow: int | None = None) -> list[str]:
    """Write a grid (``out`` ends in .png) or one PNG per image into directory ``out``; return the paths."""
    from pathlib import Path

    from PIL import Image

    def _pil(a: np.ndarray) -> Image.Image:
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    path = Path(out)
    if path.suffix.lower() == ".png":
        path.parent.mkdir(parents=True, exist_ok=True)
        _pil(grid_image(images, nrow)).save(path)
        return [str(path)]
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for i, a in enumerate(to_uint8(images)):
        _pil(a).save(path / f"{i:06d}.png")
        written.append(str(path / f"{i:06d}.png"))
    return written
