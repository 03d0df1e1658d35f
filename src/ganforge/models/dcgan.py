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

from ganforge.models.layers import (
    Discriminator,
    Generator,
    M,
    Projection,
    activation,
    add_spectral_norm,
    batch_norm,
    dcgan_init,
    init_weights,
    output_activation,
)

if TYPE_CHECKING:
    from ganforge.models import ModelSpec

SIZES = (8, 16, 28, 32, 64, 128, 256)
MAX_MULT = 8  # default channel cap: widths stop growing at 8w (the DCGAN paper's widest layer)
Norm = Literal["batch", "layer", "none"]


def base_size(image_size: int) -> int:
    """Side of the smallest feature map: 7 for 28 px (7 → 14 → 28), 4 for powers of two."""
    return 7 if image_size == 28 else 4


def n_blocks(image_size: int) -> int:
    """Number of ×2 resolution steps between the base map and the image."""
    return (image_size // base_size(image_size)).bit_length() - 1


def g_layout(spec: ModelSpec) -> tuple[list[int], tuple[int, ...], int]:
    """(widths, strides, base side) of the generator: widths[0] is the projected base map.

    Explicit ``g_channels``/``g_strides`` win; otherwise widths halve from ``channel_cap``·w down to w
    over the ×2 steps the image size needs. ``check_buildable`` has checked that the strides fit.
    """
    n = len(spec.g_channels or spec.g_strides or ()) or n_blocks(spec.image_size)
    strides = spec.g_strides or (2,) * n
    chans = list(spec.g_channels or [spec.width * min(2 ** (n - 1 - k), spec.channel_cap) for k in range(n)])
    factor = 1
    for s in strides:
        factor *= s
    return chans, strides, spec.image_size // factor


def d_layout(spec: ModelSpec) -> tuple[list[int], tuple[int, ...]]:
    """(widths, strides) of the discriminator/encoder conv stack (explicit tables win)."""
    n = len(spec.d_channels or spec.d_strides or ()) or n_blocks(spec.image_size)
    chans = list(spec.d_channels or [spec.width * min(2**i, spec.channel_cap) for i in range(n)])
    return chans, spec.d_strides or (2,) * n


def _norm(kind: Norm, channels: int, momentum: float | None = None, eps: float | None = None) -> list[nn.Module]:
    if kind == "batch":
        return [batch_norm(channels, momentum, eps=eps)]
    if kind == "layer":
        # GroupNorm with one group normalises each sample over (C, H, W): layer norm for conv maps.
        return [nn.GroupNorm(1, channels)]
    return []


def _kernel(spec: ModelSpec) -> int:
    return spec.kernel_size or (3 if spec.upsample == "resize-conv" else 4)


def _upsample(cin: int, cout: int, mode: str, bias: bool, k: int = 4, stride: int = 2) -> nn.Module:
    if stride == 1:  # a stride-1 transposed conv is a conv (flipped kernel): same maps, same parameters
        return nn.Conv2d(cin, cout, k, 1, padding="same", bias=bias)
    if mode == "resize-conv":
        pad: int | str = k // 2 if k % 2 else "same"
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, k, 1, pad, bias=bias))
    p = (k - 1) // 2
    return nn.ConvTranspose2d(cin, cout, k, 2, p, output_padding=2 - k + 2 * p, bias=bias)


def _dropout(rate: float | None) -> list[nn.Module]:
    return [nn.Dropout(rate)] if rate else []  # no module at 0: default networks keep their layer indices


def generator_body(spec: ModelSpec) -> nn.Sequential:
    """Layers from (N, latent_dim [+ embed_dim]) to (N, C, H, W) in [-1, 1]; also the VAE/AE decoder.

    Args:
        spec: The model spec.

    Returns:
        The body, without label embedding (``Generator`` adds it).
    """
    # chans[k]: channels after k layers, e.g. 64 px by default: 8w@4, 4w@8, 2w@16, w@32.
    chans, strides, base = g_layout(spec)
    k, act = _kernel(spec), spec.g_activation or "relu"
    normed = spec.g_norm == "batch"
    hidden_bias = spec.g_bias if spec.g_bias is not None else not normed
    in_features = spec.latent_dim + (spec.embed_dim if spec.conditional else 0)
    proj = chans[0] * base * base
    if spec.g_base == "linear":  # the book's decoders: Dense straight into Reshape
        layers: list[nn.Module] = [nn.Linear(in_features, proj, bias=spec.g_bias is not False)]
        layers.append(nn.Unflatten(1, (chans[0], base, base)))
    elif spec.g_base == "feature":  # Keras: BatchNormalization on the Dense output, then Reshape
        layers = [nn.Linear(in_features, proj, bias=hidden_bias if normed else spec.g_bias is not False)]
        layers += [batch_norm(proj, spec.bn_momentum, dims=1, eps=spec.bn_eps)] if normed else []
        layers += [activation(act, spec.leaky_slope), nn.Unflatten(1, (chans[0], base, base))]
    else:
        # A linear projection equals the tutorial's 4×4 transposed conv on a 1×1 input, and also builds 7×7.
        layers = [
            Projection(in_features, chans[0], base, bias=hidden_bias),
            nn.Unflatten(1, (chans[0], base, base)),
            *_norm("batch" if normed else "none", chans[0], spec.bn_momentum, spec.bn_eps),
            activation(act, spec.leaky_slope),
        ]
    layers += _dropout(spec.g_dropout)
    for (cin, cout), s in zip(zip(chans, chans[1:]), strides):
        layers += [
            _upsample(cin, cout, spec.upsample, hidden_bias, k, s),
            *_norm("batch" if normed else "none", cout, spec.bn_momentum, spec.bn_eps),
            activation(act, spec.leaky_slope),
            *_dropout(spec.g_dropout),
        ]
    out_bias = spec.g_bias is not False
    layers += [_upsample(chans[-1], spec.channels, spec.upsample, out_bias, k, strides[-1]),
               output_activation(spec.output_activation)]
    return nn.Sequential(*layers)


def conv_stack(in_channels: int, spec: ModelSpec, norm: Norm) -> tuple[nn.Sequential, int]:
    """Strided convs from the image down to the last map, then flatten.

    Args:
        in_channels: Image channels (plus one for a label plane).
        spec: The model spec (``d_channels``, ``d_strides``, ``kernel_size``, ``d_activation``, ...).
        norm: Normalisation after every block but the first (``spec.d_norm`` overrides it).

    Returns:
        The stack, mapping (N, in_channels, H, W) to (N, F), and F.
    """
    chans, strides = d_layout(spec)
    norm = spec.d_norm or norm
    k = spec.kernel_size or 4
    p = (k - 1) // 2  # 4x4/2 halves even sides; odd kernels give Keras' "same" (ceil(side / stride))
    dropout = spec.d_dropout if spec.d_dropout_at == "blocks" else None
    layers: list[nn.Module] = []
    cin, side = in_channels, spec.image_size
    for i, (cout, s) in enumerate(zip(chans, strides)):
        # The first block sees raw pixels: normalising them would discard the colour statistics D needs.
        block_norm = _norm(norm, cout, spec.bn_momentum, spec.bn_eps) if i > 0 else []
        bias = spec.d_bias if spec.d_bias is not None else not block_norm
        layers += [
            nn.Conv2d(cin, cout, k, s, p, bias=bias),
            *block_norm,
            activation(spec.d_activation or "leaky_relu", spec.leaky_slope),
            *_dropout(dropout),
        ]
        cin, side = cout, (side + 2 * p - k) // s + 1
    layers.append(nn.Flatten())
    if spec.d_dropout_at == "head":
        layers += _dropout(spec.d_dropout)
    return nn.Sequential(*layers), chans[-1] * side * side


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
    return initialise(net, [net.body], spec.init or "dcgan")


def initialise(net: M, parts: list[nn.Module | None], scheme: str) -> M:
    """``init_weights`` on ``net``; DCGAN's only on ``parts`` (embeddings and label planes keep N(0, 1))."""
    if scheme != "dcgan":
        return init_weights(net, scheme)
    for part in parts:
        if part is not None:
            part.apply(dcgan_init)
    return net


def _build(spec: ModelSpec, norm: Norm) -> Discriminator:
    label_plane = spec.conditional and not spec.projection and not spec.aux_classifier
    body, features = conv_stack(spec.channels + int(label_plane), spec, norm)
    net = Discriminator(
        body,
        features,
        num_classes=spec.num_classes if spec.conditional else 0,
        image_size=spec.image_size,
        projection=spec.projection,
        aux_classifier=spec.aux_classifier,
        head_bias=spec.d_bias is not False,
    )
    initialise(net, [net.body, net.head, net.classifier], spec.init or "dcgan")
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
