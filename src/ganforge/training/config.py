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

MODEL_NAMES = ("mlp", "dcgan", "wgan-gp", "vae", "ae")  # mirrors ganforge.models.MODELS (checked in tests)
LOSS_NAMES = ("bce", "hinge", "wgan-gp", "wgan-clip")
OPTIMIZER_NAMES = ("adam", "rmsprop")
SCHEDULE_NAMES = ("none", "step", "cosine")
ACTIVATION_NAMES = ("relu", "leaky_relu", "tanh")  # mirrors ganforge.models.layers.ACTIVATIONS (checked in tests)
AUGMENT_NAMES = ("color", "translation", "cutout")  # mirrors ganforge.training.augment.AUGMENTS (checked in tests)
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
        "threads",
    }
)  # fmt: skip


def known_model(v: str | None) -> str | None:
    """``v`` if it names a model family (or is None); shared by every config that takes --model."""
    if v is not None and v not in MODEL_NAMES:
        raise ValueError(f"unknown model {v!r}; choose one of {', '.join(MODEL_NAMES)}")
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

    @field_validator("lr_gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"must be in (0, 1], e.g. 0.5; got {v}")
        return v

    @field_validator("g_channels", "d_channels", "g_strides", "d_strides", "g_norm_layers")
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
    """A named set of overrides and the reason its values differ from the defaults."""

    why: str
    overrides: dict = field(default_factory=dict)


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
         "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.999, "ema_rampup": 0.05, "epochs": 20},
    ),
    "recommended-32": Preset(
        "32 px RGB (CIFAR-like). Miyato et al. 2018's recipe for the standard CNN: hinge loss and spectral "
        "norm on D, Adam 2e-4 with betas (0.5, 0.999) and one D step per G step, their best setting for "
        "that network; EMA 0.999 with ramp-up. Not measured here (no 32 px RGB data on this machine).",
        {"model": "dcgan", "width": 64, "latent_dim": 128, "batch_size": 64, "loss": "hinge",
         "spectral_norm": True, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.999,
         "ema_rampup": 0.05, "epochs": 100},
    ),
    "recommended-64": Preset(
        "64 px RGB (faces, galaxies, image folders). SAGAN/BigGAN practice: hinge loss, spectral norm on D, "
        "TTUR (D 4e-4, G 1e-4, betas (0, 0.999)), EMA 0.999 with ramp-up; resize-conv upsampling avoids "
        "checkerboards; DiffAugment (color, translation, cutout) keeps D from memorising the few thousand "
        "images such sets often have (Zhao et al. 2020). Speed measured by benchmarks/gpu_check.sh.",
        {"model": "dcgan", "width": 64, "latent_dim": 128, "batch_size": 64, "upsample": "resize-conv",
         "loss": "hinge", "spectral_norm": True, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.999,
         "diffaugment": "color,translation,cutout", "ema_decay": 0.999, "ema_rampup": 0.05, "epochs": 200},
    ),
    "recommended-128": Preset(
        "128 px RGB (Galaxy10 DECals, image folders). As recommended-64, with batch 32 to fit CPU and small-GPU "
        "memory and a slower EMA (0.9995) because each epoch of a small set is only a few hundred steps. "
        "Not measured here (no GPU was lent for it).",
        {"model": "dcgan", "width": 64, "latent_dim": 128, "batch_size": 32, "upsample": "resize-conv",
         "loss": "hinge", "spectral_norm": True, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.999,
         "diffaugment": "color,translation,cutout", "ema_decay": 0.9995, "ema_rampup": 0.05, "epochs": 300},
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
         "log_every": 10, "threads": 1},
    ),
}  # fmt: skip


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
