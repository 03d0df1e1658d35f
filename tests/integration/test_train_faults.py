"""Fault injection: ``ganforge train`` killed at random points (SIGKILL and SIGTERM, several seeds).

Invariants (issue 13): a checkpoint that ``--resume latest`` can pick is always complete; the rerun
resumes, continues the killed run's MLflow run (a killed run is continued) and ends with exactly the
weights of an uninterrupted run; nothing half-written stays in the run directory; and once finished,
the run is never reopened: training further starts a new run linked to it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from ganforge.checkpoints import list_checkpoints, load_checkpoint, resolve_resume

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

STEPS = 12


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "ganforge", "train", *args]


def _common(digits16, output) -> list[str]:
    # a checkpoint every step, keeping two: kills often land while one is written or pruned
    return ["--dataset", digits16, "--model", "dcgan", "--batch-size", "16", "--width", "8", "--latent-dim", "8",
            "--ema-decay", "0.9", "--log-every", "1", "--checkpoint-every", "1", "--keep-checkpoints", "2",
            "--sample-every", "1000", "--experiment", "faults", "--output", str(output)]  # fmt: skip


def _env(**extra) -> dict:
    return {**os.environ, "GANFORGE_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def reference(digits16, tmp_path_factory):
    """The generator weights of an uninterrupted run of STEPS steps."""
    out = tmp_path_factory.mktemp("reference")
    done = subprocess.run(_cli(*_common(digits16, out), "--steps", str(STEPS), "--no-track"), capture_output=True,
                          text=True, timeout=300, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    return load_checkpoint(out / f"ckpt-{STEPS:06d}").weights


def _kill_at_random(cmd: list[str], env: dict, rng: random.Random, signum: int) -> subprocess.CompletedProcess:
    """Start ``cmd``, wait for a random logged step, wait a random few ms more, send ``signum``."""
    target = rng.randint(2, STEPS - 4)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # plain progress lines: stderr is not a terminal here
        if line.startswith(f"step {target}/") or time.monotonic() > deadline:
            break
    time.sleep(rng.uniform(0, 0.05))
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _assert_complete_checkpoints(output) -> None:
    for ck in list_checkpoints(output):
        load_checkpoint(ck)  # every listed checkpoint is whole
    if list_checkpoints(output):
        assert load_checkpoint(resolve_resume("latest", output)).step >= 1


# Seeds alternate SIGKILL and SIGTERM; GANFORGE_FAULT_SEEDS=50 tries more on demand.
CASES = [(seed, (signal.SIGKILL, signal.SIGTERM)[seed % 2]) for seed in range(int(os.environ.get("GANFORGE_FAULT_SEEDS",
                                                                                                  "2")))]


@pytest.mark.parametrize("seed,signum", CASES)
def test_killed_training_resumes_exactly_and_keeps_its_run(mlflow_server, digits16, reference, tmp_path, monkeypatch,
                                                           seed, signum):  # fmt: skip
    from mlflow.tracking import MlflowClient

    from ganforge.training import resolve_config, train

    rng = random.Random(seed)
    env = _env(MLFLOW_TRACKING_URI=mlflow_server)
    out = tmp_path / "run"
    common = _common(digits16, out)
    killed = _kill_at_random(_cli(*common, "--steps", str(STEPS)), env, rng, signum)
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGTERM), killed.stderr
    _assert_complete_checkpoints(out)
    client = MlflowClient(mlflow_server)
    resumable = bool(list_checkpoints(out))  # False: killed before the first checkpoint was complete
    if resumable:
        run_id = load_checkpoint(resolve_resume("latest", out)).meta["run_id"]
        status = client.get_run(run_id).info.status
        assert status == ("KILLED" if signum == signal.SIGTERM else "RUNNING")  # kill -9 leaves RUNNING

    rerun = ["--resume", "latest"] if resumable else []  # without a checkpoint: start again in the same place
    done = subprocess.run(_cli(*common, "--steps", str(STEPS), *rerun), capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp dir left by the kill
    final = load_checkpoint(out / f"ckpt-{STEPS:06d}")
    if resumable:
        assert f"MLflow run {run_id}" in done.stdout  # the killed run is continued, not replaced
        assert final.meta["run_id"] == run_id
    run_id = final.meta["run_id"]
    for name, weights in reference.items():  # exactly the uninterrupted run's weights
        for key, value in weights.items():
            assert torch.equal(final.weights[name][key], value), (name, key)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run_id, "train/loss_d")} == set(range(1, STEPS + 1))

    # training further, in-process (the same code path, without another interpreter start)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    flags = dict(zip([a[2:].replace("-", "_") for a in common[::2]], common[1::2]))
    more = train(resolve_config({**flags, "steps": STEPS + 2, "resume": "latest"}))
    assert more.run_id != run_id  # a finished run is never reopened
    assert client.get_run(more.run_id).data.tags["resumed_from_run_id"] == run_id
    assert max(m.step for m in client.get_metric_history(run_id, "train/loss_d")) == STEPS
