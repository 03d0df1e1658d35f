"""Update schemes: how one training step updates the two players (``--update``), a registry like the objectives.

The seeds step their GANs four ways, and the way changes what is learnt, not only how fast:

* ``alternating`` (the PyTorch DCGAN example): D steps on a real and a fake batch; G's loss then goes
  through the *updated* D, on the same fakes when D takes one step per G step.
* ``simultaneous`` (TensorFlow's DCGAN tutorial, seed 000): one forward of G and D; both losses come from
  it (two gradient tapes) and both optimisers step together, so G's gradient is taken through the D of
  before this step.
* ``keras-combined`` (seed 003): the fakes come from ``generator.predict`` (G in inference mode: batch
  norm on its moving statistics, no graph); D takes one ``train_on_batch`` on ``concatenate(real,
  fake)`` (one forward, so D's batch-norm statistics mix both); G then trains through the frozen D on
  fresh noise.
* ``keras-two-batch`` (the book's GAN and WGAN, seed 001): ``predict`` fakes as above; D takes two
  ``train_on_batch`` calls, real then fake, two optimiser steps; G trains on fresh noise.

In both Keras schemes G trains in the combined model, where D is frozen (``trainable = False``): no
weight gradients, and TF2 Keras runs a frozen ``BatchNormalization`` in inference mode (its moving
statistics; dropout stays on). With ``n_critic`` above 1 each scheme but ``simultaneous`` repeats its D
part; weight clipping follows each D update (after the pair of steps in ``keras-two-batch``, as the
book's ``train_critic`` clips).

Every scheme draws the real batches, the latents (in the order they are used, from the step's own
generator) and the targets the same way, so a scheme's step is reproducible and resumable like the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.training import distributed as ddp
from ganforge.training.losses import Objective
from ganforge.training.streams import step_generator

if TYPE_CHECKING:  # state builds the Trainer from the config, whose parts list these schemes' names
    from ganforge.training.state import Trainer


def autocast(t: Trainer):
    """Autocast to ``--precision``'s half type on the run's device (bf16 or fp16; fp32 master weights, and fp16's
    losses scaled: see training/precision.py); nothing for fp32."""
    dtype = t.autocast_dtype
    return torch.autocast(t.rt.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_norm(params: list[torch.nn.Parameter]) -> float:
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _parts(t: Trainer) -> tuple[nn.Module, Callable, torch.optim.Optimizer, Objective]:
    assert t.D is not None and t.d_fwd is not None and t.opt_d is not None and t.objective is not None, "not a GAN"
    return t.D, t.d_fwd, t.opt_d, t.objective


def _step_d(t: Trainer, loss: torch.Tensor, d_params: list, stats: dict | None, want_norm: bool) -> None:
    """Backward ``loss`` and step D (gradients averaged across ranks)."""
    _, _, opt_d, _ = _parts(t)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    ddp.average_gradients(d_params, t.rt)
    if want_norm and stats is not None:
        stats["grad_norm_d"] = grad_norm(d_params)
    opt_d.step()


def _step_g(t: Trainer, loss: torch.Tensor | None, want_norms: bool, stats: dict) -> None:
    """Backward ``loss`` (None: the gradients are already set) and step G; then the EMA."""
    g_params = list(t.G.parameters())
    if loss is not None:
        t.opt_g.zero_grad(set_to_none=True)
        loss.backward()
    ddp.average_gradients(g_params, t.rt)
    if want_norms:
        stats["grad_norm_g"] = grad_norm(g_params)
    t.opt_g.step()
    if t.ema is not None:
        t.ema.update(t.G, t.step + 1)  # t.step counts updates before this one


@contextlib.contextmanager
def frozen(D: nn.Module) -> Iterator[None]:
    """D as Keras' combined model holds it (``trainable = False``): no weight gradients, batch norm on its
    moving statistics; dropout stays on."""
    norms = [m for m in D.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    D.requires_grad_(False)
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        D.requires_grad_(True)
        for m in norms:
            m.train()


def predicted(t: Trainer, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Keras' ``generator.predict(z)``: G in inference mode (batch norm on its moving statistics, no
    dropout), no graph."""
    was = t.G.training
    t.G.eval()
    try:
        with torch.no_grad(), autocast(t):
            return t.g_fwd(z, labels)
    finally:
        t.G.train(was)


def alternating(t: Trainer, want_norms: bool) -> dict[str, float]:
    """``n_critic`` D steps, then one G step through the updated D (the PyTorch DCGAN example's order)."""
    D, d_fwd, _, objective = _parts(t)
    gen = step_generator(t.config.seed, t.step)
    d_params = list(D.parameters())
    for k in range(t.n_critic):
        real, labels = t.batch(t.step * t.n_critic + k)
        z = t.latents(gen)
        with autocast(t):
            # one critic step: reuse this forward for the G update (as the DCGAN example does);
            # several: the fakes only train D, so skip their graph
            with contextlib.nullcontext() if t.n_critic == 1 else torch.no_grad():
                fake = t.g_fwd(z, labels)
            loss_d, stats = objective.d_loss(d_fwd, real, fake, labels)  # detaches fake itself
        _step_d(t, loss_d, d_params, stats, want_norms and k == t.n_critic - 1)
        objective.after_d_step(D)
    if t.n_critic > 1:
        with autocast(t):
            fake = t.g_fwd(t.latents(gen), labels)
    D.requires_grad_(False)  # G's update needs gradients through D, not of D's weights
    try:
        with autocast(t):
            loss_g, g_stats = objective.g_loss(d_fwd, fake, labels, real=real)
        t.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        D.requires_grad_(True)
    _step_g(t, None, want_norms, g_stats)
    return {**stats, **g_stats}


def simultaneous(t: Trainer, want_norms: bool) -> dict[str, float]:
    """One forward; D's gradient of its loss and G's of its own, both from it; both optimisers step."""
    D, d_fwd, opt_d, objective = _parts(t)
    gen = step_generator(t.config.seed, t.step)
    real, labels = t.batch(t.step)
    with autocast(t):
        fake = t.g_fwd(t.latents(gen), labels)
        loss_d, loss_g, stats = objective.joint_losses(d_fwd, real, fake, labels)
    d_params, g_params = list(D.parameters()), list(t.G.parameters())
    # each loss differentiated with respect to its own player only, before either steps (the two tapes)
    grads_d = torch.autograd.grad(loss_d, d_params, retain_graph=True, allow_unused=True)
    grads_g = torch.autograd.grad(loss_g, g_params, allow_unused=True)
    for params, grads in ((d_params, grads_d), (g_params, grads_g)):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    ddp.average_gradients(d_params, t.rt)
    if want_norms:
        stats["grad_norm_d"] = grad_norm(d_params)
    opt_d.step()
    objective.after_d_step(D)
    _step_g(t, None, want_norms, stats)
    return stats


def _keras_g_step(t: Trainer, gen: torch.Generator, labels: torch.Tensor | None, real: torch.Tensor,
                  want_norms: bool) -> dict[str, float]:
    """G's ``train_on_batch`` in the combined model: fresh noise, through the frozen D."""
    D, d_fwd, _, objective = _parts(t)
    z = t.latents(gen)
    with frozen(D):
        with autocast(t):
            loss_g, g_stats = objective.g_loss(d_fwd, t.g_fwd(z, labels), labels, real=real)
        t.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    _step_g(t, None, want_norms, g_stats)
    return g_stats


def _predicted_batches(t: Trainer, gen: torch.Generator) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None,
                                                                          torch.Tensor]]:
    """A Keras scheme's D batches: ``(k, real, labels, predict(z))`` for each of the ``n_critic`` D updates."""
    for k in range(t.n_critic):
        real, labels = t.batch(t.step * t.n_critic + k)
        yield k, real, labels, predicted(t, t.latents(gen), labels)


def keras_combined(t: Trainer, want_norms: bool) -> dict[str, float]:
    """D on ``concatenate(real, predict(z))`` in one step (``n_critic`` times), then G on fresh noise."""
    D, d_fwd, _, objective = _parts(t)
    gen = step_generator(t.config.seed, t.step)
    d_params = list(D.parameters())
    for k, real, labels, fake in _predicted_batches(t, gen):
        with autocast(t):
            loss_d, stats = objective.d_loss(d_fwd, real, fake, labels, joint=True)
        _step_d(t, loss_d, d_params, stats, want_norms and k == t.n_critic - 1)
        objective.after_d_step(D)
    return {**stats, **_keras_g_step(t, gen, labels, real, want_norms)}


def keras_two_batch(t: Trainer, want_norms: bool) -> dict[str, float]:
    """D steps on the real batch, then on ``predict(z)`` (``n_critic`` times), then G on fresh noise."""
    D, d_fwd, _, objective = _parts(t)
    gen = step_generator(t.config.seed, t.step)
    d_params = list(D.parameters())
    for k, real, labels, fake in _predicted_batches(t, gen):
        stats: dict[str, float] = {}
        for images, is_real in ((real, True), (fake, False)):
            with autocast(t):
                loss, s = objective.d_loss_one(d_fwd, images, labels, is_real)
            _step_d(t, loss, d_params, stats, want_norms and k == t.n_critic - 1 and not is_real)
            stats.update(s)
        objective.after_d_step(D)  # the book's train_critic clips after the pair
        stats["loss_d"] = 0.5 * (stats["loss_d_real"] + stats["loss_d_fake"])  # the book's d_loss
    return {**stats, **_keras_g_step(t, gen, labels, real, want_norms)}


UPDATES: dict[str, Callable[[Trainer, bool], dict[str, float]]] = {
    "alternating": alternating,
    "simultaneous": simultaneous,
    "keras-combined": keras_combined,
    "keras-two-batch": keras_two_batch,
}


def check_update(name: str, objective: Objective) -> None:
    """Refuse a scheme that cannot run this objective, naming the fix.

    Raises:
        GanforgeError: ``simultaneous`` with several D steps, feature matching or the AC-GAN term (they need
            forwards of their own); ``keras-two-batch`` with the gradient penalty (it needs real and fake in
            one step).
    """
    if name not in UPDATES:
        raise GanforgeError(f"unknown update scheme {name!r}; use one of {', '.join(UPDATES)}")
    if name == "simultaneous":
        if objective.n_critic != 1:
            raise GanforgeError(f"--update simultaneous takes one D step per G step, not --n-critic {objective.n_critic}; "
                                "pass --n-critic 1 or --update alternating")
        if objective.feature_matching or objective.aux_classifier:
            raise GanforgeError("--update simultaneous takes both losses from one forward of D; feature matching and "
                                "the AC-GAN class term need their own: use --update alternating")
    if name == "keras-two-batch" and objective.penalty_needs_both:
        raise GanforgeError(f"--update keras-two-batch steps on real and fake batches apart; loss {objective.name!r} "
                            "penalises between them: use --update keras-combined or alternating")
