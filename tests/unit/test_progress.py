"""Progress of long steps (``ganforge.progress``): bar on a terminal, periodic plain lines otherwise,
nothing when off; feature extraction, k-NN, ingest and training show it on stderr, results unchanged."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from itertools import count

import numpy as np
import pytest
import torch
from rich.console import Console

from ganforge import progress
from ganforge.data.ingest import ingest
from ganforge.data.sources import SOURCES, Source
from ganforge.metrics.features import get_extractor
from ganforge.metrics.knn import knn
from ganforge.progress import progress_bar
from ganforge.training.progress import Progress

LINE = re.compile(r"^(?P<label>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+) \(\d+%\), [\d,]+\.\d (?P=unit)/s, "
                  r"(eta \d+:\d\d:\d\d|eta -|done in \d+:\d\d:\d\d)$")


def clock(step: float = 1.0):
    """A fake monotonic clock advancing ``step`` seconds per call."""
    ticks = count()
    return lambda: next(ticks) * step


@pytest.fixture
def plain(monkeypatch):
    """Plain mode with a line at every update (interval 0): lines depend on updates, not timing."""
    monkeypatch.setenv("GANFORGE_PROGRESS", "plain")
    monkeypatch.setenv("GANFORGE_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("RANK", raising=False)


@pytest.fixture
def bar(monkeypatch):
    """Bar mode drawn on a terminal-like console writing to a StringIO; yields the StringIO."""
    buf = io.StringIO()
    monkeypatch.setenv("GANFORGE_PROGRESS", "bar")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(progress, "default_console",
                        lambda: Console(file=buf, force_terminal=True, color_system=None, width=150))
    return buf


@pytest.fixture
def off(monkeypatch):
    monkeypatch.setenv("GANFORGE_PROGRESS", "0")


def plain_lines(err: str) -> list[re.Match]:
    lines = err.strip().splitlines()
    matches = [LINE.match(line) for line in lines]
    assert lines and all(matches), err
    return matches


# ---- the shared module -----------------------------------------------------------------------------


def test_plain_lines_every_interval_and_a_last_one(capsys):
    out = io.StringIO()
    with progress_bar("work", 100, "img", tty=False, interval=10, clock=clock(1.0), stream=out) as b:
        for _ in range(100):
            b.advance(1)  # one per second on the fake clock: a line every 10, not per update
    lines = out.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0] == "work: 10/100 img (10%), 1.0 img/s, eta 0:01:30"
    assert lines[-1] == "work: 100/100 img (100%), 1.0 img/s, done in 0:01:40"
    assert all(LINE.match(line) for line in lines)
    assert capsys.readouterr() == ("", "")  # the stream given, nothing else


def test_plain_goes_to_stderr_and_short_steps_print_nothing(capsys):
    with progress_bar("slow", 4, "img", tty=False, interval=10, clock=clock(5.0)) as b:
        for _ in range(4):
            b.advance()
    fast_clock = clock(0.01)
    with progress_bar("fast", 1000, "img", tty=False, clock=fast_clock) as b:
        for _ in range(100):
            b.advance(10)
    out, err = capsys.readouterr()
    assert out == ""
    assert [m["label"] for m in plain_lines(err)] == ["slow", "slow"]  # at 10 s, then the last line


def test_no_last_line_when_the_step_fails(capsys):
    with pytest.raises(RuntimeError), progress_bar("x", 10, tty=False, interval=0, quiet=0, clock=clock()) as b:
        b.advance(5)
        b.update(5)  # no new line without progress
        raise RuntimeError("boom")
    assert capsys.readouterr().err.splitlines() == ["x: 5/10 it (50%), 5.0 it/s, eta 0:00:01"]


def test_bar_renders_with_rate_and_eta(bar, capsys):
    with progress_bar("extract test", 100, "img") as b:
        for _ in range(10):
            b.advance(10)
    text = bar.getvalue()
    assert "extract test" in text and "100/100" in text and "img/s" in text and "done in" in text
    assert capsys.readouterr() == ("", "")


def test_nested_bars_share_one_display_and_the_inner_one_leaves(bar):
    with progress_bar("outer", 2, "step") as outer:
        with progress_bar("inner", 3, "img") as inner:
            assert inner._rich is outer._rich and len(outer._rich.tasks) == 2
            inner.advance(3)
        assert [t.description for t in outer._rich.tasks] == ["outer"]
        outer.advance(2)
    assert progress._DISPLAY.progress is None and "outer" in bar.getvalue()


@pytest.mark.parametrize("env", [{"GANFORGE_PROGRESS": "0"}, {"GANFORGE_PROGRESS": "bar", "RANK": "1"}])
def test_off_by_env_or_on_other_ranks(monkeypatch, capsys, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for tty in (True, False, None):
        with progress_bar("x", 10, tty=tty, interval=0, quiet=0, clock=clock()) as b:
            b.advance(10)
        assert b.mode == "off"
    assert capsys.readouterr() == ("", "")


# ---- the long steps --------------------------------------------------------------------------------


def test_feature_extraction_progress(plain, bar, capsys, monkeypatch):
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ext = get_extractor("pixels")

    monkeypatch.setenv("GANFORGE_PROGRESS", "plain")
    feats_plain = ext.extract(images, batch_size=16)
    out, err = capsys.readouterr()
    assert out == ""
    found = plain_lines(err)
    assert [(m["label"], m["done"], m["total"], m["unit"]) for m in found] == [
        ("extract pixels", "16", "50", "img"), ("extract pixels", "32", "50", "img"),
        ("extract pixels", "48", "50", "img"), ("extract pixels", "50", "50", "img")]

    monkeypatch.setenv("GANFORGE_PROGRESS", "bar")
    feats_bar = ext.extract(images, batch_size=16, progress="extract pixels real train")
    assert "extract pixels real train" in bar.getvalue() and "50/50" in bar.getvalue()

    monkeypatch.setenv("GANFORGE_PROGRESS", "0")
    feats_off = ext.extract(images, batch_size=16)
    ext.extract(images, batch_size=64)  # one batch: nothing to show in any mode
    assert capsys.readouterr() == ("", "")
    assert torch.equal(feats_plain, feats_off) and torch.equal(feats_bar, feats_off)


def test_knn_progress(plain, bar, capsys, monkeypatch):
    g = torch.Generator().manual_seed(1)
    queries = torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8, generator=g)
    refs = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8, generator=g)
    kw = dict(k=3, query_chunk=10, ref_chunk=20)

    monkeypatch.setenv("GANFORGE_PROGRESS", "plain")
    d_plain, i_plain = knn(queries, refs, progress="k-NN generated to train", **kw)
    out, err = capsys.readouterr()
    found = plain_lines(err)
    assert out == "" and {m["label"] for m in found} == {"k-NN generated to train"}
    assert [m["unit"] for m in found] == ["query"] * len(found)
    assert int(found[-1]["done"]) == int(found[-1]["total"]) == 30
    assert len(found) == 9  # per reference block (3 per query chunk) until the last line

    monkeypatch.setenv("GANFORGE_PROGRESS", "bar")
    knn(queries, refs, **kw)
    assert "k-NN" in bar.getvalue() and "30/30" in bar.getvalue()

    monkeypatch.setenv("GANFORGE_PROGRESS", "0")
    d_off, i_off = knn(queries, refs, **kw)
    monkeypatch.setenv("GANFORGE_PROGRESS", "plain")
    knn(queries, refs, progress=None, **kw)  # no label: no display
    knn(queries, refs, k=3)  # one block: nothing to show
    assert capsys.readouterr() == ("", "")
    assert torch.equal(d_plain, d_off) and torch.equal(i_plain, i_off)


@pytest.fixture
def many_images(monkeypatch):
    """2500 tiny images (three read chunks) as the ``digits`` source."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(2500, 4, 4, 1), dtype=np.uint8)
    src = Source("digits", ["a", "b"], np.arange(2500) % 2, None, lambda idx: [pixels[i] for i in idx])
    monkeypatch.setitem(SOURCES, "digits", lambda input_path, download: src)


def test_ingest_progress(plain, bar, many_images, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GANFORGE_PROGRESS", "plain")
    fp_plain = ingest("digits", output=str(tmp_path / "plain")).fingerprint
    out, err = capsys.readouterr()
    found = plain_lines(err)
    assert out == ""
    assert [(m["label"], m["done"], m["total"]) for m in found] == [
        ("ingest digits", "1024", "2500"), ("ingest digits", "2048", "2500"), ("ingest digits", "2500", "2500")]

    monkeypatch.setenv("GANFORGE_PROGRESS", "bar")
    ingest("digits", output=str(tmp_path / "bar"))
    assert "ingest digits" in bar.getvalue() and "2500/2500" in bar.getvalue()

    monkeypatch.setenv("GANFORGE_PROGRESS", "0")
    fp_off = ingest("digits", output=str(tmp_path / "off")).fingerprint
    assert capsys.readouterr() == ("", "") and fp_plain == fp_off


def test_training_progress_uses_the_shared_bar_on_stderr(bar, capsys, monkeypatch):
    p = Progress(total=20, start=0, enabled=True)
    p.update(10, {"loss_d": 0.5, "loss_g": 1.0}, 123.0)
    p.message("rolled back")
    p.close()
    text = bar.getvalue()
    assert "train" in text and "10/20" in text and "loss_d=0.500" in text and "rolled back" in text
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("GANFORGE_PROGRESS", "0")
    p = Progress(total=20, start=0, enabled=True)
    p.update(10, {"loss_d": 0.5}, 1.0)
    p.message("x")
    p.close()
    assert capsys.readouterr() == ("", "")


def test_training_plain_lines_follow_the_interval_not_log_every(capsys, monkeypatch):
    monkeypatch.setenv("GANFORGE_PROGRESS_INTERVAL", "3600")
    p = Progress(total=100, start=0, enabled=True, tty=False)
    for step in range(10, 101, 10):  # --log-every 10: ten updates within the hour
        p.update(step, {"loss_d": 0.5}, 50.0)
    p.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["10/100", "100/100"]  # the first and the last only
    monkeypatch.setenv("GANFORGE_PROGRESS_INTERVAL", "0")
    p = Progress(total=100, start=0, enabled=True, tty=False)
    for step in (10, 20, 30):
        p.update(step, {"loss_d": 0.5}, 50.0)
    assert len(capsys.readouterr().err.splitlines()) == 3


# ---- the CLI ---------------------------------------------------------------------------------------


def test_cli_ingest_prints_plain_progress_on_stderr_and_results_on_stdout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GANFORGE_PROGRESS", "RANK")}
    env |= {"GANFORGE_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "ganforge", "ingest", "digits", "--output", str(tmp_path / "ds"),
                          "--image-size", "8", "--limit", "200"],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    stdout = res.stdout.splitlines()
    assert len(stdout) == 2 and stdout[0].startswith("dataset ") and stdout[1].startswith("fingerprint "), stdout
    # stderr is a pipe: plain lines only, no bar and no library warnings
    (line,) = res.stderr.splitlines()
    assert re.fullmatch(r"ingest digits: 380/380 img \(100%\), [\d,]+\.\d img/s, done in \d:\d\d:\d\d", line), line
