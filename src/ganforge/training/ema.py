"""Exponential moving average of the generator's weights, with a ramp-up and its own batch-norm statistics.

Samples from the averaged generator are usually smoother and score better than the raw one, whose
weights oscillate with the adversarial game (Yazici et al., 2019); evaluation and export use it. Two
things keep the average from ever being worse than the weights it averages:

- **Ramp-up** (StyleGAN2-ADA's ``ema_rampup``): the average's half-life is at most ``rampup`` times the
  number of updates so far, so early on it forgets the random initial weights within a few dozen steps
  instead of dragging them along for the ~700 steps a decay of 0.999 implies. The configured decay is
  reached after ``half_life(decay) / rampup`` updates (0.999 with 0.05: ~13,900).
- **Standing batch-norm statistics** (BigGAN's "standing stats"): running means and variances measured
  on the live generator belong to the live weights, not to the average. Before the averaged generator
  is used (samples, FID probes, checkpoints) they are re-measured by running it in train mode over fresh
  latents from a generator seeded by the step, so the result depends only on the averaged weights and
  the step (a resumed run reproduces it exactly).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

STANDING_STATS_SAMPLES = 1024  # latents used to re-measure batch-norm statistics of the averaged weights


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, so parameter names match the bare copy."""
    if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return net.module
    return net


def half_life(decay: float) -> float:
    """Updates after which an input's weight in the average has halved (inf for decay 1)."""
    if decay <= 0.0:
        return 0.0
    if decay >= 1.0:
        return math.inf
    return math.log(0.5) / math.log(decay)


class LocalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over this process's batch only, for inputs of any rank (stands in for 1d and 2d)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")


def local_batch_norm(module: nn.Module) -> nn.Module:
    """Swap cross-rank batch norms (SyncBatchNorm, ganforge's GlobalBatchNorm) for local ones, in place.

    The averaged copy lives on rank 0 alone; a synchronised norm there would wait forever for the other
    ranks when its statistics are re-measured. State-dict keys stay the same.
    """
    from ganforge.training.distributed import replace_batch_norm

    return replace_batch_norm(module, LocalBatchNorm,
                              keep=(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, LocalBatchNorm))


class EMA:
    """An averaged copy of a generator: ``ema = beta * ema + (1 - beta) * current`` per update.

    ``beta`` is ``decay``, or less while ramping up (see the module docstring). Buffers (batch-norm
    running statistics) are not taken from the live generator: ``refresh_stats`` measures them for the
    averaged weights; ``module`` is stale between an ``update`` and the next refresh, so users go
    through ``ready()``.

    Attributes:
        module: The averaged copy, in eval mode and without gradients.
        decay: Weight of the old average per update once ramped up (0: follow the generator; 1: never move).
        rampup: Half-life cap as a fraction of the updates done; None: no ramp-up (plain EMA from step 0).
    """

    def __init__(self, generator: nn.Module, decay: float = 0.999, rampup: float | None = 0.05) -> None:
        """Start the average at the generator's current weights.

        Args:
            generator: The generator being trained.
            decay: Weight of the old average, in [0, 1].
            rampup: Half-life cap as a fraction of the updates so far (StyleGAN2-ADA uses 0.05); None: off.

        Raises:
            ValueError: ``decay`` outside [0, 1] or ``rampup`` not positive.
        """
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if rampup is not None and not rampup > 0.0:
            raise ValueError(f"EMA ramp-up must be positive or None, got {rampup}")
        self.decay, self.rampup = decay, rampup
        self.module = local_batch_norm(copy.deepcopy(unwrap(generator))).eval().requires_grad_(False)
        self.has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules())
        self.stale = False  # True when the weights moved since the batch-norm statistics were measured

    def beta(self, updates: int) -> float:
        """Weight of the old average for the update that brings the count to ``updates``."""
        if self.rampup is None or self.decay in (0.0, 1.0):
            return self.decay
        # The average's half-life may not exceed rampup * updates: early averages forget the initial weights.
        h = min(half_life(self.decay), self.rampup * updates)
        return 0.5 ** (1.0 / h) if h > 0 else 0.0

    @torch.no_grad()
    def update(self, generator: nn.Module, updates: int | None = None) -> None:
        """Move the average towards ``generator``'s current weights.

        Args:
            generator: The trained generator (same architecture as the copy).
            updates: Generator updates done so far, including this one (drives the ramp-up); None:
                no ramp-up for this update.
        """
        beta = self.decay if updates is None else self.beta(updates)
        current = dict(unwrap(generator).named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(current[name].detach(), 1.0 - beta)
        self.stale = self.has_batch_norm

    @torch.no_grad()
    def refresh_stats(self, latent_dim: int, seed: int, labels_of: int = 0, batch_size: int = 128,
                      samples: int = STANDING_STATS_SAMPLES) -> None:
        """Re-measure batch-norm statistics for the averaged weights ("standing statistics").

        Args:
            latent_dim: Size of z.
            seed: Seeds the latents (use the step: the statistics then depend on weights and step only).
            labels_of: Number of classes to cycle labels over (conditional generators); 0: no labels.
            batch_size: Latents per forward pass (batch norm sees batches like training's).
            samples: Latents in all.
        """
        norms = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            self.stale = False
            return
        device = next(self.module.parameters()).device
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below, not an EMA of them
        g = torch.Generator().manual_seed(seed)
        self.module.train()
        try:
            for start in range(0, samples, batch_size):
                n = min(batch_size, samples - start)
                z = torch.randn(n, latent_dim, generator=g).to(device)
                labels = (torch.arange(start, start + n) % labels_of).to(device) if labels_of else None
                self.module(z, labels)
        finally:
            self.module.eval()
            for m, mom in zip(norms, momenta):
                m.momentum = mom
        self.stale = False

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers (tensors only, so they fit safetensors)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights and buffers saved by ``state_dict`` (their statistics belong to them)."""
        self.module.load_state_dict(state)
        self.stale = False
