"""The loop on a real (tiny) ganforge dataset: every family trains, losses move, the guard holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganforge.checkpoints import list_checkpoints
from ganforge.errors import GanforgeError
from ganforge.training import TrainConfig, train
from ganforge.training import updates as updates_module

GAN_KEYS = {"train/loss_g", "train/loss_d", "train/d_acc", "train/d_real", "train/d_fake", "train/grad_norm_g",
            "train/grad_norm_d", "train/lr_g", "train/lr_d", "time/images_per_second"}  # fmt: skip


class RecordingTracker:
    """A tracker that keeps everything in memory."""

    run_id = "recorded"

    def __init__(self):
        self.metrics: list[tuple[int, dict]] = []
        self.images: list[tuple[str, int, np.ndarray]] = []
        self.artifacts: list[tuple[str, str | None]] = []
        self.curves = None
        self.status = None

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def log_image(self, image, key, step):
        self.images.append((key, step, image))

    def log_artifacts(self, local_path, artifact_path=None):
        self.artifacts.append((str(local_path), artifact_path))

    def log_loss_curves(self, history):
        self.curves = history

    def close(self, status="FINISHED"):
        self.status = status

    def series(self, key):
        return [m[key] for _, m in self.metrics]


def tiny(dataset: str, output, **kw) -> TrainConfig:
    base = dict(dataset=dataset, model="dcgan", batch_size=16, width=8, latent_dim=8, track=False,
                log_every=1, checkpoint_every=100, sample_every=5, steps=10, output=str(output))  # fmt: skip
    return TrainConfig(**{**base, **kw})


FAMILIES = {
    "mlp": dict(model="mlp"),
    "dcgan": dict(model="dcgan"),
    "dcgan-tricks": dict(conditional=True, label_smoothing=True, noisy_labels=True, spectral_norm=True,
                         feature_matching=True, ema_decay=0.9, diffaugment="color,translation,cutout",
                         upsample="resize-conv", lr_g=4e-4),  # fmt: skip
    "dcgan-hinge": dict(loss="hinge", lr_d=1e-3),
    "wgan-gp": dict(model="wgan-gp", n_critic=2, lr_d=1e-3, beta1=0.0, beta2=0.9),
    "wgan-clip": dict(model="wgan-gp", loss="wgan-clip", n_critic=2, lr_d=1e-3),
    "vae": dict(model="vae", lr_g=1e-3),
    "ae": dict(model="ae", lr_g=1e-3),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_trains_and_its_losses_move(digits16, tmp_path, family):
    rec = RecordingTracker()
    result = train(tiny(digits16, tmp_path, **FAMILIES[family]), tracker=rec)
    assert result.step == 10 and rec.status == "FINISHED"
    assert [s for s, _ in rec.metrics] == list(range(1, 11))
    assert all(math.isfinite(v) for _, m in rec.metrics for v in m.values())
    last = rec.metrics[-1][1]
    if family in ("vae", "ae"):
        kl = {"train/loss_kl"} if family == "vae" else set()
        assert {"train/loss_g", "train/loss_recon", "train/lr_g"} | kl <= set(last)
        loss = rec.series("train/loss_g")
        assert loss[-1] < 0.9 * loss[0]  # reconstruction improves quickly
    else:
        # a critic's score has no real/fake threshold: accuracy is logged for the two-term losses only
        assert GAN_KEYS - ({"train/d_acc"} if family.startswith("wgan") else set()) <= set(last)
        gap = [r - f for r, f in zip(rec.series("train/d_real"), rec.series("train/d_fake"))]
        assert gap[-1] > 0 and gap[-1] > gap[0]  # D (or the critic) learns to tell real from fake
    assert [(k, s) for k, s, _ in rec.images] == [("samples", 5), ("samples", 10)]
    grid = rec.images[0][2]
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[0] > 16
    assert set(rec.curves) >= {"train/loss_g"}
    assert (tmp_path / "samples" / "interpolation.png").is_file()
    assert [a for _, a in rec.artifacts] == ["samples", "checkpoint"]


def _nn_distance(generator, z, real):
    from ganforge.inference import sample

    return torch.cdist(sample(generator, z, None).flatten(1), real.flatten(1)).min(1).values.mean().item()


def test_overfit_on_a_handful_of_images(tmp_path):
    """Trained on 16 images, samples move much closer to them than the untrained generator's."""
    from ganforge.data import load
    from ganforge.data.ingest import ingest
    from ganforge.inference import load_generator
    from ganforge.models import build_generator

    ingest("digits", output=str(tmp_path / "d"), image_size=8, limit=16)
    data = load(str(tmp_path / "d"))
    real = data.images.float() / 127.5 - 1
    result = train(tiny(str(tmp_path / "d"), tmp_path / "run", model="mlp", width=16, steps=250, lr_g=2e-3,
                        lr_d=2e-3, log_every=125, sample_every=1000))  # fmt: skip
    trained, spec, _ = load_generator(result.checkpoint)
    torch.manual_seed(0)
    untrained = build_generator(spec)
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    d_trained, d_untrained = _nn_distance(trained, z, real), _nn_distance(untrained, z, real)
    assert d_trained < 0.7 * d_untrained, (d_trained, d_untrained)  # 0.56 here


def _poison(monkeypatch, at_step: int, times: int = 1):
    """Make the step at ``at_step`` report a NaN loss (``times`` times)."""
    real_step, calls = updates_module.UPDATES["alternating"], {"n": 0}

    def step(t, want_norms):
        stats = real_step(t, want_norms)
        if t.step == at_step and calls["n"] < times:
            calls["n"] += 1
            stats["loss_d"] = float("nan")
        return stats

    monkeypatch.setitem(updates_module.UPDATES, "alternating", step)


def test_nan_loss_stops_with_a_clear_message(digits16, tmp_path, monkeypatch):
    _poison(monkeypatch, at_step=4)
    rec = RecordingTracker()
    with pytest.raises(GanforgeError, match=r"training diverged at step 5 \(loss_d=nan.*--on-nan rollback"):
        train(tiny(digits16, tmp_path, checkpoint_every=3), tracker=rec)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000003"]  # nothing written after the NaN
    assert rec.status == "FAILED"


def test_nan_loss_rolls_back_with_lower_lr(digits16, tmp_path, monkeypatch):
    _poison(monkeypatch, at_step=4)
    rec = RecordingTracker()
    result = train(tiny(digits16, tmp_path, checkpoint_every=3, on_nan="rollback"), tracker=rec)
    assert result.step == 10
    steps = [s for s, _ in rec.metrics]
    assert steps == [1, 2, 3, 4] + list(range(4, 11))  # step 4 is replayed from ckpt-000003
    assert rec.metrics[0][1]["train/lr_g"] == 2e-4 and rec.metrics[-1][1]["train/lr_g"] == 1e-4


def test_nan_before_any_checkpoint_cannot_roll_back(digits16, tmp_path, monkeypatch):
    _poison(monkeypatch, at_step=1)
    with pytest.raises(GanforgeError, match="before any checkpoint was written"):
        train(tiny(digits16, tmp_path, on_nan="rollback"), tracker=RecordingTracker())


def test_dataset_smaller_than_a_batch(digits16, tmp_path):
    with pytest.raises(GanforgeError, match="fewer than --batch-size 512"):
        train(tiny(digits16, tmp_path, batch_size=512))
