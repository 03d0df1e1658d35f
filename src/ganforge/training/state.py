"""The training state: networks, optimisers, data and counters, and its (de)serialisation.

``build_trainer`` turns a config and a dataset into a ``Trainer``; ``trainer_state`` and ``restore``
map it to and from a checkpoint, so that a resumed run continues exactly where the saved one was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, cast

import torch
from torch import nn

from ganforge.checkpoints import Checkpoint, load_weights
from ganforge.errors import GanforgeError
from ganforge.training.config import TrainConfig
from ganforge.training.distributed import Runtime, sync_batchnorm
from ganforge.training.streams import mix as _mix

if TYPE_CHECKING:  # imported where used (the networks, losses and backbones load on demand)
    from ganforge.metrics.features import FeatureExtractor
    from ganforge.models import ModelSpec
    from ganforge.training.ema import EMA
    from ganforge.training.losses import Objective
    from ganforge.training.precision import LossScaling

GPU_DATA_FRACTION = 0.25  # keep the dataset on the GPU when it takes at most this share of free memory


@dataclass
class Trainer:
    """Everything the loop mutates. Networks are the bare modules (state dicts have plain names);
    ``g_fwd``/``d_fwd`` are what the step calls (compiled and/or augmenting wrappers)."""

    config: TrainConfig
    rt: Runtime
    spec: ModelSpec
    G: nn.Module
    D: nn.Module | None
    E: nn.Module | None
    ema: EMA | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    objective: Objective | None  # None for the vae and ae
    images: torch.Tensor  # (N, C, H, W) uint8, on the device when it fits
    labels: torch.Tensor  # (N,) int64, same device as images
    fingerprint: str
    data_uri: str
    class_names: list[str]
    steps_per_epoch: int  # real batches per epoch (the last partial batch is dropped)
    total_steps: int
    n_critic: int
    fixed_z: torch.Tensor  # (n_samples, latent_dim) on the CPU
    fixed_labels: torch.Tensor | None
    g_fwd: Callable
    d_fwd: Callable | None
    precision: str  # --precision as it runs here: fp32, bf16 or fp16 (see training/precision.py)
    channels_last: bool
    scaling: LossScaling | None = None  # fp16's loss scaling (its hooks sit in opt_g and opt_d); None otherwise
    step: int = 0
    history: dict = field(default_factory=dict)
    lr_scale: float = 1.0
    rollbacks: int = 0
    stop_signal: int | None = None
    run_id: str | None = None  # the MLflow run (saved in checkpoints so that a resume continues it)
    resumed_from: dict | None = None  # the checkpoint this run started from: run_id, checkpoint, step
    fid_extractor: FeatureExtractor | None = None  # --fid-every's backbone, built on first use
    metric_rows: list = field(default_factory=list)  # every logged step's metrics, for metrics.csv
    _perm: tuple[int, torch.Tensor] | None = None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The half type the forward passes autocast to (``updates.autocast``), or None for fp32."""
        from ganforge.training.precision import HALF

        return HALF.get(self.precision)

    def epochs_done(self, step: int) -> int:
        """Completed epochs after ``step`` generator updates (each consumes n_critic real batches)."""
        return step * self.n_critic // self.steps_per_epoch

    @property
    def images_per_step(self) -> int:
        """Real images consumed per generator update (all ranks together)."""
        return self.config.batch_size * self.n_critic

    def sampler(self) -> nn.Module:
        """The generator used for samples: the EMA copy (its batch-norm statistics measured) when there is one."""
        if self.ema is None:
            return self.G
        if self.ema.stale:
            self.ema.refresh_stats(
                self.config.latent_dim, seed=_mix(self.config.seed, self.step, 5),
                labels_of=self.spec.num_classes if self.config.conditional else 0,
                batch_size=self.config.batch_size,
            )  # fmt: skip
        return self.ema.module

    def apply_lr(self) -> None:
        """Set learning rates to the config's times ``lr_scale`` (rollbacks halve it) times the schedule's."""
        f = lr_factor(self.config, self.step, self.total_steps, self.steps_per_epoch, self.n_critic)
        for opt, lr in ((self.opt_g, self.config.lr_g), (self.opt_d, self.config.lr_d)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr * self.lr_scale * f

    def batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's slice of global batch number ``b``: images in [-1, 1] and labels (or None).

        The epoch's order is a permutation seeded by ``(seed, epoch)``; with ``sampling="replacement"`` the
        batch's indices are drawn uniformly, with replacement, from a generator seeded by ``(seed, b)``.
        Either way batch ``b`` is the same whichever process asks and whenever (resume stays exact).
        """
        bs = self.config.batch_size
        lo, hi = self.local_slice()
        if self.config.sampling == "replacement":  # seed 003's X_train[np.random.randint(0, N, batch_size)]
            g = torch.Generator().manual_seed(_mix(self.config.seed, b, 6))
            idx = torch.randint(self.images.shape[0], (bs,), generator=g)[lo:hi].to(self.images.device)
        else:
            epoch, pos = divmod(b, self.steps_per_epoch)
            if self._perm is None or self._perm[0] != epoch:
                g = torch.Generator().manual_seed(_mix(self.config.seed, epoch, 1))
                self._perm = (epoch, torch.randperm(self.images.shape[0], generator=g).to(self.images.device))
            idx = self._perm[1][pos * bs : (pos + 1) * bs][lo:hi]
        real = self.images[idx].to(self.rt.device, non_blocking=True).float().div_(127.5).sub_(1.0)
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        labels = self.labels[idx].to(self.rt.device, non_blocking=True) if self.config.conditional else None
        return real, labels

    def local_slice(self) -> tuple[int, int]:
        """Bounds of this rank's contiguous share of a global batch."""
        per = self.config.batch_size // self.rt.world
        return self.rt.rank * per, (self.rt.rank + 1) * per

    def latents(self, gen: torch.Generator) -> torch.Tensor:
        """This rank's slice of a global (batch, latent_dim) draw from ``gen``."""
        z = torch.randn(self.config.batch_size, self.config.latent_dim, generator=gen)
        lo, hi = self.local_slice()
        return z[lo:hi].to(self.rt.device, non_blocking=True)


def model_spec(config: TrainConfig, shape: tuple[int, int, int], num_classes: int):
    """The ``ModelSpec`` of ``config``'s network part for images of ``shape`` (C, H, W).

    Raises:
        GanforgeError: the images are not square, or a seed preset's tables meet another image size.
    """
    c, h, w = shape
    if h != w:
        raise GanforgeError(f"images are {h}x{w}; ganforge trains on square images (re-ingest with --image-size)")
    from ganforge.training.config import check_preset_size

    check_preset_size(config, h)
    return config.network.for_images(channels=c, image_size=h, num_classes=num_classes)


def lr_factor(config: TrainConfig, step: int, total_steps: int, steps_per_epoch: int, n_critic: int) -> float:
    """The schedule's multiplier of the learning rates for generator update number ``step`` (from 0).

    A pure function of the step, so a resumed run follows the same schedule. ``step`` decays by
    ``lr_gamma`` every ``lr_step`` epochs (the book's step_decay_schedule, which Keras applies per
    epoch); ``cosine`` anneals from 1 to 0 over the run (Loshchilov & Hutter, 2017, without restarts).
    """
    import math

    if config.lr_schedule == "step":
        epoch = step * n_critic // steps_per_epoch
        return config.lr_gamma ** (epoch // config.lr_step)
    if config.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return 1.0


def make_optimizer(config: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    """``config.optimizer`` over ``params``: Adam with (beta1, beta2), or RMSprop with alpha = beta2.

    Keras' RMSprop has rho 0.9 and no momentum; its epsilon (1e-7) differs from PyTorch's 1e-8 by
    a negligible amount next to gradient magnitudes.
    """
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=config.beta2)
    return torch.optim.Adam(params, lr=lr, betas=(config.beta1, config.beta2))


def _networks(config: TrainConfig, data, rt: Runtime):
    from ganforge.models import MODELS

    spec = model_spec(config, tuple(data.images.shape[1:]), len(data.class_names))
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    nets = MODELS[config.model](spec)
    return spec, [None if m is None else sync_batchnorm(m, rt).to(rt.device) for m in nets]


def _place_data(data, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the uint8 dataset on the GPU when it fits comfortably (no host->device copy per step)."""
    images, labels = data.images, data.labels
    if rt.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(rt.device)
        if images.numel() <= GPU_DATA_FRACTION * free:
            return images.to(rt.device), labels.to(rt.device)
        return images.pin_memory(), labels.pin_memory()
    return images, labels


def training_parts(config: TrainConfig, G: nn.Module, D: nn.Module | None, E: nn.Module | None):
    """``(objective, opt_g, opt_d, d_fwd)`` of ``config`` around built networks (D None: no objective).

    The one place they are made: ``build_trainer`` calls it, and so does ``preflight`` on meta-device
    networks, so ``train --dry-run`` fails wherever the run would.

    Raises:
        GanforgeError: objective options that do not apply to the loss or are out of range, or a --precision
            it cannot be trained in.
    """
    from ganforge.training.augment import AugmentedDiscriminator
    from ganforge.training.losses import build_objective
    from ganforge.training.precision import check_precision
    from ganforge.training.updates import check_update

    objective, opt_d, d_fwd = None, None, None
    if D is not None:
        objective = build_objective(
            config.objective, label_smoothing=config.label_smoothing, noisy_labels=config.noisy_labels,
            feature_matching=config.feature_matching, gp_weight=config.gp_weight, clip=config.clip,
            n_critic=config.n_critic, d_loss_sum=config.d_loss_sum, aux_classifier=config.aux_classifier,
        )  # fmt: skip
        check_update(config.update, objective)
        opt_d = make_optimizer(config, D.parameters(), config.lr_d)
        d_fwd = AugmentedDiscriminator(D, config.diffaugment) if config.diffaugment else D
    check_precision(config.precision, objective)
    g_params = list(G.parameters()) + (list(E.parameters()) if E is not None else [])
    return objective, make_optimizer(config, g_params, config.lr_g), opt_d, d_fwd


def build_trainer(config: TrainConfig, rt: Runtime, data=None) -> Trainer:
    """Load the data (unless given), build networks, objective, optimisers and EMA for ``config``.

    Raises:
        GanforgeError: unbuildable size, dataset too small for the batch, unknown objective options.
    """
    from ganforge.training.ema import EMA

    if config.batch_size % rt.world:
        raise GanforgeError(f"--batch-size {config.batch_size} must be divisible by the {rt.world} ranks")
    if data is None:
        from ganforge.data import load

        data = load(config.dataset, split="train")
    spec, (G, D, E) = _networks(config, data, rt)
    cuda = rt.device.type == "cuda"
    if cuda:  # NHWC convolutions are faster with tensor cores; weights follow the inputs
        G, D, E = (m.to(memory_format=torch.channels_last) if m is not None else None for m in (G, D, E))
    objective, opt_g, opt_d, d_fwd = training_parts(config, G, D, E)
    g_fwd = G
    if config.compile and cuda:
        g_fwd, d_fwd = torch.compile(G), (torch.compile(d_fwd) if d_fwd is not None else None)
    n_critic = objective.n_critic if objective is not None else 1
    precision, scaling = _precision(config, rt, opt_g, opt_d)
    if scaling is not None and objective is not None:
        from ganforge.training.precision import ScaledObjective

        objective = cast("Objective", ScaledObjective(objective, scaling))  # its losses come back scaled
    spe = data.images.shape[0] // config.batch_size
    if spe == 0:
        raise GanforgeError(
            f"the dataset has {data.images.shape[0]} training images, fewer than --batch-size "
            f"{config.batch_size}; lower --batch-size"
        )
    total = config.steps if config.steps is not None else max(1, config.epochs * spe // n_critic)
    gz = torch.Generator().manual_seed(_mix(config.seed, 3))
    fixed_z = torch.randn(config.n_samples, config.latent_dim, generator=gz)
    fixed_labels = torch.arange(config.n_samples) % spec.num_classes if config.conditional else None
    images, labels = _place_data(data, rt)
    torch.manual_seed(_mix(config.seed, rt.rank, 4))  # objective/augment noise: own stream per rank
    return Trainer(
        config=config, rt=rt, spec=spec, G=G, D=D, E=E,
        ema=EMA(G, config.ema_decay, config.ema_rampup or None) if config.ema_decay else None, opt_g=opt_g, opt_d=opt_d,
        objective=objective, images=images, labels=labels, fingerprint=data.fingerprint, data_uri=data.uri,
        class_names=list(data.class_names),
        steps_per_epoch=spe, total_steps=total, n_critic=n_critic, fixed_z=fixed_z, fixed_labels=fixed_labels,
        g_fwd=g_fwd, d_fwd=d_fwd, precision=precision, scaling=scaling, channels_last=cuda,
    )  # fmt: skip


def _precision(config: TrainConfig, rt: Runtime, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer | None):
    """``(precision, scaling)``: ``--precision`` resolved for this device, and fp16's loss scaling (else None)."""
    from ganforge.training.precision import LossScaling, resolve_precision

    precision = resolve_precision(config.precision, rt.device)
    if precision != "fp16":
        return precision, None
    return precision, LossScaling(rt.device.type, {"g": opt_g, **({"d": opt_d} if opt_d is not None else {})})


def trainer_state(t: Trainer) -> tuple[dict, dict, dict]:
    """(weights, state, meta) for ``save_checkpoint``: plain tensors and numbers only."""
    weights = {"generator": t.G.state_dict()}
    if t.ema is not None:
        t.sampler()  # saved EMA weights carry batch-norm statistics measured for them
        weights["generator_ema"] = t.ema.state_dict()
    if t.D is not None:
        weights["discriminator"] = t.D.state_dict()
    if t.E is not None:
        weights["encoder"] = t.E.state_dict()
    state = {
        "step": t.step, "opt_g": t.opt_g.state_dict(), "rng_cpu": torch.get_rng_state(),
        "fixed_z": t.fixed_z, "lr_scale": t.lr_scale, "rollbacks": t.rollbacks,
        "history": {k: torch.tensor(v, dtype=torch.float64).reshape(-1, 2) for k, v in t.history.items()},
    }  # fmt: skip
    if t.opt_d is not None:
        state["opt_d"] = t.opt_d.state_dict()
    if t.scaling is not None:
        state["loss_scaling"] = t.scaling.state_dict()
    if t.fixed_labels is not None:
        state["fixed_labels"] = t.fixed_labels
    if t.rt.device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(t.rt.device)
    meta = {
        "format": "ganforge-checkpoint/1", "config": t.config.model_dump(mode="json"),
        "spec": t.spec.model_dump(mode="json"), "dataset_fingerprint": t.fingerprint, "step": t.step,
        "class_names": t.class_names, "dataset_uri": t.data_uri, "run_id": t.run_id,
        "resumed_from": t.resumed_from, "precision": t.precision,
    }  # fmt: skip
    return weights, state, meta


def restore(t: Trainer, ck: Checkpoint, check_config: bool) -> None:
    """Load a checkpoint into ``t`` (weights, optimisers, RNG, counters).

    Raises:
        GanforgeError: the checkpoint's config differs in something that matters, or its weights
            belong to another architecture.
    """
    if check_config:
        from ganforge.checkpoints import check_resumable

        check_resumable(ck.path, ck.meta, t.config, t.fingerprint)
    where = str(ck.path)
    load_weights(t.G, ck.weights.get("generator", {}), where)
    if t.ema is not None:
        load_weights(t.ema.module, ck.weights.get("generator_ema", {}), where)
    if t.D is not None:
        load_weights(t.D, ck.weights.get("discriminator", {}), where)
    if t.E is not None:
        load_weights(t.E, ck.weights.get("encoder", {}), where)
    s = ck.state
    t.opt_g.load_state_dict(s["opt_g"])
    if t.opt_d is not None:
        t.opt_d.load_state_dict(s["opt_d"])
    if t.scaling is not None and "loss_scaling" in s:  # an fp16 run's scale (another precision's run has none)
        t.scaling.load_state_dict(s["loss_scaling"])
    t.step, t.lr_scale, t.rollbacks = int(s["step"]), float(s["lr_scale"]), int(s["rollbacks"])
    t.fixed_z = s["fixed_z"].cpu()
    t.fixed_labels = s["fixed_labels"].cpu() if "fixed_labels" in s else None
    t.history = {k: [tuple(r) for r in v.tolist()] for k, v in s["history"].items()}
    if check_config:  # a resume (not a rollback): the run it may continue, and where that run began
        t.run_id = ck.meta.get("run_id")
        t.resumed_from = ck.meta.get("resumed_from")
    if t.rt.rank == 0:  # other ranks keep their own noise streams
        torch.set_rng_state(s["rng_cpu"].cpu())
        if "rng_cuda" in s and t.rt.device.type == "cuda":
            torch.cuda.set_rng_state(s["rng_cuda"].cpu(), t.rt.device)
    t.apply_lr()


def describe(ck: Checkpoint) -> str:
    """One line naming a checkpoint's model and data (for messages)."""
    spec = ck.meta.get("spec", {})
    return json.dumps({k: spec.get(k) for k in ("model", "image_size", "channels", "conditional")})
