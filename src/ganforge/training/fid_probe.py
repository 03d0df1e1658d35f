"""``--fid-every``: the small-sample FID measured while training, and ``fid_curve.png``, its value per epoch.

Seed 004 (the PyTorch KMNIST GAN) measures FID with torcheval's InceptionV3 after every epoch and charts
it; here every ``--fid-every`` epochs the probe scores ``--fid-n`` samples of the generator against as many
real training images (their features cached once per dataset and backbone), logs
``train/fid_<n>_train`` at that step, and redraws ``fid_curve.png`` beside ``loss_curve.png`` in the run's
``--output``; the finished run logs that picture to MLflow too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ganforge.inference import sample
from ganforge.training.run_files import write_fid_plot

if TYPE_CHECKING:
    from ganforge.training.config import TrainConfig
    from ganforge.training.state import Trainer

FID_KEY_PREFIX = "train/fid_"  # every key the probe logs starts so: train/fid_1k_train


def measure(t: Trainer, tracker) -> None:
    """FID of ``fid_n`` samples against ``fid_n`` cached real training features, logged and charted.

    Latents come from a private generator, so the probe never changes the training's RNG stream
    (resumed and uninterrupted runs stay identical).
    """
    if not t.rt.is_main:
        return
    from ganforge.metrics import metric_key
    from ganforge.metrics.fid import fid_from_features
    from ganforge.metrics.real_features import real_features

    c = t.config
    if t.fid_extractor is None:
        t.fid_extractor = extractor(c, t.images.device)
    ext = t.fid_extractor
    real, _, _ = real_features(t.data_uri, "train", ext, c.fid_n, 64)
    g = torch.Generator().manual_seed(c.seed + 1)
    z = torch.randn(len(real), t.fixed_z.shape[1], generator=g)
    labels = torch.arange(len(real)) % t.spec.num_classes if t.spec.conditional else None
    fake = ((sample(t.sampler(), z, labels) + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    value = fid_from_features(real, ext.extract(fake, 64))
    metric = {f"train/{metric_key('fid', len(real), 'train')}": value}
    tracker.log_metrics(metric, t.step)
    t.metric_rows.append({"step": t.step, **metric})  # its own row: metrics.csv has every logged number
    draw_curve(t)  # redrawn after each measurement, so a long run's folder shows it as it goes


def draw_curve(t: Trainer) -> Path | None:
    """Every FID the probe measured in this run's rows (a resumed run's earlier ones too), per completed epoch,
    drawn into ``fid_curve.png`` in ``--output``; None (and no file) when it measured none."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in t.metric_rows:
        for key, value in row.items():
            if key.startswith(FID_KEY_PREFIX):
                series.setdefault(key, []).append((t.epochs_done(row["step"]), value))
    return write_fid_plot(t.config.output, series) if series else None


def extractor(c: TrainConfig, device):
    """--fid-every's backbone, found and hash-checked as evaluate's --backbone-weights (its messages name train's
    --fid-backbone-weights and --fid-backbone-sha256)."""
    from ganforge.metrics.features import get_extractor

    return get_extractor(c.fid_backbone, c.fid_backbone_weights, device, expected_sha256=c.fid_backbone_sha256,
                         flags="--fid-")
