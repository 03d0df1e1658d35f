"""Plain autoencoder (Generative Deep Learning, ch. 3): a conv encoder to one latent point, a decoder back.

The encoder is the discriminator's conv stack followed by a linear map to ``latent_dim``; the decoder
is the DCGAN generator body, so sampling, evaluation and ``ganforge generate`` treat an AE's decoder
like any generator. The book's MNIST network is 3×3 convs of 32-64-64-64 with strides 1-2-2-1, a
2-d latent and a mirrored decoder; the ``seed001-ae`` preset spells it out through the spec's layer
tables (``d_channels``, ``d_strides``, ``kernel_size``, ...).
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
    """Image (and label) in, one latent point out (no distribution: that is the VAE's difference)."""

    def __init__(self, spec: ModelSpec) -> None:
        """Build the encoder for ``spec`` (a conditional encoder sees a label plane, like the discriminator).

        Args:
            spec: The model spec (``model="ae"``).
        """
        super().__init__()
        self.label_plane = LabelPlane(spec.num_classes, spec.image_size) if spec.conditional else None
        # sigmoid: the book's network, which sees images on [0, 1] (its callers still pass [-1, 1])
        self.unit_input = spec.output_activation == "sigmoid"
        self.body, features = dcgan.conv_stack(spec.channels + int(spec.conditional), spec, "none")
        self.out = nn.Linear(features, spec.latent_dim)
        dcgan.initialise(self, [self.body, self.out], spec.init or "dcgan")

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Encode images (N, C, H, W) in [-1, 1] to latents (N, latent_dim)."""
        if self.unit_input:
            x = (x + 1.0) / 2.0
        if self.label_plane is not None:
            x = self.label_plane(x, check_labels(labels, x.shape[0]))
        return self.out(self.body(x))


def build_decoder(spec: ModelSpec) -> Generator:
    """Build the decoder: the DCGAN generator body behind the generator interface."""
    return dcgan.build_generator(spec)


def build_encoder(spec: ModelSpec) -> Encoder:
    """Build the encoder mapping (N, C, H, W) (and labels) to (N, latent_dim)."""
    return Encoder(spec)
