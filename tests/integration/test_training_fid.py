"""``--fid-every``: a small-sample FID curve logged during training, without disturbing training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ganforge.training import TrainConfig, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _config(dataset, out, **extra) -> TrainConfig:
    # digits16 has 128 training images: 8 batches of 16 per epoch, so 2 epochs = 16 steps
    return TrainConfig(dataset=dataset, model="dcgan", epochs=2, batch_size=16, width=8, latent_dim=8,
                       checkpoint_every=100, sample_every=100, log_every=4, output=str(out), **extra)


def test_fid_curve_is_logged_per_epoch(mlflow_server, digits16, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = train(_config(digits16, tmp_path, fid_every=1, fid_n=40, fid_backbone="pixels", experiment="fid-every"))
    history = MlflowClient(mlflow_server).get_metric_history(result.run_id, "train/fid_40_train")
    assert [m.step for m in history] == [8, 16]
    assert all(m.value > 0 for m in history)


def test_fid_probe_leaves_training_unchanged(digits16, tmp_path):
    plain = train(_config(digits16, tmp_path / "plain", track=False))
    probed = train(_config(digits16, tmp_path / "probed", track=False, fid_every=1, fid_n=40, fid_backbone="pixels"))
    a = load_file(f"{plain.checkpoint}/generator.safetensors")
    b = load_file(f"{probed.checkpoint}/generator.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_backbone_fails_before_training(digits16, tmp_path):
    from ganforge.errors import GanforgeError

    with pytest.raises(GanforgeError, match="custom"):
        train(_config(digits16, tmp_path, track=False, fid_every=1, fid_backbone="custom"))
    assert not list(tmp_path.glob("ckpt-*"))
