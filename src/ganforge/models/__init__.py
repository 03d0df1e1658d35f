"""Model families by name: a spec, a registry and the builders the training loop calls.

Every family's generator has the forward ``(z (N, latent_dim), labels (N,) | None) -> (N, C, H, W)``
in [-1, 1], and every discriminator ``(x, labels | None, features=False) -> logits (N,)`` (plus
features (N, F) when asked), so the loop, sampling and evaluation never ask which family they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models import ae, dcgan, mlp, vae

UPSAMPLE_MODES = ("transposed", "resize-conv")


class ModelSpec(BaseModel):
    """Everything needed to rebuild the networks; stored with each checkpoint."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model family (the --model flag): a name in MODELS.")
    image_size: int = Field(description="Side of the square images, in pixels.")
    channels: int = Field(description="Image channels: 1 (grey) or 3 (RGB).")
    num_classes: int = Field(0, description="Classes in the dataset (manifest); needed when conditional.")
    conditional: bool = Field(False, description="Condition generator and discriminator on class labels.")
    latent_dim: int = Field(100, description="Size of the latent vector z.")
    width: int = Field(64, description="Base channel count (ngf/ndf; hidden width / 4 for mlp).")
    upsample: Literal["transposed", "resize-conv"] = Field(
        "transposed",
        description="Generator upsampling: strided transposed conv, or nearest resize + 3x3 conv.",
    )
    spectral_norm: bool = Field(False, description="Spectral normalisation on the discriminator/critic.")
    embed_dim: int = Field(50, description="Size of the label embedding concatenated to z in the generator.")
    projection: bool = Field(
        False, description="Condition the discriminator by a projection head instead of a label channel."
    )
    aux_classifier: bool = Field(
        False, description="AC-GAN: the discriminator predicts the class instead of seeing the label."
    )
    # Layer tables. None everywhere gives each family's own network (what checkpoints written before
    # these fields hold); the seed presets spell their networks out with them.
    g_channels: tuple[int, ...] | None = Field(
        None, description="Generator widths: the projected base map, then each hidden layer. None: from width."
    )
    d_channels: tuple[int, ...] | None = Field(
        None, description="Discriminator/encoder widths, one per hidden layer. None: from width."
    )
    g_strides: tuple[int, ...] | None = Field(
        None, description="Upsampling factor (1 or 2) of each generator conv, the output conv included. None: 2s."
    )
    d_strides: tuple[int, ...] | None = Field(None, description="Stride (1 or 2) of each discriminator conv. None: 2s.")
    kernel_size: int | None = Field(None, description="Conv kernel side. None: 4 (3 for resize-conv).")
    channel_cap: int = Field(8, description="Derived widths stop growing at channel_cap * width.")
    g_activation: str | None = Field(None, description="Generator hidden activation. None: the family's.")
    d_activation: str | None = Field(None, description="Discriminator hidden activation. None: the family's.")
    leaky_slope: float = Field(0.2, description="Negative slope of leaky_relu.")
    bn_momentum: float | None = Field(None, description="Batch-norm momentum (PyTorch convention). None: 0.1.")
    g_dropout: float = Field(0.0, description="Dropout after each generator hidden layer.")
    d_dropout: float | None = Field(None, description="Discriminator dropout. None: the family's (mlp 0.3, else 0).")
    d_dropout_at: Literal["blocks", "head"] = Field(
        "blocks", description="Discriminator dropout after every hidden layer, or once before the head."
    )
    g_norm: Literal["batch", "none"] = Field("batch", description="Normalisation of the generator's hidden layers.")
    g_norm_layers: tuple[int, ...] | None = Field(
        None, description="mlp: 1-based hidden layers with batch norm. None: all but the first."
    )
    g_base: Literal["channel", "feature", "linear"] = Field(
        "channel", description="After the generator's projection: batch norm per channel then the activation "
        "(PyTorch DCGAN), per feature before reshaping (Keras), or nothing (the book's decoders).",
    )
    d_norm: Literal["batch", "layer", "none"] | None = Field(
        None, description="Discriminator/encoder normalisation. None: the family's (batch; layer for wgan-gp)."
    )
    g_bias: bool | None = Field(
        None, description="Generator biases. True: every layer (Keras); False: none, output included; None: no "
        "bias before a batch norm.",
    )
    d_bias: bool | None = Field(
        None, description="Discriminator/encoder biases, head included for False; as g_bias.",
    )
    init: Literal["dcgan", "normal", "glorot", "torch"] | None = Field(
        None, description="Weight initialisation (see layers.init_weights). None: the family's (mlp torch, else "
        "dcgan).",
    )
    bn_eps: float | None = Field(None, description="Batch-norm epsilon. None: PyTorch's 1e-5 (Keras: 1e-3).")
    g_norm_after: tuple[int, ...] | None = Field(
        None, description="mlp: 1-based generator layers whose batch norm follows the activation. None: none."
    )
    output_activation: Literal["tanh", "sigmoid"] = Field(
        "tanh", description="Decoder output: tanh, or (ae/vae) a sigmoid on [0, 1] mapped to [-1, 1], with the "
        "encoder's input and the reconstruction loss on [0, 1].",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, v: Any) -> Any:
        # GanforgeError is not a ValueError, so pydantic lets it through unwrapped: one line for the user.
        if v not in MODELS:
            raise GanforgeError(f"unknown model {v!r}; valid models: {', '.join(MODELS)}")
        return v

    @field_validator("upsample", mode="before")
    @classmethod
    def _known_upsample(cls, v: Any) -> Any:
        if v not in UPSAMPLE_MODES:
            raise GanforgeError(f"unknown upsample {v!r}; valid: {', '.join(UPSAMPLE_MODES)}")
        return v


class Networks(NamedTuple):
    """The networks of one family; absent roles are None."""

    generator: nn.Module
    discriminator: nn.Module | None
    encoder: nn.Module | None


Builder = Callable[[ModelSpec], nn.Module]


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
    for name in ("latent_dim", "width", "embed_dim"):
        if getattr(spec, name) < 1:
            raise GanforgeError(f"{name} must be at least 1, got {getattr(spec, name)}")
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
    """The layer-table fields: known names, ranges, and strides that build this image size."""
    from ganforge.models.layers import ACTIVATIONS

    for name in ("g_activation", "d_activation"):
        v = getattr(spec, name)
        if v is not None and v not in ACTIVATIONS:
            raise GanforgeError(f"unknown {name} {v!r}; choose one of {', '.join(ACTIVATIONS)}")
    for name in ("g_dropout", "d_dropout"):
        v = getattr(spec, name)
        if v is not None and not 0.0 <= v < 1.0:
            raise GanforgeError(f"{name} must be in [0, 1), got {v}")
    if spec.bn_momentum is not None and not 0.0 <= spec.bn_momentum <= 1.0:
        raise GanforgeError(f"bn_momentum must be in [0, 1] (PyTorch convention), got {spec.bn_momentum}")
    if spec.bn_eps is not None and not 0.0 < spec.bn_eps <= 1.0:
        raise GanforgeError(f"bn_eps must be in (0, 1], e.g. 1e-5 or Keras' 1e-3, got {spec.bn_eps}")
    if spec.output_activation == "sigmoid" and MODELS[spec.model].encoder is None:
        raise GanforgeError(f"output_activation sigmoid is for the ae and vae (the book's decoders), not {spec.model}")
    if spec.g_norm_after and spec.model != "mlp":
        raise GanforgeError(f"g_norm_after orders the mlp generator's batch norms; model {spec.model} has none to order")
    for name in ("g_channels", "d_channels", "g_strides", "d_strides", "g_norm_layers", "g_norm_after"):
        if getattr(spec, name) is not None and (not getattr(spec, name) or min(getattr(spec, name)) < 1):
            raise GanforgeError(f"{name} must list positive integers, got {getattr(spec, name)}")
    if spec.kernel_size is not None and spec.kernel_size < 1 or spec.channel_cap < 1:
        raise GanforgeError(f"kernel_size and channel_cap must be at least 1, got {spec.kernel_size}, "
                            f"{spec.channel_cap}")
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
        for s in spec.g_strides or (2,) * len(spec.g_channels):
            factor *= s
        if spec.image_size % factor:
            raise GanforgeError(
                f"the generator upsamples x{factor} from its base map, which does not divide the "
                f"{spec.image_size} px images (it builds {factor * 4} px from 4x4, or any multiple of {factor}); "
                "use a network for this size or re-ingest with --image-size"
            )
    if spec.d_channels or spec.d_strides:
        side = spec.image_size
        for s in spec.d_strides or (2,) * len(spec.d_channels):
            side = (side - 1) // s + 1
        if side < 1 or len(spec.d_strides or spec.d_channels) > spec.image_size.bit_length():
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
