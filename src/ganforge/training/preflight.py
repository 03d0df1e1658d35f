"""Every check a training run can fail on, done before any work; ``train --dry-run`` runs the same ones.
``write_resolved_config`` then records the config beside the run before its first step.

A mistake that would surface at step 0 (networks, objective, batch size), at the first checkpoint
(an unwritable ``--output``), when the MLflow run opens (an unusable store) or on resume (a checkpoint
of other settings) fails here, in seconds: the dataset's manifest is read but no image is decoded, the
networks are built on the meta device (no memory, no initialisation), and nothing is created (no
output folder, no MLflow run).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ganforge import checkpoints as ckpt
from ganforge.errors import GanforgeError
from ganforge.outputs import check_output_dir
from ganforge.training.config import TrainConfig

RESOLVED_CONFIG = "resolved_config.json"  # in the run's --output, beside its checkpoints
MAX_PARAMETERS = 2**30  # G, D and encoder together: 4 GiB of fp32 weights, ~16 GiB with Adam and EMA


@dataclass(frozen=True)
class DataFacts:
    """What the checks need to know of the training split, without loading it."""

    n_train: int
    channels: int
    height: int
    width: int
    class_names: list[str]
    fingerprint: str
    held_out: int = 0  # images the ingest kept out of training as a val split (--val-fraction)
    val_fraction: float = 0.0
    audit_held_out: int = 0  # images the ingest kept out of training as the audit split (--audit-fraction)
    audit_fraction: float = 0.0


def preflight(config: TrainConfig, data=None, tracking: bool = True) -> None:
    """Raise the first mistake ``config`` would make the run fail on.

    Args:
        config: the resolved configuration.
        data: the ``ImageData`` that ``train`` was given instead of ``config.dataset`` (tests).
        tracking: False when the caller brings its own tracker (the store is not checked).

    Raises:
        GanforgeError: an unwritable output, a dataset or model that cannot train as asked, a resume
            that would be a different run, or an unusable tracking store; one line naming the fix.
    """
    check_output_dir(config.output)
    facts = _data_facts(config, data)
    from ganforge.devices import select_device

    device = select_device(config.device)
    n_critic = check_model(config, facts)
    _check_batches(config, facts)
    if config.resume:
        check_resume(config, facts.fingerprint, total_steps(config, facts, n_critic))
    elif not config.overwrite:
        ckpt.check_fresh_output(config.output)
    if config.fid_every:
        from ganforge.metrics.features import EXTRACTORS, weights_file

        if config.fid_backbone not in EXTRACTORS:
            raise GanforgeError(f"--fid-backbone {config.fid_backbone!r}: use one of {', '.join(EXTRACTORS)}")
        weights_file(config.fid_backbone, config.fid_backbone_weights, flags="--fid-")  # found, not yet read
    if tracking and config.track:
        from ganforge.tracking import check_reachable, tracking_uri

        check_reachable(tracking_uri(), no_track_flag=True)
    from ganforge.training.config import preset_holdout_warning, preset_size_note
    from ganforge.training.precision import cpu_note

    for note in (preset_size_note(config, facts.height), cpu_note(config.precision, device)):
        if note:  # once every check passed: a refused run's stderr stays its one error line
            print(f"note: {note}", file=sys.stderr)
    warning = preset_holdout_warning(config, facts.held_out, facts.val_fraction, facts.audit_held_out,
                                     facts.audit_fraction)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _data_facts(config: TrainConfig, data) -> DataFacts:
    if data is not None:
        n, c, h, w = data.images.shape
        return DataFacts(n, c, h, w, list(data.class_names), data.fingerprint)
    from ganforge.data import read_manifest

    m = read_manifest(config.dataset)
    try:
        img = m["image"]
        splits = m["counts"]["splits"]
        val_fraction = float((m.get("options") or {}).get("val_fraction") or 0.0)
        audit_fraction = float((m.get("options") or {}).get("audit_fraction") or 0.0)
        return DataFacts(int(splits.get("train", 0)), int(img["channels"]), int(img["height"]), int(img["width"]),
                         list(m["class_names"]), str(m["fingerprint"]),
                         int(splits.get("val", 0)) if val_fraction > 0 else 0, val_fraction,
                         int(splits.get("audit", 0)) if audit_fraction > 0 else 0, audit_fraction)  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        raise GanforgeError(
            f"dataset {config.dataset}: its manifest.json lacks image size, split counts or classes; "
            "re-ingest it with `ganforge ingest`"
        ) from None


def check_model(config: TrainConfig, facts: DataFacts) -> int:
    """The networks, objective, optimisers and augmentation build for this data (on the meta device).

    Returns the discriminator steps per generator step (1 without a discriminator).
    """
    import torch

    from ganforge.models import MODELS, check_buildable
    from ganforge.training.state import model_spec, training_parts

    spec = model_spec(config, (facts.channels, facts.height, facts.width), len(facts.class_names))
    check_buildable(spec)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        G, D, E = MODELS[config.model](spec)
        size = sum(p.numel() for m in (G, D, E) if m is not None for p in m.parameters())
        if size > MAX_PARAMETERS:
            raise GanforgeError(
                f"--width {config.width} and --latent-dim {config.latent_dim} build networks of {size:,} "
                f"parameters at {facts.height} px, more than {MAX_PARAMETERS:,}; lower --width or --latent-dim"
            )
        objective = training_parts(config, G, D, E)[0]  # objective, optimisers, augmentation: as the run builds them
    return objective.n_critic if objective is not None else 1


def total_steps(config: TrainConfig, facts: DataFacts, n_critic: int) -> int:
    """The generator updates the run ends at: ``--steps``, or ``--epochs`` as ``build_trainer`` counts them."""
    if config.steps is not None:
        return config.steps
    return max(1, config.epochs * (facts.n_train // config.batch_size) // n_critic)


def _check_batches(config: TrainConfig, facts: DataFacts) -> None:
    if facts.n_train == 0:
        raise GanforgeError(f"dataset {config.dataset} has no train split; ingest one (ganforge ingest)")
    if facts.n_train < config.batch_size:
        raise GanforgeError(
            f"the dataset has {facts.n_train} training images, fewer than --batch-size {config.batch_size}; "
            "lower --batch-size"
        )


def check_resume(config: TrainConfig, fingerprint: str, total: int | None = None) -> Path:
    """The checkpoint ``--resume`` names exists, was trained with settings this run may continue, and is
    short of the run's end (``total`` generator updates, when given).

    Reads only its ``meta.json`` (the weights are loaded, and checked again, by the run).

    Raises:
        GanforgeError: no such checkpoint, an unreadable one, one trained with other settings, or one
            already past the step the run ends at (it would train nothing).
    """
    path = ckpt.resolve_resume(config.resume, config.output)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:  # missing, truncated or foreign: say which, on one line
        raise GanforgeError(
            f"cannot resume from {path}: unreadable meta.json ({type(exc).__name__}); pass another checkpoint"
        ) from None
    ckpt.check_resumable(path, meta, config, fingerprint)
    step = meta.get("step")
    if total is not None and isinstance(step, int) and step > total:
        length = f"--steps {config.steps}" if config.steps is not None else f"--epochs {config.epochs} ({total} steps)"
        raise GanforgeError(
            f"cannot resume from {path}: it is at step {step} and {length} ends the run before it, so "
            f"nothing would be trained; pass --steps above {step} (or more --epochs) to continue it"
        )
    return path


def write_resolved_config(config: TrainConfig) -> Path:
    """Write ``<output>/resolved_config.json``, the config the run trains with, before its first step.

    Every field after defaults, ``--config``, ``--preset`` and flags were applied (the dataset URI with
    credentials masked, as in the MLflow params); written under a temp name and renamed, and rewritten by
    a resumed run with its own values. Returns its path.
    """
    from ganforge.outputs import write_text_atomic
    from ganforge.tracking import redact

    path = Path(config.output) / RESOLVED_CONFIG
    resolved = {**config.model_dump(mode="json"), "dataset": redact(config.dataset)}
    write_text_atomic(path, json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    return path
