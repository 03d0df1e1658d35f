"""Property-based bad input for ``ganforge train`` and ``ganforge generate`` (issue 13, item 6).

Whatever the flags, a command ends in one of two ways: exit 0 with a valid result, or exit 2 with
exactly one ``error:`` line on stderr and nothing partial left behind. Never a traceback.

Examples per test: ``GANFORGE_HYPOTHESIS_EXAMPLES`` (default 40 for --dry-run and generate, a fifth of it
for real training runs), e.g. ``GANFORGE_HYPOTHESIS_EXAMPLES=1000 pytest tests/unit/test_train_props.py``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from ganforge.checkpoints import list_checkpoints, load_checkpoint
from ganforge.cli import app

runner = CliRunner()
EXAMPLES = int(os.environ.get("GANFORGE_HYPOTHESIS_EXAMPLES", "40"))
# deadline None: a busy shared machine must not fail a correct test; no database writes to the tree.
FAST = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
SLOW = settings(FAST, max_examples=max(2, EXAMPLES // 5))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 16 px (64 per split), and one tiny conditional run with EMA weights to generate from."""
    from ganforge.data.ingest import ingest

    root = tmp_path_factory.mktemp("props")
    ingest("digits", output=str(root / "d16"), image_size=16, limit=64)
    res = runner.invoke(app, ["train", "--dataset", str(root / "d16"), "--model", "dcgan", "--conditional",
                              "--ema-decay", "0.9", "--steps", "2", "--batch-size", "16", "--width", "8",
                              "--latent-dim", "8", "--no-track", "--output", str(root / "run")])  # fmt: skip
    assert res.exit_code == 0, res.output
    return root


def assert_clean_outcome(result) -> None:
    """Exit 0, or exit 2 with exactly one ``error:`` line; a traceback shows as a non-SystemExit exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


def _text(value) -> str:
    return repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-4]))
INTS = st.one_of(st.integers(-3, 70), st.sampled_from([2**63, -(2**63) - 1, 10**30]))
# The value strategy of each train flag: mostly odd, sometimes fine. Strings that are not numbers for a
# numeric flag exercise typer's own parsing (a usage error is one line too).
TRAIN_FLAGS = {
    "--model": st.sampled_from(["mlp", "dcgan", "wgan-gp", "vae", "gan", ""]),
    "--preset": st.sampled_from(["digits-tiny", "mnist-wgan-gp", "recommended-28", "nope"]),
    "--epochs": INTS, "--steps": INTS, "--batch-size": INTS, "--latent-dim": INTS, "--width": INTS,
    "--n-critic": INTS, "--checkpoint-every": INTS, "--keep-checkpoints": INTS, "--log-every": INTS,
    "--sample-every": INTS, "--fid-every": INTS, "--fid-n": INTS, "--threads": INTS, "--nproc": INTS, "--seed": INTS,
    "--lr-g": FLOATS, "--lr-d": FLOATS, "--beta1": FLOATS, "--beta2": FLOATS, "--gp-weight": FLOATS,
    "--clip": FLOATS, "--kl-weight": FLOATS, "--ema-decay": FLOATS, "--ema-rampup": FLOATS,
    "--loss": st.sampled_from(["bce", "hinge", "wgan-gp", "wgan-clip", "l2"]),
    "--upsample": st.sampled_from(["transposed", "resize-conv", "bilinear"]),
    "--diffaugment": st.sampled_from(["color", "color,translation,cutout", "", "flip", "color,,cutout"]),
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:0", "gpu", "cuda:x"]),
    "--on-nan": st.sampled_from(["stop", "rollback", "ignore"]),
    "--fid-backbone": st.sampled_from(["pixels", "inception-tf", "bogus", ""]),
    "--experiment": st.sampled_from(["props", "", "x/y"]),
    "--resume": st.sampled_from(["latest", "nowhere", ""]),
    "--lr-x": st.just("1"),  # an unknown flag
}  # fmt: skip
SWITCHES = ["--conditional", "--label-smoothing", "--noisy-labels", "--spectral-norm", "--feature-matching",
            "--overwrite", "--compile", "--no-track"]  # fmt: skip


@st.composite
def train_args(draw, flags=TRAIN_FLAGS, switches=SWITCHES) -> list[str]:
    args = []
    for flag in draw(st.lists(st.sampled_from(sorted(flags)), max_size=5, unique=True)):
        args += [flag, _text(draw(flags[flag]))]
    args += draw(st.lists(st.sampled_from(switches), max_size=3, unique=True))
    return args


@FAST
@given(extra=train_args())
def test_train_dry_run_never_a_traceback_never_an_output(digits, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        base = ["train", "--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "2", "--batch-size", "16",
                "--no-track", "--output", str(out)]  # fmt: skip
        # flags drawn later win (typer keeps the last value); --steps drawn with --epochs is their mistake
        result = runner.invoke(app, [*base, *extra, "--dry-run"])
        assert_clean_outcome(result)
        if result.exit_code == 0:
            assert json.loads(result.stdout)["output"] == str(out)
        assert not out.exists()


# Real runs: the same kinds of values, but within what trains in a second (tiny nets, a few steps, no
# torch.compile, no Inception weights to load). Odd learning rates stay: a diverging run must end cleanly too.
SMALL = st.integers(-1, 4)
REAL_FLAGS = {
    "--model": st.sampled_from(["mlp", "dcgan", "wgan-gp", "vae"]),
    "--steps": SMALL, "--epochs": st.integers(0, 1), "--batch-size": st.sampled_from([0, 8, 16, 65]),
    "--n-critic": SMALL, "--checkpoint-every": SMALL, "--keep-checkpoints": SMALL, "--log-every": SMALL,
    "--sample-every": SMALL, "--seed": st.integers(-1, 2**63),
    "--lr-g": FLOATS, "--lr-d": FLOATS, "--beta1": FLOATS, "--ema-decay": FLOATS, "--gp-weight": FLOATS,
    "--loss": st.sampled_from(["bce", "hinge", "wgan-gp", "wgan-clip"]),
    "--upsample": st.sampled_from(["transposed", "resize-conv"]),
    "--diffaugment": st.sampled_from(["color", "translation,cutout", "flip"]),
    "--on-nan": st.sampled_from(["stop", "rollback"]), "--device": st.sampled_from(["cpu", "auto", "gpu"]),
}  # fmt: skip
REAL_SWITCHES = ["--conditional", "--label-smoothing", "--spectral-norm", "--feature-matching"]


@SLOW
@given(extra=train_args(REAL_FLAGS, REAL_SWITCHES))
def test_tiny_real_runs_end_cleanly(digits, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        base = ["train", "--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "2", "--batch-size", "16",
                "--width", "4", "--latent-dim", "4", "--no-track", "--output", str(out)]  # fmt: skip
        result = runner.invoke(app, [*base, *extra])
        assert_clean_outcome(result)
        found = list_checkpoints(out)
        if result.exit_code == 0:
            assert "trained" in result.stdout and found
            assert load_checkpoint(found[-1]).step == int(result.stdout.split("trained ")[1].split()[0])
        elif "diverged" not in result.stderr:
            assert not out.exists()  # refused before any work
        for ck in found:  # a diverged run keeps the checkpoints it wrote; each is complete
            load_checkpoint(ck)
        assert not [p for p in (out.iterdir() if out.exists() else []) if p.name.startswith(".")]


GEN_OUT = st.sampled_from(["grid.png", "grid.JPG", "g.webp", "g.gif", "walk", "sub/dir", "sub/g.png", "file",
                           "file/g.png", "dir.png", "/proc/g.png", "/proc/walk", ""])  # fmt: skip
GEN_FLAGS = {
    "--n": st.integers(-2, 40), "--seed": st.one_of(st.integers(-2, 5), st.just(2**64)),
    "--labels": st.sampled_from(["3", "3,7", "0,9,x", "10", "-1", ",", "seven"]),
    "--weights": st.sampled_from(["ema", "raw", "best"]), "--device": st.sampled_from(["cpu", "auto", "gpu", "cuda"]),
}  # fmt: skip


@FAST
@given(out_name=GEN_OUT, extra=train_args(GEN_FLAGS, ["--interpolate"]), checkpoint=st.sampled_from(["run", "none"]))
def test_generate_never_a_traceback_never_a_partial_output(digits, out_name, extra, checkpoint):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "file").write_text("x")
        (root / "dir.png").mkdir()
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        out = out_name if out_name.startswith("/") or not out_name else str(root / out_name)
        result = runner.invoke(app, ["generate", "--checkpoint", str(digits / checkpoint), "--out", out, *extra])
        assert_clean_outcome(result)
        after = sorted(p.relative_to(root) for p in root.rglob("*"))
        if result.exit_code == 2:
            assert after == before
            return
        n = int(extra[extra.index("--n") + 1]) if "--n" in extra else 64
        path = Path(out)
        if path.suffix.lower() in (".png", ".jpg", ".webp", ".gif"):
            Image.open(path).verify()
        else:
            assert sorted(p.name for p in path.iterdir()) == [f"{i:06d}.png" for i in range(n)]
        assert not [p for p in after if p.name.startswith(".")]
