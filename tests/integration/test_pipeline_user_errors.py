"""Issue 22, part 2, through kfp.local: the real train component under a retry policy, on a user error that only
the step can see (the dataset's size against a seed preset). The task exits 2 with one ``error:`` line, and its
retries repeat the error without training (no MLflow run, no checkpoint)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import components  # noqa: E402


@pytest.fixture
def kfp_local(tmp_path, monkeypatch, sqlite_store):
    import kfp.local

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
                   raise_on_error=False)
    return tmp_path


def test_a_user_error_in_the_train_task_is_not_retried(kfp_local, digits16, capfd):
    from kfp import dsl

    work = kfp_local / "work"

    @dsl.pipeline(name="retried-train")
    def retried():
        data = dsl.importer(artifact_uri=str(digits16), artifact_class=dsl.Dataset, reimport=True,
                            metadata={"uri": str(digits16), "fingerprint": "unused"})
        task = components.train(dataset=data.output, work_dir=str(work), seed=0, gpus=0, experiment="retry",
                                parent_run_id="", pipeline_run_id="run-user-error", preset="seed003-mnist-mlp",
                                model="", epochs=0, steps=2)
        task.set_retry(num_retries=2, backoff_duration="0s", backoff_factor=1.0)
        task.set_caching_options(False)

    retried()
    out = capfd.readouterr()
    text = out.out + out.err
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("error: ")]
    assert len(errors) == 3, text[-3000:]  # the first attempt and two retries, one line each
    assert "re-ingest it with --image-size 28" in errors[0] and "not retried" not in errors[0]
    assert all("a user error is not retried" in e for e in errors[1:]), errors
    assert "Traceback" not in text
    train = work / "run-user-error" / "train"
    assert (train / "user_error.json").is_file() and not list(train.glob("ckpt-*"))
    import mlflow

    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
