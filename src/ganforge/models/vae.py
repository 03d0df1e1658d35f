"""Convolutional VAE: the DCGAN discriminator's conv stack as encoder, the DCGAN generator as decoder.

The decoder is the family's generator, with the generator's forward signature, so sampling and
evaluation treat a VAE like any GAN. The encoder returns the mean and log-variance of q(z | x); the
reparameterisation and the loss live in ``ganforge.training.losses.vae_loss``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ganforge.models import dcgan
from ganforge.models.layers import Generator, LabelPlane, check_labels

if TYPE_CHECKING:
    from ganforge.models import ModelSpec


class Encoder(nn.Module):
    """Image (and label) in, (mu, logvar) of the approximate posterior out."""

    def __init__(self, spec: ModelSpec) -> None:
        """Build the encoder for ``spec`` (a conditional encoder sees a label plane, like the discriminator).

        Args:
            spec: The model spec (``model="vae"``).
        """
        super().__init__()
        self.label_plane = LabelPlane(spec.num_classes, spec.image_size) if spec.conditional else None
        # sigmoid: the book's network, which sees images on [0, 1] (its callers still pass [-1, 1])
        self.unit_input = spec.output_activation == "sigmoid"
        in_channels = spec.channels + int(spec.conditional)
        self.body, features = dcgan.conv_stack(in_channels, spec, "batch")
        self.mu = nn.Linear(features, spec.latent_dim)
        self.logvar = nn.Linear(features, spec.latent_dim)
        dcgan.initialise(self, [self.body, self.mu, self.logvar], spec.init or "dcgan")

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images.

        Args:
            x: Images, (N, C, H, W) in [-1, 1].
            labels: Class ids, (N,) long; required when conditional, ignored otherwise.

        Returns:
            (mu, logvar), each (N, latent_dim).
        """
        if self.unit_input:
            x = (x + 1.0) / 2.0
        if self.label_plane is not None:
            x = self.label_plane(x, check_labels(labels, x.shape[0]))
        h = self.body(x)
        return self.mu(h), self.logvar(h)


def build_decoder(spec: ModelSpec) -> Generator:
    """Build the decoder: the DCGAN generator, so a VAE samples through the generator interface.

    Args:
        spec: The model spec (``model="vae"``).

    Returns:
        A generator mapping (N, latent_dim) (and labels) to (N, C, H, W) in [-1, 1].
    """
    return dcgan.build_generator(spec)


def build_encoder(spec: ModelSpec) -> Encoder:
    """Build the encoder.

    Args:
        spec: The model spec (``model="vae"``).

    Returns:
        An encoder mapping (N, C, H, W) (and labels) to (mu, logvar), each (N, latent_dim).
    """
    return Encoder(spec)
