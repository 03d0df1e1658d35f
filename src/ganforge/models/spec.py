"""The network spec, declared once: every network setting with its type, range and help.

``NetworkSpec`` is what a user chooses about the networks (a part of ``TrainConfig``; each field is a ``ganforge
train`` flag of the same name). ``ModelSpec`` adds what the dataset decides (image side, channels, classes) and
is what the builders take and a checkpoint stores. A new network setting is one field here (and its check, if
its type does not say it all); the flag, the config files, the presets, the MLflow param and the checkpoint
follow from it.

Layer tables (``g_channels`` and the like) are tuples of ints here, parsed once from the comma text that config
files, flags and MLflow params carry (``"256,128"``); a checkpoint's spec holds them as lists.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ganforge.errors import GanforgeError
from ganforge.models.layers import ACTIVATIONS
from ganforge.models.registry import MODELS

# Upper bounds where a larger value is certainly a typo.
COUNT_LIMITS = {"latent_dim": 65536, "width": 4096, "channel_cap": 1024, "embed_dim": 65536, "kernel_size": 15}
MAX_TABLE = 64  # entries in a layer table: more layers than any image side allows
Table = tuple[int, ...]


@overload
def known_model(v: str) -> str: ...
@overload
def known_model(v: None) -> None: ...
def known_model(v: str | None) -> str | None:
    """``v`` if it names a model family (or is None); shared by every config that takes --model."""
    if v is not None and v not in MODELS:  # the registry itself: a family added to it is known at once
        raise ValueError(f"unknown model {v!r}; choose one of {', '.join(MODELS)}")
    return v


def check_count(model: type[BaseModel], name: str, v: int | None, top: int) -> int | None:
    """``v`` if it is a count from 1 to ``top`` (or None); the one wording of that range for every config."""
    if v is not None and not 1 <= v <= top:
        unset = " (or leave it out)" if model.model_fields[name].default is None else ""
        raise ValueError(f"must be from 1 to {top}{unset}, got {v}")
    return v


def parse_table(v: Any) -> Table | None:
    """A layer table from its comma text (``"256,128"``; a YAML file may give one number) or a sequence."""
    if v is None:
        return None
    parts = [str(p).strip() for p in v] if isinstance(v, (list, tuple)) else [p.strip() for p in str(v).split(",")]
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts) or len(parts) > MAX_TABLE:
        raise ValueError(f"must be comma-separated positive integers, e.g. 256,128,64; got {','.join(parts)!r}")
    return tuple(int(p) for p in parts)


class NetworkSpec(BaseModel):
    """Every network setting a user chooses: family, sizes, layer tables, activations, norms, initialisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description=f"Model family: one of {', '.join(MODELS)}.")
    latent_dim: int = Field(100, description="Size of the latent vector z.")
    conditional: bool = Field(False, description="Condition G and D on the class label.")
    spectral_norm: bool = Field(False, description="Spectral normalisation on the discriminator/critic.")
    upsample: Literal["transposed", "resize-conv"] = Field(
        "transposed", description="Generator upsampling: transposed conv, or resize-conv (no checkerboard)."
    )
    width: int = Field(64, description="Base channel count (ngf/ndf) of the networks.")
    channel_cap: int = Field(8, description="Widths derived from --width stop growing at this multiple of it.")
    embed_dim: int = Field(50, description="Size of the label embedding concatenated to z (conditional).")
    projection: bool = Field(False, description="Condition D by a projection head instead of a label plane.")
    aux_classifier: bool = Field(
        False, description="AC-GAN: D predicts the class (cross-entropy added to both losses) instead of seeing it."
    )
    g_activation: str | None = Field(
        None, description=f"Generator hidden activation: {', '.join(ACTIVATIONS)}. None: the family's."
    )
    d_activation: str | None = Field(
        None, description=f"Discriminator hidden activation: {', '.join(ACTIVATIONS)}. None: the family's."
    )
    leaky_slope: float = Field(0.2, description="Negative slope of leaky_relu (Keras' default is 0.3).")
    bn_momentum: float | None = Field(
        None, description="Batch-norm momentum, PyTorch convention (Keras momentum m is 1 - m here: Keras 0.8 = "
        "0.2). None: 0.1.",
    )
    g_dropout: float = Field(0.0, description="Dropout after each generator hidden layer, in [0, 1).")
    d_dropout: float | None = Field(
        None, description="Discriminator dropout, in [0, 1). None: the family's (mlp 0.3, else 0)."
    )
    d_dropout_at: Literal["blocks", "head"] = Field(
        "blocks", description="Discriminator dropout after every hidden layer, or once before the head."
    )
    # Layer tables. None everywhere gives each family's own network (what checkpoints written before
    # these fields hold); the seed presets spell their networks out with them.
    g_channels: Table | None = Field(
        None, description="Generator widths: the projected base map, then each hidden layer "
        "(mlp: the hidden layers). None: from --width.",
    )
    d_channels: Table | None = Field(
        None, description="Discriminator/encoder widths, one per hidden layer. None: from --width."
    )
    g_strides: Table | None = Field(
        None, description="Upsampling factor (1 or 2) of each generator conv incl. the output one. None: all 2."
    )
    d_strides: Table | None = Field(None, description="Stride (1 or 2) of each discriminator conv. None: all 2.")
    kernel_size: int | None = Field(None, description="Conv kernel side. None: 4 (3 with resize-conv).")
    g_norm: Literal["batch", "none"] = Field("batch", description="Normalisation of generator hidden layers.")
    g_norm_layers: Table | None = Field(
        None, description="mlp: 1-based generator layers with batch norm. None: all but the first."
    )
    g_base: Literal["channel", "feature", "linear"] = Field(
        "channel", description="After G's projection: batch norm per channel (PyTorch DCGAN), per feature before "
        "the reshape (Keras), or linear (no norm, no activation: the book's decoders).",
    )
    d_norm: Literal["batch", "layer", "none"] | None = Field(
        None, description="Discriminator/encoder normalisation. None: the family's (batch; layer for wgan-gp)."
    )
    g_bias: bool | None = Field(
        None, description="Generator biases: true: every layer (Keras' default); false: none, output included; "
        "unset: none before a batch norm (DCGAN).",
    )
    d_bias: bool | None = Field(
        None, description="Discriminator/encoder biases, as --g-bias (false also drops the head's).",
    )
    init: Literal["dcgan", "normal", "glorot", "torch"] | None = Field(
        None, description="Weight initialisation: dcgan (weights N(0, 0.02), zero biases, batch-norm scales N(1, "
        "0.02)), normal (Keras RandomNormal(0, 0.02) weights, zero biases, batch norm 1/0: the book's GANs), glorot "
        "(Keras' defaults: glorot-uniform weights, zero biases, batch norm 1/0, embeddings U(-0.05, 0.05)) or torch "
        "(PyTorch's defaults). None: the family's (mlp torch, else dcgan).",
    )
    bn_eps: float | None = Field(
        None, description="Batch-norm epsilon, added to the variance. None: PyTorch's 1e-5 (Keras' is 1e-3).",
    )
    g_norm_after: Table | None = Field(
        None, description="mlp: 1-based generator layers whose batch norm comes after the "
        "activation (Keras' Dense(activation=...) then BatchNormalization). None: before it everywhere.",
    )
    output_activation: Literal["tanh", "sigmoid"] = Field(
        "tanh", description="ae/vae decoder output: tanh on [-1, 1], or sigmoid on [0, 1] as the book's decoders "
        "(the encoder sees [0, 1] and the reconstruction loss is taken there; samples stay [-1, 1] images).",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return known_model(v)

    @field_validator("g_activation", "d_activation")
    @classmethod
    def _known_activation(cls, v: str | None, info) -> str | None:
        if v is not None and v not in ACTIVATIONS:
            raise ValueError(f"unknown {info.field_name.replace('_', '-')} {v!r}; choose one of {', '.join(ACTIVATIONS)}")
        return v

    @field_validator(*COUNT_LIMITS)
    @classmethod
    def _count(cls, v: int | None, info) -> int | None:
        return check_count(cls, info.field_name, v, COUNT_LIMITS[info.field_name])

    # nan fails every comparison, so each range is written so that nan falls outside it
    @field_validator("g_dropout", "d_dropout", "leaky_slope")
    @classmethod
    def _rate(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), e.g. 0.3; got {v}")
        return v

    @field_validator("bn_momentum")
    @classmethod
    def _momentum(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1] (PyTorch convention: Keras 0.8 is 0.2 here); got {v}")
        return v

    @field_validator("bn_eps")
    @classmethod
    def _eps(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:
            raise ValueError(f"must be in (0, 1], e.g. 1e-5 (PyTorch) or 1e-3 (Keras); got {v}")
        return v

    @field_validator("g_channels", "d_channels", "g_strides", "d_strides", "g_norm_layers", "g_norm_after",
                     mode="before")  # fmt: skip
    @classmethod
    def _table(cls, v: Any) -> Table | None:
        return parse_table(v)

    @model_validator(mode="after")
    def _family_fits(self) -> NetworkSpec:
        autoencoders = [name for name, family in MODELS.items() if family.encoder is not None]
        if self.output_activation == "sigmoid" and self.model not in autoencoders:
            raise ValueError(f"--output-activation sigmoid is for --model {' or '.join(autoencoders)} (the book's "
                             f"decoders on [0, 1]); {self.model} keeps tanh")
        if self.g_norm_after is not None and self.model != "mlp":
            raise ValueError(f"--g-norm-after orders the mlp generator's batch norms; --model {self.model} has no "
                             "such layers (leave it out)")
        return self

    def for_images(self, channels: int, image_size: int, num_classes: int) -> ModelSpec:
        """The ``ModelSpec`` of these settings for a dataset's images (C, H = W) and classes."""
        return ModelSpec(**dict(self), image_size=image_size, channels=channels, num_classes=num_classes)


class ModelSpec(NetworkSpec):
    """The network settings and the images they are built for: everything needed to rebuild the networks;
    stored with each checkpoint."""

    image_size: int = Field(description="Side of the square images, in pixels.")
    channels: int = Field(description="Image channels: 1 (grey) or 3 (RGB).")
    num_classes: int = Field(0, description="Classes in the dataset (manifest); needed when conditional.")

    # A spec comes from a checkpoint: a name it holds that this version lacks is a one-line GanforgeError
    # (not a ValueError, so pydantic lets it through unwrapped) naming the valid ones.
    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, v: Any) -> Any:
        if v not in MODELS:
            raise GanforgeError(f"unknown model {v!r}; valid models: {', '.join(MODELS)}")
        return v

    @field_validator("upsample", mode="before")
    @classmethod
    def _known_upsample(cls, v: Any) -> Any:
        modes = typing.get_args(NetworkSpec.model_fields["upsample"].annotation)
        if v not in modes:
            raise GanforgeError(f"unknown upsample {v!r}; valid: {', '.join(modes)}")
        return v
