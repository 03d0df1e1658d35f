"""The parts of a ``TrainConfig`` besides the network (``models/spec.py``): the data and the run's length, the
objective and update scheme, the optimiser and its schedule, the EMA, outputs and tracking, the FID probe and the
hardware. Each is handed whole to what it drives; each field is a ``ganforge train`` flag of the same name and
carries its type, range (a validator when the type does not say it) and help.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ganforge.models.spec import check_count
from ganforge.training.augment import AUGMENTS
from ganforge.training.losses import OBJECTIVES
from ganforge.training.precision import Precision
from ganforge.training.updates import UPDATES

# Each list of names is read from its registry (declared once): a new objective or augmentation is one
# registry line, and these flags' help and checks follow.
LOSS_NAMES = tuple(OBJECTIVES)
UPDATE_NAMES = tuple(UPDATES)
OPTIMIZER_NAMES = ("adam", "rmsprop")
SCHEDULE_NAMES = ("none", "step", "cosine")
AUGMENT_NAMES = tuple(AUGMENTS)
MAX_SEED = 2**63 - 2  # torch seeds are 64-bit; the FID probe seeds with seed + 1
MAX_COUNT = 2**31 - 1  # beyond it torch's C++ sizes overflow
# Upper bounds of counts where a larger value is certainly a typo (the network's are in models/spec.py).
INT_LIMITS = {"n_critic": 1000, "threads": 1024, "nproc": 1024, "n_samples": 1024}


def counts(*names: str):
    """A validator holding ``names`` to counts from 1 to their ``INT_LIMITS`` bound."""

    def check(cls, v: int | None, info) -> int | None:
        return check_count(cls, info.field_name, v, INT_LIMITS.get(info.field_name, MAX_COUNT))

    return field_validator(*names)(check)


def not_blank(*names: str):
    """A validator refusing empty or all-space text in ``names``."""

    def check(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    return field_validator(*names)(check)


class Part(BaseModel):
    """One part of a ``TrainConfig``: frozen, and a field it lacks is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataOrder(Part):
    """What is trained on, in which order, for how long."""

    dataset: str = Field(description="Dataset URI written by `ganforge ingest` (local directory or s3://).")
    epochs: int | None = Field(
        None, description="Passes over the training split. None: use --steps (exactly one must be set)."
    )
    steps: int | None = Field(
        None, description="Generator updates to run in total. None: derived from --epochs."
    )
    batch_size: int = Field(64, description="Global batch size in images (split evenly across --nproc ranks).")
    sampling: Literal["epoch", "replacement"] = Field(
        "epoch", description="How real batches are drawn: epoch (a shuffled pass, every image once per epoch) or "
        "replacement (each batch uniformly at random with replacement, as np.random.randint; an epoch is then "
        "N // batch-size batches).",
    )
    seed: int = Field(0, description="Seed for initialisation, data order, latents and the fixed sample batch.")

    _counts = counts("batch_size", "epochs", "steps")
    _dataset = not_blank("dataset")

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if not 0 <= v <= MAX_SEED:
            raise ValueError(f"must be an integer from 0 to {MAX_SEED}, e.g. 0; got {v}")
        return v

    @model_validator(mode="after")
    def _length(self) -> DataOrder:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of --epochs or --steps")
        return self


class UpdateScheme(Part):
    """The objective each player minimises and how their updates alternate."""

    loss: str | None = Field(
        None, description=f"GAN objective: {', '.join(LOSS_NAMES)}. None: wgan-gp for wgan-gp, else bce."
    )
    update: str = Field(
        "alternating", description=f"How a step updates the players: {', '.join(UPDATE_NAMES)} (see "
        "ganforge/training/updates.py; the seed presets use their seed's).",
    )
    label_smoothing: bool = Field(False, description="One-sided label smoothing: real targets in [0.9, 1.0].")
    noisy_labels: bool = Field(False, description="Noisy labels: real targets in [0.9, 1], fake in [0, 0.1].")
    feature_matching: bool = Field(False, description="Generator matches D's mean features on real data.")
    diffaugment: str | None = Field(
        None, description="DiffAugment policy, e.g. color,translation,cutout. None: no augmentation."
    )
    n_critic: int | None = Field(
        None, description="Discriminator steps per generator step. None: the objective's (5 for wgan-*, else 1)."
    )
    gp_weight: float = Field(10.0, description="Gradient-penalty weight (wgan-gp).")
    clip: float = Field(0.01, description="Weight-clipping bound (wgan-clip).")
    kl_weight: float = Field(1.0, description="Weight of the KL term (vae).")
    d_loss_sum: bool = Field(
        False, description="Optimise the sum of D's real and fake terms (logged as loss_d_sum); loss_d is always "
        "their mean. Off: optimise the mean.",
    )

    _counts = counts("n_critic")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str | None) -> str | None:
        if v is not None and v not in LOSS_NAMES:
            raise ValueError(f"unknown loss {v!r}; choose one of {', '.join(LOSS_NAMES)}")
        return v

    @field_validator("update")
    @classmethod
    def _known_update(cls, v: str) -> str:
        if v not in UPDATE_NAMES:
            raise ValueError(f"unknown update scheme {v!r}; choose one of {', '.join(UPDATE_NAMES)}")
        return v

    # Every float is checked here, not by torch at step 0: nan passes every "<" test, so each range
    # is written so that nan and inf fall outside it.
    @field_validator("clip")
    @classmethod
    def _bound(cls, v: float) -> float:
        if not 0.0 < v < math.inf:
            raise ValueError(f"must be a finite number above 0, e.g. 0.0002; got {v}")
        return v

    @field_validator("gp_weight", "kl_weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        if not 0.0 <= v < math.inf:
            raise ValueError(f"must be a finite number of at least 0, e.g. 10 or 1; got {v}")
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


class Optimiser(Part):
    """Both players' optimiser and the learning-rate schedule."""

    optimizer: str = Field("adam", description=f"Optimiser of both players: {', '.join(OPTIMIZER_NAMES)}.")
    lr_g: float = Field(2e-4, description="Learning rate of the generator (or AE/VAE encoder+decoder).")
    lr_d: float = Field(2e-4, description="Learning rate of the discriminator/critic (TTUR if != lr-g).")
    beta1: float = Field(0.5, description="Adam beta1 (0.5 is the DCGAN paper's value; 0 for WGAN-GP).")
    beta2: float = Field(0.999, description="Adam beta2; RMSprop's smoothing constant alpha is beta2 too.")
    lr_schedule: str = Field(
        "none", description=f"Learning-rate schedule: {', '.join(SCHEDULE_NAMES)} (step: times --lr-gamma every "
        "--lr-step epochs; cosine: down to 0 over the run).",
    )
    lr_step: int = Field(1, description="Epochs between the step schedule's decays.")
    lr_gamma: float = Field(0.5, description="Factor of each step-schedule decay.")

    _counts = counts("lr_step")

    @field_validator("optimizer", "lr_schedule")
    @classmethod
    def _known_name(cls, v: str, info) -> str:
        names = {"optimizer": OPTIMIZER_NAMES, "lr_schedule": SCHEDULE_NAMES}[info.field_name]
        if v not in names:
            raise ValueError(f"unknown {info.field_name.replace('_', '-')} {v!r}; choose one of {', '.join(names)}")
        return v

    @field_validator("lr_g", "lr_d")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not 0.0 < v < math.inf:
            raise ValueError(f"must be a finite number above 0, e.g. 0.0002; got {v}")
        return v

    @field_validator("beta1", "beta2")
    @classmethod
    def _beta(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), e.g. 0.5 or 0.999; got {v}")
        return v

    @field_validator("lr_gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"must be in (0, 1], e.g. 0.5; got {v}")
        return v


class EmaSettings(Part):
    """The generator's moving average, which samples, evaluation and export use when it is on."""

    ema_decay: float | None = Field(
        None, description="Decay of the generator's moving average used for samples (e.g. 0.999). None: no EMA."
    )
    ema_rampup: float = Field(
        0.05, description="EMA ramp-up: the average's half-life is at most this fraction of the steps so far "
        "(StyleGAN2-ADA's 0.05), so it forgets the initial weights early. 0: plain EMA from step 0.",
    )

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


class Outputs(Part):
    """Where the run writes (checkpoints, samples, MLflow), how often, and what it does on a NaN."""

    output: str = Field("runs/train", description="Directory for checkpoints (ckpt-<step>) and local artifacts.")
    experiment: str = Field("ganforge", description="MLflow experiment name.")
    track: bool = Field(True, description="Log to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).")
    checkpoint_every: int = Field(500, description="Write ckpt-<step> every this many steps (and at the end).")
    keep_checkpoints: int = Field(3, description="Keep the newest this many checkpoints (older ones deleted).")
    sample_every: int = Field(
        500, description="Write a sample grid of the fixed latents every this many steps (samples/ in --output "
        "and MLflow).",
    )
    sample_counter: Literal["run", "epoch"] = Field(
        "run", description="What --sample-every counts: run (generator steps since the start: a grid after steps "
        "N, 2N, ...) or epoch (batches within each epoch, from 0, as the PyTorch DCGAN example's `if i % N == 0` "
        "inside its epoch loop: a grid after batches 0, N, 2N, ... of every epoch, so at least one per epoch).",
    )
    sample_every_epochs: int | None = Field(
        None, description="Write the sample grid every this many epochs instead of --sample-every steps."
    )
    n_samples: int = Field(64, description="Fixed latents in each sample grid.")
    interpolation: Literal["slerp", "linear"] = Field(
        "slerp", description="Latent path of the interpolation strip (and of generate --interpolate): slerp along "
        "the sphere, or a straight line.",
    )
    interpolation_steps: int = Field(10, description="Images in the run's interpolation strip, both ends included.")
    log_every: int = Field(10, description="Log metrics every this many steps.")
    on_nan: Literal["stop", "rollback"] = Field(
        "stop", description="On NaN/Inf loss: stop, or rollback to the last checkpoint with halved lrs."
    )
    resume: str | None = Field(
        None, description="latest (newest ckpt in --output) or a checkpoint directory. None: start afresh."
    )
    overwrite: bool = Field(
        False, description="Starting afresh: delete checkpoints already in --output instead of refusing."
    )

    _counts = counts("checkpoint_every", "keep_checkpoints", "sample_every", "sample_every_epochs", "n_samples",
                     "log_every")  # fmt: skip
    _names = not_blank("output", "experiment")

    @field_validator("interpolation_steps")
    @classmethod
    def _strip(cls, v: int) -> int:
        if not 2 <= v <= 1024:  # both ends at least; a strip is one row of images in memory
            raise ValueError(f"must be from 2 to 1024 (the strip's images, both ends included), got {v}")
        return v

    @field_validator("resume")
    @classmethod
    def _resume(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be latest or a checkpoint directory (or leave it out to start afresh)")
        return v

    @model_validator(mode="after")
    def _one_cadence(self) -> Outputs:
        if self.sample_counter == "epoch" and self.sample_every_epochs is not None:
            raise ValueError("--sample-counter epoch counts --sample-every's batches within each epoch, and "
                             "--sample-every-epochs replaces --sample-every: give one of them")
        return self


class FidProbe(Part):
    """A small-sample FID measured while training."""

    fid_every: int | None = Field(
        None, description="Measure a small-sample FID every this many epochs (logged as train/fid_<n>_train). "
        "None: never."
    )
    fid_n: int = Field(1000, description="Generated and real images in each --fid-every measurement.")
    fid_backbone: str = Field(
        "inception-tf", description="Feature backbone of --fid-every (inception-tf, pixels, ...; see evaluate)."
    )
    fid_backbone_weights: str | None = Field(
        None, description="Weights file of --fid-backbone, as evaluate's --backbone-weights. None: inception-tf's "
        "packaged file; inception-torchvision's inception_v3_google-0cc3c7bd.pth in torchvision's cache "
        "($TORCH_HOME/hub/checkpoints, else ~/.cache/torch/hub/checkpoints).",
    )
    fid_backbone_sha256: str | None = Field(
        None, description="SHA-256 --fid-backbone-weights must have, as evaluate's --backbone-sha256. None: the "
        "backbone's known official file.",
    )

    _counts = counts("fid_every", "fid_n")
    _backbone = not_blank("fid_backbone")


class Hardware(Part):
    """Where the run computes: device, processes, threads, compilation."""

    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    compile: bool = Field(False, description="torch.compile the networks (CUDA only; ignored on CPU).")
    precision: Precision = Field(
        "auto", description="Arithmetic of the forward passes: fp32; bf16 or fp16 autocast (fp32 weights; fp16 "
        "scales its losses with torch.amp's GradScaler and skips a step whose gradients overflow); auto: bf16 on "
        "CUDA, fp32 on the CPU (the run's ganforge.precision tag records which). bf16 and fp16 run on the CPU too.",
    )
    nproc: int = Field(1, description="Processes (GPUs, or CPU ranks) to train on through torchrun.")
    threads: int | None = Field(
        None, description="CPU threads per process. None: torch's default (OMP_NUM_THREADS or the physical "
        "cores), split between the ranks on one machine.",
    )

    _counts = counts("nproc", "threads")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"use auto, cpu, cuda or cuda:N; got {v!r}")
        return v
