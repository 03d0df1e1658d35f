"""Inference: pick a checkpoint's generator weights (EMA or raw), rebuild the generator, sample from it.

Evaluation, the audit, the registry's model and ``ganforge generate`` load and sample generators through
this module, and the training loop samples its grids through it; it sits below all of them and imports
only the model families and the modules below them, so none of them imports another to reach a generator.

Checkpoints themselves (their layout, listing, writing and reading) are ``ganforge.checkpoints``;
``--device`` is ``ganforge.devices``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

# load_weights and to_uint8 stay importable from here: every registered version stores its own copy of
# registry/generator_model.py, and those registered before ganforge.checkpoints and ganforge.pictures
# import both from inference (with sample and latents) when MLflow loads them.
from ganforge.checkpoints import (
    check_complete,
    checkpoint_step,
    find_checkpoint,
    load_checkpoint,
    load_weights,
)
from ganforge.devices import select_device
from ganforge.errors import GanforgeError
from ganforge.pictures import to_uint8  # noqa: F401

WEIGHTS: dict[str, str] = {"ema": "generator_ema", "raw": "generator"}  # --weights value -> file stem
Weights = Literal["ema", "raw"]


@dataclass(frozen=True)
class GeneratorWeights:
    """Which generator weights of a checkpoint are used; recorded beside every number made from them.

    Attributes:
        checkpoint: the ``ckpt-<step>`` directory.
        weights: ``ema`` (averaged) or ``raw`` (as trained), resolved: never "auto".
        step: the checkpoint's step.
    """

    checkpoint: Path
    weights: Weights
    step: int

    @property
    def file(self) -> Path:
        """The safetensors file holding these weights."""
        return self.checkpoint / f"{WEIGHTS[self.weights]}.safetensors"

    @functools.cached_property
    def sha256(self) -> str:
        """SHA-256 of ``file``: ties a number to the exact weights."""
        h = hashlib.sha256()
        with open(self.file, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    def record(self) -> dict:
        """``{"weights", "checkpoint_step", "generator_sha256"}``: the names used in records, params and tags."""
        return {"weights": self.weights, "checkpoint_step": self.step, "generator_sha256": self.sha256}


def check_weights(weights: str | None) -> None:
    """Raise ``GanforgeError`` unless ``weights`` is ``ema``, ``raw`` or None (checked before any work)."""
    if weights is not None and weights not in WEIGHTS:
        raise GanforgeError(f"--weights {weights!r}: use ema or raw (or leave it out: ema when the checkpoint "
                            "has EMA weights, else raw)")


def pick_weights(has: set[str], weights: str | None, where: str) -> Weights:
    """Resolve ``weights`` against the generator weights a checkpoint holds.

    Args:
        has: which of ``ema`` and ``raw`` the checkpoint holds.
        weights: ``ema``, ``raw``, or None: ``ema`` when ``has`` it, else ``raw``.
        where: names the checkpoint in error messages.

    Raises:
        GanforgeError: an unknown ``weights``, or the asked-for weights are not there.
    """
    check_weights(weights)
    if weights is None:
        if not has:
            raise GanforgeError(f"checkpoint {where} holds no generator weights (generator.safetensors)")
        return "ema" if "ema" in has else "raw"
    if weights == "ema" and "ema" not in has:
        raise GanforgeError(f"--weights ema: checkpoint {where} has no EMA weights (generator_ema.safetensors); "
                            "pass --weights raw or train with --ema-decay")
    if weights == "raw" and "raw" not in has:  # a registered version carries only the weights it was given
        raise GanforgeError(f"--weights raw: checkpoint {where} has no raw generator weights (generator.safetensors)"
                            + ("; pass --weights ema" if has else ""))
    return "ema" if weights == "ema" else "raw"  # check_weights let no third value through


def generator_weights(path: str | Path, weights: str | None = None, where: str | None = None) -> GeneratorWeights:
    """Find the generator weights to load from a checkpoint (or the newest one in a run's output directory).

    Args:
        path: a ``ckpt-<step>`` directory or a run's ``--output`` directory.
        weights: ``ema``, ``raw``, or None: ``ema`` when the checkpoint has EMA weights, else ``raw``.
        where: names the checkpoint in error messages (e.g. the ``runs:/`` URI it was downloaded from);
            None: its directory.

    Raises:
        GanforgeError: an unknown ``weights``, no such checkpoint, or the asked-for weights are not in it.
    """
    check_weights(weights)
    p = Path(path)
    if not p.exists():
        raise GanforgeError(f"checkpoint {p} does not exist; pass a ckpt-<step> directory or a run's --output")
    p = find_checkpoint(p)
    check_complete(p)
    has = {w for w, stem in WEIGHTS.items() if (p / f"{stem}.safetensors").is_file()}
    return GeneratorWeights(p, pick_weights(has, weights, where or str(p)), checkpoint_step(p))


def load_generator(path: str | Path, weights: str | None = None, device: str | torch.device = "cpu"):
    """Rebuild the generator stored in a checkpoint (or the newest one in a run's output directory).

    Args:
        path: a ``ckpt-<step>`` directory or a run's ``--output`` directory.
        weights: ``ema`` (averaged), ``raw`` (as trained), or None: ``ema`` when the checkpoint has EMA
            weights, else ``raw``. ``generator_weights`` says which one that was.
        device: where to put the generator.

    Returns:
        ``(generator in eval mode, ModelSpec, meta dict)``.

    Raises:
        GanforgeError: not a checkpoint, the asked-for weights missing, or weights that do not fit the
            recorded architecture.
    """
    from pydantic import ValidationError

    from ganforge.models import ModelSpec, build_generator

    source = generator_weights(path, weights)
    p = source.checkpoint
    ck = load_checkpoint(p, device)
    try:
        spec = ModelSpec(**ck.meta["spec"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise GanforgeError(f"checkpoint {p} has no valid model spec in meta.json ({type(exc).__name__})") from None
    generator = build_generator(spec).to(device)
    load_weights(generator, ck.weights[WEIGHTS[source.weights]], str(p))
    return generator.eval(), spec, ck.meta


@torch.no_grad()
def sample(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, batch: int = 256) -> torch.Tensor:
    """Generate images for latents ``z`` (N, latent) in eval mode, in chunks of ``batch``.

    Eval mode makes batch norm use its running statistics, so sampling never changes the
    generator's state (resumed and uninterrupted runs stay identical).

    Returns:
        (N, C, H, W) float images in [-1, 1] on the CPU.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    out = []
    try:
        for i in range(0, z.shape[0], batch):
            lab = labels[i : i + batch].to(device) if labels is not None else None
            out.append(generator(z[i : i + batch].to(device), lab).float().cpu())
    finally:
        generator.train(was_training)
    return torch.cat(out).clamp_(-1, 1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (latent,) at fractions ``t`` (K,).

    Gaussian latents live near a sphere; a straight line between two passes through its low-norm
    interior, which the generator rarely saw.
    """
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.acos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


INTERPOLATIONS = ("slerp", "linear")


def interpolation_latents(z: torch.Tensor, steps: int = 10, mode: str = "slerp") -> torch.Tensor:
    """(steps, latent) latents from ``z[0]`` to ``z[1]``, both included: along the sphere (``slerp``) or a
    straight line (``linear``: seed 002's ``(1 - r) z0 + r z1`` at ``r = linspace(0, 1, steps)``)."""
    t = torch.linspace(0, 1, steps)
    if mode == "linear":
        return torch.lerp(z[0], z[1], t.view(-1, 1))
    if mode != "slerp":
        raise ValueError(f"unknown interpolation {mode!r}; choose one of {', '.join(INTERPOLATIONS)}")
    return slerp(z[0], z[1], t)


def latents(seed: int, n: int, latent_dim: int) -> torch.Tensor:
    """(max(n, 2), latent_dim) standard-normal latents of ``seed``: the first ``n`` are a request's images,
    the first two an interpolation's ends; the registered model draws them the same way."""
    return torch.randn(max(n, 2), latent_dim, generator=torch.Generator().manual_seed(seed))


def _label_ids(labels: list[str], class_names: list[str]) -> list[int]:
    """Label ids from ids or class names, as the user typed them."""
    ids = []
    for lab in labels:
        if lab in class_names:
            ids.append(class_names.index(lab))
        elif lab.lstrip("-").isdigit() and 0 <= int(lab) < len(class_names):
            ids.append(int(lab))
        else:
            raise GanforgeError(f"unknown label {lab!r}; use an id 0..{len(class_names) - 1} or one of {class_names}")
    return ids


def generate(
    checkpoint: str,
    n: int = 64,
    labels: list[str] | None = None,
    seed: int = 0,
    interpolate: bool = False,
    weights: str | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """Images from a checkpoint's generator: ``n`` random latents, or ``n`` steps of one interpolation.

    Args:
        checkpoint: a ``ckpt-<step>`` directory or a run's output directory.
        n: number of images.
        labels: class ids or names, cycled over the images (conditional models; default: all classes).
        seed: seed of the latents.
        interpolate: walk from one latent to another in ``n`` steps instead of drawing ``n``, along the path
            the checkpoint's run drew its strip with (its ``interpolation``; slerp if it records none).
        weights: ``ema``, ``raw``, or None: ``ema`` when the checkpoint has EMA weights, else ``raw``.
        device: where to run the generator.

    Returns:
        (n, C, H, W) images in [-1, 1].

    Raises:
        GanforgeError: bad checkpoint or ``weights``, labels for an unconditional model, or unknown labels.
    """
    if n < 1:
        raise GanforgeError(f"--n must be at least 1, got {n}")
    dev = select_device(device)
    check_weights(weights)
    generator, spec, meta = load_generator(checkpoint, weights, dev)
    z = latents(seed, n, spec.latent_dim)
    mode = (meta.get("config") or {}).get("interpolation") or "slerp"
    z = interpolation_latents(z, n, mode) if interpolate else z[:n]
    names = meta.get("class_names") or [str(i) for i in range(spec.num_classes)]
    if labels and not spec.conditional:
        raise GanforgeError("--labels given but the checkpoint's model is not conditional; drop --labels")
    ids = None
    if spec.conditional:
        pool = _label_ids(labels, names) if labels else list(range(spec.num_classes))
        ids = torch.tensor([pool[0]] * n if interpolate else [pool[i % len(pool)] for i in range(n)])
    return sample(generator, z, ids)
