"""Each KFP component called directly (``component.python_func``) with fake artifacts, in order:
ingest -> train -> evaluate -> audit -> gate -> register, plus the parent run's open and close.

Real library calls on a tiny dataset with a sqlite MLflow store under ``tmp_path``: the assertions are
on what each component writes (artifact files, metadata, the exact metric keys) and returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import components  # noqa: E402
from tests.conftest import copy_store  # noqa: E402


class FakeArtifact:
    """What a component sees of a KFP artifact: ``path``, ``uri``, ``metadata`` and ``log_metric``."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.uri = str(path)
        self.metadata: dict = {}

    def log_metric(self, key: str, value: float) -> None:
        self.metadata[key] = value


@pytest.fixture(scope="module")
def chain(tmp_path_factory, empty_mlflow_store):
    """Run the components in pipeline order once; yields what each returned and wrote."""
    import os

    tmp = tmp_path_factory.mktemp("components")
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = copy_store(empty_mlflow_store, tmp)
    out = {"tmp": tmp}
    try:
        out["parent"] = components.start_run.python_func(
            experiment="unit", pipeline_run_id="kfp-run-1", dataset=str(tmp / "data"), preset="digits-tiny",
            model_name="unit-gen", max_fid=1e9)
        ds = FakeArtifact(tmp / "dataset_out")
        components.ingest.python_func(source="digits", dataset=str(tmp / "data"), image_size=16, dataset_out=ds,
                                      input="", limit=0)
        out["dataset"] = ds
        gen, tm = FakeArtifact(tmp / "generator"), FakeArtifact(tmp / "train_metrics")
        common = dict(experiment="unit", parent_run_id=out["parent"], pipeline_run_id="kfp-run-1")
        out["train_run"] = components.train.python_func(
            dataset=ds, generator=gen, metrics=tm, work_dir=str(tmp / "work"), seed=0, gpus=0, preset="digits-tiny",
            model="", epochs=0, steps=6, **common)
        out["generator"], out["train_metrics"] = gen, tm
        em = FakeArtifact(tmp / "eval_metrics")
        out["fid"] = components.evaluate.python_func(dataset=ds, generator=gen, metrics=em, n=32, seed=0,
                                                     backbone="pixels", backbone_weights="", **common)
        out["eval_metrics"] = em
        am, report = FakeArtifact(tmp / "audit_metrics"), FakeArtifact(tmp / "audit.html")
        out["audit"] = components.audit.python_func(dataset=ds, generator=gen, metrics=am, report=report, n=24,
                                                    seed=0, **common)
        out["audit_metrics"], out["report"] = am, report
        decision = FakeArtifact(tmp / "decision.md")
        out["gate"] = components.gate.python_func(fid=out["fid"], max_fid=1e9, audit_verdict="pass", audit_reasons=[],
                                                  parent_run_id=out["parent"], decision=decision)
        out["decision"] = decision
        yield out
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def test_ingest_writes_dataset_artifact(chain):
    ds = chain["dataset"]
    assert set(ds.metadata) == {"uri", "fingerprint", "reused"}
    assert Path(ds.path).read_text() == ds.metadata["uri"]
    assert (Path(ds.metadata["uri"]) / "manifest.json").is_file()


def test_train_writes_checkpoint_and_resumes_dir(chain):
    gen = chain["generator"]
    ckpts = sorted(p.name for p in Path(gen.path).iterdir())
    assert ckpts == ["ckpt-000006"]
    assert gen.metadata["run_id"] == chain["train_run"] and gen.metadata["step"] == 6
    assert gen.metadata["dataset_fingerprint"] == chain["dataset"].metadata["fingerprint"]
    assert {"train/loss_d", "train/loss_g"} <= set(chain["train_metrics"].metadata)
    # retries resume from the same directory: <work_dir>/<pipeline run>/train
    assert (chain["tmp"] / "work" / "kfp-run-1" / "train" / "ckpt-000006").is_dir()


def test_evaluate_logs_metrics_and_returns_fid(chain):
    keys = set(chain["eval_metrics"].metadata)
    assert {"eval/fid_32_train", "eval/precision_32_train", "eval/recall_32_train"} <= keys
    assert any(k.startswith("eval/kid") for k in keys)
    assert chain["fid"] == chain["eval_metrics"].metadata["eval/fid_32_train"] > 0


def test_audit_writes_html_report_and_stats(chain):
    assert chain["audit"].verdict in ("pass", "fail") and isinstance(chain["audit"].reasons, list)
    assert set(chain["audit_metrics"].metadata) == {
        "audit/passed", "audit/nn_dist_min", "audit/nn_dist_p1", "audit/baseline_dist_p1",
        "audit/fraction_below_baseline", "audit/exact_duplicates", "audit/z_u", "audit/baseline_threshold"}
    page = Path(chain["report"].path).read_text()
    assert "Memorisation audit" in page and "data:image/png;base64," in page


def test_gate_returns_decision_and_records_it(chain):
    from mlflow.tracking import MlflowClient

    assert chain["gate"] is True
    assert Path(chain["decision"].path).read_text().startswith("**register**")
    parent = MlflowClient().get_run(chain["parent"])
    assert parent.data.tags["ganforge.gate"].startswith("passed")
    assert parent.data.metrics["eval/fid"] == pytest.approx(chain["fid"])


def test_step_runs_nest_under_parent(chain):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("unit")
    runs = client.search_runs([exp.experiment_id], "tags.`ganforge.pipeline_run_id` = 'kfp-run-1'")
    by_step = {r.data.tags.get("ganforge.step", "train"): r for r in runs}
    assert set(by_step) == {"pipeline", "train", "evaluate", "audit"}
    for step in ("train", "evaluate", "audit"):
        assert by_step[step].data.tags["mlflow.parentRunId"] == chain["parent"]


def test_register_and_finish(chain):
    """register (the registry's real call) then the exit handler closes the parent FINISHED."""
    from mlflow.tracking import MlflowClient

    pytest.importorskip("ganforge.registry")
    out = components.register.python_func(train_run_id=chain["train_run"], model_name="unit-gen",
                                          parent_run_id=chain["parent"], pipeline_run_id="kfp-run-1")
    assert out.name == "unit-gen" and out.version == "1"

    class Status:
        state, error_message = "SUCCEEDED", ""

    line = components.finish_run.python_func(experiment="unit", pipeline_run_id="kfp-run-1", status=Status())
    assert line.startswith("FINISHED: passed") and "registered unit-gen/1" in line
    assert MlflowClient().get_run(chain["parent"]).info.status == "FINISHED"


def test_finish_marks_parent_failed(tmp_path, monkeypatch, sqlite_store):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    parent = components.start_run.python_func(experiment="unit", pipeline_run_id="kfp-run-2", dataset="d",
                                              preset="digits-tiny", model_name="m", max_fid=1.0)

    class Status:
        state, error_message = "FAILED", "task train failed"

    line = components.finish_run.python_func(experiment="unit", pipeline_run_id="kfp-run-2", status=Status())
    assert line == "FAILED: task train failed"
    assert MlflowClient().get_run(parent).info.status == "FAILED"


def test_components_import_only_stdlib_and_kfp_at_top():
    """Heavy imports (ganforge, torch, mlflow) stay inside the bodies, which run in the project image."""
    import ast

    for path in sorted((ROOT / "components").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert name.split(".")[0] in {"typing", "kfp", "components", "collections"}, (path.name, name)
