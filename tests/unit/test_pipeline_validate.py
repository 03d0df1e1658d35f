"""Issue 22, part 2: a pipeline run that a later step would refuse fails before its first step, with that step's
own message; a user error inside a step ends it with exit 2 and a retried attempt does no work."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import ganforge.pipeline.runner as runner_mod
from ganforge.cli import app
from ganforge.errors import GanforgeError, TransientError
from ganforge.pipeline import steps
from ganforge.pipeline.params import PipelineParams, check_params
from ganforge.pipeline.validate import check_run

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def no_work(*a, **k):
    raise AssertionError("started work before refusing")


def assert_one_line_error(res, *match: str) -> str:
    assert res.exit_code == 2, (res.output, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception  # never a traceback
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for m in match:
        assert m in lines[0], lines[0]
    return lines[0]


# The three cases, each the message of the step that would have refused it, and more of each kind.
REFUSED = [
    (["--image-size", "12", "--model", "dcgan"], "train would fail", "builds image_size"),
    (["--preset", "seed003-mnist-mlp", "--image-size", "16"], "train would fail", "re-ingest it with --image-size 28"),
    (["--model-name", "a/b"], "register would fail", "invalid model name 'a/b'"),
    (["--limit", "10"], "train would fail", "fewer training images than --batch-size 64"),
    (["--backbone", "inception-torchvision"], "evaluate would fail", "not in torchvision's cache"),
    (["--backbone", "inception-torchvision", "--backbone-weights", "/nonexistent/w.pth"], "evaluate would fail",
     "does not exist"),
    (["--input", "/nonexistent/images"], "ingest would fail", "does not exist"),
    (["--source", "folder", "--input", "/nonexistent/images", "--image-size", "64"], "ingest would fail",
     "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize("flags, step, match", REFUSED)
def test_local_run_refuses_before_the_first_step(flags, step, match, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "load_pipeline", no_work)  # nothing of KFP runs
    res = run("pipeline", "run", "--local", "--dir", tmp_path / "demo", *flags)
    assert_one_line_error(res, step, match)
    assert not (tmp_path / "demo").exists()  # no dataset, no log, no MLflow store


@pytest.mark.parametrize("flags, step, match", REFUSED[1:4])
def test_submit_refuses_before_contacting_the_cluster(flags, step, match, monkeypatch):
    import kfp

    monkeypatch.setattr(kfp, "Client", no_work)
    res = run("pipeline", "submit", "--host", "http://127.0.0.1:9", "--gpus", "1", *flags)
    assert_one_line_error(res, step, match)


def test_compile_checks_the_defaults_it_packages(tmp_path, monkeypatch):
    seen = []
    import ganforge.pipeline.validate as validate_mod

    real = validate_mod.check_run
    monkeypatch.setattr(validate_mod, "check_run", lambda p, local: seen.append((p, local)) or real(p, local=local))
    res = run("pipeline", "compile", "-o", tmp_path / "p.yaml")
    assert res.exit_code == 0, res.output
    assert seen == [(PipelineParams(), False)]


def test_defaults_and_the_demo_pass():
    assert check_run(PipelineParams(), local=False) == []
    assert check_run(check_params({"dataset": "/tmp/x", "work_dir": "/tmp/y"}), local=True) == []


def test_recommended_preset_at_another_size_gets_a_note():
    notes = check_run(check_params({"preset": "recommended-28", "image_size": 16, "source": "mnist"}), local=False)
    assert len(notes) == 1 and "recommended-28 was chosen for 28 px" in notes[0] and "16 px" in notes[0]
    assert check_run(check_params({"preset": "recommended-28", "image_size": 28, "source": "mnist"}),
                     local=False) == []


def test_train_notes_a_recommended_preset_at_another_size(digits16, tmp_path):
    res = run("train", "--dataset", digits16, "--preset", "recommended-28", "--output", tmp_path / "run",
              "--dry-run", "--no-track")
    assert res.exit_code == 0, (res.output, res.exception)
    assert "note: preset recommended-28 was chosen for 28 px images and these are 16 px" in res.stderr


# --- inside the steps: exit 2 for a user error, a retry repeats it at once ---------------------------------

def test_user_errors_end_a_step_with_exit_2_and_one_line(capsys):
    with pytest.raises(SystemExit) as exc, steps.user_errors():
        raise GanforgeError("--steps 5 is wrong; pass 6")
    assert exc.value.code == steps.USER_ERROR_EXIT == 2
    assert capsys.readouterr().err == "error: --steps 5 is wrong; pass 6\n"


def test_transient_errors_keep_the_retry(capsys):
    with pytest.raises(TransientError), steps.user_errors():
        raise TransientError("cannot reach the MLflow server")
    assert capsys.readouterr().err == ""


def test_a_retried_train_task_repeats_a_user_error_without_training(tmp_path, monkeypatch):
    import ganforge.training as training

    calls = []

    def refuse(config, context=None):
        calls.append(config)
        raise GanforgeError("dataset images of 12 px do not build dcgan; re-ingest with --image-size 16")

    monkeypatch.setattr(training, "train", refuse)
    kw = dict(gpus=0, experiment="e", parent_run_id="p", pipeline_run_id="run-1", preset="digits-tiny", steps=4)
    with pytest.raises(GanforgeError, match="re-ingest with --image-size 16"):
        steps.train_step(str(tmp_path / "data"), str(tmp_path / "work"), str(tmp_path / "model"), **kw)
    assert len(calls) == 1
    marker = tmp_path / "work" / "run-1" / "train" / steps.USER_ERROR
    assert "re-ingest" in json.loads(marker.read_text())["error"]
    with pytest.raises(GanforgeError, match="a user error is not retried"):  # the retry: no work, same words
        steps.train_step(str(tmp_path / "data"), str(tmp_path / "work"), str(tmp_path / "model"), **kw)
    assert len(calls) == 1
    # other inputs (a new run of the task with other flags) are not refused by an old attempt's error
    with pytest.raises(GanforgeError, match="re-ingest with --image-size 16"):
        steps.train_step(str(tmp_path / "data"), str(tmp_path / "work"), str(tmp_path / "model"),
                         **{**kw, "steps": 5})
    assert len(calls) == 2


def test_an_interrupted_training_is_left_to_the_retry(tmp_path, monkeypatch):
    import ganforge.training as training
    from ganforge.training.loop import TrainResult

    monkeypatch.setattr(training, "train", lambda config, context=None: TrainResult(
        output=config.output, checkpoint=None, step=3, run_id=None, seconds=1.0, images_per_second=1.0,
        interrupted=True))
    kw = dict(gpus=0, experiment="e", parent_run_id="p", pipeline_run_id="run-2", preset="digits-tiny", steps=4)
    with pytest.raises(TransientError, match="the task's retry resumes it"):
        steps.train_step(str(tmp_path / "data"), str(tmp_path / "work"), str(tmp_path / "model"), **kw)
    assert not (tmp_path / "work" / "run-2" / "train" / steps.USER_ERROR).exists()


def test_local_runs_compile_without_retries(tmp_path, monkeypatch):
    import pipelines.gan_pipeline as gan_pipeline
    from ganforge.pipeline.params import ClusterConfig

    seen = []
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(runner_mod, "load_pipeline",
                        lambda build, cluster=None: seen.append((build, cluster)) or no_work())
    with pytest.raises(AssertionError):
        runner_mod.run_local(check_params({"dataset": str(tmp_path / "d"), "work_dir": str(tmp_path / "w")}),
                             tmp_path / "root", build=gan_pipeline.build)
    assert seen == [(gan_pipeline.build, ClusterConfig(train_retries=0))]


# --- every combination: a clean refusal or a pass, never another exception --------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ganforge.data.sources import SOURCE_NAMES  # noqa: E402
from ganforge.pipeline.params import PIPELINE_BACKBONES  # noqa: E402
from ganforge.training.config import MODEL_NAMES, PRESETS  # noqa: E402


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(preset=st.sampled_from([None, *PRESETS]), model=st.sampled_from([None, *MODEL_NAMES]),
       source=st.sampled_from(SOURCE_NAMES), image_size=st.sampled_from([8, 12, 16, 28, 32, 64, 100, 128, 256, 1024]),
       limit=st.sampled_from([None, 1, 63, 64, 10**6]), length=st.sampled_from([{}, {"steps": 1}, {"epochs": 3}]),
       backbone=st.sampled_from(PIPELINE_BACKBONES), model_name=st.text(min_size=1, max_size=12),
       gpus=st.integers(0, 16))
def test_check_run_refuses_in_one_line_or_passes(preset, model, source, image_size, limit, length, backbone,
                                                 model_name, gpus):
    values = {"preset": preset, "model": model, "source": source, "image_size": image_size, "limit": limit,
              "backbone": backbone, "model_name": model_name, "gpus": gpus, **length}
    try:
        params = check_params(values)
    except GanforgeError:
        return
    try:
        notes = check_run(params, local=False)
    except GanforgeError as exc:
        text = str(exc)
        assert "\n" not in text and text.split(" would fail: ")[0] in ("ingest", "train", "evaluate", "audit",
                                                                       "register"), text
    else:
        assert all(isinstance(n, str) and "\n" not in n for n in notes)
