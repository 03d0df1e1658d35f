"""The registry under kills and concurrency, against a real ``mlflow server``: sqlite, and PostgreSQL + S3 artifacts + basic-auth (``registry_server``).

``ganforge register`` and ``ganforge promote`` run as subprocesses and are killed (SIGKILL, SIGTERM)
at named points between their registry writes (the ``GANFORGE_FAULT_AT`` hook of
``ganforge.registry.store.fault_point``) or after a random delay; a rerun must then complete the
work without waiting on the dead process's lock, and the invariants below must hold. The concurrent
scenario (three registrations, then two promotions, all at once) runs while busy loops keep every
core saturated. ``benchmarks/registry_stress.py`` repeats all of it many times; here each runs once.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.registry.aliases import history, holder_stack
from ganforge.registry.store import FAULT_ENV, LOCK_SUFFIX

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
runner = CliRunner()
EXPERIMENT = "registry-faults"
REGISTER_POINTS = ("register:before-create", "register:after-create", "register:before-alias",
                   "register:after-alias")
# what a registration killed at each point leaves: versions and their registration tag; the alias moves last
LEFT_AT = {"register:before-create": {}, "register:after-create": {"1": "pending"},
           "register:before-alias": {"1": "complete"}, "register:after-alias": {"1": "complete"}}
PROMOTE_POINTS = ("promote:before-alias", "promote:after-alias")


def synthetic_runs(client, root: Path) -> dict[str, str]:
    """Two finished "training runs" with logged checkpoints, each evaluated and audited (passed).

    Nothing is trained or measured: the checkpoints hold freshly initialised generators and the
    evaluate/audit runs carry the tags and metrics ``ganforge evaluate``/``audit`` would log for
    exactly those weights. What is tested here is the registry, and this costs seconds, not minutes.
    """
    import hashlib

    import torch

    from ganforge.checkpoints import save_checkpoint
    from ganforge.models import ModelSpec, build_generator

    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    spec = ModelSpec(model="dcgan", image_size=16, channels=1, latent_dim=8, width=8)
    runs = {}
    for key, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        meta = {"spec": spec.model_dump(mode="json"), "config": {}, "step": 3}
        ckpt = save_checkpoint(root / key, 3, {"generator": build_generator(spec).state_dict(),
                               "generator_ema": build_generator(spec).state_dict()}, {"step": 3}, meta, keep=1)
        sha = hashlib.sha256((ckpt / "generator_ema.safetensors").read_bytes()).hexdigest()
        run_id = client.create_run(exp_id, run_name=f"train-{key}", tags={"dataset_uri": "/data/digits"}).info.run_id
        client.log_artifacts(run_id, str(ckpt), "checkpoint")
        client.set_terminated(run_id)
        for step, fid in (("evaluate", 30.0 + seed), ("audit", 0.0)):
            judge = client.create_run(exp_id, run_name=step, tags={
                "ganforge.step": step, "training_run_id": run_id, "generator_sha256": sha, "weights": "ema",
                "checkpoint_step": "3", "audit_verdict": "pass"}).info.run_id  # fmt: skip
            client.log_metric(judge, "eval/fid_32_train" if step == "evaluate" else "audit/z_u", fid)
            client.set_terminated(judge)
        runs[key] = run_id
    return runs


@pytest.fixture(scope="module")
def runs(registry_server, tmp_path_factory):
    """``synthetic_runs``, and a download cache the subprocesses share."""
    from mlflow.tracking import MlflowClient

    out = synthetic_runs(MlflowClient(registry_server, registry_uri=registry_server), tmp_path_factory.mktemp("runs"))
    return {**out, "cache": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture
def env(runs, registry_server, monkeypatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_server)
    monkeypatch.setenv("GANFORGE_CACHE_DIR", runs["cache"])
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def client(registry_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(registry_server, registry_uri=registry_server)


def cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganforge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@contextlib.contextmanager
def cpu_hog():
    """One busy loop per core, as another heavy job on the machine would be."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait(30)


def check_invariants(client, name: str) -> None:
    """What a registry user may rely on, whatever was killed before."""
    versions = client.search_model_versions(f"name = '{name}'")
    weights = [(v.run_id, v.tags.get("generator_sha256")) for v in versions]
    assert len(weights) == len(set(weights)), f"two versions of the same weights: {weights}"
    assert all(v.tags.get("ganforge.registration") == "complete" for v in versions), \
        {v.version: v.tags.get("ganforge.registration") for v in versions}
    aliases = client.get_registered_model(name).aliases
    assert aliases.get("candidate") in {v.version for v in versions}
    assert set(aliases.values()) <= {v.version for v in versions}, aliases  # no alias on a missing version
    if "champion" in aliases:
        assert holder_stack(history(client, name, "champion"))[-1] == int(aliases["champion"])
    tickets = client.search_model_versions(f"name = '{name}{LOCK_SUFFIX}'")
    assert not tickets, [(t.version, t.tags) for t in tickets]  # no lock left held


def rerun(*args: str) -> str:
    """Run a command in-process after a kill: it must succeed at once, not wait on the dead one's lock."""
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    assert "waiting for the registry lock" not in res.stderr, res.stderr
    return res.stdout


def killed_exit(sig: int) -> set[int]:
    """Exit statuses of a command stopped by ``sig`` (SIGTERM unwinds and exits 128 + 15)."""
    return {-signal.SIGKILL} if sig == signal.SIGKILL else {128 + signal.SIGTERM, -signal.SIGTERM}


def register_killed_at(runs, client, env, name: str, point: str, sig: int) -> None:
    code, _, err = finish(cli("register", "--run-id", runs["a"], "--name", name,
                              env={**env, FAULT_ENV: f"{point}@{signal.Signals(sig).name}"}))
    assert code in killed_exit(sig), (code, err)
    versions = client.search_model_versions(f"name = '{name}'")
    left = {str(v.version): v.tags["ganforge.registration"] for v in versions}
    assert left == LEFT_AT[point], left
    aliases = client.get_registered_model(name).aliases  # created before the first fault point
    assert aliases == ({"candidate": "1"} if point == "register:after-alias" else {}), aliases  # the last act
    out = rerun("register", "--run-id", runs["a"], "--name", name)
    verb = "already registered as" if point == "register:after-alias" else "registered"
    assert out.startswith(f"{verb} models:/{name}/1 ") and out.rstrip().endswith("aliases: candidate)"), out
    check_invariants(client, name)
    assert client.get_registered_model(name).aliases == {"candidate": "1"}
    out = rerun("register", "--run-id", runs["a"], "--name", name)
    assert out.startswith(f"already registered as models:/{name}/1 ") and "aliases: candidate)" in out, out


def promote_killed_at(runs, client, env, name: str, point: str, sig: int) -> None:
    from ganforge.registry import promote, register

    v1, v2 = (register(runs[k], name=name)["version"] for k in ("a", "b"))
    promote(name, v1, force=True, reason="first")
    code, _, err = finish(cli("promote", name, str(v2), "--force", "--reason", "second",
                              env={**env, FAULT_ENV: f"{point}@{int(sig)}"}))
    assert code in killed_exit(sig), (code, err)
    holder = client.get_registered_model(name).aliases["champion"]
    assert holder == str(v1 if point == "promote:before-alias" else v2)  # the alias moved whole or not at all
    rerun("promote", name, str(v2), "--force", "--reason", "second")
    check_invariants(client, name)
    assert client.get_registered_model(name).aliases["champion"] == str(v2)
    assert rerun("rollback", name).startswith(f"{name}@champion -> version {v1} ")
    check_invariants(client, name)


@pytest.mark.parametrize("point, sig", [("register:after-create", signal.SIGKILL),
                                        ("register:before-alias", signal.SIGTERM)])
def test_register_killed_then_rerun_completes(runs, client, env, point, sig):
    register_killed_at(runs, client, env, f"rk-{point.split(':')[1]}-{int(sig)}", point, sig)


def test_promote_killed_after_moving_the_alias_is_repaired(runs, client, env):
    promote_killed_at(runs, client, env, "pk-after-alias", "promote:after-alias", signal.SIGKILL)


def random_kill(runs, client, env, name: str, seed: int) -> None:
    """``register`` killed after a random delay (any signal), then rerun: same invariants."""
    rng = random.Random(seed)
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    p = cli("register", "--run-id", runs["b"], "--name", name, env=env)
    time.sleep(rng.uniform(0.5, 1.0) * float(env.get("GANFORGE_FAULT_SPAN", "8")))
    p.send_signal(sig)
    code, _, err = finish(p)
    assert code in killed_exit(sig) | {0}, (code, err)  # 0: it finished before the signal
    rerun("register", "--run-id", runs["b"], "--name", name)
    check_invariants(client, name)


def test_register_killed_at_a_random_moment(runs, client, env):
    seed = int(os.environ.get("GANFORGE_FAULT_SEED", "1"))
    random_kill(runs, client, env, f"rand-{seed}", seed)


def concurrent_scenario(runs, client, env, name: str) -> None:
    """Three registrations (one run twice), then two promotions, all at once; the registry stays consistent."""
    procs = [cli("register", "--run-id", runs[k], "--name", name, env=env) for k in ("a", "b", "a")]
    for p in procs:
        code, _, err = finish(p)
        assert code == 0, err
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == [1, 2]  # the same run twice in parallel: still one version
    assert {v.tags["training_run_id"] for v in versions.values()} == {runs["a"], runs["b"]}
    assert all(v.run_id == v.tags["training_run_id"] for v in versions.values())
    check_invariants(client, name)

    procs = [cli("promote", name, str(v), "--force", "--reason", f"race {v}", env=env) for v in (1, 2)]
    for p in procs:
        code, _, err = finish(p)
        assert code == 0, err
        lines = [line for line in err.splitlines() if "registry lock" in line]
        assert len(lines) <= 1 and all("held by" in line and "pid" in line for line in lines), err
    records = history(client, name, "champion")
    assert len(records) == 2 and {r["version"] for r in records} == {1, 2}
    assert records[1]["previous"] == records[0]["version"]  # the second saw the first: serialised
    check_invariants(client, name)


@pytest.mark.parametrize("hog", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_parallel_registrations_and_promotions_on_a_saturated_cpu(runs, client, env, hog):
    """In `make test` on whatever load the machine has; with a busy loop per core in `make test-slow` (and 20
    times in a row in benchmarks/registry_stress.py)."""
    with cpu_hog() if hog else contextlib.nullcontext():
        concurrent_scenario(runs, client, env, "par-hog" if hog else "par")


def test_a_waiter_names_the_holder_and_takes_over_from_a_dead_one(runs, client, env):
    """A waiter says once who holds the lock; a killed holder's lock is taken over at once; a live one times out."""
    from ganforge.registry import promote, register, store

    for k in ("a", "b"):
        promote("held", register(runs[k], name="held")["version"], force=True, reason="setup")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom ganforge.registry import store\n"
        "with store.registry_lock(store.client(), 'held', purpose='a test holder'):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = cli("rollback", "held", env={**env, "GANFORGE_LOCK_TIMEOUT": "600"})
        said = []
        while not said:  # its first word about the lock: who holds it
            line = waiter.stderr.readline()
            assert line, "the waiter ended without saying it waits"
            said = [line] if "registry lock" in line else []
        holder.kill()
        holder.wait(30)
        code, out, err = finish(waiter)
    finally:
        holder.kill()
    assert said[0].startswith("waiting for the registry lock on model 'held': held by a test holder (host ")
    assert f"pid {holder.pid}, since " in said[0] and "waiting up to 600s" in said[0]
    assert code == 0 and "held@champion -> version 1" in out, err
    assert "its process is gone" in err and "waiting for" not in err  # said once only
    check_invariants(client, "held")

    c = store.client()
    with store.registry_lock(c, "held", purpose="a live holder"):
        t0 = time.monotonic()
        code, _, err = finish(cli("rollback", "held", env={**env, "GANFORGE_LOCK_TIMEOUT": "3"}))
        waited = time.monotonic() - t0
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: model 'held' stayed locked for 3s by a live holder"), err
    assert len([line for line in lines if line.startswith("error:")]) == 1 and waited < 120
    check_invariants(client, "held")
