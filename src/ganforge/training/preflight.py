"""Every check a training run can fail on, done before any work; ``train --dry-run`` runs the same ones.

A mistake that would surface at step 0 (networks, objective, batch size), at the first checkpoint
(an unwritable ``--output``), when the MLflow run opens (an unusable store) or on resume (a checkpoint
of other settings) fails here, in seconds: the dataset's manifest is read but no image is decoded, the
networks are built on the meta device (no memory, no initialisation), and nothing is created (no
output folder, no MLflow run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.outputs import check_output_dir
from ganforge.training import checkpoint as ckpt
from ganforge.training.config import TrainConfig

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
    from ganforge.inference import select_device

    select_device(config.device)
    _check_model(config, facts)
    _check_batches(config, facts)
    if config.resume:
        check_resume(config, facts.fingerprint)
    elif not config.overwrite:
        ckpt.check_fresh_output(config.output)
    if config.fid_every:
        from ganforge.metrics.features import EXTRACTORS

        if config.fid_backbone not in EXTRACTORS:
            raise GanforgeError(f"--fid-backbone {config.fid_backbone!r}: use one of {', '.join(EXTRACTORS)}")
    if tracking and config.track:
        from ganforge.tracking import check_reachable, tracking_uri

        check_reachable(tracking_uri(), no_track_flag=True)


def _data_facts(config: TrainConfig, data) -> DataFacts:
    if data is not None:
        n, c, h, w = data.images.shape
        return DataFacts(n, c, h, w, list(data.class_names), data.fingerprint)
    from ganforge.data import read_manifest

    m = read_manifest(config.dataset)
    try:
        img = m["image"]
        return DataFacts(int(m["counts"]["splits"].get("train", 0)), int(img["channels"]), int(img["height"]),
                         int(img["width"]), list(m["class_names"]), str(m["fingerprint"]))  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        raise GanforgeError(
            f"dataset {config.dataset}: its manifest.json lacks image size, split counts or classes; "
            "re-ingest it with `ganforge ingest`"
        ) from None


def _check_model(config: TrainConfig, facts: DataFacts) -> None:
    """The networks, objective and augmentation build for this data (networks on the meta device)."""
    import torch

    from ganforge.models import MODELS, check_buildable
    from ganforge.training.state import model_spec

    spec = model_spec(config, (facts.channels, facts.height, facts.width), len(facts.class_names))
    check_buildable(spec)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        nets = [m for m in MODELS[config.model](spec) if m is not None]
    size = sum(p.numel() for m in nets for p in m.parameters())
    if size > MAX_PARAMETERS:
        raise GanforgeError(
            f"--width {config.width} and --latent-dim {config.latent_dim} build networks of {size:,} parameters "
            f"at {facts.height} px, more than {MAX_PARAMETERS:,}; lower --width or --latent-dim"
        )
    if config.model != "vae":
        from ganforge.training.losses import build_objective

        build_objective(
            config.objective, label_smoothing=config.label_smoothing, noisy_labels=config.noisy_labels,
            feature_matching=config.feature_matching, gp_weight=config.gp_weight, clip=config.clip,
            n_critic=config.n_critic,
        )  # fmt: skip
    if config.diffaugment:
        from ganforge.training.augment import parse_policy

        parse_policy(config.diffaugment)


def _check_batches(config: TrainConfig, facts: DataFacts) -> None:
    if facts.n_train == 0:
        raise GanforgeError(f"dataset {config.dataset} has no train split; ingest one (ganforge ingest)")
    if facts.n_train < config.batch_size:
        raise GanforgeError(
            f"the dataset has {facts.n_train} training images, fewer than --batch-size {config.batch_size}; "
            "lower --batch-size"
        )


def check_resume(config: TrainConfig, fingerprint: str) -> Path:
    """The checkpoint ``--resume`` names exists and was trained with settings this run may continue.

    Reads only its ``meta.json`` (the weights are loaded, and checked again, by the run).

    Raises:
        GanforgeError: no such checkpoint, an unreadable one, or one trained with other settings.
    """
    path = ckpt.resolve_resume(config.resume, config.output)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:  # missing, truncated or foreign: say which, on one line
        raise GanforgeError(
            f"cannot resume from {path}: unreadable meta.json ({type(exc).__name__}); pass another checkpoint"
        ) from None
    ckpt.check_resumable(path, meta, config, fingerprint)
    return path
