"""Ingest under concurrency and kills: never two "successes" for one location, never a half dataset.

Each ingest runs in its own process, forked from a forkserver that imported ganforge once (a fresh
interpreter takes ~10 s to import torch and scikit-learn on a busy 2-core machine). The child runs
the real CLI on scikit-learn's digits, with reads slowed down so that writes overlap and kills land
mid-write; it is killed with real signals.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import traceback
from pathlib import Path

import pytest

from ganforge.data import load, read_manifest
from ganforge.data.ingest import ingest
from ganforge.errors import GanforgeError

pytestmark = pytest.mark.integration

CHUNK = 128  # images per source read in the children: 15 reads for digits
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["ganforge.cli", "ganforge.data.ingest", "sklearn.datasets"])


def _child(args: list[str], workdir: str, gate: str, delay: float, env: dict) -> None:
    """Run ``ganforge <args>`` once ``gate`` exists; stdout/stderr go to files in ``workdir``."""
    try:
        os.environ.update(env)
        fd_out = os.open(os.path.join(workdir, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        fd_err = os.open(os.path.join(workdir, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        from ganforge.cli import app
        from ganforge.data import ingest as ingest_module
        from ganforge.data import sources

        src = sources.open_source("digits")
        read = src.read

        def slow_read(indices):
            time.sleep(delay)
            return read(indices)

        src.read = slow_read
        sources.SOURCES["digits"] = lambda input_path, download: src
        ingest_module.READ_CHUNK = CHUNK
        Path(workdir, "ready").touch()
        while not os.path.exists(gate):
            time.sleep(0.01)
        try:
            app(args=args, prog_name="ganforge")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - a traceback is a finding: keep it and say so by the code
        traceback.print_exc()
        code = 3
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Run:
    """One ingest child: its process, and its output once it ended."""

    def __init__(self, tmp: Path, name: str, args: list[str], gate: Path, delay: float = 0.05):
        self.dir = tmp / name
        self.dir.mkdir()
        env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k.startswith("GANFORGE_")}
        env["GANFORGE_PROGRESS"] = "0"
        self.proc = CTX.Process(target=_child, args=(["ingest", *args], str(self.dir), str(gate), delay, env))
        self.proc.start()

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / "ready").exists():
            assert self.proc.exitcode is None, self.stderr
            assert time.monotonic() < deadline, "the child never got ready"
            time.sleep(0.02)

    def join(self, timeout: float = 300) -> int:
        self.proc.join(timeout)
        assert self.proc.exitcode is not None, "the child did not finish"
        return self.proc.exitcode

    @property
    def stdout(self) -> str:
        return (self.dir / "stdout").read_text()

    @property
    def stderr(self) -> str:
        path = self.dir / "stderr"
        return path.read_text() if path.exists() else ""

    def fingerprint(self) -> str:
        return self.stdout.split("fingerprint ")[1].split()[0]


def race(tmp: Path, *arg_lists: list[str], delay: float = 0.05) -> list[Run]:
    """Start one child per argument list, release them together, wait for all."""
    gate = tmp / "gate"
    runs = [Run(tmp, f"run{i}", args, gate, delay) for i, args in enumerate(arg_lists)]
    for r in runs:
        r.wait_ready()
    gate.touch()
    for r in runs:
        r.join()
    for r in runs:
        assert "Traceback" not in r.stderr, r.stderr
    return runs


def assert_one_error_line(run: Run, *matches: str) -> None:
    assert run.proc.exitcode == 2, (run.stdout, run.stderr)
    lines = [ln for ln in run.stderr.strip().splitlines() if not ln.startswith("waiting for another")]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert any(m in lines[0] for m in matches), lines[0]


def assert_published_cleanly(uri: str) -> dict:
    """A readable dataset whose shards add up, and nothing else left at a local ``uri``."""
    manifest = read_manifest(uri)
    for split, count in manifest["counts"]["splits"].items():
        assert len(load(uri, split, use_cache=False)) == count
    if not uri.startswith("s3://"):
        names = sorted(os.listdir(uri))
        assert names[0] == "manifest.json" and len(names) == 2 and names[1].startswith("v-"), names
    return manifest


def test_concurrent_identical_ingests_agree_locally(tmp_path):
    out = str(tmp_path / "ds")
    a, b = race(tmp_path, ["digits", "-o", out], ["digits", "-o", out])
    assert a.proc.exitcode == b.proc.exitcode == 0, (a.stderr, b.stderr)
    assert a.fingerprint() == b.fingerprint() == assert_published_cleanly(out)["fingerprint"]
    assert sorted("up to date" in r.stdout for r in (a, b)) == [False, True], "one wrote, one reused"
    assert any("waiting for another ingest" in r.stderr for r in (a, b)), "the wait is announced"


def test_concurrent_different_ingests_one_wins_locally(tmp_path):
    out = str(tmp_path / "ds")
    a, b = race(tmp_path, ["digits", "-o", out, "--split-seed", "1"], ["digits", "-o", out, "--split-seed", "2"])
    winner, loser = (a, b) if a.proc.exitcode == 0 else (b, a)
    assert winner.proc.exitcode == 0, (a.stderr, b.stderr)
    assert_one_error_line(loser, "a different dataset already exists")
    assert winner.fingerprint() == assert_published_cleanly(out)["fingerprint"]


def test_concurrent_ingests_on_s3_never_both_succeed_differently(s3_env, tmp_path):
    same = f"s3://{s3_env}/same"
    a, b = race(tmp_path, ["digits", "-o", same], ["digits", "-o", same])
    assert a.proc.exitcode == b.proc.exitcode == 0, (a.stderr, b.stderr)
    assert a.fingerprint() == b.fingerprint() == assert_published_cleanly(same)["fingerprint"]

    other = f"s3://{s3_env}/other"
    (tmp_path / "second").mkdir()
    c, d = race(tmp_path / "second", ["digits", "-o", other, "--split-seed", "1"],
                ["digits", "-o", other, "--split-seed", "2"])
    winner, loser = (c, d) if c.proc.exitcode == 0 else (d, c)
    assert winner.proc.exitcode == 0, (c.stderr, d.stderr)
    assert_one_error_line(loser, "another ingest published a dataset", "a different dataset already exists")
    assert winner.fingerprint() == assert_published_cleanly(other)["fingerprint"]
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_env, Prefix="other/")["Contents"]]
    prefixes = {k.split("/")[1] for k in keys} - {""}  # "" is the folder marker pyarrow writes
    assert len(prefixes) == 2 and "manifest.json" in prefixes, f"the loser's files are gone: {sorted(prefixes)}"


def test_waiter_takes_over_when_the_lock_holder_is_killed(tmp_path):
    out = str(tmp_path / "ds")
    gate = tmp_path / "gate"
    holder = Run(tmp_path, "holder", ["digits", "-o", out], gate, delay=2.0)  # ~30 s of slow reads
    holder.wait_ready()
    gate.touch()
    while not list(Path(out).glob("_tmp-*/part-*.parquet")) and not list(Path(out).glob("_tmp-*")):
        assert holder.proc.exitcode is None, holder.stderr
        time.sleep(0.05)
    (tmp_path / "gate2").touch()
    waiter = Run(tmp_path, "waiter", ["digits", "-o", out], tmp_path / "gate2", delay=0.0)
    waiter.wait_ready()
    deadline = time.monotonic() + 120
    while "waiting for another ingest" not in waiter.stderr:
        assert time.monotonic() < deadline and waiter.proc.exitcode is None, waiter.stderr
        time.sleep(0.05)
    assert "pid" in waiter.stderr, "the waiter names who holds the lock"
    os.kill(holder.proc.pid, signal.SIGKILL)
    assert holder.join() == -signal.SIGKILL
    assert waiter.join() == 0, waiter.stderr
    assert waiter.fingerprint() == assert_published_cleanly(out)["fingerprint"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("seed", range(int(os.environ.get("GANFORGE_FAULT_SEEDS", "1"))))  # more on demand
def test_kill_at_a_random_point_leaves_a_whole_dataset_or_none(tmp_path, sig, seed):
    """Killed at a seeded random moment of a ~1 s ingest (before, during or after publishing)."""
    out = str(tmp_path / "ds")
    gate = tmp_path / "gate"
    run = Run(tmp_path, "victim", ["digits", "-o", out, "--shard-size-mb", "0.01"], gate, delay=0.05)
    run.wait_ready()
    gate.touch()
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    try:
        os.kill(run.proc.pid, sig)
    except ProcessLookupError:  # it finished (and was reaped by the forkserver) before the kill
        pass
    code = run.join()
    assert code in (0, -sig), run.stderr
    if os.path.exists(os.path.join(out, "manifest.json")):
        before = assert_published_cleanly(out) if code == 0 else read_manifest(out)
        for split, count in before["counts"]["splits"].items():
            assert len(load(out, split, use_cache=False)) == count
    else:
        with pytest.raises(GanforgeError, match="no dataset at"):
            load(out)
    res = ingest("digits", out, shard_size_mb=0.01)
    assert res.manifest["counts"]["total"] == 1797
    assert_published_cleanly(out)
