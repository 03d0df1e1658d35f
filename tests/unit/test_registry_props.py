"""Property-based bad input for the registry commands: ``register``, ``promote``, ``rollback``, ``runs compare``.

Each command runs in-process (``CliRunner``) against a sqlite store seeded with a training run, two
registered versions and their evaluations and audits (made with the MLflow client, nothing trained).
Whatever the flags: exit 0 with a valid result, or exit 2 with one ``error:`` line (or click's own
usage error for a malformed command line), never a traceback, and the registry never holds a
partial entry (a pending version, a held lock ticket, an alias on a missing version, a history that
does not replay to the alias's holder). ``GANFORGE_HYPOTHESIS_EXAMPLES`` sets the examples per
property (default 25) for a long run.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ganforge.cli import app
from tests.conftest import copy_store

runner = CliRunner()
SETTINGS = settings(max_examples=int(os.environ.get("GANFORGE_HYPOTHESIS_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                    database=None)
RUN = "0123456789abcdef0123456789abcdef"
SHAS = {"1": "a" * 64, "2": "b" * 64}
FIDS = {"1": 10.0, "2": 20.0}
OUTCOMES: dict[str, int] = {}  # kind of outcome -> count, printed at the end for the closing note


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_mlflow_store):
    """A sqlite tracking store: run RUN, model ``gan`` v1/v2 (evaluated, audited; v2 scored worse)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("props")
    uri = copy_store(empty_mlflow_store, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # anything MLflow writes relative to the working directory stays in here
        c = MlflowClient(uri, registry_uri=uri)
        exp = c.create_experiment("props", artifact_location=(root / "artifacts").as_uri())
        train = c.create_run(exp, run_name="train", tags={"dataset_uri": "/data/x"})
        c.log_param(train.info.run_id, "lr_g", "0.0002")
        c.set_terminated(train.info.run_id)
        c.create_registered_model("gan")
        for v in ("1", "2"):
            c.create_model_version("gan", str(root / "artifacts"), run_id=train.info.run_id, tags={
                "training_run_id": train.info.run_id, "generator_sha256": SHAS[v], "weights": "ema",
                "ganforge.registration": "complete"})  # fmt: skip
            for step in ("evaluate", "audit"):
                judge = c.create_run(exp, tags={"ganforge.step": step, "training_run_id": train.info.run_id,
                                                "generator_sha256": SHAS[v], "audit_verdict": "pass"})
                c.log_metric(judge.info.run_id, "eval/fid_32_train" if step == "evaluate" else "audit/z_u", FIDS[v])
                c.set_terminated(judge.info.run_id)
        c.set_registered_model_alias("gan", "candidate", "2")
        yield {"uri": uri, "client": c, "run": train.info.run_id, "root": root}
    print(f"\nregistry CLI property outcomes: {OUTCOMES}")


@pytest.fixture
def env(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setenv("GANFORGE_LOCK_TIMEOUT", "60")
    monkeypatch.chdir(store["root"])
    return store


def judged(res, command: str) -> str:
    """``ok``, ``error`` or ``usage``; fails on a traceback or a message that is not one line."""
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(res.exception)))
    if res.exit_code == 0:
        kind = "ok"
    else:
        assert res.exit_code == 2, (res.exit_code, res.output)
        lines = res.stderr.strip().splitlines()
        if lines and lines[0].startswith("Usage: "):
            kind = "usage"  # click refused the command line before ganforge ran
        else:
            assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
            assert "--no-track" not in lines[0]  # registry commands have no such flag
            kind = "error"
    OUTCOMES[f"{command}:{kind}"] = OUTCOMES.get(f"{command}:{kind}", 0) + 1
    return kind


def registry_state(c) -> dict:
    return {m.name: (dict(m.aliases), sorted((v.version, v.tags.get("ganforge.registration"))
                                              for v in c.search_model_versions(f"name = '{m.name}'")))
            for m in c.search_registered_models()}


def check_consistent(c) -> None:
    """No partial entry: nothing pending, no ticket held, aliases on live versions, history replays."""
    from ganforge.registry.aliases import HISTORY_PREFIX, history, holder_stack

    for m in c.search_registered_models():
        versions = c.search_model_versions(f"name = '{m.name}'")
        if m.name.endswith(".ganforge-lock"):
            assert not versions, [v.tags for v in versions]
            continue
        assert all(v.tags.get("ganforge.registration") == "complete" for v in versions)
        assert {str(v) for v in m.aliases.values()} <= {str(v.version) for v in versions}
        for alias in {k[len(HISTORY_PREFIX):].rsplit(".", 1)[0] for k in m.tags if k.startswith(HISTORY_PREFIX)}:
            assert holder_stack(history(c, m.name, alias))[-1] == int(m.aliases[alias])


def text(*usual: str, size: int = 12):
    """Mostly (3 in 4) the values a user would type, the first one most often; sometimes anything."""
    return st.one_of(st.just(usual[0]), st.sampled_from(usual), st.sampled_from(usual), st.text(max_size=size))


NUMBERS = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e308", "15", "25", "0.5", "abc", "", "1e-9",
                                     "NaN", "+inf"]),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))


@SETTINGS
@given(name=st.just("gan") | text("gan", "nosuch", "gan.ganforge-lock", "a/b", "x'y"),
       version=st.sampled_from(["1", "2"]) | text("1", "2", "0", "-1", "99", "x"),
       max_fid=st.none() | NUMBERS, alias=st.none() | text("champion", "staging", "latest", "v2", "bad alias"),
       force=st.booleans(), reason=st.none() | text("ab test", "", "  "), stage=st.none() | text("Production", "Prod"))
def test_promote_flags(env, name, version, max_fid, alias, force, reason, stage):
    c = env["client"]
    args = ["promote", name, version]
    for flag, value in (("--max-fid", max_fid), ("--alias", alias), ("--reason", reason), ("--stage", stage)):
        if value is not None:
            args += [flag, value]
    args += ["--force"] if force else []
    before = registry_state(c)
    res = runner.invoke(app, args)
    kind = judged(res, "promote")
    if kind == "ok":
        holder = c.get_registered_model(name).aliases[alias or "champion"]
        assert str(holder) == str(int(version)) and f"-> version {int(version)}" in res.stdout
        limit = float(max_fid) if max_fid is not None else None
        assert limit is None or FIDS[str(holder)] <= limit  # the gate held
    else:
        assert registry_state(c) == before
    check_consistent(c)


@SETTINGS
@given(name=text("gan", "nosuch", "a b"), alias=st.none() | text("champion", "candidate", "v1", "latest"))
def test_rollback_flags(env, name, alias):
    c = env["client"]
    before = registry_state(c)
    res = runner.invoke(app, ["rollback", name] + (["--alias", alias] if alias is not None else []))
    if judged(res, "rollback") != "ok":
        assert registry_state(c) == before
    check_consistent(c)


@SETTINGS
@given(run_id=text(RUN, "f" * 32, "xyz", "F" * 32, "", size=40), name=st.none() | text("gan", "new", "x:y", ""),
       weights=st.none() | text("ema", "raw", "best"), force=st.booleans(), reason=st.none() | text("why", ""),
       pipeline=st.none() | text("kfp-1"))
def test_register_flags(env, run_id, name, weights, force, reason, pipeline):
    c = env["client"]
    run_id = env["run"] if run_id == RUN else run_id  # the seeded run: it has no generator to register
    args = ["register", "--run-id", run_id]
    for flag, value in (("--name", name), ("--weights", weights), ("--reason", reason),
                        ("--pipeline-run-id", pipeline)):
        if value is not None:
            args += [flag, value]
    args += ["--force"] if force else []
    before = registry_state(c)
    res = runner.invoke(app, args)
    assert judged(res, "register") != "ok"  # nothing here can be registered (no checkpoint was logged)
    assert registry_state(c) == before
    check_consistent(c)


@SETTINGS
@given(experiment=text("props", "nosuch", ""), sort_by=st.none() | text("fid", "kid", "lr_g", "status", "bogus"),
       max_runs=st.none() | text("1", "100", "0", "-5", "100000", "x"), descending=st.booleans(), as_json=st.booleans())
def test_compare_flags(env, experiment, sort_by, max_runs, descending, as_json):
    args = ["runs", "compare", "--experiment", experiment]
    args += ["--sort-by", sort_by] if sort_by is not None else []
    args += ["--max-runs", max_runs] if max_runs is not None else []
    args += ["--descending"] if descending else []
    args += ["--json"] if as_json else []
    res = runner.invoke(app, args)
    if judged(res, "compare") == "ok" and as_json:
        out = json.loads(res.stdout)
        assert [r["run_id"] for r in out["rows"]] == [env["run"]] and out["rows"][0]["fid"] == FIDS["2"]  # newest
    assert not (env["root"] / "mlruns").exists()


def test_a_mistyped_sqlite_path_is_refused_and_not_created(tmp_path, monkeypatch):
    """Issue 13 item 11: `runs compare` with a mistyped path used to create an empty database."""
    for args in (["runs", "compare", "--experiment", "e"], ["promote", "gan", "1"], ["rollback", "gan"],
                 ["register", "--run-id", RUN]):
        for uri in (f"sqlite:///{tmp_path}/typo.db", "sqlite:///typo-relative.db"):
            monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
            monkeypatch.chdir(tmp_path)
            res = runner.invoke(app, args)
            assert judged(res, "sqlite") == "error" and "no MLflow database at " in res.stderr, res.output
            assert "typo" in res.stderr and not list(tmp_path.iterdir())


def test_compare_max_runs_counts_training_runs_only(env):
    """Found by test_compare_flags: --max-runs 1 gave no row when the newest run was an evaluation."""
    res = runner.invoke(app, ["runs", "compare", "--experiment", "props", "--max-runs", "1", "--json"])
    assert judged(res, "compare") == "ok"
    assert [r["run_id"] for r in json.loads(res.stdout)["rows"]] == [env["run"]]
