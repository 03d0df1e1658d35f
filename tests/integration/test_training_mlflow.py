"""A training run against a real ``mlflow server``: params, tags, metrics and images read back."""

from __future__ import annotations

import pytest
from PIL import Image

from ganforge.checkpoints import load_checkpoint
from ganforge.data import read_manifest
from ganforge.training import TrainConfig, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GAN_KEYS = {"train/loss_g", "train/loss_d", "train/d_acc", "train/d_real", "train/d_fake", "train/grad_norm_g",
            "train/grad_norm_d", "train/lr_g", "train/lr_d", "time/images_per_second"}  # fmt: skip


def _artifacts(client, run_id, path=None):
    for f in client.list_artifacts(run_id, path):
        yield from _artifacts(client, run_id, f.path) if f.is_dir else [f.path]


def test_run_is_recorded_in_mlflow(mlflow_server, digits16, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    config = TrainConfig(dataset=digits16, model="dcgan", steps=6, batch_size=16, width=8, latent_dim=8,
                         log_every=2, sample_every=3, checkpoint_every=3, output=str(tmp_path), experiment="it")
    result = train(config)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "it"
    assert run.data.params == {k: str(v) for k, v in config.model_dump(mode="json").items()}
    tags = run.data.tags
    assert tags["dataset_uri"] == digits16
    assert tags["dataset_fingerprint"] == read_manifest(digits16)["fingerprint"]
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert set(run.data.metrics) == GAN_KEYS
    for key in GAN_KEYS:
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [2, 4, 6]
    files = list(_artifacts(client, result.run_id))
    sample_steps = sorted(int(f.split("+step+")[1].split("+")[0]) for f in files
                          if f.startswith("images/samples+") and f.endswith(".png"))  # fmt: skip
    assert sample_steps == [3, 6]
    assert {"samples/interpolation.png", "samples/final.png", "loss_curve.png"} <= set(files)
    assert {"checkpoint/generator.safetensors", "checkpoint/discriminator.safetensors", "checkpoint/state.pt",
            "checkpoint/meta.json"} <= set(files)  # fmt: skip
    local = client.download_artifacts(result.run_id, "samples/interpolation.png", str(tmp_path / "dl"))
    width, height = Image.open(local).size
    assert height == 16 + 4 and width == 10 * 18 + 2  # 10 images of 16 px with 2 px padding


def _resume_base(digits16, output, experiment):
    return dict(dataset=digits16, model="mlp", batch_size=16, width=8, latent_dim=8, log_every=1,
                sample_every=100, checkpoint_every=2, output=str(output), experiment=experiment)  # fmt: skip


@pytest.mark.parametrize("status", ["KILLED", "FAILED", "RUNNING"])  # RUNNING: what kill -9 leaves
def test_resume_continues_an_interrupted_run(mlflow_server, digits16, tmp_path, monkeypatch, status):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    base = _resume_base(digits16, tmp_path, "it-resume")
    first = train(TrainConfig(**base, steps=2))
    client = MlflowClient(mlflow_server)
    client.update_run(first.run_id, status=status)  # as if the process had been stopped before the end
    second = train(TrainConfig(**base, steps=4, resume="latest"))
    assert second.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.run_id, "train/loss_d")] == [1, 2, 3, 4]
    assert run.data.params["steps"] == "2" and run.data.tags["resume.steps"] == "4"
    assert run.data.tags["resume.resume"] == "latest"
    assert not any(k.startswith("resumed_from") for k in run.data.tags)
    meta = load_checkpoint(tmp_path / "ckpt-000004").meta
    assert meta["run_id"] == first.run_id and meta["resumed_from"] is None


def test_resume_never_reopens_a_finished_run(mlflow_server, digits16, tmp_path, monkeypatch):
    """Issue 13: a FINISHED run's numbers describe its last checkpoint; more training is a new, linked run."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    base = _resume_base(digits16, tmp_path, "it-finished")
    first = train(TrainConfig(**base, steps=2))
    second = train(TrainConfig(**base, steps=4, resume="latest"))
    assert second.run_id != first.run_id
    client = MlflowClient(mlflow_server)
    old, new = client.get_run(first.run_id), client.get_run(second.run_id)
    assert old.info.status == new.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.run_id, "train/loss_d")] == [1, 2]
    assert old.data.params["steps"] == "2" and "resume.steps" not in old.data.tags
    assert [m.step for m in client.get_metric_history(second.run_id, "train/loss_d")] == [3, 4]
    assert new.data.tags["resumed_from_run_id"] == first.run_id
    assert new.data.tags["resumed_from_step"] == "2"
    assert new.data.tags["resumed_from_checkpoint"] == str((tmp_path / "ckpt-000002").resolve())
    assert "mlflow.parentRunId" not in new.data.tags  # lineage, not nesting (see README)
    meta = load_checkpoint(tmp_path / "ckpt-000004").meta
    assert meta["run_id"] == second.run_id
    assert meta["resumed_from"] == {"run_id": first.run_id, "step": 2,
                                    "checkpoint": str((tmp_path / "ckpt-000002").resolve())}  # fmt: skip


def test_resume_into_another_output_starts_a_linked_run(mlflow_server, digits16, tmp_path, monkeypatch):
    """Issue 13 item 1: `--resume A/ckpt-2 --output B` neither continues A's run nor touches A's checkpoint."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    a, b = tmp_path / "A", tmp_path / "B"
    first = train(TrainConfig(**_resume_base(digits16, a, "it-branch"), steps=2))
    client = MlflowClient(mlflow_server)
    client.update_run(first.run_id, status="KILLED")  # even an interrupted parent is not continued elsewhere
    before = {p.name: p.read_bytes() for p in (a / "ckpt-000002").iterdir()}
    second = train(TrainConfig(**_resume_base(digits16, b, "it-branch"), steps=4, resume=str(a / "ckpt-000002")))
    assert second.run_id != first.run_id
    assert {p.name: p.read_bytes() for p in (a / "ckpt-000002").iterdir()} == before
    assert [p.name for p in sorted(a.iterdir()) if p.name.startswith("ckpt")] == ["ckpt-000002"]
    assert client.get_run(first.run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(first.run_id, "train/loss_d")] == [1, 2]
    new = client.get_run(second.run_id)
    assert new.data.tags["resumed_from_run_id"] == first.run_id
    assert new.data.tags["resumed_from_checkpoint"] == str((a / "ckpt-000002").resolve())
    assert load_checkpoint(b / "ckpt-000004").meta["run_id"] == second.run_id
