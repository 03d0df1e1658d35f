"""A judgement of images, shared by ``ganforge evaluate`` and ``ganforge audit``: what is judged, and how
the result is reported.

The judged images are a generator checkpoint's samples (``--checkpoint``: a ``ckpt-<step>``, a run's output,
or a ``models:/``/``runs:/`` URI) or a set of images made by any tool (``--images``): ``ImagesSource`` says
which, ``judged_images`` makes them (``JudgedImages``). A judgement is reported to stdout, a JSON record and
MLflow (through ``ganforge.tracking``); MLflow sees a run only after every number has been computed, so a
failed evaluation never leaves a run that looks finished. Evaluation is ``ganforge.evaluate``, the
memorisation audit ``ganforge.audit.run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from ganforge.devices import pick_device
from ganforge.errors import GanforgeError

if TYPE_CHECKING:
    from ganforge.tracking import RunContext

PROVENANCE = ("weights", "checkpoint_step", "generator_sha256")  # of a checkpoint's judged images
TRAIN_SPLIT = "train"  # the split generators train on and the audit compares against
MAX_IMAGES = 1_000_000  # generated images judged at once: all of them are held in memory
MAX_SEED = 2**63 - 2  # torch seeds are 64-bit (as training's --seed)


class ImagesSource(BaseModel):
    """What is judged: a generator checkpoint or a set of images made by any tool."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # `model=` is the name before 0.2 (a model family everywhere else), accepted for one release
    checkpoint: str | None = Field(None, validation_alias=AliasChoices("checkpoint", "model"),
                                   description="Checkpoint: a ckpt-<step> or a run's --output directory, or a "
                                   "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID URI.")
    images: str | None = Field(None, description="A folder of images or a ganforge dataset URI, instead of "
                               "--checkpoint.")
    dataset: str = Field(description="The real dataset (URI) the images are compared with.")
    weights: Literal["ema", "raw"] | None = Field(None, description="Generator weights (with --checkpoint): ema or raw. "
                                                  "None: ema when the checkpoint has them, else raw.")
    n: int = Field(10000, ge=2, le=MAX_IMAGES, description="Number of generated images (with --checkpoint; --images "
                   "uses all).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the generated latents.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu or cuda.")
    backbone_weights: str | None = Field(None, description="Weights file of the backbone (see --backbone).")
    backbone_sha256: str | None = Field(None, description="SHA-256 the weights file must have. None: the "
                                        "backbone's known official file.")
    batch_size: int = Field(64, ge=1, le=65536, description="Images per backbone forward pass.")
    experiment: str = Field("ganforge", description="MLflow experiment name.")
    track: bool = Field(True, description="Log to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).")
    output: str | None = Field(None, description="Directory for the JSON report (and audit sheet). None: no files.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.checkpoint is None) == (self.images is None):
            raise ValueError("give exactly one of --checkpoint or --images")
        if self.images is not None and self.weights is not None:
            raise ValueError("--weights picks a checkpoint's generator weights; drop it with --images")
        return self


@dataclass
class JudgedImages:
    """Images under judgement: uint8 (N, C, H, W), their labels (conditional models) and provenance."""

    images: torch.Tensor
    labels: torch.Tensor | None
    info: dict


def judged_images(cfg: ImagesSource, manifest: dict) -> JudgedImages:
    """Generate ``cfg.n`` images from the checkpoint, or read the ``--images`` set."""
    if cfg.checkpoint is not None:
        return _from_checkpoint(cfg, cfg.checkpoint, manifest)
    assert cfg.images is not None  # exactly one of the two (ImagesSource._one_source)
    return _from_images(cfg.images, manifest)


def _from_checkpoint(cfg: ImagesSource, given: str, manifest: dict) -> JudgedImages:
    """``cfg.n`` images from the generator of ``given`` (``cfg.checkpoint``: a directory or a model URI)."""
    checkpoint = given
    if given.startswith(("models:/", "runs:/")):
        from ganforge.registry import resolve_model_uri

        checkpoint = str(resolve_model_uri(given))  # a cached ckpt-<step> whose meta names its run
    elif "://" in given:
        raise GanforgeError(f"model URI {given!r} cannot be resolved here: pass a checkpoint directory "
                            "(ckpt-<step> or a run's --output), models:/NAME@ALIAS, models:/NAME/VERSION or "
                            "runs:/RUN_ID")
    from ganforge.inference import generate, generator_weights, load_generator

    # resolved once: the same weights are loaded and recorded
    source = generator_weights(checkpoint, cfg.weights, where=None if checkpoint == given else given)
    _, spec, meta = load_generator(source.checkpoint, source.weights)
    images = generate(str(source.checkpoint), n=cfg.n, seed=cfg.seed, weights=source.weights,
                      device=pick_device(cfg.device))
    images = ((images + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    # generate() cycles the classes over the images; the same cycle labels them here.
    labels = torch.arange(cfg.n) % spec.num_classes if spec.conditional else None
    info = {"kind": "model", "model": cfg.checkpoint, "model_spec": spec.model_dump(mode="json"),
            "training_run_id": meta.get("run_id") or meta.get("mlflow_run_id"), **source.record()}
    return JudgedImages(images, labels, info)


def _from_images(uri: str, manifest: dict) -> JudgedImages:
    """A ganforge dataset (all splits) or a folder of image files, in the real dataset's channels."""
    from ganforge.data import load
    from ganforge.storage import parse

    c = manifest["image"]["channels"]
    if parse(uri).exists("manifest.json"):
        from ganforge.data import read_manifest

        parts = [load(uri, s).images for s in read_manifest(uri)["counts"]["splits"]]
        images = torch.cat(parts)
    else:
        from ganforge.data.images import check_uniform, prepare
        from ganforge.data.sources import open_source

        src = open_source("folder", uri)
        arrays = [prepare(a, None, c, "crop") for a in src.read(np.arange(len(src)))]
        check_uniform({a.shape for a in arrays})
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if images.shape[1] != c:
        images = images.expand(-1, 3, -1, -1).contiguous() if c == 3 else images.float().mean(1, keepdim=True).round().to(torch.uint8)
    return JudgedImages(images, None, {"kind": "images", "images": uri})


def check_same_size(images: torch.Tensor, manifest: dict, dataset: str, space: str) -> None:
    """A backbone that sees images at their own size (pixels) compares only images of one size.

    Raises:
        GanforgeError: the judged images' (H, W) differ from the dataset's.
    """
    h, w = manifest["image"]["height"], manifest["image"]["width"]
    if tuple(images.shape[-2:]) != (h, w):
        raise GanforgeError(f"the judged images are {images.shape[-1]}x{images.shape[-2]} px but dataset {dataset} "
                            f"holds {w}x{h} px, and {space} compares images at their own size; judge images of "
                            f"the dataset's size (re-ingest with --image-size, or train at {h} px)")


def preflight(cfg: ImagesSource) -> None:
    """Everything that can fail after the work, checked before it: the output folder and MLflow.

    Raises:
        GanforgeError: ``--output`` cannot be written, or tracking is on and MLflow cannot be reached.
    """
    from ganforge.outputs import check_output_dir
    from ganforge.tracking import check_reachable, tracking_uri

    pick_device(cfg.device)
    if cfg.output:
        check_output_dir(cfg.output)
    if cfg.track:
        check_reachable(tracking_uri(), no_track_flag=True)


def publish(cfg: ImagesSource, step: str, record: dict, metrics: dict, work: Path, verdict: str | None = None,
            tags: dict | None = None, context: RunContext | None = None):
    """Log metrics + artifacts to one MLflow run, then publish ``<step>.json`` (and ``work``'s files) to
    ``cfg.output``: files appear only once MLflow (when tracking) holds the same record."""
    from ganforge.faults import fault_point
    from ganforge.outputs import write_bytes_atomic, write_text_atomic
    from ganforge.tracking import open_tracker

    text = json.dumps(record, indent=2, sort_keys=True)
    (work / f"{step}.json").write_text(text)
    if cfg.track:
        all_tags = {"ganforge.step": step, "dataset_uri": cfg.dataset, "dataset_fingerprint": record["dataset_fingerprint"],
                    **(tags or {})}
        judged = record["judged"]
        if judged.get("training_run_id"):
            all_tags["training_run_id"] = judged["training_run_id"]
        # which weights were measured (resolved, never "auto"): ties every number to one file
        all_tags.update({k: str(judged[k]) for k in PROVENANCE if k in judged})
        if verdict:
            all_tags["audit_verdict"] = verdict
        params = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("output", "track", "weights")}
        if "weights" in judged:
            params["weights"] = judged["weights"]
        tracker = open_tracker(True, cfg.experiment, step, params, all_tags, context=context)
        try:
            tracker.log_metrics(metrics, step=0)
            fault_point(f"{step}:before-artifacts")
            tracker.log_artifacts(work)
            tracker.close("FINISHED")
        except BaseException:
            tracker.close("FAILED")
            raise
        record["mlflow_run_id"] = tracker.run_id
    fault_point(f"{step}:before-output")
    if cfg.output:
        out = Path(cfg.output)
        for f in sorted(work.iterdir()):
            if f.name != f"{step}.json":
                write_bytes_atomic(out / f.name, f.read_bytes())
        write_text_atomic(out / f"{step}.json", text)  # last: its presence means the rest is there
