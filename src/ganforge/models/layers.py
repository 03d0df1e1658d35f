"""Pieces every model family shares: label conditioning, the discriminator head, initialisation.

A family only writes its *body* (the layers that differ); the wrappers here give every generator
and discriminator the same forward signature, so the loop, sampling and evaluation treat all
families alike.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope of every reference implementation (DCGAN paper, Keras, PyTorch)


def check_labels(labels: torch.Tensor | None, n: int) -> torch.Tensor:
    """Return ``labels`` if they fit a batch of ``n``; a conditional network cannot run without them.

    Args:
        labels: Class ids, (N,) long, or None.
        n: Batch size the labels must match.

    Returns:
        The labels, unchanged.

    Raises:
        ValueError: When labels are missing or of the wrong length (a programmer error, not the user's).
    """
    if labels is None:
        raise ValueError("this network is conditional: pass labels of shape (N,)")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    return labels


class Generator(nn.Module):
    """Latent (and label embedding) in, image in [-1, 1] out.

    The label embedding is concatenated to the latent, as in the Galaxy10 conditional GAN, so the
    body sees a ``latent_dim + embed_dim`` vector either way.

    Attributes:
        latent_dim: Size of ``z``.
        num_classes: Classes the embedding knows; 0 when unconditional.
    """

    def __init__(self, body: nn.Module, latent_dim: int, num_classes: int = 0, embed_dim: int = 0) -> None:
        """Wrap ``body``, which maps (N, latent_dim + embed_dim) to (N, C, H, W) in [-1, 1].

        Args:
            body: The family's layers.
            latent_dim: Size of ``z``.
            num_classes: Number of classes; 0 makes the generator unconditional.
            embed_dim: Size of the label embedding (ignored when unconditional).
        """
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.body = body

    @property
    def conditional(self) -> bool:
        """Whether forward needs labels."""
        return self.embed is not None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images.

        Args:
            z: Latents, (N, latent_dim).
            labels: Class ids, (N,) long; required when conditional, ignored otherwise.

        Returns:
            Images, (N, C, H, W) in [-1, 1].
        """
        if self.embed is not None:
            z = torch.cat([z, self.embed(check_labels(labels, z.shape[0]))], dim=1)
        return self.body(z)


class LabelPlane(nn.Module):
    """Appends a learned (1, H, W) plane per class to the image: the Galaxy10 CGAN's label channel."""

    def __init__(self, num_classes: int, image_size: int) -> None:
        """Create one H*W embedding row per class.

        Args:
            num_classes: Number of classes.
            image_size: Side of the square image, H = W.
        """
        super().__init__()
        self.image_size = image_size
        self.embed = nn.Embedding(num_classes, image_size * image_size)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Return (N, C + 1, H, W): the image with its label plane."""
        plane = self.embed(check_labels(labels, x.shape[0]))
        return torch.cat([x, plane.view(-1, 1, self.image_size, self.image_size)], dim=1)


class Discriminator(nn.Module):
    """Image (and label) in, one logit or critic score per image out.

    Conditioning is either a label plane concatenated to the image (the body then takes C + 1
    channels) or a projection head (Miyato & Koyama, 2018): ``logit = w·h + embed(y)·h``, which
    leaves the body unconditional.
    """

    def __init__(
        self,
        body: nn.Module,
        feature_dim: int,
        *,
        num_classes: int = 0,
        image_size: int = 0,
        projection: bool = False,
    ) -> None:
        """Wrap ``body``, which maps images to features (N, feature_dim).

        Args:
            body: The family's layers; takes C + 1 channels when conditioned by a label plane.
            feature_dim: Size of the body's output.
            num_classes: Number of classes; 0 makes the discriminator unconditional.
            image_size: Side of the image (needed for the label plane).
            projection: Condition through a projection head instead of a label plane.
        """
        super().__init__()
        self.num_classes = num_classes
        self.label_plane = LabelPlane(num_classes, image_size) if num_classes and not projection else None
        self.body = body
        self.head = nn.Linear(feature_dim, 1)
        self.projection = nn.Embedding(num_classes, feature_dim) if num_classes and projection else None

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score images.

        Args:
            x: Images, (N, C, H, W) in [-1, 1].
            labels: Class ids, (N,) long; required when conditional, ignored otherwise.
            features: Also return the penultimate features (for feature matching).

        Returns:
            Logits (N,), or (logits (N,), features (N, F)) when ``features`` is true.
        """
        if self.label_plane is not None:
            x = self.label_plane(x, labels)
        h = self.body(x)
        logits = self.head(h).squeeze(1)
        if self.projection is not None:
            logits = logits + (self.projection(check_labels(labels, x.shape[0])) * h).sum(dim=1)
        return (logits, h) if features else logits


def dcgan_init(module: nn.Module) -> None:
    """Initialise weights as the DCGAN paper: conv/linear N(0, 0.02), norm scales N(1, 0.02).

    Embeddings keep PyTorch's N(0, 1): a label plane of std 0.02 would be invisible next to pixels
    in [-1, 1].

    Args:
        module: Any module; apply with ``net.apply(dcgan_init)``.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def add_spectral_norm(net: nn.Module) -> nn.Module:
    """Put spectral normalisation on every conv and linear layer of ``net``, in place.

    Apply after initialisation: the parametrisation keeps the initialised weight as its original.

    Args:
        net: A discriminator.

    Returns:
        ``net``, for chaining.
    """
    targets = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in targets:
        spectral_norm(m)
    return net
