"""Preemption: SIGTERM/SIGINT to a running ``ganforge train`` writes a checkpoint; --resume continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ganforge.checkpoints import list_checkpoints, load_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "ganforge", "train", *args]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_resume_continues(digits16, tmp_path, signum):
    common = ["--dataset", digits16, "--model", "mlp", "--batch-size", "16", "--width", "8", "--latent-dim", "8",
              "--no-track", "--log-every", "1", "--checkpoint-every", "100000", "--output", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "GANFORGE_PROGRESS_INTERVAL": "0"}  # a plain line per logged step, to wait for step 3
    proc = subprocess.Popen(_cli(*common, "--steps", "1000000"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # plain progress lines: stderr is not a terminal here
        if line.startswith("step 3/") or time.monotonic() > deadline:
            break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "stopped at step" in out and "--resume latest" in out
    found = list_checkpoints(tmp_path)
    assert len(found) == 1
    stopped = load_checkpoint(found[0]).step
    assert stopped >= 3
    done = subprocess.run(_cli(*common, "--steps", str(stopped + 2), "--resume", "latest"), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"trained {stopped + 2} steps" in done.stdout
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == f"ckpt-{stopped + 2:06d}"
