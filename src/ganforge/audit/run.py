"""``ganforge audit``: the nearest-neighbour memorisation audit of judged images against the training split.

Maths lives in ``ganforge.audit.memorization`` (and ``invariant``); the judged images and the report
come from ``ganforge.judgement``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

if TYPE_CHECKING:
    from ganforge.tracking import RunContext

from ganforge.devices import pick_device
from ganforge.errors import GanforgeError
from ganforge.judgement import (
    MAX_IMAGES,
    TRAIN_SPLIT,
    ImagesSource,
    check_same_size,
    judged_images,
    preflight,
    publish,
)
from ganforge.names import AUDIT_SPLIT


class AuditConfig(ImagesSource):
    """``ganforge audit``: nearest-neighbour memorisation check against the training split."""

    n: int = Field(1000, ge=2, le=MAX_IMAGES, description="Number of generated images audited.")
    # the feature space is --backbone, as in evaluate; `space=` is its name before 0.2, kept for one release
    backbone: str = Field("pixels", validation_alias=AliasChoices("backbone", "space"),
                          description="Where distances are measured: pixels or a backbone name.")
    metric: Literal["l2", "l1"] = Field("l2", description="Distance: l2 or l1 (the book's check uses l1).")
    # `heldout_split=` is its name before 0.3 (a split only), kept for one release
    baseline: str = Field("auto", validation_alias=AliasChoices("baseline", "heldout_split"),
                          description="What calibrates the flags: a split never trained on (audit, val, test), "
                          "leave-one-out (training images against the others), or auto: the audit split, else a val "
                          "split carved at ingest, else leave-one-out. An official test split is used only when "
                          "asked: drawn apart from the training images (other writers, days, instruments), it "
                          "reads a shift as copying.")
    n_pairs: int = Field(16, ge=1, le=1024, description="Pairs drawn on the sheet: flagged images first, then the closest.")
    alpha: float | None = Field(None, gt=0, lt=0.5, description="Per-image flag level: flagged when closer to a "
                                "training image than all but a fraction alpha of unseen images. None: 0.001 (or "
                                "1/(n+1) for a baseline of n < 999 images).")
    test_level: float = Field(0.01, gt=0, lt=0.5, description="Level of the set-level test on the number of flags.")
    invariance: Literal["none", "mirror", "shift"] = Field("shift", description="Copies seen through: none, mirror, "
                                                           "or mirror + shifts up to --max-shift px (pixels only).")
    max_shift: int = Field(2, ge=0, le=8, description="Largest shift in pixels (--invariance shift).")
    levels: float = Field(0.05, ge=0, lt=0.5, description="Dead zone at both ends of the pixel range (fraction): "
                          "values that close to black or white become black or white before the blur, so noise "
                          "clipped there leaves no veil; 0 keeps every value (pixels only).")
    blur: float | Literal["auto"] = Field("auto", description="Gaussian blur sigma (px) before pixel distances; 0: "
                                          "raw pixels; auto: the largest of 1.5, 1, 0.5, 0 leaving half the image "
                                          "compared after the shift and blur border.")

    @field_validator("blur", mode="before")
    @classmethod
    def _blur(cls, v):
        from ganforge.audit.memorization import check_blur

        return check_blur(v)

    @field_validator("baseline", mode="before")
    @classmethod
    def _unset_is_auto(cls, v):
        return AUTO if v in (None, "", "None") else v  # what an unset heldout_split looked like before 0.3

    @model_validator(mode="after")
    def _baseline_is_not_train(self):
        # against itself the baseline distance is 0, so every generator would pass: a gate switched off
        if self.baseline == TRAIN_SPLIT:
            raise ValueError(f"the baseline cannot be the training split {TRAIN_SPLIT!r} (the baseline distance would "
                             f"be 0 and every audit would pass); pass --baseline {AUTO}, audit, test or {LEAVE_ONE_OUT}")
        return self


AUTO, LEAVE_ONE_OUT = "auto", "leave-one-out"


def choose_baseline(asked: str, manifest: dict, dataset: str) -> tuple[str | None, str]:
    """(split or None for leave-one-out, why): what calibrates the flags for ``--baseline asked``.

    Raises:
        GanforgeError: an asked split the dataset does not have.
    """
    counts = manifest["counts"]["splits"]
    carved = set(manifest.get("carved_splits") or [])
    if asked == LEAVE_ONE_OUT:
        return None, f"asked for (--baseline {LEAVE_ONE_OUT}): each training image against the others"
    if asked != AUTO:
        if asked not in counts:
            raise GanforgeError(f"dataset {dataset} has no split {asked!r} (it has {', '.join(counts)}); pass "
                                f"--baseline {AUTO}, {LEAVE_ONE_OUT} or one of its splits")
        why = f"asked for (--baseline {asked})"
        if asked not in carved:
            why += ("; not drawn from the training images at ingest, so a shift between it and them (other writers, "
                    "days, instruments) reads as copying or as underfitting")
        return asked, why
    if AUDIT_SPLIT in counts:
        return AUDIT_SPLIT, (f"the {AUDIT_SPLIT} split: drawn at random from the training images at ingest "
                             "(--audit-fraction) and never trained on, so unseen images like the ones trained on")
    if "val" in counts and "val" in carved:
        return "val", ("the val split: drawn at random from the source at ingest (--val-fraction) and never trained "
                       "on, so unseen images like the ones trained on")
    other = [s for s in ("test", "val") if s in counts]
    also = (f"; the {other[0]} split is used only when asked (--baseline {other[0]}): drawn apart from the training "
            "images, it reads a shift as copying") if other else ""
    return None, (f"no split drawn from the training images (ingest with --audit-fraction to carve one): each "
                  f"training image against the others{also}")


def audit_thresholds(cfg: AuditConfig):
    """The ``AuditThresholds`` the flags of ``cfg`` ask for."""
    from ganforge.audit.memorization import AuditThresholds

    return AuditThresholds(alpha=cfg.alpha, test_level=cfg.test_level, invariance=cfg.invariance,
                           max_shift=cfg.max_shift, levels=cfg.levels, blur=cfg.blur)


def audit(cfg: AuditConfig, context: RunContext | None = None):
    """Run the memorisation audit; returns the ``AuditReport`` (also written to files and MLflow).

    ``context``: the pipeline run the MLflow run nests under (None: a run of its own).

    Everything the flags decide (baseline, alpha, generated count, space and shape) is checked before
    images are generated or distances computed.
    """
    from ganforge.audit.invariant import blur_radius
    from ganforge.audit.memorization import baseline_key, check_generated_count, plan_baseline, run_audit
    from ganforge.data import load, read_manifest
    from ganforge.data.loader import default_cache_dir
    from ganforge.metrics.features import get_extractor

    preflight(cfg)
    manifest = read_manifest(cfg.dataset)
    h, w = manifest["image"]["height"], manifest["image"]["width"]
    th = audit_thresholds(cfg).resolved(h, w)
    counts = manifest["counts"]["splits"]
    if TRAIN_SPLIT not in counts:
        raise GanforgeError(f"dataset {cfg.dataset} has no {TRAIN_SPLIT} split (it has {', '.join(counts)}); "
                            "the audit compares against the images a generator trains on")
    held, reason = choose_baseline(cfg.baseline, manifest, cfg.dataset)
    kind, n_base, alpha = plan_baseline(counts[TRAIN_SPLIT], counts[held] if held else None, th)
    if held is not None and kind != "heldout":
        reason = (f"{reason}; but its {counts[held]:,} images cannot reach alpha {alpha:g}, so each training image "
                  "against the others")
    if cfg.invariance == "shift" and cfg.backbone != "pixels":
        raise GanforgeError(f"--invariance shift compares pixels; with --backbone {cfg.backbone} use --invariance "
                            "mirror or none")
    if cfg.backbone == "pixels":
        margin = cfg.max_shift + blur_radius(th.blur)
        if cfg.invariance == "shift" and min(h, w) <= 2 * margin:
            raise GanforgeError(f"dataset images of {w}x{h} px are too small for --max-shift {cfg.max_shift} with "
                                f"--blur {th.blur:g} (a {margin} px border is left out); lower them")
    if cfg.checkpoint is not None:
        check_generated_count(cfg.n, n_base, alpha, th)
    device = pick_device(cfg.device)
    space = "pixels" if cfg.backbone == "pixels" else get_extractor(cfg.backbone, cfg.backbone_weights, device,
                                                                   expected_sha256=cfg.backbone_sha256)
    judged = judged_images(cfg, manifest)
    check_generated_count(len(judged.images), n_base, alpha, th)
    if cfg.backbone == "pixels":
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
                           batch_size=cfg.batch_size, device=device, baseline_cache=cache, baseline_split=held,
                           baseline_reason=reason)
        metrics = {
            "audit/passed": float(report.verdict == "pass"), "audit/nn_dist_min": report.generated_to_train.min,
            "audit/nn_dist_p1": report.generated_to_train.p1, "audit/baseline_dist_p1": report.heldout_to_train.p1,
            "audit/fraction_below_baseline": report.fraction_below_baseline,
            "audit/exact_duplicates": float(report.exact_duplicates), "audit/z_u": report.z_u,
            "audit/flagged": float(report.n_flagged), "audit/expected_flagged": report.expected_flagged,
            "audit/flag_test_p": report.flag_test_p_value,
            "audit/baseline_near_duplicates": float(report.baseline_near_duplicates),
            "audit/train_near_duplicates": float(report.train_near_duplicates),
            "audit/train_exact_duplicates": float(report.train_exact_duplicates),
        }  # fmt: skip
        record = json.loads(report.to_json()) | {"dataset": cfg.dataset, "train_split": TRAIN_SPLIT,
                                                 "heldout_split": held if kind == "heldout" else None,
                                                 "dataset_fingerprint": manifest["fingerprint"], "judged": judged.info}
        # the splits are evidence too: the registry refuses an audit whose baseline was the training split
        tags = {"train_split": TRAIN_SPLIT, "audit_baseline": kind,
                "audit_baseline_reason": reason[:5000]}  # MLflow tags hold up to 5,000 characters
        if kind == "heldout" and held is not None:  # a held-out baseline is planned only with a held-out split
            tags["heldout_split"] = held
        # params record the sigma used (blur auto resolved), so the flags rerun the same audit
        publish(cfg.model_copy(update={"blur": th.blur}), "audit", record, metrics, Path(work),
                verdict=report.verdict, tags=tags, context=context)
    return report
