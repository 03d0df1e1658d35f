"""DCGAN generator, discriminator and WGAN-GP critic for 8 to 256 px, 1 or 3 channels.

The generator projects the latent to a (8w, 4, 4) map (7×7 for 28 px, as the Keras MNIST
examples) and doubles the side per block, halving channels down to w = ``spec.width`` before the
tanh output layer; 64 px with w = 64 is the PyTorch DCGAN tutorial's network. Upsampling is a
strided transposed conv, or a nearest-neighbour resize followed by a 3×3 conv ("resize-conv"),
which avoids the checkerboard artefacts of overlapping transposed kernels (Odena et al., 2016).

The discriminator mirrors it with strided 4×4 convs, LeakyReLU(0.2) and batch norm on all but the
first block. The critic for WGAN-GP swaps batch norm for layer norm: the gradient penalty is taken
per sample, which batch statistics would couple across the batch (Gulrajani et al., 2017).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import nn

from ganforge.models.layers import NEGATIVE_SLOPE, Discriminator, Generator, add_spectral_norm, dcgan_init

if TYPE_CHECKING:
    from ganforge.models import ModelSpec

SIZES = (8, 16, 28, 32, 64, 128, 256)
MAX_MULT = 8  # channels stop growing at 8w (the DCGAN paper's widest layer)
Norm = Literal["batch", "layer", "none"]


def base_size(image_size: int) -> int:
    """Side of the smallest feature map: 7 for 28 px (7 → 14 → 28), 4 for powers of two."""
    return 7 if image_size == 28 else 4


def n_blocks(image_size: int) -> int:
    """Number of ×2 resolution steps between the base map and the image."""
    return (image_size // base_size(image_size)).bit_length() - 1


def _norm(kind: Norm, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":
        # GroupNorm with one group normalises each sample over (C, H, W): layer norm for conv maps.
        return [nn.GroupNorm(1, channels)]
    return []


def _upsample(cin: int, cout: int, mode: str, bias: bool) -> nn.Module:
    if mode == "resize-conv":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)
        )
    return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)


def generator_body(spec: ModelSpec) -> nn.Sequential:
    """Layers from (N, latent_dim [+ embed_dim]) to (N, C, H, W) in [-1, 1]; also the VAE decoder.

    Args:
        spec: The model spec.

    Returns:
        The body, without label embedding (``Generator`` adds it).
    """
    base, n = base_size(spec.image_size), n_blocks(spec.image_size)
    # chans[k]: channels at side base * 2**k, e.g. 64 px: 8w@4, 4w@8, 2w@16, w@32.
    chans = [spec.width * min(2 ** (n - 1 - k), MAX_MULT) for k in range(n)]
    in_features = spec.latent_dim + (spec.embed_dim if spec.conditional else 0)
    layers: list[nn.Module] = [
        # A linear projection equals the tutorial's 4×4 transposed conv on a 1×1 input, and also builds 7×7.
        nn.Linear(in_features, chans[0] * base * base, bias=False),
        nn.Unflatten(1, (chans[0], base, base)),
        nn.BatchNorm2d(chans[0]),
        nn.ReLU(),
    ]
    for cin, cout in zip(chans, chans[1:]):
        layers += [_upsample(cin, cout, spec.upsample, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [_upsample(chans[-1], spec.channels, spec.upsample, bias=True), nn.Tanh()]
    return nn.Sequential(*layers)


def conv_stack(in_channels: int, width: int, image_size: int, norm: Norm) -> tuple[nn.Sequential, int]:
    """Strided 4×4 convs from the image down to the base map, then flatten.

    Args:
        in_channels: Image channels (plus one for a label plane).
        width: Channels of the first block; each later block doubles them up to 8·width.
        image_size: Side of the input.
        norm: Normalisation after every block but the first.

    Returns:
        The stack, mapping (N, in_channels, H, W) to (N, F), and F.
    """
    base, n = base_size(image_size), n_blocks(image_size)
    chans = [width * min(2**i, MAX_MULT) for i in range(n)]
    layers: list[nn.Module] = []
    cin = in_channels
    for i, cout in enumerate(chans):
        # The first block sees raw pixels: normalising them would discard the colour statistics D needs.
        block_norm = _norm(norm, cout) if i > 0 else []
        layers += [
            nn.Conv2d(cin, cout, 4, 2, 1, bias=not block_norm),
            *block_norm,
            nn.LeakyReLU(NEGATIVE_SLOPE),
        ]
        cin = cout
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), chans[-1] * base * base


def build_generator(spec: ModelSpec) -> Generator:
    """Build the DCGAN generator (also used by the ``wgan-gp`` family).

    Args:
        spec: The model spec.

    Returns:
        A generator mapping (N, latent_dim) (and labels) to (N, C, H, W) in [-1, 1].
    """
    net = Generator(
        generator_body(spec), spec.latent_dim, spec.num_classes if spec.conditional else 0, spec.embed_dim
    )
    net.body.apply(dcgan_init)
    return net


def _build(spec: ModelSpec, norm: Norm) -> Discriminator:
    label_plane = spec.conditional and not spec.projection
    body, features = conv_stack(spec.channels + int(label_plane), spec.width, spec.image_size, norm)
    net = Discriminator(
        body,
        features,
        num_classes=spec.num_classes if spec.conditional else 0,
        image_size=spec.image_size,
        projection=spec.projection,
    )
    net.body.apply(dcgan_init)
    net.head.apply(dcgan_init)
    return add_spectral_norm(net) if spec.spectral_norm else net


def build_discriminator(spec: ModelSpec) -> Discriminator:
    """Build the DCGAN discriminator (batch norm; features: the flattened base map).

    Args:
        spec: The model spec.

    Returns:
        A discriminator mapping (N, C, H, W) (and labels) to logits (N,).
    """
    return _build(spec, "batch")


def build_critic(spec: ModelSpec) -> Discriminator:
    """Build the WGAN-GP critic: the DCGAN discriminator with layer norm instead of batch norm.

    Args:
        spec: The model spec.

    Returns:
        A critic mapping (N, C, H, W) (and labels) to scores (N,).
    """
    return _build(spec, "layer")
