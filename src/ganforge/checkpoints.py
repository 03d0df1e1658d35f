"""Checkpoints: ``<output>/ckpt-<step>/`` directories, listed, written and read here and nowhere else.

Layout of one checkpoint::

    ckpt-000500/
      generator.safetensors        G weights (the VAE's decoder)
      generator_ema.safetensors    EMA G weights (only with --ema-decay)
      discriminator.safetensors    D/critic weights (the VAE's encoder is encoder.safetensors)
      state.pt                     optimisers, RNG states, step, fixed latents, loss history:
                                   plain tensors/numbers only, read back with weights_only=True
      meta.json                    the TrainConfig and ModelSpec, human-readable

A checkpoint is first written to a hidden temp directory and then renamed, so a directory named
``ckpt-*`` is always complete; after each write only the newest ``keep`` remain, each renamed to a
hidden name before it is deleted (a kill mid-delete never leaves a partial ``ckpt-*``). Hidden
leftovers of a killed writer are removed (or, for a replaced checkpoint, put back) by
``clean_stale`` when the next run starts in that directory. Reading never unpickles anything
(safetensors and ``weights_only=True``).

The training loop writes and resumes through this module; inference, evaluation, the audit and the
registry read through it. It sits below all of them and imports no other ganforge layer, so none of them
imports another to reach a checkpoint. Which generator weights of a checkpoint to sample from (EMA or
raw) is ``ganforge.inference``'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ganforge.errors import GanforgeError

if TYPE_CHECKING:
    from ganforge.training.config import TrainConfig

PREFIX = "ckpt-"
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)$")


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
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or the newest checkpoint in it when it is a run's output directory."""
    p = Path(path)
    if not (p / "state.pt").is_file() and (found := list_checkpoints(p)):
        return found[-1]
    return p


def check_complete(path: Path) -> None:
    """Raise ``GanforgeError`` unless ``path`` holds a checkpoint's ``state.pt`` and ``meta.json``."""
    if not (path / "state.pt").is_file() or not (path / "meta.json").is_file():
        raise GanforgeError(f"{path} is not a ganforge checkpoint (needs state.pt and meta.json); pass a ckpt-<step>")


def _step(path: Path, state: dict) -> int:
    """The step a checkpoint records (older ones: the one in its name)."""
    m = CHECKPOINT_NAME.match(path.name)
    return int(state.get("step", int(m.group(1)) if m else 0))


def _unreadable(path: Path, exc: Exception) -> GanforgeError:
    """Truncated or foreign files: say which checkpoint, on one line."""
    return GanforgeError(f"cannot read checkpoint {path}: {' '.join(str(exc).split())[:300]}")


def checkpoint_step(path: str | Path) -> int:
    """The step of a complete checkpoint as ``load_checkpoint`` reads it; mmap: optimiser tensors are not read.

    Raises:
        GanforgeError: ``state.pt`` cannot be read.
    """
    p = Path(path)
    try:
        state = torch.load(p / "state.pt", map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise _unreadable(p, exc) from None
    return _step(p, state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory; nothing is unpickled (safetensors and ``weights_only=True``).

    Raises:
        GanforgeError: the directory is not a complete ganforge checkpoint.
    """
    from safetensors.torch import load_file

    p = Path(path)
    check_complete(p)
    try:
        state = torch.load(p / "state.pt", map_location=map_location, weights_only=True)
        meta = json.loads((p / "meta.json").read_text())
        weights = {f.stem: load_file(f, device=str(map_location)) for f in sorted(p.glob("*.safetensors"))}
    except Exception as exc:
        raise _unreadable(p, exc) from None
    return Checkpoint(path=p, step=_step(p, state), weights=weights, state=state, meta=meta)


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
    try:
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; a failed write leaves no temp dir
    for old in list_checkpoints(root)[:-keep]:
        _remove(old)
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint: first out of sight (one rename), then its files."""
    trash = path.with_name(f".del-{path.name}-{os.getpid()}")
    try:
        path.rename(trash)
    except FileNotFoundError:
        return  # already gone
    shutil.rmtree(trash, ignore_errors=True)


_HIDDEN = re.compile(r"^\.(tmp|old|del)-(ckpt-\d+)-(\d+)$")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a writer still at work)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale(output: str | Path) -> list[str]:
    """Remove what killed checkpoint writers left in ``output``; return the names handled.

    ``.tmp-*`` (a checkpoint being written) and ``.del-*`` (one being deleted) go. ``.old-*`` is a
    complete checkpoint that was being replaced: it is put back when the kill came before its
    replacement was renamed into place, else removed. Entries of a live process are left alone.
    """
    root = Path(output)
    if not root.is_dir():
        return []
    handled = []
    for p in sorted(root.iterdir()):
        m = _HIDDEN.match(p.name)
        if not m or _alive(int(m.group(3))):
            continue
        kind, name = m.group(1), m.group(2)
        if kind == "old" and not (root / name).exists():
            p.rename(root / name)
        else:
            shutil.rmtree(p, ignore_errors=True)
        handled.append(p.name)
    return handled


def check_fresh_output(output: str | Path) -> None:
    """A new run must not start among another run's checkpoints (rollback and --resume latest would pick them).

    Raises:
        GanforgeError: ``output`` already holds checkpoints.
    """
    found = list_checkpoints(output)
    if found:
        raise GanforgeError(
            f"{output} already holds checkpoints ({found[-1].name}); pass --resume latest to continue, "
            "--overwrite to start afresh there, or another --output"
        )


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
    path = find_checkpoint(resume)  # a run's output directory: its newest checkpoint
    if not (path / "state.pt").is_file():
        raise GanforgeError(f"--resume {resume}: not a checkpoint directory (no state.pt); pass ckpt-<step>")
    return path


def check_resumable(path: Path, meta: dict, config: TrainConfig, fingerprint: str) -> None:
    """One error naming every difference that would make the resumed run a different run.

    Args:
        path: the checkpoint, named in the error.
        meta: its ``meta.json``.
        config: the new run's config; the checkpoint's is read back with the same class (imported by
            training, above this module).
        fingerprint: the new run's dataset fingerprint.

    Raises:
        GanforgeError: the checkpoint's config or dataset differ in something that matters.
    """
    from pydantic import ValidationError

    try:
        saved = type(config).model_validate(meta["config"])
    except (KeyError, TypeError, ValidationError):
        raise GanforgeError(f"cannot resume from {path}: its meta.json holds no valid config; pass another checkpoint"
                            ) from None
    was, now = saved.model_dump(), config.model_dump()  # flat, with layer tables as the text that was typed
    diffs = [f"{k} {was.get(k)!r} -> {now.get(k)!r}" for k in saved.mismatches(config)]
    if meta.get("dataset_fingerprint") != fingerprint:
        diffs.append(f"dataset fingerprint {meta.get('dataset_fingerprint')} -> {fingerprint}")
    if diffs:
        raise GanforgeError(
            f"cannot resume from {path}: it was trained with different settings ({'; '.join(diffs)}); "
            "use the checkpoint's values or start a new --output without --resume"
        )
