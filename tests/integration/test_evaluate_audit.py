"""``ganforge evaluate`` and ``ganforge audit`` wired end to end: checkpoints, image folders, caching, MLflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ganforge.audit.run import AuditConfig, audit
from ganforge.cli import app
from ganforge.data import load
from ganforge.evaluate import EvalConfig, evaluate
from tests.conftest import assert_no_runs

pytestmark = pytest.mark.integration
runner = CliRunner()


def tiny_run(dataset: str, out: Path, **extra) -> str:
    from ganforge.training import resolve_config, train

    cfg = resolve_config({"dataset": dataset, "model": "dcgan", "steps": 3, "batch_size": 16, "width": 8,
                          "latent_dim": 16, "output": str(out), "track": False, **extra})
    train(cfg)
    return str(out)


@pytest.fixture(scope="module")
def checkpoint(digits16, tmp_path_factory):
    return tiny_run(digits16, tmp_path_factory.mktemp("run"))


def write_pngs(images: torch.Tensor, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy()).save(folder / f"{i:04d}.png")
    return str(folder)


def test_evaluate_checkpoint_caches_real_features(digits16, checkpoint, tmp_path, monkeypatch):
    cfg = EvalConfig(dataset=digits16, model=checkpoint, n=64, backbone="pixels", track=False,
                     output=str(tmp_path / "ev"))
    first = evaluate(cfg)
    assert set(first["metrics"]) == {f"{k}_64_train" for k in
                                     ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage")}
    assert first["backbone"]["backbone"] == "pixels" and len(first["backbone"]["backbone_sha256"]) == 64
    assert not first["real_features_cached"]
    assert json.loads((tmp_path / "ev" / "evaluate.json").read_text())["metrics"] == first["metrics"]

    import ganforge.data

    def no_real_pass(*a, **k):
        raise AssertionError("a second evaluation must not decode or embed real images")

    monkeypatch.setattr(ganforge.data, "load", no_real_pass)
    second = evaluate(cfg)
    assert second["real_features_cached"] and second["metrics"] == first["metrics"]


def test_images_from_the_same_distribution_score_better_than_noise(digits16, tmp_path):
    val = load(digits16, "val").images
    real_like = write_pngs(val, tmp_path / "val")
    noise = write_pngs(torch.randint(0, 256, val.shape, dtype=torch.uint8), tmp_path / "noise")
    good = evaluate(EvalConfig(dataset=digits16, images=real_like, backbone="pixels", metrics=("fid", "prdc"), track=False))
    bad = evaluate(EvalConfig(dataset=digits16, images=noise, backbone="pixels", metrics=("fid", "prdc"), track=False))
    n = len(val)
    assert good["metrics"][f"fid_{n}_train"] < bad["metrics"][f"fid_{n}_train"] / 5
    assert good["metrics"][f"recall_{n}_train"] > 0.5 > bad["metrics"][f"recall_{n}_train"]
    as_dataset = evaluate(EvalConfig(dataset=digits16, images=digits16, backbone="pixels", metrics=("fid",), track=False))
    assert as_dataset["n"] == len(load(digits16, "train").images) + n


def test_per_class_fid_for_conditional_generator(digits16, tmp_path):
    run = tiny_run(digits16, tmp_path / "cond", conditional=True)
    rec = evaluate(EvalConfig(dataset=digits16, model=run, n=100, backbone="pixels", metrics=("fid",), track=False))
    per_class = [k for k in rec["metrics"] if k.startswith("fid_100_train_class")]
    assert len(per_class) == 10


def test_audit_fails_copies_and_passes_heldout(digits16, tmp_path):
    train = load(digits16, "train").images
    copies = write_pngs(train[:60], tmp_path / "copies")
    report = audit(AuditConfig(dataset=digits16, images=copies, track=False, output=str(tmp_path / "a1")))
    assert report.verdict == "fail" and report.exact_duplicates == 60
    assert (tmp_path / "a1" / "audit_sheet.png").exists() and (tmp_path / "a1" / "audit.json").exists()
    held = write_pngs(load(digits16, "val").images, tmp_path / "held")
    assert audit(AuditConfig(dataset=digits16, images=held, track=False)).verdict == "pass"


def test_results_reach_a_real_mlflow_server(digits16, checkpoint, tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    rec = evaluate(EvalConfig(dataset=digits16, model=checkpoint, n=32, backbone="pixels", metrics=("fid",),
                              experiment="eval-test"))
    client = MlflowClient(mlflow_server)
    run = client.get_run(rec["mlflow_run_id"])
    assert run.data.metrics["eval/fid_32_train"] == pytest.approx(rec["metrics"]["fid_32_train"])
    assert run.data.tags["ganforge.step"] == "evaluate" and run.info.status == "FINISHED"
    assert "evaluate.json" in [a.path for a in client.list_artifacts(run.info.run_id)]

    held = write_pngs(load(digits16, "val").images, tmp_path / "held")
    report_run = runner.invoke(app, ["audit", "--dataset", digits16, "--images", held, "--experiment", "eval-test"])
    assert report_run.exit_code == 0, report_run.output
    runs = client.search_runs([run.info.experiment_id], "tags.`ganforge.step` = 'audit'")
    assert len(runs) == 1 and runs[0].data.tags["audit_verdict"] == "pass"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"audit.json", "audit_sheet.png"}


def test_records_say_which_weights_were_measured(digits16, tmp_path, monkeypatch, sqlite_store):
    """evaluate.json, audit.json, stdout and the MLflow run name the weights: ema or raw, step, file hash."""
    from mlflow.tracking import MlflowClient

    from ganforge.checkpoints import list_checkpoints
    from ganforge.judgement import PROVENANCE

    uri = sqlite_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = tiny_run(digits16, tmp_path / "run", ema_decay=0.9)
    ckpt = list_checkpoints(run)[-1]
    step = int(ckpt.name.split("-")[1])
    fids = {}
    for weights, file in (("ema", "generator_ema"), ("raw", "generator")):
        want = {"weights": weights, "checkpoint_step": step,
                "generator_sha256": hashlib.sha256((ckpt / f"{file}.safetensors").read_bytes()).hexdigest()}
        res = runner.invoke(app, ["evaluate", "--dataset", digits16, "--model", run, "--weights", weights, "--n", "32",
                                  "--backbone", "pixels", "--metrics", "fid", "--experiment", "weights",
                                  "--output", str(tmp_path / weights)])  # fmt: skip
        assert res.exit_code == 0, res.output
        summary = json.loads(res.stdout)
        judged = json.loads((tmp_path / weights / "evaluate.json").read_text())["judged"]
        assert {k: judged[k] for k in PROVENANCE} == want and {k: summary[k] for k in PROVENANCE} == want
        tracked = MlflowClient(uri).get_run(summary["mlflow_run_id"])
        assert {k: tracked.data.tags[k] for k in PROVENANCE} == {k: str(v) for k, v in want.items()}
        assert tracked.data.params["weights"] == weights and tracked.info.status == "FINISHED"
        fids[weights] = summary["metrics"]["fid_32_train"]
    assert fids["ema"] != fids["raw"]
    audit(AuditConfig(dataset=digits16, model=run, n=40, track=False, output=str(tmp_path / "audit")))
    judged = json.loads((tmp_path / "audit" / "audit.json").read_text())["judged"]
    assert judged["weights"] == "ema" and judged["checkpoint_step"] == step  # left out: ema when present


@pytest.mark.parametrize(
    "args, match",
    [
        (["evaluate", "--metrics", "fid,sharpness"], "unknown metric 'sharpness'"),
        (["evaluate", "--split", "test"], "no split 'test'"),
        (["evaluate", "--model", "models:/gan@champion"], "no MLflow database"),  # a registry URI needs a store
        (["evaluate", "--backbone", "inception-torchvision", "--backbone-weights", "{tmp}/w.pt"], "inception"),
        (["audit", "--n", "5"], "at least 20 generated"),
        (["audit", "--images", "{tmp}/nowhere"], "nowhere"),
        (["evaluate", "--weights", "best"], "--weights: Input should be 'ema' or 'raw'"),
        (["audit", "--weights", "best"], "--weights: Input should be 'ema' or 'raw'"),
        (["evaluate", "--weights", "ema"], "has no EMA weights (generator_ema.safetensors); pass --weights raw or "
                                           "train with --ema-decay"),
        (["audit", "--weights", "ema"], "has no EMA weights"),
    ],
)
def test_bad_input_one_line_and_no_mlflow_run(digits16, checkpoint, tmp_path, monkeypatch, args, match):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "w.pt").write_bytes(b"not weights")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--images" not in args and "--model" not in args:
        args += ["--model", checkpoint]
    if "--backbone" not in args and args[0] == "evaluate":
        args += ["--backbone", "pixels"]
    res = runner.invoke(app, [*args, "--dataset", digits16, "--experiment", "bad"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.stderr
    assert_no_runs(uri, "bad")
