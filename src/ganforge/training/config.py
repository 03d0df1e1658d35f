"""Training configuration: ``TrainConfig``, made of parts, and ``PRESETS``.

A config is a few parts, each handed whole to what it drives: the networks (``NetworkSpec``, declared in
``models/spec.py``), the data and the run's length, the objective and update scheme, the optimiser and its
schedule, the EMA, outputs and tracking, the FID probe, and the hardware. Outside, a config stays flat: config
files, flags, presets, MLflow params and checkpoints name each field alone (``lr_g``, ``g_channels: 256,128``),
``TrainConfig(lr_g=...)`` takes it so, ``model_dump()`` gives it so, and a refusal names the flag. Reading
``config.lr_g`` reaches into its part; that is for the transition, new code reads ``config.optim.lr_g``.

Precedence, lowest first: field defaults < ``--config FILE`` (YAML or JSON) < ``--preset`` < explicit
flags. ``resolve_config`` applies it; every other module receives a validated ``TrainConfig``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from ganforge.errors import GanforgeError
from ganforge.models import MODELS
from ganforge.models.layers import ACTIVATIONS
from ganforge.models.spec import NetworkSpec, known_model
from ganforge.training.parts import (
    AUGMENT_NAMES,
    MAX_SEED,
    DataOrder,
    EmaSettings,
    FidProbe,
    Hardware,
    Optimiser,
    Outputs,
    UpdateScheme,
)

__all__ = ["ACTIVATION_NAMES", "AUGMENT_NAMES", "MAX_SEED", "MODEL_NAMES", "PARTS", "PRESETS", "RESUME_FREE", "Preset",
           "TrainConfig", "check_preset_size", "known_model", "known_preset", "load_config_file",
           "preset_size_note", "resolve_config"]

MODEL_NAMES = tuple(MODELS)  # read from the registry (declared once), as every list of names
ACTIVATION_NAMES = ACTIVATIONS

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


def known_preset(v: str | None) -> str | None:
    """``v`` if it names a preset (or is None); shared by every config that takes --preset."""
    if v is not None and v not in PRESETS:
        raise ValueError(f"unknown preset {v!r}; choose one of {', '.join(PRESETS)}")
    return v


class TrainConfig(BaseModel):
    """Everything that defines a training run, in parts; every part's field is a ``ganforge train`` flag.

    Built flat (``TrainConfig(dataset=..., model=..., lr_g=...)``), dumped flat (``model_dump()``: layer tables
    as comma text) and refused flat (a ``ValidationError``'s locations name the field alone), as it was before
    it had parts; each part's title is its flags' panel in ``train --help``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = Field(None, description="Name of the preset applied (see PRESETS). None: no preset.")
    data: DataOrder = Field(title="Data and length", description="What is trained on, in which order, how long.")
    network: NetworkSpec = Field(title="Network", description="The networks (models/spec.py).")
    updates: UpdateScheme = Field(title="Objective and updates", description="Losses and the update scheme.")
    optim: Optimiser = Field(title="Optimiser and schedule", description="Optimisers and learning rates.")
    ema: EmaSettings = Field(title="EMA", description="The generator's moving average.")
    outputs: Outputs = Field(title="Outputs and tracking", description="Checkpoints, samples, MLflow, NaNs.")
    fid_probe: FidProbe = Field(title="FID probe", description="The FID measured while training.")
    hardware: Hardware = Field(title="Hardware", description="Device, processes and threads.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        return known_preset(v)

    @model_validator(mode="wrap")
    @classmethod
    def _flat(cls, data: Any, handler) -> TrainConfig:
        """Take flat fields into their parts; give back a refusal located at the field alone (``("lr_g",)``),
        so that the CLI names the flag and a model-wide rule (loc ``()``) stays one."""
        try:
            return handler(_nest(data) if isinstance(data, dict) else data)
        except ValidationError as exc:
            errors = [{**e, "loc": e["loc"][1:] if e["loc"][:1] and e["loc"][0] in PARTS else e["loc"]}
                      for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, errors) from None

    @model_validator(mode="after")
    def _ranks_share_batches(self) -> TrainConfig:
        if self.data.batch_size % self.hardware.nproc:
            raise ValueError(f"--batch-size {self.data.batch_size} must be divisible by --nproc {self.hardware.nproc}")
        return self

    @model_serializer(mode="wrap")
    def _flat_dump(self, handler) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in handler(self).items():
            out.update({k: _as_text(v) for k, v in value.items()} if name in PARTS else {name: value})
        return out

    def __getattr__(self, name: str) -> Any:
        # A flat field's value from its part (``config.lr_g``): for the code written before the parts.
        part = PART_OF.get(name)
        if part is None:
            return super().__getattr__(name)  # pydantic's own: private attributes, else AttributeError
        return getattr(getattr(self, part), name)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> TrainConfig:
        """pydantic's copy, with ``update`` given by flat field names (``{"lr_g": 1e-3}``) as to the constructor."""
        update = dict(update or {})
        for part in PARTS:
            own = {k: update.pop(k) for k in [k for k in update if PART_OF.get(k) == part]}
            if own:
                update[part] = update.get(part, getattr(self, part)).model_copy(update=own, deep=deep)
        return super().model_copy(update=update, deep=deep)

    @classmethod
    def flat_fields(cls) -> dict[str, FieldInfo]:
        """Every flag's field by its name: the top-level ones, then each part's in order."""
        top = {k: f for k, f in cls.model_fields.items() if k not in PARTS}
        return {**top, **{k: f for part in PARTS.values() for k, f in part.model_fields.items()}}

    @property
    def objective(self) -> str:
        """The GAN objective actually used (``loss`` with its family default filled in)."""
        return self.updates.loss or ("wgan-gp" if self.network.model == "wgan-gp" else "bce")

    def mismatches(self, other: TrainConfig) -> list[str]:
        """Names of fields that differ and matter for an exact resume (see ``RESUME_FREE``), sorted."""
        a, b = self.model_dump(), other.model_dump()
        return sorted(k for k in a if k not in RESUME_FREE and a[k] != b.get(k))


PARTS: dict[str, type[BaseModel]] = {
    name: f.annotation for name, f in TrainConfig.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}  # fmt: skip
PART_OF = {field: part for part, model in PARTS.items() for field in model.model_fields}
_declared = [n for model in PARTS.values() for n in model.model_fields] + [n for n in TrainConfig.model_fields]
if len(_declared) != len(set(_declared)):  # a flat name must say which field it is
    raise TypeError(f"TrainConfig's parts share field names: {sorted({n for n in _declared if _declared.count(n) > 1})}")


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"lr_g": 1e-3, ...}`` -> ``{"optim": {"lr_g": 1e-3}, ...}``; an unknown name stays on top to be refused."""
    nested: dict[str, Any] = {part: {} for part in PARTS}
    for k, v in flat.items():
        if k in PARTS and isinstance(v, BaseModel):
            v = dict(v)
        if k in PARTS and isinstance(v, dict):
            nested[k] = {**v, **nested[k]}
        elif k in PART_OF:
            nested[PART_OF[k]][k] = v
        else:
            nested[k] = v
    return nested


def _as_text(value: Any) -> Any:
    """A layer table as config files, flags and MLflow carry it: ``(256, 128)`` -> ``"256,128"``."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


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
    flat = config.model_dump()
    if all(flat[k] == preset.overrides.get(k) for k in TABLE_FIELDS):
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
