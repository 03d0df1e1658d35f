"""Model families by name: the registry (``MODELS``) and the builders the training loop calls.

Every family's generator has the forward ``(z (N, latent_dim), labels (N,) | None) -> (N, C, H, W)``
in [-1, 1], and every discriminator ``(x, labels | None, features=False) -> logits (N,)`` (plus
features (N, F) when asked), so the loop, sampling and evaluation never ask which family they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models import ae, dcgan, mlp, vae
from ganforge.names import MODEL_NAMES, check_registry

if TYPE_CHECKING:
    from ganforge.models.spec import ModelSpec


class Networks(NamedTuple):
    """The networks of one family; absent roles are None."""

    generator: nn.Module
    discriminator: nn.Module | None
    encoder: nn.Module | None


Builder = Callable[["ModelSpec"], nn.Module]


@dataclass(frozen=True)
class ModelFamily:
    """How one family builds each role, and which image sizes it can build.

    Calling the family builds all its networks: ``MODELS["dcgan"](spec)``.
    """

    generator: Builder
    discriminator: Builder | None
    encoder: Builder | None
    sizes: Sequence[int]

    def __call__(self, spec: ModelSpec) -> Networks:
        """Build every network of the family for ``spec``."""
        check_buildable(spec)
        return Networks(
            self.generator(spec),
            self.discriminator(spec) if self.discriminator else None,
            self.encoder(spec) if self.encoder else None,
        )


MODELS: dict[str, ModelFamily] = {
    "mlp": ModelFamily(
        mlp.build_generator, mlp.build_discriminator, None, range(mlp.MIN_SIZE, mlp.MAX_SIZE + 1)
    ),
    "dcgan": ModelFamily(dcgan.build_generator, dcgan.build_discriminator, None, dcgan.SIZES),
    "wgan-gp": ModelFamily(dcgan.build_generator, dcgan.build_critic, None, dcgan.SIZES),
    "vae": ModelFamily(vae.build_decoder, None, vae.build_encoder, dcgan.SIZES),
    "ae": ModelFamily(ae.build_decoder, None, ae.build_encoder, dcgan.SIZES),
}
check_registry("model", MODELS, MODEL_NAMES)


def _describe(sizes: Sequence[int]) -> str:
    if isinstance(sizes, range):
        return f"{sizes.start} to {sizes.stop - 1}"
    return ", ".join(map(str, sizes[:-1])) + f" or {sizes[-1]}"


def check_buildable(spec: ModelSpec) -> None:
    """Raise if the family cannot build networks for this spec.

    Fields that do not apply to a family are ignored (``upsample`` for mlp; ``spectral_norm`` and
    ``projection`` for vae, which has no discriminator).

    Args:
        spec: The model spec.

    Raises:
        GanforgeError: One line naming the bad value and the valid choices.
    """
    family = MODELS.get(spec.model)
    if family is None:
        raise GanforgeError(f"unknown model {spec.model!r}; valid models: {', '.join(MODELS)}")
    if spec.channels not in (1, 3):
        raise GanforgeError(f"channels must be 1 or 3, got {spec.channels}")
    if spec.image_size not in family.sizes:
        raise GanforgeError(
            f"model {spec.model!r} builds image_size {_describe(family.sizes)}, got {spec.image_size} "
            "(resize the dataset at ingest with --image-size)"
        )
    if spec.conditional and spec.num_classes < 2:
        raise GanforgeError(
            f"conditional=True needs num_classes >= 2 (the dataset's classes), got {spec.num_classes}"
        )
    if spec.projection and not spec.conditional:
        raise GanforgeError("projection=True needs conditional=True (it is a way to condition on labels)")
    if spec.aux_classifier and (not spec.conditional or spec.projection):
        raise GanforgeError("aux_classifier=True needs conditional=True and no projection (AC-GAN conditions "
                            "G only; D predicts the class)")
    _check_tables(spec)


def _check_tables(spec: ModelSpec) -> None:
    """The layer tables against each other and this image size (each value's own range is the spec's)."""
    if spec.model == "mlp":
        n = len(spec.g_channels or (0, 0, 0))
        if spec.g_norm_layers and max(spec.g_norm_layers) > n:
            raise GanforgeError(f"g_norm_layers names layer {max(spec.g_norm_layers)} of a {n}-layer generator")
        normed = set(spec.g_norm_layers or range(2, n + 1)) if spec.g_norm == "batch" else set()
        if spec.g_norm_after and not set(spec.g_norm_after) <= normed:
            bare = min(set(spec.g_norm_after) - normed)
            raise GanforgeError(f"g_norm_after names layer {bare}, which has no batch norm (batch-normed layers: "
                                f"{','.join(map(str, sorted(normed))) or 'none'}); add it to g_norm_layers")
        return
    for name in ("g_strides", "d_strides"):
        if any(s not in (1, 2) for s in getattr(spec, name) or ()):
            raise GanforgeError(f"{name} must be 1s and 2s, got {','.join(map(str, getattr(spec, name)))}")
    for chans, strides, who in ((spec.g_channels, spec.g_strides, "g"), (spec.d_channels, spec.d_strides, "d")):
        if chans and strides and len(chans) != len(strides):
            raise GanforgeError(f"{who}_channels and {who}_strides must have the same length, got "
                                f"{len(chans)} and {len(strides)}")
    if spec.g_channels or spec.g_strides:
        factor = 1
        for s in spec.g_strides or (2,) * len(spec.g_channels or ()):
            factor *= s
        if spec.image_size % factor:
            raise GanforgeError(
                f"the generator upsamples x{factor} from its base map, which does not divide the "
                f"{spec.image_size} px images (it builds {factor * 4} px from 4x4, or any multiple of {factor}); "
                "use a network for this size or re-ingest with --image-size"
            )
    if spec.d_channels or spec.d_strides:
        side = spec.image_size
        for s in spec.d_strides or (2,) * len(spec.d_channels or ()):
            side = (side - 1) // s + 1
        if side < 1 or len(spec.d_strides or spec.d_channels or ()) > spec.image_size.bit_length():
            raise GanforgeError(f"the discriminator's strides shrink {spec.image_size} px images below 1 px")


def build_generator(spec: ModelSpec) -> nn.Module:
    """Build the generator (the decoder, for vae).

    Args:
        spec: The model spec.

    Returns:
        forward(z (N, latent_dim), labels (N,) | None) -> (N, C, H, W) in [-1, 1].
    """
    check_buildable(spec)
    return MODELS[spec.model].generator(spec)


def build_discriminator(spec: ModelSpec) -> nn.Module:
    """Build the discriminator (the critic, for wgan-gp).

    Args:
        spec: The model spec.

    Returns:
        forward(x (N, C, H, W), labels | None, features=False) -> logits (N,) [, features (N, F)].

    Raises:
        GanforgeError: The family has no discriminator (vae), or the spec cannot be built.
    """
    check_buildable(spec)
    builder = MODELS[spec.model].discriminator
    if builder is None:
        raise GanforgeError(f"model {spec.model!r} has no discriminator; it trains with vae_loss")
    return builder(spec)


def build_encoder(spec: ModelSpec) -> nn.Module:
    """Build the encoder (vae only).

    Args:
        spec: The model spec.

    Returns:
        forward(x (N, C, H, W), labels | None) -> (mu, logvar), each (N, latent_dim).

    Raises:
        GanforgeError: The family has no encoder, or the spec cannot be built.
    """
    check_buildable(spec)
    builder = MODELS[spec.model].encoder
    if builder is None:
        with_encoder = [name for name, fam in MODELS.items() if fam.encoder is not None]
        raise GanforgeError(
            f"model {spec.model!r} has no encoder; models with one: {', '.join(with_encoder)}"
        )
    return builder(spec)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Count parameters.

    Args:
        module: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

