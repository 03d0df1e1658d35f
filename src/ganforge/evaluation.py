"""Evaluate and audit a generator (or any set of images) against a ganforge dataset.

Maths lives in ``ganforge.metrics`` and ``ganforge.audit``; this module gathers the images, caches
the real-image features by (dataset fingerprint, split, backbone hash, sample), and reports: stdout,
a JSON record, and MLflow (through ``ganforge.tracking``). MLflow sees a run only after every number
has been computed, so a failed evaluation never leaves a run that looks finished.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ganforge.errors import GanforgeError

PROVENANCE = ("weights", "checkpoint_step", "generator_sha256")  # of a checkpoint's judged images
TRAIN_SPLIT = "train"  # the split generators train on and the audit compares against


class ImagesSource(BaseModel):
    """What is judged: a generator checkpoint or a set of images made by any tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="Checkpoint (ckpt-<step> or a run's --output directory).")
    images: str | None = Field(None, description="A folder of images or a ganforge dataset URI, instead of --model.")
    dataset: str = Field(description="The real dataset (URI) the images are compared with.")
    weights: Literal["ema", "raw"] | None = Field(None, description="Generator weights (with --model): ema or raw. "
                                                  "None: ema when the checkpoint has them, else raw.")
    n: int = Field(10000, ge=2, description="Number of generated images (with --model; --images uses all).")
    seed: int = Field(0, description="Seed of the generated latents.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu or cuda.")
    backbone_weights: str | None = Field(None, description="Weights file of the backbone (see --backbone).")
    backbone_sha256: str | None = Field(None, description="SHA-256 the weights file must have. None: the "
                                        "backbone's known official file.")
    batch_size: int = Field(64, ge=1, description="Images per backbone forward pass.")
    experiment: str = Field("ganforge", description="MLflow experiment name.")
    track: bool = Field(True, description="Log to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).")
    output: str | None = Field(None, description="Directory for the JSON report (and audit sheet). None: no files.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.model is None) == (self.images is None):
            raise ValueError("give exactly one of --model or --images")
        if self.images is not None and self.weights is not None:
            raise ValueError("--weights picks a checkpoint's generator weights; drop it with --images")
        return self


class EvalConfig(ImagesSource):
    """``ganforge evaluate``: FID, KID and precision/recall/density/coverage."""

    metrics: tuple[str, ...] = Field(("fid", "kid", "prdc"), description="Metrics to compute (registry names).")
    split: str = Field("train", description="Real split the generated images are compared with.")
    n_real: int | None = Field(None, ge=2, description="Real images used (seeded subset). None: the whole split.")
    backbone: str = Field("inception-tf", description="Feature backbone: inception-tf, inception-torchvision, "
                          "pixels or custom.")


class AuditConfig(ImagesSource):
    """``ganforge audit``: nearest-neighbour memorisation check against the training split."""

    n: int = Field(1000, ge=2, description="Number of generated images audited.")
    space: str = Field("pixels", description="Where distances are measured: pixels or a backbone name.")
    metric: Literal["l2", "l1"] = Field("l2", description="Distance: l2 or l1 (the book's check uses l1).")
    heldout_split: str | None = Field(None, description="Held-out real split for the baseline (never the training "
                                      "split). None: test, else val, else a leave-one-out baseline within train.")
    n_pairs: int = Field(16, ge=1, description="Pairs drawn on the sheet: flagged images first, then the closest.")
    alpha: float | None = Field(None, gt=0, lt=0.5, description="Per-image flag level: flagged when closer to a "
                                "training image than all but a fraction alpha of unseen images. None: 0.001 (or "
                                "1/(n+1) for a baseline of n < 999 images).")
    test_level: float = Field(0.01, gt=0, lt=0.5, description="Level of the set-level test on the number of flags.")
    invariance: Literal["none", "mirror", "shift"] = Field("shift", description="Copies seen through: none, mirror, "
                                                           "or mirror + shifts up to --max-shift px (pixels only).")
    max_shift: int = Field(2, ge=0, le=8, description="Largest shift in pixels (--invariance shift).")
    blur: float = Field(1.0, ge=0, le=8, description="Gaussian blur sigma (px) before pixel distances; 0: raw pixels.")

    @model_validator(mode="after")
    def _heldout_is_not_train(self):
        # against itself the baseline distance is 0, so every generator would pass: a gate switched off
        if self.heldout_split == TRAIN_SPLIT:
            raise ValueError(f"the held-out split cannot be the training split {TRAIN_SPLIT!r} (the baseline "
                             "distance would be 0 and every audit would pass); pass --heldout-split test or val")
        return self


@dataclass
class Judged:
    """Images under judgement: uint8 (N, C, H, W), their labels (conditional models) and provenance."""

    images: torch.Tensor
    labels: torch.Tensor | None
    info: dict


def pick_device(device: str) -> str:
    """``--device`` resolved: auto -> CUDA when present, else CPU.

    Raises:
        GanforgeError: an unknown device, or CUDA asked for where there is none.
    """
    from ganforge.training.distributed import select_device

    return str(select_device(device))


def judged_images(cfg: ImagesSource, manifest: dict) -> Judged:
    """Generate ``cfg.n`` images from the checkpoint, or read the ``--images`` set."""
    if cfg.model is not None:
        return _from_checkpoint(cfg, manifest)
    return _from_images(cfg.images, manifest)


def _from_checkpoint(cfg: ImagesSource, manifest: dict) -> Judged:
    checkpoint = cfg.model
    if cfg.model.startswith(("models:/", "runs:/")):
        from ganforge.registry import resolve_model_uri

        checkpoint = str(resolve_model_uri(cfg.model))  # a cached ckpt-<step> whose meta names its run
    elif "://" in cfg.model:
        raise GanforgeError(f"model URI {cfg.model!r} cannot be resolved here: pass a checkpoint directory "
                            "(ckpt-<step> or a run's --output), models:/NAME@ALIAS, models:/NAME/VERSION or "
                            "runs:/RUN_ID")
    from ganforge.training.checkpoint import generator_weights, load_generator
    from ganforge.training.visuals import generate

    # resolved once: the same weights are loaded and recorded
    source = generator_weights(checkpoint, cfg.weights, where=None if checkpoint == cfg.model else cfg.model)
    _, spec, meta = load_generator(source.checkpoint, source.weights)
    images = generate(str(source.checkpoint), n=cfg.n, seed=cfg.seed, weights=source.weights,
                      device=pick_device(cfg.device))
    images = ((images + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    # generate() cycles the classes over the images; the same cycle labels them here.
    labels = torch.arange(cfg.n) % spec.num_classes if spec.conditional else None
    info = {"kind": "model", "model": cfg.model, "model_spec": spec.model_dump(mode="json"),
            "training_run_id": meta.get("run_id") or meta.get("mlflow_run_id"), **source.record()}
    return Judged(images, labels, info)


def _from_images(uri: str, manifest: dict) -> Judged:
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
    return Judged(images, None, {"kind": "images", "images": uri})


def real_features(dataset: str, split: str, extractor, n_real: int | None, batch_size: int,
                  cache_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Features of the real split, computed once per (fingerprint, split, backbone hash, sample).

    Returns:
        (features (N, D) float32, labels (N,), whether they came from the cache).
    """
    from ganforge.data import load, read_manifest
    from ganforge.data.loader import default_cache_dir

    fp = read_manifest(dataset)["fingerprint"]
    name = f"{split}-{extractor.name}-{extractor.sha256[:16]}-{n_real or 'all'}"
    d = Path(cache_dir or default_cache_dir()) / "features" / fp
    feats_path, labels_path = d / f"{name}.npy", d / f"{name}-labels.npy"
    if feats_path.exists() and labels_path.exists():
        return torch.from_numpy(np.load(feats_path)), torch.from_numpy(np.load(labels_path)), True
    data = load(dataset, split)
    images, labels = data.images, data.labels
    if n_real is not None and n_real < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n_real].sort().values
        images, labels = images[keep], labels[keep]
    label = f"extract {extractor.name} real {split}"
    feats = extractor.extract(images, batch_size, progress=label).float().cpu()
    from ganforge.outputs import save_npy_atomic

    for path, arr in ((labels_path, labels.numpy()), (feats_path, feats.numpy())):  # features last: marks complete
        save_npy_atomic(path, arr)
    return feats, labels, False


def evaluate(cfg: EvalConfig) -> dict:
    """Compute the metrics; returns the record (also written to ``cfg.output`` and MLflow)."""
    from ganforge.data import read_manifest
    from ganforge.metrics import METRICS, compute_metrics, metric_key
    from ganforge.metrics.features import get_extractor

    t0 = time.perf_counter()
    for name in cfg.metrics:
        if name not in METRICS:
            raise GanforgeError(f"unknown metric {name!r} in --metrics; use any of {', '.join(METRICS)}")
    preflight(cfg)
    manifest = read_manifest(cfg.dataset)
    if cfg.split not in manifest["counts"]["splits"]:
        raise GanforgeError(f"dataset {cfg.dataset} has no split {cfg.split!r} (it has "
                            f"{', '.join(manifest['counts']['splits'])}); pass --split")
    device = pick_device(cfg.device)
    extractor = get_extractor(cfg.backbone, cfg.backbone_weights, device, expected_sha256=cfg.backbone_sha256)
    judged = judged_images(cfg, manifest)
    if extractor.input_size is None:
        check_same_size(judged.images, manifest, cfg.dataset, extractor.name)
    fake = extractor.extract(judged.images, cfg.batch_size).float().cpu()
    real, real_labels, cached = real_features(cfg.dataset, cfg.split, extractor, cfg.n_real, cfg.batch_size)
    n = len(fake)
    values = {metric_key(k, n, cfg.split): v for k, v in compute_metrics(list(cfg.metrics), real, fake).items()}
    if judged.labels is not None and "fid" in cfg.metrics:
        values.update(per_class_fid(real, real_labels, fake, judged.labels, manifest["class_names"], n, cfg.split))
    record = {
        "metrics": values, "backbone": extractor.record(), "n": n, "n_real": len(real), "split": cfg.split,
        "dataset": cfg.dataset, "dataset_fingerprint": manifest["fingerprint"], "judged": judged.info,
        "real_features_cached": cached, "seconds": round(time.perf_counter() - t0, 3),
    }
    with tempfile.TemporaryDirectory(prefix="ganforge-evaluate-") as work:
        _report(cfg, "evaluate", record, {f"eval/{k}": v for k, v in values.items()}, Path(work))
    return record


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


def per_class_fid(real, real_labels, fake, fake_labels, class_names, n, split) -> dict[str, float]:
    """FID of each class's generated images against that class's real ones (conditional models)."""
    from ganforge.metrics import metric_key
    from ganforge.metrics.fid import fid_from_features

    out = {}
    for c in range(len(class_names)):
        r, f = real[real_labels == c], fake[fake_labels == c]
        if len(r) >= 2 and len(f) >= 2:
            out[metric_key("fid", n, split) + f"_class{c}"] = fid_from_features(r, f)
    return out


def audit_thresholds(cfg: AuditConfig):
    """The ``AuditThresholds`` the flags of ``cfg`` ask for."""
    from ganforge.audit.memorization import AuditThresholds

    return AuditThresholds(alpha=cfg.alpha, test_level=cfg.test_level, invariance=cfg.invariance,
                           max_shift=cfg.max_shift, blur=cfg.blur)


def audit(cfg: AuditConfig):
    """Run the memorisation audit; returns the ``AuditReport`` (also written to files and MLflow).

    Everything the flags decide (baseline, alpha, generated count, space and shape) is checked before
    images are generated or distances computed.
    """
    import math

    from ganforge.audit.memorization import baseline_key, check_generated_count, plan_baseline, run_audit
    from ganforge.data import load, read_manifest
    from ganforge.data.loader import default_cache_dir
    from ganforge.metrics.features import get_extractor

    preflight(cfg)
    th = audit_thresholds(cfg)
    manifest = read_manifest(cfg.dataset)
    counts = manifest["counts"]["splits"]
    if TRAIN_SPLIT not in counts:
        raise GanforgeError(f"dataset {cfg.dataset} has no {TRAIN_SPLIT} split (it has {', '.join(counts)}); "
                            "the audit compares against the images a generator trains on")
    if cfg.heldout_split is not None and cfg.heldout_split not in counts:
        raise GanforgeError(f"dataset {cfg.dataset} has no split {cfg.heldout_split!r} (it has "
                            f"{', '.join(counts)}); pass --heldout-split test or val, or leave it out")
    held = cfg.heldout_split or next((s for s in ("test", "val") if s in counts), None)
    kind, n_base, alpha = plan_baseline(counts[TRAIN_SPLIT], counts[held] if held else None, th)
    if cfg.invariance == "shift" and cfg.space != "pixels":
        raise GanforgeError(f"--invariance shift compares pixels; with --space {cfg.space} use --invariance mirror "
                            "or none")
    if cfg.space == "pixels":
        h, w = manifest["image"]["height"], manifest["image"]["width"]
        margin = cfg.max_shift + (math.ceil(2 * cfg.blur) if cfg.blur > 0 else 0)
        if cfg.invariance == "shift" and min(h, w) <= 2 * margin:
            raise GanforgeError(f"dataset images of {w}x{h} px are too small for --max-shift {cfg.max_shift} with "
                                f"--blur {cfg.blur:g} (a {margin} px border is left out); lower them")
    if cfg.model is not None:
        check_generated_count(cfg.n, n_base, alpha, th)
    device = pick_device(cfg.device)
    space = "pixels" if cfg.space == "pixels" else get_extractor(cfg.space, cfg.backbone_weights, device,
                                                                   expected_sha256=cfg.backbone_sha256)
    judged = judged_images(cfg, manifest)
    check_generated_count(len(judged.images), n_base, alpha, th)
    if cfg.space == "pixels":
        check_same_size(judged.images, manifest, cfg.dataset, "pixels")
    space_name = "pixels" if isinstance(space, str) else space.name
    space_sha = get_extractor("pixels").sha256 if isinstance(space, str) else space.sha256
    split = held if kind == "heldout" else TRAIN_SPLIT
    cache = (Path(default_cache_dir()) / "audit" / manifest["fingerprint"]
             / f"{baseline_key(th, kind, split, space_name, space_sha, cfg.metric, n_base, alpha)}.npy")
    heldout = load(cfg.dataset, held).images if kind == "heldout" else None
    with tempfile.TemporaryDirectory(prefix="ganforge-audit-") as work:
        sheet = Path(work) / "audit_sheet.png"
        report = run_audit(judged.images, load(cfg.dataset, TRAIN_SPLIT).images, heldout, space=space,
                           thresholds=th, metric=cfg.metric, n_pairs=cfg.n_pairs, sheet_path=sheet,
                           batch_size=cfg.batch_size, device=device, baseline_cache=cache)
        metrics = {
            "audit/passed": float(report.verdict == "pass"), "audit/nn_dist_min": report.generated_to_train.min,
            "audit/nn_dist_p1": report.generated_to_train.p1, "audit/baseline_dist_p1": report.heldout_to_train.p1,
            "audit/fraction_below_baseline": report.fraction_below_baseline,
            "audit/exact_duplicates": float(report.exact_duplicates), "audit/z_u": report.z_u,
            "audit/flagged": float(report.n_flagged), "audit/expected_flagged": report.expected_flagged,
            "audit/flag_test_p": report.flag_test_p_value,
        }  # fmt: skip
        record = json.loads(report.to_json()) | {"dataset": cfg.dataset, "train_split": TRAIN_SPLIT,
                                                 "heldout_split": held if kind == "heldout" else None,
                                                 "dataset_fingerprint": manifest["fingerprint"], "judged": judged.info}
        # the splits are evidence too: the registry refuses an audit whose baseline was the training split
        tags = {"train_split": TRAIN_SPLIT, "audit_baseline": kind}
        if kind == "heldout":
            tags["heldout_split"] = held
        _report(cfg, "audit", record, metrics, Path(work), verdict=report.verdict, tags=tags)
    return report


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


def _report(cfg: ImagesSource, step: str, record: dict, metrics: dict, work: Path, verdict: str | None = None,
            tags: dict | None = None):
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
        tracker = open_tracker(True, cfg.experiment, step, params, all_tags)
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

