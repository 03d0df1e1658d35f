"""Differentiable augmentation (DiffAugment, Zhao et al., 2020) for data-efficient GAN training.

The discriminator sees real and fake images through the same random transforms; because every
transform is differentiable, the generator still gets gradients through them. A discriminator
trained this way cannot memorise a small dataset as easily, and the generator does not learn to
produce the augmentations (unlike augmenting only the real data).

Use ``AugmentedDiscriminator(D, policy)`` to hand an objective a discriminator that augments every
input, or call ``diff_augment`` on both batches yourself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import GanforgeError

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the side, as DiffAugment
CUTOUT_RATIO = 0.5  # erase a square of half the side


def _rand(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One uniform [0, 1) number per image, shaped (N, 1, 1, 1) to broadcast over (C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random brightness (±0.5), saturation (×[0, 2]) and contrast (×[0.5, 1.5]) per image.

    Args:
        x: Images (N, C, H, W).
        generator: Random source; None: torch's global one.

    Returns:
        Images of the same shape.
    """
    x = x + (_rand(x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)  # grey level: saturation is a no-op on one channel
    x = (x - mean) * (_rand(x, generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator) + 0.5) + mean


def _randint(low: int, high: int, n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randint(low, high, (n, 1, 1), device=x.device, generator=generator)


def _index_grid(n: int, h: int, w: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """(image, row, column) index tensors of shape (n, h, w), for whole-batch gathers and scatters."""
    image, row, column = torch.meshgrid(torch.arange(n, device=device), torch.arange(h, device=device),
                                        torch.arange(w, device=device), indexing="ij")
    return image, row, column


def translation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by up to 1/8 of its side, filling with zeros (mid-grey in [-1, 1]).

    Args:
        x: Images (N, C, H, W).
        generator: Random source; None: torch's global one.

    Returns:
        Images of the same shape.
    """
    n, _, h, w = x.shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy, dx = _randint(-sh, sh + 1, n, x, generator), _randint(-sw, sw + 1, n, x, generator)
    batch, rows, cols = _index_grid(n, h, w, x.device)
    # Gather from a 1-pixel zero border: indices shifted off the image land on it.
    rows = torch.clamp(rows + dy + 1, 0, h + 1)
    cols = torch.clamp(cols + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Zero a square of half the side at a random place in each image (it may cross the border).

    Args:
        x: Images (N, C, H, W).
        generator: Random source; None: torch's global one.

    Returns:
        Images of the same shape.
    """
    n, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = _randint(0, h + (1 - ch % 2), n, x, generator)
    cx = _randint(0, w + (1 - cw % 2), n, x, generator)
    batch, rows, cols = _index_grid(n, ch, cw, x.device)
    rows = torch.clamp(rows + cy - ch // 2, 0, h - 1)
    cols = torch.clamp(cols + cx - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


AUGMENTS: dict[str, Callable[..., Tensor]] = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> list[str]:
    """Split a comma-separated policy into augment names, checking each.

    Args:
        policy: E.g. ``"color,translation,cutout"``; empty means no augmentation.

    Returns:
        The names, in order.

    Raises:
        GanforgeError: An unknown name.
    """
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in AUGMENTS:
            raise GanforgeError(
                f"unknown augment {name!r} in policy {policy!r}; valid: {', '.join(AUGMENTS)}"
            )
    return names


def diff_augment(
    x: Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None
) -> Tensor:
    """Apply the policy's augments in order, with fresh randomness per image.

    Args:
        x: Images (N, C, H, W).
        policy: Comma-separated names from ``AUGMENTS``; empty means identity.
        generator: Random source; None: torch's global one.

    Returns:
        Augmented images (N, C, H, W), differentiable with respect to ``x``.
    """
    for name in parse_policy(policy):
        x = AUGMENTS[name](x, generator)
    return x


class AugmentedDiscriminator(nn.Module):
    """A discriminator that augments every input first, with the same forward signature.

    Objectives then augment real, fake and gradient-penalty interpolates alike without knowing it.
    Its state dict is the wrapped discriminator's, under the prefix ``net.``.
    """

    def __init__(self, net: nn.Module, policy: str = "color,translation,cutout") -> None:
        """Wrap ``net``.

        Args:
            net: The discriminator.
            policy: Comma-separated names from ``AUGMENTS``.
        """
        super().__init__()
        self.net = net
        self.policy = ",".join(parse_policy(policy))

    def forward(
        self, x: Tensor, labels: Tensor | None = None, features: bool = False, classes: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Augment ``x`` (N, C, H, W), then score it as the wrapped discriminator does."""
        if classes:  # only AC-GAN asks; keep the plain call for discriminators without the keyword
            return self.net(diff_augment(x, self.policy), labels, classes=True)
        return self.net(diff_augment(x, self.policy), labels, features=features)
