"""The dense GAN of the Keras MNIST and PyTorch KMNIST examples.

Generator: latent → 4w → 8w → 16w → C·H·W with LeakyReLU(0.2), batch norm on the two wide layers
and tanh out (w = ``spec.width``; 64 gives the Keras example's 256/512/1024). Discriminator: the
flattened image → 8w → 4w → 1 with LeakyReLU(0.2) and dropout, no batch norm, so it also serves as
a WGAN critic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ganforge.models.layers import NEGATIVE_SLOPE, Discriminator, Generator, add_spectral_norm

if TYPE_CHECKING:
    from ganforge.models import ModelSpec

DROPOUT = 0.3  # the discriminator must not memorise a small dataset in a few epochs
MIN_SIZE, MAX_SIZE = 8, 64  # above 64 px the dense output layer alone exceeds 10^8 weights


def build_generator(spec: ModelSpec) -> Generator:
    """Build the dense generator.

    Args:
        spec: The model spec (``model="mlp"``).

    Returns:
        A generator mapping (N, latent_dim) (and labels) to (N, C, H, W) in [-1, 1].
    """
    w, embed = spec.width, spec.embed_dim if spec.conditional else 0
    shape = (spec.channels, spec.image_size, spec.image_size)
    body = nn.Sequential(
        nn.Linear(spec.latent_dim + embed, 4 * w),
        nn.LeakyReLU(NEGATIVE_SLOPE),
        nn.Linear(4 * w, 8 * w),
        nn.BatchNorm1d(8 * w),
        nn.LeakyReLU(NEGATIVE_SLOPE),
        nn.Linear(8 * w, 16 * w),
        nn.BatchNorm1d(16 * w),
        nn.LeakyReLU(NEGATIVE_SLOPE),
        nn.Linear(16 * w, shape[0] * shape[1] * shape[2]),
        nn.Tanh(),
        nn.Unflatten(1, shape),
    )
    num_classes = spec.num_classes if spec.conditional else 0
    return Generator(body, spec.latent_dim, num_classes, spec.embed_dim)


def build_discriminator(spec: ModelSpec) -> Discriminator:
    """Build the dense discriminator (features: the 4w-wide penultimate layer).

    Args:
        spec: The model spec (``model="mlp"``).

    Returns:
        A discriminator mapping (N, C, H, W) (and labels) to logits (N,).
    """
    w = spec.width
    label_plane = spec.conditional and not spec.projection
    in_features = (spec.channels + int(label_plane)) * spec.image_size**2
    body = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 8 * w),
        nn.LeakyReLU(NEGATIVE_SLOPE),
        nn.Dropout(DROPOUT),
        nn.Linear(8 * w, 4 * w),
        nn.LeakyReLU(NEGATIVE_SLOPE),
        nn.Dropout(DROPOUT),
    )
    net = Discriminator(
        body,
        4 * w,
        num_classes=spec.num_classes if spec.conditional else 0,
        image_size=spec.image_size,
        projection=spec.projection,
    )
    return add_spectral_norm(net) if spec.spectral_norm else net
