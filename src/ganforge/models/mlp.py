"""The dense GAN of the Keras MNIST and PyTorch KMNIST examples.

By default, generator: latent → 4w → 8w → 16w → C·H·W with LeakyReLU(0.2), batch norm on the two
wide layers and tanh out (w = ``spec.width``; 64 gives the Keras example's 256/512/1024).
Discriminator: the flattened image → 8w → 4w → 1 with LeakyReLU(0.2) and dropout 0.3, no batch norm,
so it also serves as a WGAN critic. ``g_channels``/``d_channels``, ``g_norm_layers``, ``g_norm_after``, the
activations and dropouts of the spec replace any of these (the seed presets do). Weights keep PyTorch's
default initialisation unless the spec's ``init`` names another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ganforge.models.layers import (
    Discriminator,
    Generator,
    activation,
    add_spectral_norm,
    batch_norm,
    init_weights,
)

if TYPE_CHECKING:
    from ganforge.models import ModelSpec

DROPOUT = 0.3  # default: the discriminator must not memorise a small dataset in a few epochs
MIN_SIZE, MAX_SIZE = 8, 64  # above 64 px the dense output layer alone exceeds 10^8 weights


def g_widths(spec: ModelSpec) -> list[int]:
    """Hidden widths of the generator: ``g_channels`` or 4w, 8w, 16w."""
    return list(spec.g_channels or (4 * spec.width, 8 * spec.width, 16 * spec.width))


def d_widths(spec: ModelSpec) -> list[int]:
    """Hidden widths of the discriminator: ``d_channels`` or 8w, 4w."""
    return list(spec.d_channels or (8 * spec.width, 4 * spec.width))


def build_generator(spec: ModelSpec) -> Generator:
    """Build the dense generator: Linear, [batch norm], activation per hidden layer, then tanh.

    A layer in ``g_norm_after`` puts its batch norm after the activation instead (Keras'
    ``Dense(activation=...)`` followed by ``BatchNormalization``; seed 004's first layer).

    Args:
        spec: The model spec (``model="mlp"``).

    Returns:
        A generator mapping (N, latent_dim) (and labels) to (N, C, H, W) in [-1, 1].
    """
    embed = spec.embed_dim if spec.conditional else 0
    shape = (spec.channels, spec.image_size, spec.image_size)
    widths = g_widths(spec)
    normed = set(spec.g_norm_layers or range(2, len(widths) + 1)) if spec.g_norm == "batch" else set()
    layers: list[nn.Module] = []
    cin = spec.latent_dim + embed
    after = set(spec.g_norm_after or ())
    for i, w in enumerate(widths, start=1):
        layers.append(nn.Linear(cin, w, bias=spec.g_bias is not False))
        norm = [batch_norm(w, spec.bn_momentum, dims=1, eps=spec.bn_eps)] if i in normed else []
        act = [activation(spec.g_activation or "leaky_relu", spec.leaky_slope)]
        layers += act + norm if i in after else norm + act
        if spec.g_dropout:
            layers.append(nn.Dropout(spec.g_dropout))
        cin = w
    layers += [nn.Linear(cin, shape[0] * shape[1] * shape[2], bias=spec.g_bias is not False), nn.Tanh(),
               nn.Unflatten(1, shape)]  # fmt: skip
    num_classes = spec.num_classes if spec.conditional else 0
    net = Generator(nn.Sequential(*layers), spec.latent_dim, num_classes, spec.embed_dim)
    return init_weights(net, spec.init or "torch")


def build_discriminator(spec: ModelSpec) -> Discriminator:
    """Build the dense discriminator (features: the last hidden layer).

    Args:
        spec: The model spec (``model="mlp"``).

    Returns:
        A discriminator mapping (N, C, H, W) (and labels) to logits (N,).
    """
    label_plane = spec.conditional and not spec.projection and not spec.aux_classifier
    cin = (spec.channels + int(label_plane)) * spec.image_size**2
    rate = DROPOUT if spec.d_dropout is None else spec.d_dropout
    layers: list[nn.Module] = [nn.Flatten()]
    for w in d_widths(spec):
        layers += [nn.Linear(cin, w, bias=spec.d_bias is not False),
                   activation(spec.d_activation or "leaky_relu", spec.leaky_slope)]  # fmt: skip
        if rate and spec.d_dropout_at == "blocks":
            layers.append(nn.Dropout(rate))
        cin = w
    if rate and spec.d_dropout_at == "head":
        layers.append(nn.Dropout(rate))
    net = Discriminator(
        nn.Sequential(*layers),
        cin,
        num_classes=spec.num_classes if spec.conditional else 0,
        image_size=spec.image_size,
        projection=spec.projection,
        aux_classifier=spec.aux_classifier,
        head_bias=spec.d_bias is not False,
    )
    init_weights(net, spec.init or "torch")
    return add_spectral_norm(net) if spec.spectral_norm else net
