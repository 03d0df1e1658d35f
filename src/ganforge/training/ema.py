"""Exponential moving average of the generator's weights.

Samples from the averaged generator are usually smoother and score better than the raw one, whose
weights oscillate with the adversarial game (Yazici et al., 2019); evaluation and export use it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, so parameter names match the bare copy."""
    if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return net.module
    return net


class EMA:
    """An averaged copy of a generator: ``ema = decay * ema + (1 - decay) * current`` per update.

    Buffers (batch-norm running statistics) are copied, not averaged: they are already running
    averages, and averaging the step counter would make no sense.

    Attributes:
        module: The averaged copy, in eval mode and without gradients.
        decay: Weight of the old average per update (0: follow the generator; 1: never move).
    """

    def __init__(self, generator: nn.Module, decay: float = 0.999) -> None:
        """Start the average at the generator's current weights.

        Args:
            generator: The generator being trained.
            decay: Weight of the old average, in [0, 1].

        Raises:
            ValueError: ``decay`` outside [0, 1].
        """
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(generator)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        """Move the average towards ``generator``'s current weights and copy its buffers.

        Args:
            generator: The trained generator (same architecture as the copy).
        """
        generator = unwrap(generator)
        current = dict(generator.named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(current[name].detach(), 1.0 - self.decay)
        buffers = dict(generator.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(buffers[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers (tensors only, so they fit safetensors)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights and buffers saved by ``state_dict``."""
        self.module.load_state_dict(state)
