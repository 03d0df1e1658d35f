"""The training run's random streams: each (seed, purpose, index) gets its own generator, so a step's draws
are the same whichever process takes it and whenever (a resume stays exact)."""

from __future__ import annotations

import torch


def mix(*parts: int) -> int:
    """A 63-bit seed from integers (distinct tuples give unrelated streams)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0x7FFFFFFFFFFFFFFF
    return h


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator for latents of ``step``."""
    return torch.Generator().manual_seed(mix(seed, step, 2))
