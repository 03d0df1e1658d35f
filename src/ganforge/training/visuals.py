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
