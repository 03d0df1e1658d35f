"""Step wrappers: a retried training task resumes from its newest checkpoint instead of starting over."""

from __future__ import annotations

from pathlib import Path

from ganforge.pipeline.steps import train_dir, train_step


def test_retried_train_task_resumes(tmp_path, monkeypatch, sqlite_store):
    from ganforge.data.ingest import ingest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    data = ingest("digits", str(tmp_path / "data"), image_size=16, limit=128).uri
    kw = dict(preset="digits-tiny", model="", epochs=0, seed=0, gpus=0, experiment="steps", parent_run_id="p",
              pipeline_run_id="kfp-7")
    # the first attempt "dies" after 4 steps (its checkpoint is on the work volume); the retry asks for 8
    first = train_step(data, str(tmp_path / "work"), str(tmp_path / "model-a"), steps=4, **kw)
    retry = train_step(data, str(tmp_path / "work"), str(tmp_path / "model-b"), steps=8, **kw)
    assert (first.step, retry.step) == (4, 8)
    # starting afresh over existing checkpoints is refused by train(), so finishing proves it resumed
    ckpts = sorted(p.name for p in train_dir(str(tmp_path / "work"), "kfp-7").iterdir() if p.name.startswith("ckpt"))
    assert ckpts == ["ckpt-000004", "ckpt-000008"]
    assert [p.name for p in Path(tmp_path / "model-b").iterdir()] == ["ckpt-000008"]


def test_more_than_one_gpu_trains_through_torchrun(tmp_path, monkeypatch):
    """gpus > 1 becomes --nproc (train() relaunches through torchrun) on CUDA; the checkpoint is copied."""
    import ganforge.training
    from ganforge.data.ingest import ingest
    from ganforge.training.loop import TrainResult

    data = ingest("digits", str(tmp_path / "data"), image_size=16, limit=128).uri
    seen = {}

    def fake_train(config, context=None):
        seen["config"], seen["context"] = config, context
        ckpt = tmp_path / "work" / "kfp-8" / "train" / "ckpt-000300"
        ckpt.mkdir(parents=True)
        return TrainResult(output=config.output, checkpoint=str(ckpt), step=300, run_id=None, seconds=1.0,
                           images_per_second=1.0)

    monkeypatch.setattr(ganforge.training, "train", fake_train, raising=False)
    train_step(data, str(tmp_path / "work"), str(tmp_path / "model"), preset="digits-tiny", model="", epochs=0,
               steps=0, seed=0, gpus=4, experiment="e", parent_run_id="p", pipeline_run_id="kfp-8")
    from ganforge.training.config import PRESETS

    c = seen["config"]
    assert (c.nproc, c.device, c.steps, c.resume) == (4, "cuda", PRESETS["digits-tiny"].overrides["steps"], None)
    assert (tmp_path / "model" / "ckpt-000300").is_dir()
    from ganforge.tracking import RunContext

    assert seen["context"] == RunContext("p", "kfp-8")  # the parent run travels as an argument


def test_retry_after_finished_training_reuses_it(tmp_path, monkeypatch, sqlite_store):
    """A task retried after its training finished (pod lost while publishing) trains nothing and opens no
    MLflow run: the finished run's id and checkpoint are what register gets."""
    from mlflow.tracking import MlflowClient

    from ganforge.data.ingest import ingest

    uri = sqlite_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    data = ingest("digits", str(tmp_path / "data"), image_size=16, limit=128).uri
    kw = dict(preset="digits-tiny", model="", epochs=0, steps=3, seed=0, gpus=0, experiment="steps",
              parent_run_id="p", pipeline_run_id="kfp-9")
    first = train_step(data, str(tmp_path / "work"), str(tmp_path / "model-a"), **kw)
    exp = MlflowClient(uri).get_experiment_by_name("steps").experiment_id
    runs = len(MlflowClient(uri).search_runs([exp]))
    retry = train_step(data, str(tmp_path / "work"), str(tmp_path / "model-b"), **kw)
    assert (retry.run_id, retry.step, Path(retry.checkpoint).name) == (first.run_id, 3, "ckpt-000003")
    assert len(MlflowClient(uri).search_runs([exp])) == runs
    assert [p.name for p in Path(tmp_path / "model-b").iterdir()] == ["ckpt-000003"]
