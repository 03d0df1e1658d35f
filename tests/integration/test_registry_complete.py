"""An alias never points at an incomplete version, against a real ``mlflow server``.

``register`` tags its version ``complete`` before it moves ``candidate`` (its last act): killed anywhere
before the move, the previous candidate keeps the alias, and ``generate``/``evaluate`` of
``models:/NAME@candidate`` load that one. A version whose registration did not finish (``pending``),
named by number or by an alias an older ganforge left on it, is refused with one line that says how
to complete it. A repeated ``register`` reports the aliases the version holds, and ``candidate`` never
moves back to an older version. The runs are ``test_registry_faults``' synthetic ones (seconds, not minutes).
"""

from __future__ import annotations

import json
import signal

import pytest
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.errors import GanforgeError
from ganforge.registry.store import FAULT_ENV
from tests.integration.test_registry_faults import check_invariants, cli, finish, killed_exit, synthetic_runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
runner = CliRunner()


@pytest.fixture(scope="module")
def runs(registry_server, tmp_path_factory):
    """Four finished, evaluated and audited synthetic training runs ``a``..``d``, and a shared download cache."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registry_server, registry_uri=registry_server)
    first = synthetic_runs(client, tmp_path_factory.mktemp("runs"))
    second = synthetic_runs(client, tmp_path_factory.mktemp("runs"))
    return {"a": first["a"], "b": first["b"], "c": second["a"], "d": second["b"],
            "cache": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture
def env(runs, registry_server, monkeypatch, tmp_path) -> dict:
    import os

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_server)
    monkeypatch.setenv("GANFORGE_CACHE_DIR", runs["cache"])
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def client(registry_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(registry_server, registry_uri=registry_server)


def ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    return res.stdout


def refused(*args: str) -> str:
    """The command's one ``error:`` line (exit 2)."""
    res = runner.invoke(app, list(args))
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (res.exit_code, res.output)
    return lines[0]


def candidate_run(name: str) -> str:
    """The training run of the generator that ``models:/NAME@candidate`` loads."""
    from ganforge.registry import resolve_model_uri

    return json.loads((resolve_model_uri(f"models:/{name}@candidate") / "meta.json").read_text())["run_id"]


def test_killed_before_the_alias_move_leaves_candidate_on_the_previous_version(runs, client, env):
    name = "whole-alias"
    assert ok("register", "--run-id", runs["a"], "--name", name).startswith(f"registered models:/{name}/1 ")
    code, _, err = finish(cli("register", "--run-id", runs["b"], "--name", name,
                              env={**env, FAULT_ENV: "register:before-alias@TERM"}))
    assert code in killed_exit(signal.SIGTERM), (code, err)
    v2 = client.get_model_version(name, "2")
    assert v2.tags["ganforge.registration"] == "complete" and v2.aliases == []
    assert client.get_registered_model(name).aliases == {"candidate": "1"}  # the previous candidate kept it
    assert candidate_run(name) == runs["a"]
    out = ok("generate", "--model-uri", f"models:/{name}@candidate", "--n", "2", "--out", "grid.png")
    assert out.startswith("wrote 2 images to grid.png")

    # the rerun completes what is left: the alias move, and says so
    out = ok("register", "--run-id", runs["b"], "--name", name)
    assert out.startswith(f"registered models:/{name}/2 (ema weights; aliases: candidate)"), out
    assert candidate_run(name) == runs["b"]
    check_invariants(client, name)


def test_a_pending_version_is_never_loaded_nor_aliased(runs, client, env, digits16):
    from ganforge.registry import resolve_model_uri

    name = "whole-pending"
    ok("register", "--run-id", runs["a"], "--name", name)
    code, _, err = finish(cli("register", "--run-id", runs["b"], "--name", name,
                              env={**env, FAULT_ENV: "register:after-create@SIGKILL"}))
    assert code in killed_exit(signal.SIGKILL), (code, err)
    assert client.get_model_version(name, "2").tags["ganforge.registration"] == "pending"
    assert client.get_registered_model(name).aliases == {"candidate": "1"}
    assert candidate_run(name) == runs["a"]

    fix = f"complete it with `ganforge register --run-id {runs['b']} --name {name}`"
    with pytest.raises(GanforgeError, match=r"^version 2 of 'whole-pending' is incomplete: its registration did "
                       r"not finish \(ganforge.registration=pending\)") as exc:
        resolve_model_uri(f"models:/{name}/2")
    assert fix in str(exc.value) and "\n" not in str(exc.value)
    line = refused("generate", "--model-uri", f"models:/{name}/2", "--n", "2", "--out", "grid.png")
    assert "version 2 of 'whole-pending' is incomplete" in line and fix in line

    # an alias an older ganforge left on the pending version (it moved the alias before completing)
    client.set_registered_model_alias(name, "candidate", "2")
    line = refused("evaluate", "--checkpoint", f"models:/{name}@candidate", "--dataset", digits16, "--n", "8")
    assert line.startswith(f"error: version 2 of '{name}' (models:/{name}@candidate) is incomplete"), line
    assert fix in line
    line = refused("generate", "--model-uri", f"models:/{name}@candidate", "--n", "2", "--out", "grid.png")
    assert f"(models:/{name}@candidate) is incomplete" in line

    out = ok("register", "--run-id", runs["b"], "--name", name)  # completes it; the alias stays on it
    assert out.startswith(f"registered models:/{name}/2 (ema weights; aliases: candidate)"), out
    assert candidate_run(name) == runs["b"]
    check_invariants(client, name)


def test_a_repeated_register_reports_its_aliases_and_never_moves_candidate_back(runs, client, env):
    name = "whole-repeat"
    ok("register", "--run-id", runs["a"], "--name", name)
    out = ok("register", "--run-id", runs["a"], "--name", name)
    assert out.startswith(f"already registered as models:/{name}/1 (ema weights; aliases: candidate)"), out

    # b is stopped just before its alias move; c is registered meanwhile; b's rerun finds a newer candidate
    code, _, err = finish(cli("register", "--run-id", runs["b"], "--name", name,
                              env={**env, FAULT_ENV: "register:before-alias@KILL"}))
    assert code in killed_exit(signal.SIGKILL), (code, err)
    assert ok("register", "--run-id", runs["c"], "--name", name).startswith(
        f"registered models:/{name}/3 (ema weights; aliases: candidate)")
    out = ok("register", "--run-id", runs["b"], "--name", name)
    assert out.startswith(f"already registered as models:/{name}/2 (ema weights; aliases: none)"), out
    out = ok("register", "--run-id", runs["a"], "--name", name)
    assert out.startswith(f"already registered as models:/{name}/1 (ema weights; aliases: none)"), out
    assert client.get_registered_model(name).aliases == {"candidate": "3"}

    # a promoted version lists every alias it holds
    ok("promote", name, "3", "--force", "--reason", "test")
    out = ok("register", "--run-id", runs["c"], "--name", name)
    assert out.startswith(f"already registered as models:/{name}/3 (ema weights; aliases: candidate, champion)")
    check_invariants(client, name)
