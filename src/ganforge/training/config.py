"""Training configuration: ``TrainConfig`` (field names = CLI flags = MLflow params) and ``PRESETS``.

Precedence, lowest first: field defaults < ``--config FILE`` (YAML or JSON) < ``--preset`` < explicit
flags. ``resolve_config`` applies it; every other module receives a validated ``TrainConfig``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ganforge.errors import GanforgeError
from ganforge.models import MODELS
from ganforge.models.layers import ACTIVATIONS
from ganforge.training.augment import AUGMENTS
from ganforge.training.losses import OBJECTIVES

# Each list of names is read from its registry (declared once): a new model family, objective,
# activation or augmentation is one registry line, and these flags' help and checks follow.
MODEL_NAMES = tuple(MODELS)
LOSS_NAMES = tuple(OBJECTIVES)
OPTIMIZER_NAMES = ("adam", "rmsprop")
SCHEDULE_NAMES = ("none", "step", "cosine")
ACTIVATION_NAMES = ACTIVATIONS
AUGMENT_NAMES = tuple(AUGMENTS)
MAX_SEED = 2**63 - 2  # torch seeds are 64-bit; the FID probe seeds with seed + 1
# Upper bounds of integer fields where a larger value is certainly a typo (any other: 2**31 - 1).
INT_LIMITS = {"width": 4096, "latent_dim": 65536, "n_critic": 1000, "threads": 1024, "nproc": 1024,
              "embed_dim": 65536, "channel_cap": 1024, "kernel_size": 15, "n_samples": 1024}

# Fields that may change between a run and its resume without changing what is trained: where things
# go, how often they are written, how long to run and on what hardware. Everything else must match.
RESUME_FREE = frozenset(
    {
        "epochs", "steps", "output", "experiment", "checkpoint_every", "keep_checkpoints", "sample_every",
        "log_every", "compile", "on_nan", "resume", "nproc", "device", "track", "overwrite", "preset", "dataset",
        "fid_every", "fid_n", "fid_backbone", "fid_backbone_weights", "fid_backbone_sha256", "sample_every_epochs",
        "threads", "interpolation", "interpolation_steps",
    }
)  # fmt: skip


def known_model(v: str | None) -> str | None:
    """``v`` if it names a model family (or is None); shared by every config that takes --model."""
    if v is not None and v not in MODELS:  # the registry itself: a family added to it is known at once
        raise ValueError(f"unknown model {v!r}; choose one of {', '.join(MODELS)}")
    return v


def known_preset(v: str | None) -> str | None:
    """``v`` if it names a preset (or is None); shared by every config that takes --preset."""
    if v is not None and v not in PRESETS:
        raise ValueError(f"unknown preset {v!r}; choose one of {', '.join(PRESETS)}")
    return v


class TrainConfig(BaseModel):
    """Everything that defines a training run; each field is a ``ganforge train`` flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="Dataset URI written by `ganforge ingest` (local directory or s3://).")
    model: str = Field(description=f"Model family: one of {', '.join(MODEL_NAMES)}.")
    preset: str | None = Field(None, description="Name of the preset applied (see PRESETS). None: no preset.")
    epochs: int | None = Field(
        None, description="Passes over the training split. None: use --steps (exactly one must be set)."
    )
    steps: int | None = Field(
        None, description="Generator updates to run in total. None: derived from --epochs."
    )
    batch_size: int = Field(64, description="Global batch size in images (split evenly across --nproc ranks).")
    lr_g: float = Field(2e-4, description="Learning rate of the generator (or AE/VAE encoder+decoder).")
    lr_d: float = Field(2e-4, description="Learning rate of the discriminator/critic (TTUR if != lr-g).")
    optimizer: str = Field("adam", description=f"Optimiser of both players: {', '.join(OPTIMIZER_NAMES)}.")
    beta1: float = Field(0.5, description="Adam beta1 (0.5 is the DCGAN paper's value; 0 for WGAN-GP).")
    beta2: float = Field(0.999, description="Adam beta2; RMSprop's smoothing constant alpha is beta2 too.")
    lr_schedule: str = Field(
        "none", description=f"Learning-rate schedule: {', '.join(SCHEDULE_NAMES)} (step: times --lr-gamma every "
        "--lr-step epochs; cosine: down to 0 over the run).",
    )
    lr_step: int = Field(1, description="Epochs between the step schedule's decays.")
    lr_gamma: float = Field(0.5, description="Factor of each step-schedule decay.")
    latent_dim: int = Field(100, description="Size of the latent vector z.")
    seed: int = Field(0, description="Seed for initialisation, data order, latents and the fixed sample batch.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    output: str = Field("runs/train", description="Directory for checkpoints (ckpt-<step>) and local artifacts.")
    experiment: str = Field("ganforge", description="MLflow experiment name.")
    track: bool = Field(True, description="Log to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).")
    conditional: bool = Field(False, description="Condition G and D on the class label.")
    loss: str | None = Field(
        None, description=f"GAN objective: {', '.join(LOSS_NAMES)}. None: wgan-gp for wgan-gp, else bce."
    )
    label_smoothing: bool = Field(False, description="One-sided label smoothing: real targets in [0.9, 1.0].")
    noisy_labels: bool = Field(False, description="Noisy labels: real targets in [0.9, 1], fake in [0, 0.1].")
    spectral_norm: bool = Field(False, description="Spectral normalisation on the discriminator/critic.")
    feature_matching: bool = Field(False, description="Generator matches D's mean features on real data.")
    ema_decay: float | None = Field(
        None, description="Decay of the generator's moving average used for samples (e.g. 0.999). None: no EMA."
    )
    ema_rampup: float = Field(
        0.05, description="EMA ramp-up: the average's half-life is at most this fraction of the steps so far "
        "(StyleGAN2-ADA's 0.05), so it forgets the initial weights early. 0: plain EMA from step 0.",
    )
    diffaugment: str | None = Field(
        None, description="DiffAugment policy, e.g. color,translation,cutout. None: no augmentation."
    )
    n_critic: int | None = Field(
        None, description="Discriminator steps per generator step. None: the objective's (5 for wgan-*, else 1)."
    )
    gp_weight: float = Field(10.0, description="Gradient-penalty weight (wgan-gp).")
    clip: float = Field(0.01, description="Weight-clipping bound (wgan-clip).")
    kl_weight: float = Field(1.0, description="Weight of the KL term (vae).")
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
        None, description=f"Generator hidden activation: {', '.join(ACTIVATION_NAMES)}. None: the family's."
    )
    d_activation: str | None = Field(
        None, description=f"Discriminator hidden activation: {', '.join(ACTIVATION_NAMES)}. None: the family's."
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
    g_channels: str | None = Field(
        None, description="Generator widths, comma-separated: the projected base map, then each hidden layer "
        "(mlp: the hidden layers). None: from --width.",
    )
    d_channels: str | None = Field(
        None, description="Discriminator/encoder widths, comma-separated, one per hidden layer. None: from --width."
    )
    g_strides: str | None = Field(
        None, description="Upsampling factor (1 or 2) of each generator conv incl. the output one. None: all 2."
    )
    d_strides: str | None = Field(None, description="Stride (1 or 2) of each discriminator conv. None: all 2.")
    kernel_size: int | None = Field(None, description="Conv kernel side. None: 4 (3 with resize-conv).")
    g_norm: Literal["batch", "none"] = Field("batch", description="Normalisation of generator hidden layers.")
    g_norm_layers: str | None = Field(
        None, description="mlp: comma-separated 1-based generator layers with batch norm. None: all but the first."
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
    g_norm_after: str | None = Field(
        None, description="mlp: comma-separated 1-based generator layers whose batch norm comes after the "
        "activation (Keras' Dense(activation=...) then BatchNormalization). None: before it everywhere.",
    )
    output_activation: Literal["tanh", "sigmoid"] = Field(
        "tanh", description="ae/vae decoder output: tanh on [-1, 1], or sigmoid on [0, 1] as the book's decoders "
        "(the encoder sees [0, 1] and the reconstruction loss is taken there; samples stay [-1, 1] images).",
    )
    sampling: Literal["epoch", "replacement"] = Field(
        "epoch", description="How real batches are drawn: epoch (a shuffled pass, every image once per epoch) or "
        "replacement (each batch uniformly at random with replacement, as np.random.randint; an epoch is then "
        "N // batch-size batches).",
    )
    interpolation: Literal["slerp", "linear"] = Field(
        "slerp", description="Latent path of the interpolation strip (and of generate --interpolate): slerp along "
        "the sphere, or a straight line.",
    )
    interpolation_steps: int = Field(10, description="Images in the run's interpolation strip, both ends included.")
    d_loss_sum: bool = Field(
        False, description="Optimise the sum of D's real and fake terms (logged as loss_d_sum); loss_d is always "
        "their mean. Off: optimise the mean.",
    )
    fid_every: int | None = Field(
        None, description="Measure a small-sample FID every this many epochs (logged as train/fid_<n>_train). "
        "None: never."
    )
    fid_n: int = Field(1000, description="Generated and real images in each --fid-every measurement.")
    fid_backbone: str = Field(
        "inception-tf", description="Feature backbone of --fid-every (inception-tf, pixels, ...; see evaluate)."
    )
    fid_backbone_weights: str | None = Field(
        None, description="Weights file of --fid-backbone, as evaluate's --backbone-weights (e.g. torchvision's "
        "inception_v3_google-0cc3c7bd.pth for inception-torchvision). None: the backbone's packaged one.",
    )
    fid_backbone_sha256: str | None = Field(
        None, description="SHA-256 --fid-backbone-weights must have, as evaluate's --backbone-sha256. None: the "
        "backbone's known official file.",
    )
    checkpoint_every: int = Field(500, description="Write ckpt-<step> every this many steps (and at the end).")
    keep_checkpoints: int = Field(3, description="Keep the newest this many checkpoints (older ones deleted).")
    sample_every: int = Field(
        500, description="Write a sample grid of the fixed latents every this many steps (samples/ in --output "
        "and MLflow).",
    )
    sample_every_epochs: int | None = Field(
        None, description="Write the sample grid every this many epochs instead of --sample-every steps."
    )
    n_samples: int = Field(64, description="Fixed latents in each sample grid.")
    log_every: int = Field(10, description="Log metrics every this many steps.")
    compile: bool = Field(False, description="torch.compile the networks (CUDA only; ignored on CPU).")
    on_nan: Literal["stop", "rollback"] = Field(
        "stop", description="On NaN/Inf loss: stop, or rollback to the last checkpoint with halved lrs."
    )
    resume: str | None = Field(
        None, description="latest (newest ckpt in --output) or a checkpoint directory. None: start afresh."
    )
    nproc: int = Field(1, description="Processes (GPUs, or CPU ranks) to train on through torchrun.")
    threads: int | None = Field(
        None, description="CPU threads per process. None: torch's default (OMP_NUM_THREADS or the physical "
        "cores), split between the ranks on one machine.",
    )
    overwrite: bool = Field(
        False, description="Starting afresh: delete checkpoints already in --output instead of refusing."
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return known_model(v)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str | None) -> str | None:
        if v is not None and v not in LOSS_NAMES:
            raise ValueError(f"unknown loss {v!r}; choose one of {', '.join(LOSS_NAMES)}")
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        return known_preset(v)

    @field_validator("optimizer", "lr_schedule", "g_activation", "d_activation")
    @classmethod
    def _known_name(cls, v: str | None, info) -> str | None:
        names = {"optimizer": OPTIMIZER_NAMES, "lr_schedule": SCHEDULE_NAMES}.get(info.field_name, ACTIVATION_NAMES)
        if v is not None and v not in names:
            raise ValueError(f"unknown {info.field_name.replace('_', '-')} {v!r}; choose one of {', '.join(names)}")
        return v

    @field_validator("g_dropout", "d_dropout", "leaky_slope")
    @classmethod
    def _rate(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v < 1.0:  # also refuses nan
            raise ValueError(f"must be in [0, 1), e.g. 0.3; got {v}")
        return v

    @field_validator("bn_momentum")
    @classmethod
    def _momentum(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1] (PyTorch convention: Keras 0.8 is 0.2 here); got {v}")
        return v

    @field_validator("interpolation_steps")
    @classmethod
    def _strip(cls, v: int) -> int:
        if not 2 <= v <= 1024:  # both ends at least; a strip is one row of images in memory
            raise ValueError(f"must be from 2 to 1024 (the strip's images, both ends included), got {v}")
        return v

    @field_validator("bn_eps")
    @classmethod
    def _eps(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:  # also refuses nan
            raise ValueError(f"must be in (0, 1], e.g. 1e-5 (PyTorch) or 1e-3 (Keras); got {v}")
        return v

    @field_validator("lr_gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"must be in (0, 1], e.g. 0.5; got {v}")
        return v

    @field_validator("g_channels", "d_channels", "g_strides", "d_strides", "g_norm_layers", "g_norm_after")
    @classmethod
    def _int_list(cls, v: str | int | None) -> str | None:
        if v is None:
            return v
        text = str(v)  # a YAML file may give one number
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() and int(p) >= 1 for p in parts) or len(parts) > 64:
            raise ValueError(f"must be comma-separated positive integers, e.g. 256,128,64; got {text!r}")
        return ",".join(str(int(p)) for p in parts)

    @field_validator(
        "batch_size", "latent_dim", "width", "checkpoint_every", "keep_checkpoints", "sample_every",
        "log_every", "nproc", "epochs", "steps", "n_critic", "fid_every", "fid_n", "threads", "embed_dim",
        "channel_cap", "kernel_size", "lr_step", "sample_every_epochs", "n_samples",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v: int | None, info) -> int | None:
        top = INT_LIMITS.get(info.field_name, 2**31 - 1)  # beyond it torch's C++ sizes overflow
        if v is not None and not 1 <= v <= top:
            unset = " (or leave it out)" if cls.model_fields[info.field_name].default is None else ""
            raise ValueError(f"must be from 1 to {top}{unset}, got {v}")
        return v

    # Every float is checked here, not by torch at step 0: nan passes every "<" test, so each range
    # is written so that nan and inf fall outside it.
    @field_validator("lr_g", "lr_d", "clip")
    @classmethod
    def _positive_float(cls, v: float) -> float:
        if not 0.0 < v < math.inf:
            raise ValueError(f"must be a finite number above 0, e.g. 0.0002; got {v}")
        return v

    @field_validator("gp_weight", "kl_weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        if not 0.0 <= v < math.inf:
            raise ValueError(f"must be a finite number of at least 0, e.g. 10 or 1; got {v}")
        return v

    @field_validator("beta1", "beta2")
    @classmethod
    def _beta(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), e.g. 0.5 or 0.999; got {v}")
        return v

    @field_validator("ema_decay")
    @classmethod
    def _decay(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError(f"must be in (0, 1), e.g. 0.999, or left out for no EMA; got {v}")
        return v

    @field_validator("ema_rampup")
    @classmethod
    def _rampup(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:  # also refuses nan
            raise ValueError(f"must be in [0, 1], e.g. 0.05, or 0 for no ramp-up; got {v}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if not 0 <= v <= MAX_SEED:
            raise ValueError(f"must be an integer from 0 to {MAX_SEED}, e.g. 0; got {v}")
        return v

    @field_validator("dataset", "output", "experiment", "fid_backbone")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("resume")
    @classmethod
    def _resume(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be latest or a checkpoint directory (or leave it out to start afresh)")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"use auto, cpu, cuda or cuda:N; got {v!r}")
        return v

    @field_validator("diffaugment")
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        if v is None:
            return v
        names = [p.strip() for p in v.split(",") if p.strip()]  # "" is no augmentation, as in augment.py
        unknown = [n for n in names if n not in AUGMENT_NAMES]
        if unknown:
            raise ValueError(f"unknown augment {unknown[0]!r}; use a comma-separated list of {', '.join(AUGMENT_NAMES)}, "
                             "e.g. color,translation,cutout (or leave it out)")
        return v

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of --epochs or --steps")
        if self.batch_size % self.nproc:
            raise ValueError(f"--batch-size {self.batch_size} must be divisible by --nproc {self.nproc}")
        autoencoders = [name for name, family in MODELS.items() if family.encoder is not None]
        if self.output_activation == "sigmoid" and self.model not in autoencoders:
            raise ValueError(f"--output-activation sigmoid is for --model {' or '.join(autoencoders)} (the book's "
                             f"decoders on [0, 1]); {self.model} keeps tanh")
        if self.g_norm_after is not None and self.model != "mlp":
            raise ValueError(f"--g-norm-after orders the mlp generator's batch norms; --model {self.model} has no "
                             "such layers (leave it out)")
        return self

    @property
    def objective(self) -> str:
        """The GAN objective actually used (``loss`` with its family default filled in)."""
        return self.loss or ("wgan-gp" if self.model == "wgan-gp" else "bce")

    def mismatches(self, other: TrainConfig) -> list[str]:
        """Names of fields that differ and matter for an exact resume (see ``RESUME_FREE``)."""
        a, b = self.model_dump(), other.model_dump()
        return [k for k in a if k not in RESUME_FREE and a[k] != b.get(k)]


@dataclass(frozen=True)
class Preset:
    """A named set of overrides and the reason its values differ from the defaults.

    ``image_size``: the side its layer tables are written for (the seed presets); a dataset of another
    size is refused while those tables are in force, since the networks would not be the seed's.
    ``tuned_for``: the sides its settings were chosen for (the recommended presets); any other trains, with
    a note, since the width-agnostic networks build at any size but the settings were not chosen for it.
    """

    why: str
    overrides: dict = field(default_factory=dict)
    image_size: int | None = None
    tuned_for: tuple[int, ...] = ()  # sides a recommended preset was chosen for: another size gets a note


# The seed presets: one per experiment of ../shared/seeds, layer for layer. Keras defaults that the
# seeds rely on without printing them: LeakyReLU alpha 0.3, BatchNormalization momentum 0.99 (PyTorch
# 0.01) and epsilon 1e-3, use_bias=True, glorot-uniform initialisation, Adam betas (0.9, 0.999),
# RMSprop rho 0.9. The Keras presets set --init (glorot, or normal where the seed passes RandomNormal(0, 0.02))
# and --bn-eps 1e-3; the PyTorch ones --init torch where the seed keeps PyTorch's defaults. What a preset still
# does not copy is said in its "why": a GAN's sigmoid output on [0, 1] (ganforge's GAN images are [-1, 1] with
# tanh: sigmoid(x) = (1 + tanh(x / 2)) / 2, the same family and parameter count).
_GALAXY10 = {
    "model": "dcgan", "latent_dim": 128, "g_channels": "256,256,128,64,32", "g_base": "feature",
    "g_activation": "leaky_relu", "d_channels": "32,64,128,256", "d_activation": "leaky_relu", "leaky_slope": 0.3,
    "bn_momentum": 0.01, "g_bias": True, "d_dropout": 0.5, "d_dropout_at": "head", "noisy_labels": True,
    "d_loss_sum": True, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.05, "beta2": 0.999, "batch_size": 256,
    "epochs": 300, "sample_every_epochs": 1, "n_samples": 24, "init": "glorot", "bn_eps": 1e-3,
}  # fmt: skip
_GALAXY10_WHY = (
    "Galaxy10 DECals at 128 px, as seed 000 prints it: latent 128; G Dense(4x4x256) with batch norm over its "
    "4096 outputs, then 4x4 stride-2 transposed convs 256-128-64-32-3, LeakyReLU (Keras' 0.3) and batch norm "
    "(Keras momentum 0.99 = 0.01 here) after each but the tanh output; its use_bias='False' is a non-empty "
    "string, which Keras reads as true, so G keeps its biases. D: 4x4 stride-2 convs 32-64-128-256, batch norm "
    "after all but the first (those three without bias, as written), dropout 0.5 after Flatten, Dense(1) "
    "logit. Soft labels on both sides (real in [0.9, 1], fake in [0, 0.1]) and D's loss the sum of the two, "
    "optimised and logged as loss_d_sum. Adam 2e-4 with beta1 0.05: the seed's code prints 0.05 while citing "
    "the DCGAN paper's 0.5; this preset runs what the code ran (pass --beta1 0.5 for the paper's). 300 epochs; "
    "24 fixed latents drawn every epoch (4 x 6, the Snapshot callback). The batch size is not in the seed "
    "(training_data is built off the page): 256 is the TensorFlow DCGAN tutorial's, which it says it adapts. "
    "Keras' defaults the seed relies on: glorot-uniform weights with zero biases, batch norm scale 1 and shift 0, "
    "embeddings U(-0.05, 0.05) (--init glorot), batch-norm epsilon 1e-3 (--bn-eps)."
)
SEED_PRESETS: dict[str, Preset] = {
    "seed000-galaxy10-dcgan": Preset(_GALAXY10_WHY, _GALAXY10, 128),
    "seed000-galaxy10-cgan": Preset(
        "Seed 000's conditional GAN: the class embedded in 64 numbers (Embedding(10, 64)) concatenated to the "
        "128-d latent (192 into G's Dense), and a learned 128x128 label plane per class concatenated to D's image "
        "as a fourth channel (Embedding(10, 128*128)); the rest as seed000-galaxy10-dcgan. " + _GALAXY10_WHY,
        {**_GALAXY10, "conditional": True, "embed_dim": 64},
        128,
    ),
    "seed001-ae": Preset(
        "Generative Deep Learning ch. 3's MNIST autoencoder, as seed 001 prints it: encoder 3x3 convs 32-64-64-64 "
        "with strides 1-2-2-1, 'same' padding, LeakyReLU (Keras' 0.3), no batch norm or dropout (the MNIST model "
        "sets neither), Dense to a 2-d latent; decoder Dense(3136) reshaped to 7x7x64 with no activation, then "
        "3x3 transposed convs 64-64-32-1 with strides 1-2-2-1 and LeakyReLU, sigmoid out on [0, 1] images (the "
        "encoder sees [0, 1] too; samples are handed on as [-1, 1] images); every layer with a bias and Keras' "
        "glorot-uniform initialisation. Loss: mean squared error per pixel on [0, 1]. The seed gives no training "
        "numbers; Adam 5e-4 (Keras betas 0.9, 0.999), batch 32 and 200 epochs are the book's notebook's.",
        {"model": "ae", "latent_dim": 2, "d_channels": "32,64,64,64", "d_strides": "1,2,2,1", "kernel_size": 3,
         "d_activation": "leaky_relu", "d_norm": "none", "d_dropout": 0.0, "g_channels": "64,64,64,32",
         "g_strides": "1,2,2,1", "g_activation": "leaky_relu", "g_norm": "none", "g_base": "linear", "leaky_slope": 0.3,
         "g_bias": True, "d_bias": True, "lr_g": 5e-4, "beta1": 0.9, "beta2": 0.999, "batch_size": 32, "epochs": 200,
         "init": "glorot", "bn_eps": 1e-3, "output_activation": "sigmoid"},
        28,
    ),
    "seed001-vae": Preset(
        "Generative Deep Learning ch. 3's MNIST VAE, as seed 001 prints it: the autoencoder's layers (3x3 convs "
        "32-64-64-64, strides 1-2-2-1, 2-d latent, mirrored decoder with a sigmoid on [0, 1]), with Dense mu and "
        "log_var heads, glorot-uniform weights. Its loss is r_loss_factor 1000 x mean squared error per pixel on "
        "[0, 1] plus KL summed over the latent; ganforge's VAE loss is the squared error summed over the 784 "
        "pixels (on [0, 1] with the sigmoid output) plus kl_weight x KL, so kl_weight 784 / 1000 = 0.784 weighs the "
        "two terms as the book does (the whole loss is 0.784 x the book's; Adam's steps do not depend on that "
        "scale beyond its epsilon). Adam 5e-4, batch 32, 200 epochs: the book's notebook (the seed gives no "
        "numbers).",
        {"model": "vae", "latent_dim": 2, "d_channels": "32,64,64,64", "d_strides": "1,2,2,1", "kernel_size": 3,
         "d_activation": "leaky_relu", "d_norm": "none", "g_channels": "64,64,64,32", "g_strides": "1,2,2,1",
         "g_activation": "leaky_relu", "g_norm": "none", "g_base": "linear", "leaky_slope": 0.3, "g_bias": True,
         "d_bias": True, "kl_weight": 0.784, "lr_g": 5e-4, "beta1": 0.9, "beta2": 0.999, "batch_size": 32,
         "epochs": 200, "init": "glorot", "bn_eps": 1e-3, "output_activation": "sigmoid"},
        28,
    ),
    "seed001-gan": Preset(
        "Generative Deep Learning ch. 4's first GAN (28 px grey), with the structure seed 001 prints: a 100-d "
        "latent into Dense(3136) with batch norm and ReLU, reshaped to 7x7x64; four convs, the first two after "
        "UpSampling2D, batch norm (Keras momentum 0.9 = 0.1 here) and ReLU on all but the tanh output. D: convs "
        "with dropout after each, no batch norm, Dense(1); D's loss 0.5 (real + fake) and its accuracy logged; "
        "kernels RandomNormal(0, 0.02) with Keras' zero biases and batch norm 1/0 (--init normal), batch-norm "
        "epsilon 1e-3; D learns faster than G; RMSprop. The seed does not print the numbers it was called "
        "with; these are the book's notebook's: G convs 5x5 128-64-64-1, upsampling 2-2-1-1; D 5x5 convs "
        "64-64-128-128, strides 2-2-2-1, ReLU, dropout 0.4; RMSprop D 8e-4, G 4e-4 (rho 0.9); batch 64; 6000 "
        "steps. Grids of 25 every 100 steps (the seed states no cadence).",
        {"model": "dcgan", "latent_dim": 100, "g_channels": "64,128,64,64", "g_strides": "2,2,1,1", "kernel_size": 5,
         "upsample": "resize-conv", "g_base": "feature", "g_activation": "relu", "bn_momentum": 0.1, "g_bias": True,
         "d_channels": "64,64,128,128", "d_strides": "2,2,2,1", "d_norm": "none", "d_activation": "relu",
         "d_dropout": 0.4, "d_bias": True, "optimizer": "rmsprop", "beta2": 0.9, "lr_d": 8e-4, "lr_g": 4e-4,
         "batch_size": 64, "steps": 6000, "sample_every": 100, "n_samples": 25, "init": "normal", "bn_eps": 1e-3},
        28,
    ),
    "seed001-wgan": Preset(
        "Generative Deep Learning ch. 4's WGAN (32 px RGB): Wasserstein loss, the critic's weights clipped to "
        "[-0.01, 0.01] after each batch, 5 critic steps per generator step, RMSprop, a critic with no sigmoid and no "
        "batch norm, as seed 001 describes. Layer numbers are the book's notebook's (the seed prints none): G "
        "Dense(4x4x128) with batch norm (Keras 0.8 = 0.2 here), 5x5 convs 128-64-32-3 after upsampling 2-2-2-1, "
        "LeakyReLU 0.2; critic 5x5 convs 32-64-128-128, strides 2-2-2-1, LeakyReLU 0.2; RMSprop 5e-5 for both; "
        "batch 128; 6000 generator steps. Kernels RandomNormal(0, 0.02) as the book's GAN class (--init normal), "
        "Keras' batch-norm epsilon 1e-3.",
        {"model": "dcgan", "loss": "wgan-clip", "clip": 0.01, "n_critic": 5, "latent_dim": 100,
         "g_channels": "128,128,64,32", "g_strides": "2,2,2,1", "kernel_size": 5, "upsample": "resize-conv",
         "g_base": "feature", "g_activation": "leaky_relu", "bn_momentum": 0.2, "g_bias": True,
         "d_channels": "32,64,128,128", "d_strides": "2,2,2,1", "d_norm": "none", "d_activation": "leaky_relu",
         "d_bias": True, "optimizer": "rmsprop", "beta2": 0.9, "lr_d": 5e-5, "lr_g": 5e-5, "batch_size": 128,
         "steps": 6000, "sample_every": 100, "n_samples": 25, "init": "normal", "bn_eps": 1e-3},
        32,
    ),
    "seed001-wgan-gp": Preset(
        "Generative Deep Learning ch. 4's WGAN-GP (64 px RGB faces): gradient penalty (weight 10) instead of "
        "clipping, no batch norm in the critic, 5 critic steps, as seed 001 describes. Layer numbers are the "
        "book's notebook's (the seed prints none): G Dense(4x4x512) with batch norm (Keras 0.9 = 0.1 here), 5x5 "
        "stride-2 transposed convs 256-128-64-3, LeakyReLU 0.2; critic 5x5 stride-2 convs 64-128-256-512, "
        "LeakyReLU 0.2; Adam 2e-4 with beta1 0.5 for both; batch 64; 6000 generator steps. Its generator is "
        "built 'in exactly the same way' as the WGAN's: kernels RandomNormal(0, 0.02) (--init normal), Keras' "
        "batch-norm epsilon 1e-3.",
        {"model": "wgan-gp", "loss": "wgan-gp", "gp_weight": 10.0, "n_critic": 5, "latent_dim": 100,
         "g_channels": "512,256,128,64", "kernel_size": 5, "g_base": "feature", "g_activation": "leaky_relu",
         "bn_momentum": 0.1, "g_bias": True, "d_channels": "64,128,256,512", "d_norm": "none",
         "d_activation": "leaky_relu", "d_bias": True, "lr_d": 2e-4, "lr_g": 2e-4, "beta1": 0.5, "beta2": 0.999,
         "batch_size": 64, "steps": 6000, "sample_every": 100, "n_samples": 25, "init": "normal", "bn_eps": 1e-3},
        64,
    ),
    "seed002-folder-dcgan-128": Preset(
        "Seed 002's 128 px DCGAN on a folder of woodblock prints: latent 128; G a 4x4 transposed conv from 1x1 "
        "(here the equal Linear(128, 16*1024)) then 4x4 stride-2 transposed convs 1024-512-256-128-64-3, batch "
        "norm and ReLU after all but the output, no bias anywhere; D 4x4 stride-2 convs 64-128-256-512-1024, "
        "LeakyReLU 0.2, batch norm after all but the first, no bias, and a final 4x4 conv to one logit (the equal "
        "bias-free Linear). Adam 2e-4, betas (0.5, 0.999), batch 128, 25 epochs, hard labels 1/0 (one-sided "
        "smoothing is shown only as a later trick); D's two backward calls accumulate the gradient of the sum, "
        "optimised and logged as loss_d_sum; 64 fixed latents drawn every 1000 steps; PyTorch's default "
        "initialisation (no weights_init; the Linear that stands for the first transposed conv is drawn as that "
        "conv); the interpolation strip a straight line in 8 steps (np.linspace(0, 1, 8), both ends included; the "
        "seed's plot repeats z0 and z1 around them). Not copied: its sigmoid output on [0, 1], which is "
        "ganforge's tanh on [-1, 1].",
        {"model": "dcgan", "latent_dim": 128, "g_channels": "1024,512,256,128,64", "d_channels": "64,128,256,512,1024",
         "g_bias": False, "d_bias": False, "d_loss_sum": True, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
         "beta2": 0.999, "batch_size": 128, "epochs": 25, "sample_every": 1000, "n_samples": 64, "init": "torch",
         "interpolation": "linear", "interpolation_steps": 8},
        128,
    ),
    "seed003-mnist-mlp": Preset(
        "Seed 003's dense Keras GAN on MNIST: latent 128; G Dense 256-512-1024 with LeakyReLU 0.2, one batch norm "
        "(Keras momentum 0.8 = 0.2 here) on the 1024 layer, Dense(784) tanh; D Dense 512-256 with LeakyReLU 0.2, no "
        "dropout, Dense(1) sigmoid (a logit here). Adam 2e-4, beta1 0.5; batch 128; D trained on one batch of 128 "
        "real + 128 fake, so its loss is the mean (loss_d) and its accuracy is logged; 20,000 iterations; 25 "
        "samples (5 x 5) every 100, losses every 25. As the seed: batch norm after the 1024 layer's activation "
        "(Dense(activation=LeakyReLU) then BatchNormalization), each real batch drawn at random with replacement "
        "(X_train[np.random.randint(0, N, 128)]), Keras' glorot-uniform weights with zero biases and batch-norm "
        "epsilon 1e-3.",
        {"model": "mlp", "latent_dim": 128, "g_channels": "256,512,1024", "g_norm_layers": "3", "bn_momentum": 0.2,
         "g_activation": "leaky_relu", "d_channels": "512,256", "d_activation": "leaky_relu", "d_dropout": 0.0,
         "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 128, "steps": 20000,
         "sample_every": 100, "n_samples": 25, "log_every": 25, "g_norm_after": "3", "sampling": "replacement",
         "init": "glorot", "bn_eps": 1e-3},
        28,
    ),
    "seed004-kmnist-mlp": Preset(
        "Seed 004's PyTorch KMNIST GAN: latent 100; G Linear 128-256-512 each with BatchNorm1d (PyTorch momentum "
        "0.1) and LeakyReLU 0.2, Linear(784) tanh; D Linear 512-256 with LeakyReLU 0.2, no dropout, one sigmoid "
        "output (a logit here); Adam 2e-4, betas (0.5, 0.999); batch 64; D loss (real + fake) / 2; FID every "
        "epoch with torchvision's InceptionV3 (pass its weights file with --fid-backbone-weights); its first layer "
        "applies LeakyReLU before the batch norm, the other two after it; PyTorch's default initialisation. Not copied: "
        "torcheval's FID accumulated every training batch of every epoch without reset (a bug: each epoch's "
        "number mixes all earlier generators), here 10,000 generated and real images per epoch. The seed does not "
        "say how many epochs: 50.",
        {"model": "mlp", "latent_dim": 100, "g_channels": "128,256,512", "g_norm_layers": "1,2,3",
         "g_activation": "leaky_relu", "d_channels": "512,256", "d_activation": "leaky_relu", "d_dropout": 0.0,
         "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 64, "epochs": 50, "fid_every": 1,
         "fid_n": 10000, "fid_backbone": "inception-torchvision", "g_norm_after": "1", "init": "torch"},
        28,
    ),
}  # fmt: skip


PRESETS: dict[str, Preset] = {
    "mnist-mlp": Preset(
        "The dense GAN of the Keras MNIST example: MLP G/D, latent 100, Adam 2e-4 with beta1 0.5.",
        {"model": "mlp", "latent_dim": 100, "batch_size": 128, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
         "epochs": 50},
    ),
    "kmnist-mlp": Preset(
        "The PyTorch KMNIST GAN example: MLP with latent 128, Adam 2e-4, beta1 0.5.",
        {"model": "mlp", "latent_dim": 128, "batch_size": 100, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
         "epochs": 50},
    ),
    "fashion-dcgan": Preset(
        "DCGAN paper settings (Adam 2e-4, beta1 0.5, batch 128) on 28/32 px Fashion-MNIST.",
        {"model": "dcgan", "batch_size": 128, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "epochs": 25},
    ),
    "galaxy10-dcgan-128": Preset(
        "The PyTorch 128x128 DCGAN: width 64; resize-conv avoids checkerboards that show on smooth "
        "galaxy light; EMA smooths the few-thousand-image run.",
        {"model": "dcgan", "width": 64, "upsample": "resize-conv", "batch_size": 64, "lr_g": 2e-4,
         "lr_d": 2e-4, "beta1": 0.5, "ema_decay": 0.999, "epochs": 100},
    ),
    "galaxy10-cgan-128": Preset(
        "The Galaxy10 CGAN: class-conditional DCGAN, Adam 2e-4, beta1 0.5, one-sided label smoothing "
        "to keep D from overconfidence on 10 unbalanced classes.",
        {"model": "dcgan", "conditional": True, "label_smoothing": True, "width": 64,
         "upsample": "resize-conv", "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
         "ema_decay": 0.999, "epochs": 100},
    ),
    "folder-dcgan-128": Preset(
        "Small image folders (e.g. a few hundred woodblock prints): DiffAugment keeps D from memorising, "
        "spectral norm steadies it, EMA gives cleaner samples; more epochs because each is short.",
        {"model": "dcgan", "width": 64, "upsample": "resize-conv", "diffaugment": "color,translation,cutout",
         "spectral_norm": True, "ema_decay": 0.999, "batch_size": 32, "beta1": 0.5, "epochs": 300},
    ),
    "mnist-wgan-gp": Preset(
        "Gulrajani et al. 2017: critic without batch norm, GP weight 10, 5 critic steps, Adam 1e-4, "
        "betas (0, 0.9) because momentum fights the penalty.",
        {"model": "wgan-gp", "loss": "wgan-gp", "gp_weight": 10.0, "n_critic": 5, "lr_g": 1e-4,
         "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "batch_size": 64, "epochs": 20},
    ),
    "mnist-vae": Preset(
        "Convolutional VAE baseline: plain Adam 1e-3 (no adversary to balance), small latent.",
        {"model": "vae", "latent_dim": 32, "lr_g": 1e-3, "beta1": 0.9, "batch_size": 128, "epochs": 20},
    ),
    # Recommended presets, one per resolution class: what the field measured to train well per unit of
    # compute, in this codebase's families. The classic presets above stay for comparison.
    "recommended-28": Preset(
        "28 px grey (MNIST, Fashion-MNIST, KMNIST). The DCGAN of the classic preset (batch-norm D, "
        "non-saturating loss, Adam 2e-4, beta1 0.5), with batch 64 instead of 128 (twice the updates per "
        "epoch at the same cost per image, which matters under a CPU budget) and an EMA generator (decay "
        "0.999, ramp-up 0.05; Yazici et al. 2019) that is sampled, evaluated and exported. Measured on "
        "Fashion-MNIST by benchmarks/quality.py (README, Quality).",
        {"model": "dcgan", "width": 64, "latent_dim": 100, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4,
         "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.999, "ema_rampup": 0.05, "epochs": 20}, tuned_for=(28,),
    ),
    "recommended-32": Preset(
        "32 px RGB (CIFAR-like). Miyato et al. 2018's recipe for the standard CNN: hinge loss and spectral "
        "norm on D, Adam 2e-4 with betas (0.5, 0.999) and one D step per G step, their best setting for "
        "that network; EMA 0.999 with ramp-up. Not measured here (no 32 px RGB data on this machine).",
        {"model": "dcgan", "width": 64, "latent_dim": 128, "batch_size": 64, "loss": "hinge",
         "spectral_norm": True, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.999,
         "ema_rampup": 0.05, "epochs": 100}, tuned_for=(32,),
    ),
    "recommended-64": Preset(
        "64 px RGB (faces, galaxies, image folders). SAGAN/BigGAN practice: hinge loss, spectral norm on D, "
        "TTUR (D 4e-4, G 1e-4, betas (0, 0.999)), EMA 0.999 with ramp-up; resize-conv upsampling avoids "
        "checkerboards; DiffAugment (color, translation, cutout) keeps D from memorising the few thousand "
        "images such sets often have (Zhao et al. 2020). Speed measured by benchmarks/gpu_check.sh.",
        {"model": "dcgan", "width": 64, "latent_dim": 128, "batch_size": 64, "upsample": "resize-conv",
         "loss": "hinge", "spectral_norm": True, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.999,
         "diffaugment": "color,translation,cutout", "ema_decay": 0.999, "ema_rampup": 0.05, "epochs": 200}, tuned_for=(64,),
    ),
    "recommended-128": Preset(
        "128 px RGB (Galaxy10 DECals, image folders). As recommended-64, with batch 32 to fit CPU and small-GPU "
        "memory and a slower EMA (0.9995) because each epoch of a small set is only a few hundred steps. "
        "Not measured here (no GPU was lent for it).",
        {"model": "dcgan", "width": 64, "latent_dim": 128, "batch_size": 32, "upsample": "resize-conv",
         "loss": "hinge", "spectral_norm": True, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.999,
         "diffaugment": "color,translation,cutout", "ema_decay": 0.9995, "ema_rampup": 0.05, "epochs": 300}, tuned_for=(128,),
    ),
    "digits-tiny": Preset(
        "CPU demo on scikit-learn's 8x8 digits ingested at 32 px (1617 train images): a narrow DCGAN "
        "(width 16, latent 32), 600 steps of batch 64 (~24 epochs; 300 give only blurry strokes). Measured "
        "on 2 shared cores: 19.6 s of training (~1960 images/s), ~30 s end to end with the sqlite MLflow "
        "store. One thread: on networks this small a second one mostly waits (2 threads cost 4x the CPU "
        "time on busy shared cores). A short EMA (0.99): 600 steps are too few for 0.999 to forget the "
        "initial weights.",
        {"model": "dcgan", "width": 16, "latent_dim": 32, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4,
         "beta1": 0.5, "ema_decay": 0.99, "steps": 600, "checkpoint_every": 200, "sample_every": 100,
         "log_every": 10, "threads": 1}, tuned_for=(32,),
    ),
}  # fmt: skip
PRESETS.update(SEED_PRESETS)

# Fields that make up a seed preset's network: while all of them are the preset's own, the networks are
# the seed's, and only the seed's image size builds them faithfully.
TABLE_FIELDS = ("g_channels", "d_channels", "g_strides", "d_strides", "kernel_size")


def check_preset_size(config: TrainConfig, image_size: int) -> None:
    """Refuse a dataset whose side differs from the one a seed preset's layer tables are written for.

    Raises:
        GanforgeError: one line naming the preset, both sizes and the fix.
    """
    preset = PRESETS.get(config.preset or "")
    if preset is None or preset.image_size in (None, image_size):
        return
    if all(getattr(config, k) == preset.overrides.get(k) for k in TABLE_FIELDS):
        raise GanforgeError(
            f"preset {config.preset} builds the seed's {preset.image_size} px networks; the dataset has "
            f"{image_size} px images: re-ingest it with --image-size {preset.image_size}, or pick a preset for "
            f"{image_size} px"
        )


def preset_size_note(config: TrainConfig, image_size: int) -> str | None:
    """A note when a recommended preset trains images of a side it was not chosen for, else None."""
    preset = PRESETS.get(config.preset or "")
    if preset is None or not preset.tuned_for or image_size in preset.tuned_for:
        return None
    sides = "/".join(map(str, preset.tuned_for))
    return (f"preset {config.preset} was chosen for {sides} px images and these are {image_size} px: it trains, but "
            f"its settings were not measured at this size (see `ganforge train --help` for the presets per size)")


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a dict of ``TrainConfig`` fields.

    Args:
        path: a ``.json``, ``.yaml`` or ``.yml`` file holding one mapping.

    Raises:
        GanforgeError: the file is missing, unreadable or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise GanforgeError(f"config file {p} does not exist; pass an existing YAML or JSON file to --config")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # parser errors carry line/column; keep them on one line
        raise GanforgeError(f"cannot parse config file {p}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise GanforgeError(f"config file {p} must hold a mapping of flag names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _layer(merged: dict, layer: dict, where: str) -> None:
    """Apply one precedence layer; setting epochs clears steps and vice versa (they are one choice).

    ``where`` starts the error message, e.g. "the flags give".

    Raises:
        GanforgeError: the layer sets both (one would silently be dropped).
    """
    if layer.get("epochs") is not None and layer.get("steps") is not None:
        raise GanforgeError(f"{where} both --epochs and --steps; keep one (the run's length is one choice)")
    for k, v in layer.items():
        if k == "epochs" and v is not None:
            merged.pop("steps", None)
        if k == "steps" and v is not None:
            merged.pop("epochs", None)
        merged[k] = v


def resolve_config(flags: dict, config_file: str | Path | None = None) -> TrainConfig:
    """Merge defaults < config file < preset < explicit flags into a validated ``TrainConfig``.

    A higher layer's ``--epochs`` or ``--steps`` replaces a lower layer's either one (``--steps 10`` on a
    preset that sets epochs trains 10 steps); one layer giving both is an error.

    Args:
        flags: explicitly given values by field name; ``None`` values count as not given.
        config_file: optional YAML/JSON file of field values (it may name a ``preset``).

    Raises:
        GanforgeError: unknown preset, unreadable config file, or --epochs and --steps in one layer.
        pydantic.ValidationError: a value is invalid (the CLI prints it as one line).
    """
    given = {k: v for k, v in flags.items() if v is not None}
    from_file = load_config_file(config_file) if config_file else {}
    preset_name = given.get("preset", from_file.get("preset"))
    merged: dict = {}
    _layer(merged, from_file, f"config file {config_file} gives")
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise GanforgeError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
        _layer(merged, PRESETS[preset_name].overrides, f"preset {preset_name} gives")
    _layer(merged, given, "the flags give")
    if "model" not in merged:
        raise GanforgeError(f"no model given; pass --model ({', '.join(MODEL_NAMES)}) or a --preset")
    return TrainConfig(**merged)
