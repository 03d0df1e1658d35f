"""``--precision``: the arithmetic of a run's forward passes, and fp16's loss scaling.

* ``fp32``: no autocast.
* ``bf16``: autocast to bfloat16 on the run's device; weights, optimiser state and gradients stay fp32.
  bf16 has fp32's exponent range, so gradients cannot underflow and no loss scaling is needed.
* ``fp16``: autocast to float16, with torch.amp's ``GradScaler``: each loss is multiplied by a scale
  (65,536 at first) before its backward so that small gradients survive fp16's range; before its optimiser
  steps, the gradients are unscaled (divided by the same scale) and checked, and a step whose gradients
  overflowed (inf or nan) is skipped and the scale halved (it doubles after 2,000 steps without one).
* ``auto``: bf16 on CUDA, fp32 on the CPU: what every run did before ``--precision`` existed. The run
  records the precision it resolved to as its ``ganforge.precision`` tag and in each checkpoint's meta.

On the CPU bf16 and fp16 run as asked (torch's CPU autocast and CPU ``GradScaler``): real half-precision
arithmetic, whose speed depends on the CPU (on the 2-core machine of the tests, the 28 px preset trained
1.4x faster in bf16 than in fp32 and 16x slower in fp16); the run says so in one note.

How the scaling reaches every optimiser step without the update schemes (``updates.py``) knowing of it:

* the losses: ``ScaledObjective`` wraps the run's objective and returns each loss multiplied by the scale of
  the player it trains (D's losses by D's scaler, G's by G's); the VAE step scales its own loss;
* the gradients: a step pre-hook on each optimiser (``Optimizer.register_step_pre_hook``) unscales them
  (``GradScaler.unscale_``), measures their norm, and, when it is not finite, sets them to None so that the
  optimiser leaves every weight and its state as they were (what ``GradScaler.step`` does by not calling
  ``step``); a post-hook calls ``GradScaler.update``.

One ``GradScaler`` per optimiser, each updated right after its own optimiser's step: schemes step D twice
between G's steps (``keras-two-batch``, ``--n-critic``), which one scaler allows only with an update in
between, and ``simultaneous`` makes both losses before either player steps, so a scale shared by both and
updated after D's step would unscale G's gradients by a factor its loss was not multiplied by. A player's
loss is always made after that player's previous step, so each gradient is unscaled by the scale its loss
carried.

A scheme measures ``grad_norm_d``/``grad_norm_g`` before its optimiser steps, so on the scaled gradients;
``LossScaling.settle`` replaces them by the norms the pre-hook measured on the unscaled ones (the same sum
over the same parameters), drops the norm of a skipped step (its overflow is not a divergence: the step was
not taken) and, on logged steps, adds ``skipped_steps`` (so far in the run) and ``loss_scale_d|g``. An
optimiser that skips ``MAX_SKIPS`` steps in a row keeps its non-finite norm, so the loop stops (or rolls
back) as for any non-finite number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import Tensor

from ganforge.errors import GanforgeError

if TYPE_CHECKING:
    from ganforge.training.losses import Objective

Precision = Literal["auto", "fp32", "bf16", "fp16"]  # the --precision field's type (training/parts.py)
PRECISIONS: tuple[str, ...] = get_args(Precision)
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the autocast dtype of each half precision
INIT_SCALE = 2.0**16  # GradScaler's default first scale
MAX_SKIPS = 64  # steps in a row an fp16 optimiser may skip: by then the scale has fallen by 2**64


def resolve_precision(name: str, device: torch.device) -> str:
    """``--precision`` as it runs on ``device``: ``auto`` is bf16 on CUDA, fp32 elsewhere; the others as given."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise GanforgeError(f"unknown --precision {name!r}; use one of {', '.join(PRECISIONS)}")
    return name


def check_precision(name: str, objective: Objective | None) -> None:
    """Refuse a precision the objective cannot be trained in, naming the fix.

    Raises:
        GanforgeError: fp16 with the gradient penalty, whose inner gradient (of D's output with respect to its
            input) is taken in fp16 without the loss scale: it would underflow where scaling is meant to
            prevent it.
    """
    if name == "fp16" and objective is not None and objective.penalty_needs_both:
        raise GanforgeError(f"--precision fp16 does not scale the inner gradient of loss {objective.name!r}'s "
                            "gradient penalty; use --precision bf16 (no scaling needed) or fp32")


def cpu_note(name: str, device: torch.device) -> str | None:
    """A note when a half precision is asked for on the CPU, else None."""
    if name not in HALF or device.type != "cpu":
        return None
    how = "torch's CPU autocast and GradScaler" if name == "fp16" else "torch's CPU autocast"
    speed = ("often much slower than fp32 there (no fp16 arithmetic units on most CPUs)" if name == "fp16" else
             "faster or slower than fp32 there depending on the CPU's bf16 support")
    return f"--precision {name} runs on the CPU through {how}: real half-precision arithmetic, {speed}"


def _norm(grads: list[Tensor]) -> Tensor:
    """The 2-norm of all of ``grads`` together (as ``updates.grad_norm`` sums them), as a 0-d tensor."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


class LossScaling:
    """fp16's dynamic loss scaling: one ``torch.amp.GradScaler`` per optimiser, applied through its step hooks.

    Attributes:
        scalers: the scaler of each player (``"g"``, and ``"d"`` for a GAN).
        skipped_steps: optimiser steps skipped so far in the run (all players).
        in_a_row: steps each player has skipped since its last one taken.
        norms: the unscaled gradient norm of each player's last step (inf or nan when it was skipped).
    """

    def __init__(self, device_type: str, optimizers: dict[str, torch.optim.Optimizer]):
        """Make a scaler for each optimiser (by player) and hook it into the optimiser's steps."""
        self.scalers = {name: torch.amp.GradScaler(device_type, init_scale=INIT_SCALE) for name in optimizers}
        self.skipped_steps = 0
        self.in_a_row = dict.fromkeys(optimizers, 0)
        self.norms: dict[str, float] = {}
        for name, opt in optimizers.items():
            opt.register_step_pre_hook(self._before(name))
            opt.register_step_post_hook(self._after(name))

    def scale(self, player: str, loss: Tensor) -> Tensor:
        """``loss`` times ``player``'s current scale (what its backward differentiates)."""
        return self.scalers[player].scale(loss)

    def _before(self, player: str):
        scaler = self.scalers[player]

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            norm = float(_norm([p.grad for p in params])) if params else 0.0  # one sync, as GradScaler.step's
            self.norms[player] = norm
            if norm != norm or norm in (float("inf"), float("-inf")):  # overflow: leave the weights as they are
                for p in params:
                    p.grad = None
                self.skipped_steps += 1
                self.in_a_row[player] += 1
            else:
                self.in_a_row[player] = 0

        return hook

    def _after(self, player: str):
        scaler = self.scalers[player]

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            scaler.update()  # halves the scale after a skipped step, doubles it after 2,000 taken in a row

        return hook

    def settle(self, stats: dict[str, float], totals: bool) -> dict[str, float]:
        """A step's stats with the gradient norms of the unscaled gradients; with ``totals`` also
        ``skipped_steps`` (steps skipped so far in the run, all players) and ``loss_scale_<player>``.

        A skipped step's norm is dropped (the step was not taken, so it did not diverge) unless its player has
        skipped ``MAX_SKIPS`` steps in a row: then it stays non-finite and the loop treats it as a divergence.
        """
        out = dict(stats)
        for player in self.scalers:
            key = f"grad_norm_{player}"
            if key in out and player in self.norms:
                out[key] = self.norms[player]
                if 0 < self.in_a_row[player] < MAX_SKIPS:
                    del out[key]
        if totals:
            out["skipped_steps"] = float(self.skipped_steps)
            out.update({f"loss_scale_{p}": scaler.get_scale() for p, scaler in self.scalers.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        """Each scaler's state (scale and growth tracker) and the steps skipped so far, for checkpoints."""
        return {"scalers": {name: scaler.state_dict() for name, scaler in self.scalers.items()},
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (a player missing from ``state`` keeps its own scaler)."""
        for name, scaler in self.scalers.items():
            if name in state["scalers"]:
                scaler.load_state_dict(state["scalers"][name])
        self.skipped_steps = int(state["skipped_steps"])
        self.in_a_row = dict.fromkeys(self.in_a_row, 0)


class ScaledObjective:
    """An objective whose losses come back multiplied by the loss scale of the player each one trains.

    Everything else (``n_critic``, ``after_d_step``, ``name``, ...) is the wrapped objective's.
    """

    def __init__(self, objective: Objective, scaling: LossScaling):
        """Wrap ``objective``; its D losses are scaled by ``scaling``'s D scaler, its G losses by G's."""
        self._objective = objective
        self._scaling = scaling

    def __getattr__(self, name: str) -> Any:
        return getattr(self._objective, name)

    def d_loss(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict]:
        """``Objective.d_loss``, scaled."""
        loss, stats = self._objective.d_loss(*args, **kwargs)
        return self._scaling.scale("d", loss), stats

    def d_loss_one(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict]:
        """``Objective.d_loss_one``, scaled."""
        loss, stats = self._objective.d_loss_one(*args, **kwargs)
        return self._scaling.scale("d", loss), stats

    def g_loss(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict]:
        """``Objective.g_loss``, scaled."""
        loss, stats = self._objective.g_loss(*args, **kwargs)
        return self._scaling.scale("g", loss), stats

    def joint_losses(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, dict]:
        """``Objective.joint_losses``: D's loss scaled by D's scale, G's by G's."""
        loss_d, loss_g, stats = self._objective.joint_losses(*args, **kwargs)
        return self._scaling.scale("d", loss_d), self._scaling.scale("g", loss_g), stats
