"""MLflow as a team runs it: the pipeline logs to PostgreSQL + S3 artifacts + basic-auth, and only a user with
MANAGE on the model promotes.

The module's pipeline run (``ganforge pipeline run --local`` through kfp.local, as the user ``pipeline-bot``)
creates the model, so MLflow makes that user its owner (MANAGE). Then: a reader's ``promote``, ``rollback``
and ``register`` are refused in one line and move nothing; the owner grants ``owner`` MANAGE, whose
promotion succeeds and records who moved the alias. ``pipeline-bot``'s password is a sentinel that must
appear nowhere ganforge writes: console, executor logs, MLflow params and tags (runs, versions, the
model), descriptions, the compiled pipeline YAML.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ganforge.cli import app
from tests.integration.conftest import OWNER, PASSWORDS, READER
from tests.integration.kfp_runs import TINY, step_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
runner = CliRunner()
BOT, SENTINEL = "pipeline-bot", "SENTINEL-4f9a2c7e-pw"  # the bot's password: searched for everywhere after
EXPERIMENT, MODEL = "team-exp", "team-gen"


def as_user(monkeypatch, url: str, user: str, password: str | None = None) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or (SENTINEL if user == BOT else PASSWORDS[user]))


@pytest.fixture(scope="module")
def pipeline(team_server, tmp_path_factory):
    """The pipeline, run once as ``pipeline-bot``: its folder and console output."""
    team_server.add_user(BOT, SENTINEL)
    root = tmp_path_factory.mktemp("team-run")
    with pytest.MonkeyPatch.context() as mp:
        as_user(mp, team_server.url, BOT)
        mp.setenv("GANFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("OMP_NUM_THREADS", "1")
        args = ["pipeline", "run", "--local", "--dir", str(root), "--dataset", str(root / "digits16"),
                "--experiment", EXPERIMENT, "--model-name", MODEL,
                *[x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
        res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output[-3000:]
    return root, res.output


@pytest.fixture
def admin(team_server):
    from tests.team_mlflow import ADMIN, ADMIN_PASSWORD, credentials

    with credentials(ADMIN, ADMIN_PASSWORD):
        yield MlflowClient(team_server.url, registry_uri=team_server.url)


def snapshot(c) -> dict:
    """Aliases, model tags and every version's tags of the model (what a refused command must leave alone),
    read as the admin whatever user the test's environment names."""
    from tests.team_mlflow import ADMIN, ADMIN_PASSWORD, credentials

    with credentials(ADMIN, ADMIN_PASSWORD):
        m = c.get_registered_model(MODEL)
        return {"aliases": dict(m.aliases), "tags": dict(m.tags),
                "versions": {v.version: dict(v.tags) for v in c.search_model_versions(f"name = '{MODEL}'")}}


def one_error(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (res.exit_code, res.output)
    return lines[0]


def test_the_pipeline_logs_and_registers_on_postgres_with_s3_artifacts(pipeline, team_server, admin):
    root, output = pipeline
    assert step_lines(output)[("register", "ok")].endswith(f"{MODEL}/1 (alias candidate)"), output
    mv = admin.get_model_version(MODEL, "1")
    assert mv.tags["registered_by"] == BOT and mv.tags["candidate_by"] == BOT
    train = admin.get_run(mv.run_id)
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/"), train.info.artifact_uri  # served by the server
    names = {f.path for f in admin.list_artifacts(mv.run_id, "checkpoint")}
    assert "checkpoint/generator.safetensors" in names
    import boto3

    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=team_server.endpoint,
            region_name=team_server.s3_env["AWS_REGION"], aws_access_key_id=team_server.s3_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=team_server.s3_env["AWS_SECRET_ACCESS_KEY"])
            .list_objects_v2(Bucket=team_server.artifacts.split("/")[2], Prefix="mlflow-artifacts/")
            .get("Contents", [])]  # fmt: skip
    assert any(k.endswith("checkpoint/generator.safetensors") for k in keys), keys[:5]


def test_a_reader_may_not_promote_register_or_roll_back(pipeline, team_server, admin, monkeypatch):
    before = snapshot(admin)
    as_user(monkeypatch, team_server.url, READER)
    res = runner.invoke(app, ["promote", MODEL, "1", "--alias", "champion"])
    assert one_error(res).startswith(f"error: user '{READER}' may not promote {MODEL} (needs MANAGE, has READ); "
                                     "ask its owner"), res.stderr
    assert one_error(runner.invoke(app, ["rollback", MODEL])).startswith(
        f"error: user '{READER}' may not rollback {MODEL} (needs MANAGE, has READ)")
    run_id = admin.get_model_version(MODEL, "1").run_id
    assert f"may not register {MODEL} (needs EDIT, has READ)" in one_error(
        runner.invoke(app, ["register", "--run-id", run_id, "--name", MODEL]))
    shown = runner.invoke(app, ["permissions", "show", "--name", MODEL, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {"auth": True, "user": READER, "is_admin": False, "permission": "READ",
                                        "model_exists": True, "lock_permission": "READ", "may_register": False,
                                        "may_promote": False}
    assert snapshot(admin) == before  # nothing moved, nothing recorded
    assert not admin.search_model_versions(f"name = '{MODEL}.ganforge-lock'")  # and no lock left taken


def test_the_owner_grants_and_a_release_manager_promotes_recording_who(pipeline, team_server, admin, monkeypatch):
    from ganforge.registry.aliases import history

    as_user(monkeypatch, team_server.url, OWNER)
    refused = one_error(runner.invoke(app, ["promote", MODEL, "1"]))
    assert "may not promote" in refused and f"ganforge permissions grant --user {OWNER} --permission MANAGE" in refused
    as_user(monkeypatch, team_server.url, BOT)  # the model's creator owns it
    res = runner.invoke(app, ["permissions", "grant", "--user", OWNER, "--permission", "MANAGE", "--name", MODEL])
    assert res.exit_code == 0 and "and MANAGE on its registry lock" in res.stdout, res.output
    res = runner.invoke(app, ["permissions", "grant", "--user", READER, "--permission", "EDIT", "--name", MODEL])
    assert res.exit_code == 0, res.output

    as_user(monkeypatch, team_server.url, READER)  # now may register, still not promote
    assert "(needs MANAGE, has EDIT)" in one_error(runner.invoke(app, ["promote", MODEL, "1"]))
    as_user(monkeypatch, team_server.url, OWNER)
    res = runner.invoke(app, ["promote", MODEL, "1", "--reason", "first release"])
    assert res.exit_code == 0 and f"{MODEL}@champion -> version 1" in res.stdout, res.output
    mv = admin.get_model_version(MODEL, "1")
    assert mv.tags["champion_by"] == OWNER and mv.tags["champion_since"] and mv.aliases == ["candidate", "champion"]
    (record,) = history(admin, MODEL, "champion")
    assert record["user"] == OWNER and record["reason"] == "first release"
    shown = json.loads(runner.invoke(app, ["permissions", "show", "--name", MODEL, "--json"]).stdout)
    assert shown["permission"] == "MANAGE" and shown["may_promote"]
    said = runner.invoke(app, ["permissions", "show", "--name", MODEL]).stdout
    assert said == f"user {OWNER} (MANAGE) may register and promote {MODEL}\n", said
    said = runner.invoke(app, ["permissions", "show", "--name", "no-such-model"]).stdout
    assert said == f"user {OWNER}: no model no-such-model yet; registering a version creates it, owned by {OWNER} " \
                   "(MANAGE)\n", said


def test_bad_or_missing_credentials_are_one_line(pipeline, team_server, admin, monkeypatch):
    before = snapshot(admin)
    as_user(monkeypatch, team_server.url, OWNER, password="wrong-password-123")
    line = one_error(runner.invoke(app, ["promote", MODEL, "1"]))
    assert f"refused the credentials of user '{OWNER}'" in line and "wrong-password" not in line
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    assert "needs a user: set MLFLOW_TRACKING_USERNAME" in one_error(runner.invoke(app, ["rollback", MODEL]))
    assert snapshot(admin) == before


def test_no_credential_in_logs_params_tags_or_compiled_yaml(pipeline, team_server, admin, monkeypatch, tmp_path):
    root, output = pipeline
    assert SENTINEL not in output
    for path in root.rglob("*"):
        if path.is_file() and path.suffix not in (".parquet", ".safetensors", ".pt", ".png", ".db"):
            assert SENTINEL.encode() not in path.read_bytes(), path
    exp = admin.get_experiment_by_name(EXPERIMENT)
    runs = admin.search_runs([exp.experiment_id])
    assert len(runs) >= 4
    for r in runs:
        blob = json.dumps([r.data.params, r.data.tags, r.info.run_name])
        assert SENTINEL not in blob and BOT + ":" not in blob, r.info.run_id
    for m in admin.search_registered_models():
        assert SENTINEL not in json.dumps([m.tags, m.description, m.aliases])
        for v in admin.search_model_versions(f"name = '{m.name}'"):
            assert SENTINEL not in json.dumps([v.tags, v.description, v.source]), (m.name, v.version)
    as_user(monkeypatch, team_server.url, BOT)
    out = tmp_path / "pipeline.yaml"
    res = runner.invoke(app, ["pipeline", "compile", "--output", str(out)])
    assert res.exit_code == 0, res.output
    text = Path(out).read_text()
    assert SENTINEL not in text and team_server.url not in text  # credentials come from the Secret at run time
