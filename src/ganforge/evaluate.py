"""``ganforge evaluate``: FID, KID and precision/recall/density/coverage of judged images.

Maths lives in ``ganforge.metrics``; the real images' features come from its cache
(``ganforge.metrics.real_features``); the judged images and the report from ``ganforge.judgement``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

if TYPE_CHECKING:
    from ganforge.tracking import RunContext

from ganforge.devices import pick_device
from ganforge.errors import GanforgeError
from ganforge.judgement import ImagesSource, check_same_size, judged_images, preflight, publish
from ganforge.metrics import METRICS
from ganforge.metrics.features import EXTRACTORS


class EvalConfig(ImagesSource):
    """``ganforge evaluate``: FID, KID and precision/recall/density/coverage."""

    metrics: tuple[str, ...] = Field(tuple(METRICS), description=f"Metrics to compute: any of {', '.join(METRICS)}.")
    split: str = Field("train", description="Real split the generated images are compared with.")
    n_real: int | None = Field(None, ge=2, description="Real images used (seeded subset). None: the whole split.")
    backbone: str = Field("inception-tf", description=f"Feature backbone: one of {', '.join(EXTRACTORS)}.")


def evaluate(cfg: EvalConfig, context: RunContext | None = None) -> dict:
    """Compute the metrics; returns the record (also written to ``cfg.output`` and MLflow).

    ``context``: the pipeline run the MLflow run nests under (None: a run of its own).
    """
    from ganforge.data import read_manifest
    from ganforge.metrics import compute_metrics, metric_key
    from ganforge.metrics.features import get_extractor
    from ganforge.metrics.real_features import real_features

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
        publish(cfg, "evaluate", record, {f"eval/{k}": v for k, v in values.items()}, Path(work), context=context)
    return record


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
