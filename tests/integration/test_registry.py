"""The model registry against a real ``mlflow server`` (sqlite, and PostgreSQL + S3 artifacts + basic-auth): register, gate, promote, roll back, load, serve."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.errors import GanforgeError
from tests.conftest import free_port, stop_server, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
runner = CliRunner()
EXPERIMENT = "registry-it"


def train_run(dataset: str, out, evaluate: bool = True, audit: bool = True, **extra) -> str:
    """A tiny tracked training run, optionally evaluated (pixels FID on 32 images) and audited."""
    from ganforge.audit.run import AuditConfig
    from ganforge.audit.run import audit as run_audit
    from ganforge.evaluate import EvalConfig
    from ganforge.evaluate import evaluate as run_evaluate
    from ganforge.training import resolve_config, train

    cfg = resolve_config({"dataset": dataset, "model": "dcgan", "steps": 3, "batch_size": 16, "width": 8,
                          "latent_dim": 16, "output": str(out), "experiment": EXPERIMENT, **extra})
    run_id = train(cfg).run_id
    if evaluate:
        run_evaluate(EvalConfig(dataset=dataset, model=f"runs:/{run_id}", n=32, backbone="pixels",
                                metrics=("fid", "kid", "prdc"), experiment=EXPERIMENT))
    if audit:
        run_audit(AuditConfig(dataset=dataset, model=f"runs:/{run_id}", n=40, experiment=EXPERIMENT))
    return run_id


@pytest.fixture(scope="module")
def runs(registry_server, digits16, tmp_path_factory):
    """Four training runs: a and b evaluated and audited, c never evaluated, d evaluated but not audited."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", registry_server)
        mp.setenv("GANFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        root = tmp_path_factory.mktemp("runs")
        return {
            "a": train_run(digits16, root / "a", ema_decay=0.9),
            "b": train_run(digits16, root / "b", seed=7, lr_g=1e-3),
            "c": train_run(digits16, root / "c", evaluate=False, audit=False),
            "d": train_run(digits16, root / "d", audit=False, seed=3),
        }


@pytest.fixture(autouse=True)
def _server(registry_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_server)


@pytest.fixture
def client(registry_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(registry_server, registry_uri=registry_server)


def snapshot(client) -> dict:
    """Everything a registry user sees: models, their tags and aliases, versions and their tags."""
    out = {}
    for m in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{m.name}'")
        out[m.name] = (m.tags, m.aliases, sorted((v.version, v.current_stage, tuple(sorted(v.tags.items())))
                                                 for v in versions))
    return out


def fid(client, name: str, version) -> float:
    tags = client.get_model_version(name, str(version)).tags
    return float(next(v for k, v in tags.items() if k.startswith("eval/fid_")))


def test_register_records_provenance_loads_and_is_idempotent(runs, client, digits16):
    import mlflow.pyfunc
    from mlflow.models import get_model_info

    from ganforge.data import read_manifest
    from ganforge.inference import generate
    from ganforge.pictures import to_uint8
    from ganforge.registry import register, resolve_model_uri
    from ganforge.registry.generator_model import decode_png

    out = register(runs["a"], name="prov", pipeline_run_id="kfp-run-1")
    assert out["created"] and out["version"] == 1 and out["aliases"] == ["candidate"]
    tags = out["tags"]
    assert tags["training_run_id"] == runs["a"] and tags["pipeline_run_id"] == "kfp-run-1"
    assert tags["dataset_uri"] == digits16 and tags["dataset_fingerprint"] == read_manifest(digits16)["fingerprint"]
    assert tags["ganforge_version"] and tags["git_commit"]
    ema = resolve_model_uri(f"runs:/{runs['a']}") / "generator_ema.safetensors"  # left out: ema when present
    assert (tags["weights"], tags["checkpoint_step"]) == ("ema", "3")
    assert tags["generator_sha256"] == hashlib.sha256(ema.read_bytes()).hexdigest()
    assert tags["backbone"] == "pixels" and len(tags["backbone_sha256"]) == 64
    assert {"eval/fid_32_train", "eval/kid_mean_32_train", "eval/precision_32_train", "eval/recall_32_train",
            "audit/fraction_below_baseline", "audit/z_u"} <= set(tags) and tags["audit_verdict"] == "pass"
    mv = client.get_model_version("prov", "1")
    assert mv.run_id == runs["a"] and "fingerprint" in mv.description and "Audit: pass" in mv.description
    info = get_model_info("models:/prov@candidate")
    assert info.signature.inputs.input_names() == ["seed", "label", "n"] and info.saved_input_example_info

    again = register(runs["a"], name="prov")
    assert not again["created"] and again["version"] == 1 and again["aliases"] == ["candidate"]
    assert len(client.search_model_versions("name = 'prov'")) == 1

    model = mlflow.pyfunc.load_model("models:/prov@candidate")
    pngs = model.predict(pd.DataFrame({"seed": [4], "label": [-1], "n": [3]}))["png"]
    ckpt = resolve_model_uri("models:/prov/1")
    assert json.loads((ckpt / "meta.json").read_text())["run_id"] == runs["a"]
    want = to_uint8(generate(str(ckpt), n=3, seed=4))
    assert np.array_equal(np.stack([decode_png(p) for p in pngs]), want)
    assert np.array_equal(to_uint8(generate(str(ckpt), n=3, seed=4, weights="ema")), want)


def test_register_raw_weights_needs_their_own_evaluation_and_audit(runs, client, digits16):
    from ganforge.audit.run import AuditConfig, audit
    from ganforge.evaluate import EvalConfig, evaluate
    from ganforge.registry import register

    with pytest.raises(GanforgeError, match=r"no evaluation of its raw weights .*--weights raw.*measured other"):
        register(runs["a"], name="rawema", weights="raw")  # the run's evaluation measured its EMA weights
    ema = register(runs["a"], name="rawema")
    evaluate(EvalConfig(dataset=digits16, model=f"runs:/{runs['a']}", weights="raw", n=32, backbone="pixels",
                        metrics=("fid",), experiment=EXPERIMENT))
    with pytest.raises(GanforgeError, match=r"no audit of its raw weights \(run `ganforge audit"):
        register(runs["a"], name="rawema", weights="raw")  # evaluated, but the audit judged the EMA weights
    audit(AuditConfig(dataset=digits16, model=f"runs:/{runs['a']}", weights="raw", n=40, experiment=EXPERIMENT))
    raw = register(runs["a"], name="rawema", weights="raw")
    assert raw["created"] and raw["version"] == ema["version"] + 1 and raw["tags"]["weights"] == "raw"
    assert raw["tags"]["generator_sha256"] != ema["tags"]["generator_sha256"]
    assert raw["tags"]["evaluate_run_id"] != ema["tags"]["evaluate_run_id"]
    assert register(runs["a"], name="rawema", weights="raw")["version"] == raw["version"]  # idempotent


def test_failed_or_unevaluated_runs_need_force(runs, client):
    from ganforge.registry import register

    before = snapshot(client)
    with pytest.raises(GanforgeError, match="cannot be registered: it has no evaluation .*; it has no audit"):
        register(runs["c"], name="forced")
    with pytest.raises(GanforgeError, match="--force needs --reason"):
        register(runs["c"], name="forced", force=True)
    assert snapshot(client) == before and "forced" not in before
    out = register(runs["c"], name="forced", force=True, reason="smoke test of the serving path")
    assert out["tags"]["registered_with_force"] == "true" and "audit_verdict" not in out["tags"]
    assert out["tags"]["forced_reason"] == "smoke test of the serving path"
    assert out["tags"]["ganforge.registration"] == "complete" and out["aliases"] == ["candidate"]


def fake_judge(client, run_id: str, step: str, sha: str | None, **params) -> str:
    """An evaluate or audit run as older ganforge versions logged them (weights unrecorded, any split)."""
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    tags = {"ganforge.step": step, "training_run_id": run_id, "audit_verdict": "pass"}
    if sha:
        tags["generator_sha256"] = sha
    judge = client.create_run(exp, tags=tags)
    for k, v in params.items():
        client.log_param(judge.info.run_id, k, v)
    client.log_metric(judge.info.run_id, "eval/kid_mean_32_train" if step == "evaluate" else "audit/z_u", 1.0)
    client.set_terminated(judge.info.run_id)
    return judge.info.run_id


def test_evidence_must_be_of_these_weights_and_a_real_heldout_split(runs, client):
    """Item 1 and 2 of issue 13: numbers measured on other (or unrecorded) weights, or an audit whose
    held-out split is the training split (it passes any generator), are not evidence."""
    from ganforge.registry import promote, register

    ema = register(runs["a"], name="evid")["tags"]["generator_sha256"]
    fake_judge(client, runs["c"], "evaluate", None)
    fake_judge(client, runs["c"], "audit", "0" * 64)
    before = snapshot(client)
    with pytest.raises(GanforgeError, match=r"no evaluation .*no audit .*\(not counted: ") as refused:
        register(runs["c"], name="evid")  # e.g. measured on step 20, then a resume replaced the checkpoint
    assert "does not record which weights it measured" in str(refused.value)
    assert "measured other weights (sha256 000000000000)" in str(refused.value)
    assert snapshot(client) == before
    # run d: evaluated (these weights), its only audit compared the training split against itself
    sha_d = register(runs["d"], name="evid", force=True, reason="not audited yet")["tags"]["generator_sha256"]
    audit = fake_judge(client, runs["d"], "audit", sha_d, heldout_split="train")
    with pytest.raises(GanforgeError, match=rf"no audit .*audit run {audit} compared against its training split"):
        promote("evid", 2)
    assert client.get_model_version("evid", "1").tags["generator_sha256"] == ema
    assert snapshot(client)["evid"][1] == {"candidate": "2"}  # the refused promotion moved nothing


def test_promote_gate_history_and_rollback(runs, client):
    from ganforge.registry import promote, register, rollback
    from ganforge.registry.aliases import history

    va, vb = (register(runs[k], name="gated")["version"] for k in ("a", "b"))
    best, worst = sorted((va, vb), key=lambda v: fid(client, "gated", v))
    assert promote("gated", best)["previous"] is None
    with pytest.raises(GanforgeError, match="worse than the current holder"):
        promote("gated", worst)
    with pytest.raises(GanforgeError, match="--max-fid"):
        promote("gated", worst, alias="staging", max_fid=fid(client, "gated", worst) / 2)
    vd = register(runs["d"], name="gated", force=True, reason="never audited")["version"]
    with pytest.raises(GanforgeError, match="has no audit"):
        promote("gated", vd, force=True, reason="no")
    assert client.get_model_version_by_alias("gated", "champion").version == str(best)

    res = runner.invoke(app, ["promote", "gated", str(worst), "--force", "--reason", "ab test", "--stage", "Production"])
    assert res.exit_code == 0, res.output
    assert f"-> version {worst} (was version {best})" in res.stdout and "deprecate" in res.stderr
    mv = client.get_model_version("gated", str(worst))
    assert mv.tags["promotion_reason"] == "ab test" and mv.current_stage == "Production"
    assert [(h["version"], h["previous"]) for h in history(client, "gated", "champion")] == [(best, None), (worst, best)]

    assert rollback("gated")["version"] == best
    assert client.get_model_version_by_alias("gated", "champion").version == str(best)
    res = runner.invoke(app, ["rollback", "gated"])
    assert res.exit_code == 2 and "no earlier version" in res.stderr


def test_promotion_failing_half_way_leaves_the_alias(runs, client, monkeypatch):
    import ganforge.registry.aliases as aliases
    from ganforge.registry import promote, register

    va, vb = (register(runs[k], name="halfway")["version"] for k in ("a", "b"))
    promote("halfway", va)
    before = snapshot(client)

    def refuse(*args):
        raise RuntimeError("connection lost while moving the alias")

    monkeypatch.setattr(aliases, "set_alias", refuse)
    with pytest.raises(RuntimeError, match="connection lost"):
        promote("halfway", vb, force=True, reason="test")
    after = snapshot(client)
    assert after["halfway"][1] == before["halfway"][1] == {"champion": str(va), "candidate": str(vb)}
    assert after["halfway"][0] == before["halfway"][0]  # no history entry left behind


def test_evaluate_and_generate_from_registry_uris(runs, client, digits16, tmp_path):
    from ganforge.evaluate import EvalConfig, evaluate
    from ganforge.registry import promote, register

    v = register(runs["a"], name="uris")["version"]
    promote("uris", v)
    rec = evaluate(EvalConfig(dataset=digits16, model="models:/uris@champion", n=16, backbone="pixels",
                              metrics=("fid",), experiment="uris-eval"))
    assert client.get_run(rec["mlflow_run_id"]).data.tags["training_run_id"] == runs["a"]
    res = runner.invoke(app, ["generate", "--model", "models:/uris@champion", "--n", "4", "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "g").glob("*.png"))) == 4


def test_runs_compare_table(runs):
    res = runner.invoke(app, ["runs", "compare", "--experiment", EXPERIMENT, "--sort-by", "fid", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"seed", "lr_g", "fid", "audit_verdict", "train/loss_g"} <= set(out["columns"])
    rows = {r["run_id"]: r for r in out["rows"]}
    assert set(runs.values()) <= set(rows)
    fids = [r["fid"] for r in out["rows"] if r["fid"] is not None]
    assert fids == sorted(fids) and len(fids) >= 3
    assert rows[runs["c"]]["fid"] is None and rows[runs["d"]]["audit_verdict"] is None
    assert out["rows"][-1]["fid"] is None  # unevaluated runs last
    table = runner.invoke(app, ["runs", "compare", "--experiment", EXPERIMENT]).stdout
    assert runs["a"][:8] in table and "audit_verdict" in table.splitlines()[0]


@pytest.mark.parametrize("args, match", [
    (["register", "--run-id", "f" * 32, "--name", "bad"], "no MLflow run"),
    (["register", "--run-id", "{empty}", "--name", "bad"], "has no generator"),
    (["promote", "nosuch", "1"], "no registered model 'nosuch'"),
    (["promote", "badin", "99"], "has no version 99"),
    (["rollback", "badin", "--alias", "gone"], "has no alias 'gone'"),
    (["generate", "--model", "models:/badin@gone", "--out", "{tmp}/x.png"], "has no alias 'gone'"),
    (["rollback", "badin"], "no earlier version"),
    (["register", "--run-id", "{b}", "--name", "bad", "--weights", "ema"], "has no EMA weights"),
    (["register", "--run-id", "{b}", "--name", "bad", "--weights", "best"], "--weights 'best': use ema or raw"),
    (["evaluate", "--model", "models:/nosuch/1", "--dataset", "{data}", "--backbone", "pixels"], "no registered model"),
])  # fmt: skip
def test_bad_input_one_line_registry_unchanged(runs, client, digits16, tmp_path, args, match):
    from ganforge.registry import promote, register

    if "badin" not in {m.name for m in client.search_registered_models()}:
        promote("badin", register(runs["a"], name="badin")["version"])
    empty = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    client.set_terminated(empty)
    before = snapshot(client)
    args = [a.format(empty=empty, tmp=tmp_path, data=digits16, b=runs["b"]) for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.stderr
    assert snapshot(client) == before


def test_mlflow_models_serve_answers_invocations(runs, registry_server, tmp_path):
    import os

    from ganforge.registry import promote, register
    from ganforge.registry.generator_model import decode_png

    promote("served", register(runs["a"], name="served")["version"])
    port = free_port()
    # the serving command execs uvicorn from the environment's bin directory, as with an activated venv
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry_server, "PATH": path}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/served@champion", "--env-manager",
         "local", "--host", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout=120)
        body = json.dumps({"dataframe_records": [{"seed": 1, "label": -1, "n": 2}, {"seed": 2, "label": -1, "n": 1}]})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            preds = json.loads(resp.read())["predictions"]
    except Exception:
        log.flush()
        raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
    finally:
        if proc.poll() is None:
            stop_server(proc)
        log.close()
    assert [(p["row"], p["index"]) for p in preds] == [(0, 0), (0, 1), (1, 0)]
    assert decode_png(preds[0]["png"]).shape == (16, 16, 1)
