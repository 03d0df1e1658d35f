"""An ingest killed midway leaves no readable dataset, and a rerun then succeeds."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ganforge.data import load
from ganforge.data.ingest import ingest
from ganforge.errors import GanforgeError

pytestmark = pytest.mark.integration

# The real digits source, slowed down after its first chunk so that the kill lands mid-write.
SLOW_INGEST = textwrap.dedent(
    """
    import sys, time
    from ganforge.data import sources
    from ganforge.data.ingest import ingest
    src = sources.open_source("digits")
    read = src.read
    def slow_read(indices):
        if indices[0] > 0:
            time.sleep(120)
        return read(indices)
    src.read = slow_read
    sources.SOURCES["digits"] = lambda input_path, download: src
    ingest("digits", sys.argv[1], shard_size_mb=0.01)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_ingest_leaves_no_dataset_and_rerun_succeeds(tmp_path, sig):
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INGEST, str(out)])
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(str(out / "_tmp-*" / "part-00000.parquet")):
            assert proc.poll() is None, "ingest ended before it could be interrupted"
            assert time.monotonic() < deadline, "ingest never started writing shards"
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        proc.kill()
    assert not os.path.exists(out / "manifest.json")
    with pytest.raises(GanforgeError, match="no dataset at .*interrupted"):
        load(str(out))
    res = ingest("digits", str(out), shard_size_mb=0.01)
    assert not res.reused and res.manifest["counts"]["total"] == 1797
    assert not glob.glob(str(out / "_tmp-*")), "the rerun cleans what the killed ingest left"
    assert len(load(str(out)).images) == res.manifest["counts"]["splits"]["train"]
