"""The registry's concurrency and kill tests, N times in a row on a saturated CPU.

Starts an ``mlflow server`` on 127.0.0.1 (``--store sqlite``: sqlite, local artifacts; ``--store postgres``:
MLflow as a team runs it, on a throw-away PostgreSQL cluster with basic-auth on and artifacts in a moto S3
bucket, acting as a user who owns the models; see ``tests/team_mlflow.py``), logs the two synthetic
"training runs" of the tests (checkpoints of untrained generators, with passed evaluations and audits
of exactly those weights), then starts one busy loop per core and repeats ``--runs`` times, each time
on fresh model names:

  - the concurrent scenario of ``tests/integration/test_registry_faults.py`` (three ``ganforge
    register`` processes at once, one run twice, then two ``ganforge promote`` at once);
  - one kill: ``register`` or ``promote`` stopped by SIGKILL or SIGTERM at one of the named points
    between their registry writes (cycling through all of them), then rerun;
  - ``register`` killed after a random delay (seeded by the run number), then rerun.

After each, the invariants (one version per weights, every registration complete, ``candidate``
set, aliases on live versions, history replaying to the holder, no lock ticket held) are checked.
Prints one line per run and a summary: passes, failures, wall time.

Usage: python benchmarks/registry_stress.py [--runs 20] [--store sqlite|postgres] [--no-hog]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package: the scenarios live there
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="Repetitions (each: concurrent scenario + two kills).")
    ap.add_argument("--no-hog", action="store_true", help="Do not saturate the CPU.")
    ap.add_argument("--span", type=float, default=8.0, help="Upper bound of the random kill delay, seconds.")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                    help="The server's backend: sqlite, or PostgreSQL + S3 artifacts + basic-auth.")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    from mlflow.tracking import MlflowClient
    from registry import start_server

    from tests.integration import test_registry_faults as faults

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # stopped: the servers go too
    root = tempfile.mkdtemp(prefix="ganforge-registry-stress-")
    os.environ.update({"OMP_NUM_THREADS": "1", "GANFORGE_CACHE_DIR": f"{root}/cache"})
    stack = contextlib.ExitStack()
    if args.store == "sqlite":
        proc, url = start_server(root)
        stack.callback(os.killpg, proc.pid, signal.SIGTERM)
    else:
        try:
            url = team_server(Path(root), stack)
        except BaseException:
            stack.close()  # what did start is stopped
            raise
    os.environ["MLFLOW_TRACKING_URI"] = url
    with stack:
        client = MlflowClient(url, registry_uri=url)
        runs = faults.synthetic_runs(client, Path(root))
        env = {**os.environ, "GANFORGE_FAULT_SPAN": str(args.span)}
        kills = itertools.cycle([(p, s) for p in faults.REGISTER_POINTS + faults.PROMOTE_POINTS
                                 for s in (signal.SIGKILL, signal.SIGTERM)])
        passed, walls, failures = 0, [], []
        with faults.cpu_hog() if not args.no_hog else contextlib.nullcontext():
            for i in range(1, args.runs + 1):
                point, sig = next(kills)
                t0 = time.monotonic()
                try:
                    faults.concurrent_scenario(runs, client, env, f"stress-par-{i}")
                    name = f"stress-kill-{i}"
                    if point.startswith("register"):
                        faults.register_killed_at(runs, client, env, name, point, sig)
                    else:
                        faults.promote_killed_at(runs, client, env, name, point, sig)
                    faults.random_kill(runs, client, env, f"stress-rand-{i}", seed=i)
                    passed += 1
                    status = "pass"
                except Exception:  # noqa: BLE001 - counted and shown, the next run goes on
                    failures.append((i, traceback.format_exc()))
                    status = "FAIL"
                walls.append(time.monotonic() - t0)
                print(f"run {i:3d}: {status} ({point} {signal.Signals(sig).name}, random seed {i}) "
                      f"{walls[-1]:.1f}s", flush=True)
        for i, tb in failures:
            print(f"--- run {i} failed:\n{tb}")
        load = "no CPU hog" if args.no_hog else f"CPU saturated by {os.cpu_count()} busy loops"
        print(f"{passed}/{args.runs} runs passed on {args.store}; {load}; wall per run: median "
              f"{statistics.median(walls):.1f}s, max {max(walls):.1f}s, total {sum(walls):.0f}s")
    sys.exit(0 if passed == args.runs else 1)


def team_server(root: Path, stack: contextlib.ExitStack) -> str:
    """PostgreSQL + basic-auth + moto S3 artifacts; this process (and its children) act as the owner."""
    from tests.conftest import start_moto
    from tests.team_mlflow import Postgres, TeamServer

    moto, endpoint = start_moto()
    stack.callback(moto.kill)
    s3 = {"AWS_ACCESS_KEY_ID": "stress-key", "AWS_SECRET_ACCESS_KEY": "stress-secret", "AWS_REGION": "us-east-1"}
    pg = Postgres.start()
    stack.callback(pg.stop)
    server = TeamServer.start(root / "server", pg, endpoint, s3)
    stack.callback(server.stop)
    server.add_user("owner", "owner-password-stress")
    os.environ.update({"MLFLOW_TRACKING_USERNAME": "owner", "MLFLOW_TRACKING_PASSWORD": "owner-password-stress"})
    return server.url


if __name__ == "__main__":
    main()
