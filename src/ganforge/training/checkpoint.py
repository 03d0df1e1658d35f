"""Checkpoints: ``<output>/ckpt-<step>/`` directories, written atomically, loaded without unpickling.

Layout of one checkpoint::

    ckpt-000500/
      generator.safetensors        G weights (the VAE's decoder)
      generator_ema.safetensors    EMA G weights (only with --ema-decay)
      discriminator.safetensors    D/critic weights (the VAE's encoder is encoder.safetensors)
      state.pt                     optimisers, RNG states, step, fixed latents, loss history:
                                   plain tensors/numbers only, read back with weights_only=True
      meta.json                    the TrainConfig and ModelSpec, human-readable

A checkpoint is first written to a hidden temp directory and then renamed, so a directory named
``ckpt-*`` is always complete; after each write only the newest ``keep`` remain.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ganforge.errors import GanforgeError

PREFIX = "ckpt-"
_NAME = re.compile(r"^ckpt-(\d+)$")


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the ``ckpt-<step>`` directory.
        step: generator updates done when it was written.
        weights: module name (``generator``, ``discriminator``, ...) -> state dict.
        state: optimiser states, RNG states and counters (see ``save_checkpoint``).
        meta: ``{"config": TrainConfig dict, "spec": ModelSpec dict}``.
    """

    path: Path
    step: int
    weights: dict[str, dict[str, torch.Tensor]]
    state: dict
    meta: dict


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint at ``step`` (zero-padded so names sort by step)."""
    return f"{PREFIX}{step:06d}"


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints under ``output``, oldest first (temp directories are never listed)."""
    root = Path(output)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, output: str | Path) -> Path:
    """Turn ``--resume`` (``latest`` or a directory) into a checkpoint directory.

    Raises:
        GanforgeError: no checkpoint there; resuming never silently starts afresh.
    """
    if resume == "latest":
        found = list_checkpoints(output)
        if not found:
            raise GanforgeError(
                f"--resume latest: no ckpt-<step> directory in {output}; check --output or drop --resume"
            )
        return found[-1]
    path = Path(resume)
    if path.is_dir() and not (path / "state.pt").is_file() and list_checkpoints(path):
        return list_checkpoints(path)[-1]  # a run's output directory: take its newest checkpoint
    if not (path / "state.pt").is_file():
        raise GanforgeError(f"--resume {resume}: not a checkpoint directory (no state.pt); pass ckpt-<step>")
    return path


def save_checkpoint(
    output: str | Path,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict,
    meta: dict,
    keep: int,
) -> Path:
    """Write ``ckpt-<step>`` atomically, then delete all but the newest ``keep`` checkpoints.

    Args:
        output: the run's output directory (created if missing).
        step: generator updates done; names the directory.
        weights: module name -> state dict, each written as ``<name>.safetensors``.
        state: tensors, numbers, strings, lists and dicts only (it must load with ``weights_only``).
        meta: JSON-serialisable description (config and model spec).
        keep: how many checkpoints to retain.

    Returns:
        The final checkpoint directory.
    """
    from safetensors.torch import save_file

    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, sd in weights.items():
        # clone: safetensors refuses tensors that share storage (tied or parametrised weights)
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}, tmp / f"{name}.safetensors")
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if final.exists():  # a rollback replays steps: the old copy goes only once the new one is complete
        trash = root / f".old-{final.name}-{os.getpid()}"
        final.rename(trash)
        tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory; nothing is unpickled (safetensors and ``weights_only=True``).

    Raises:
        GanforgeError: the directory is not a complete ganforge checkpoint.
    """
    from safetensors.torch import load_file

    p = Path(path)
    m = _NAME.match(p.name)
    if not (p / "state.pt").is_file() or not (p / "meta.json").is_file():
        raise GanforgeError(f"{p} is not a ganforge checkpoint (needs state.pt and meta.json); pass a ckpt-<step>")
    try:
        state = torch.load(p / "state.pt", map_location=map_location, weights_only=True)
        meta = json.loads((p / "meta.json").read_text())
        weights = {f.stem: load_file(f, device=str(map_location)) for f in sorted(p.glob("*.safetensors"))}
    except Exception as exc:  # truncated or foreign files: say which, on one line
        raise GanforgeError(f"cannot read checkpoint {p}: {' '.join(str(exc).split())[:300]}") from None
    step = int(state.get("step", int(m.group(1)) if m else 0))
    return Checkpoint(path=p, step=step, weights=weights, state=state, meta=meta)


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Load a state dict strictly; a mismatch means the checkpoint is for another architecture.

    Raises:
        GanforgeError: missing/unexpected keys or shape mismatch, reported on one line.
    """
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:240]
        raise GanforgeError(
            f"checkpoint {where} was written for another architecture ({first}); "
            "use a checkpoint made with the same --model, --width, --latent-dim and image size"
        ) from None


def load_generator(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"):
    """Rebuild the generator stored in a checkpoint (or the newest one in a run's output directory).

    Args:
        path: a ``ckpt-<step>`` directory or a run's ``--output`` directory.
        use_ema: prefer the EMA weights when the checkpoint has them.
        device: where to put the generator.

    Returns:
        ``(generator in eval mode, ModelSpec, meta dict)``.

    Raises:
        GanforgeError: not a checkpoint, or weights that do not fit the recorded architecture.
    """
    from pydantic import ValidationError

    from ganforge.models import ModelSpec, build_generator

    p = Path(path)
    if not p.exists():
        raise GanforgeError(f"checkpoint {p} does not exist; pass a ckpt-<step> directory or a run's --output")
    if not (p / "state.pt").is_file() and list_checkpoints(p):
        p = list_checkpoints(p)[-1]
    ck = load_checkpoint(p, device)
    try:
        spec = ModelSpec(**ck.meta["spec"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise GanforgeError(f"checkpoint {p} has no valid model spec in meta.json ({type(exc).__name__})") from None
    name = "generator_ema" if use_ema and "generator_ema" in ck.weights else "generator"
    if name not in ck.weights:
        raise GanforgeError(f"checkpoint {p} holds no generator weights ({name}.safetensors)")
    generator = build_generator(spec).to(device)
    load_weights(generator, ck.weights[name], str(p))
    return generator.eval(), spec, ck.meta
