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
``ckpt-*`` is always complete; after each write only the newest ``keep`` remain, each renamed to a
hidden name before it is deleted (a kill mid-delete never leaves a partial ``ckpt-*``). Hidden
leftovers of a killed writer are removed (or, for a replaced checkpoint, put back) by
``clean_stale`` when the next run starts in that directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
    return weights


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
    if not (p / "state.pt").is_file() and list_checkpoints(p):
        p = list_checkpoints(p)[-1]
    if not (p / "state.pt").is_file() or not (p / "meta.json").is_file():
        raise GanforgeError(f"{p} is not a ganforge checkpoint (needs state.pt and meta.json); pass a ckpt-<step>")
    has = {w for w, stem in WEIGHTS.items() if (p / f"{stem}.safetensors").is_file()}
    return GeneratorWeights(p, pick_weights(has, weights, where or str(p)), _step(p))


def _step(p: Path) -> int:
    """The checkpoint's step as ``load_checkpoint`` reads it; mmap: optimiser tensors are not read."""
    m = _NAME.match(p.name)
    try:
        state = torch.load(p / "state.pt", map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated or foreign files: say which, on one line
        raise GanforgeError(f"cannot read checkpoint {p}: {' '.join(str(exc).split())[:300]}") from None
    return int(state.get("step", int(m.group(1)) if m else 0))


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
