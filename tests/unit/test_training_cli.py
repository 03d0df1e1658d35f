"""``ganforge train`` / ``ganforge generate`` through typer's CliRunner: outputs and bad input."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
from PIL import Image
from typer.testing import CliRunner

from ganforge.cli import app

runner = CliRunner()
TINY = ["--batch-size", "16", "--width", "8", "--latent-dim", "8", "--no-track", "--log-every", "5"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 16 px and at 12 px (a size no conv family builds)."""
    from ganforge.data.ingest import ingest

    root = tmp_path_factory.mktemp("digits")
    ingest("digits", output=str(root / "d16"), image_size=16, limit=64)
    ingest("digits", output=str(root / "d12"), image_size=12, limit=32)
    return root


def one_error_line(result, pattern: str) -> None:
    """Exit code 2 and exactly one line on stderr, ``error: ...`` matching ``pattern``."""
    import re

    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(pattern, lines[0]), lines[0]


def train(*args):
    return runner.invoke(app, ["train", *TINY, *args])


def test_train_then_generate_grid_and_files(digits, tmp_path):
    out = tmp_path / "run"
    res = train("--dataset", str(digits / "d16"), "--model", "dcgan", "--conditional", "--steps", "5",
                "--output", str(out), "--ema-decay", "0.9")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "trained 5 steps" in res.stdout and "ckpt-000005" in res.stdout
    res = runner.invoke(app, ["generate", "--checkpoint", str(out), "--n", "12", "--labels", "3,7",
                              "--out", str(tmp_path / "grid.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "grid.png").size[0] > 16
    res = runner.invoke(app, ["generate", "--checkpoint", str(out / "ckpt-000005"), "--n", "5", "--interpolate",
                              "--seed", "3", "--out", str(tmp_path / "walk")])  # fmt: skip
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in (tmp_path / "walk").iterdir())
    assert files == [f"{i:06d}.png" for i in range(5)]
    assert Image.open(tmp_path / "walk" / files[0]).size == (16, 16)


def test_dry_run_prints_the_resolved_config(digits, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {digits / 'd16'}\nlr_d: 0.003\nbatch_size: 16\n")  # preset wins over the file
    res = runner.invoke(app, ["train", "--config", str(cfg), "--preset", "digits-tiny", "--seed", "9", "--dry-run",
                              "--no-track", "--output", str(tmp_path / "run")])  # fmt: skip
    assert res.exit_code == 0, res.output
    resolved = json.loads(res.stdout)
    assert (resolved["lr_d"], resolved["seed"], resolved["width"], resolved["batch_size"]) == (2e-4, 9, 16, 64)
    assert not (tmp_path / "run").exists()  # a dry run creates nothing


def test_unknown_model_and_preset(digits):
    one_error_line(train("--dataset", str(digits / "d16"), "--model", "gan", "--steps", "1"),
                   r"--model: .*unknown model 'gan'; choose one of mlp, dcgan, wgan-gp, vae")  # fmt: skip
    one_error_line(train("--dataset", str(digits / "d16"), "--preset", "mnist-gan"),
                   r"unknown preset 'mnist-gan'; choose one of .*mnist-mlp")  # fmt: skip


def test_unbuildable_image_size(digits, tmp_path):
    res = train("--dataset", str(digits / "d12"), "--model", "dcgan", "--steps", "1", "--output", str(tmp_path))
    one_error_line(res, r"builds image_size 8, 16, .* got 12")
    assert list(tmp_path.iterdir()) == []


def test_dataset_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    res = train("--dataset", str(tmp_path / "empty"), "--model", "mlp", "--steps", "1", "--output", str(tmp_path / "o"))
    one_error_line(res, r"manifest")
    assert not (tmp_path / "o").exists()


def test_checkpoint_from_another_architecture(digits, tmp_path):
    for model in ("mlp", "dcgan"):
        res = train("--dataset", str(digits / "d16"), "--model", model, "--steps", "1", "--output", str(tmp_path / model))
        assert res.exit_code == 0, res.output
    # an mlp checkpoint whose generator weights are a dcgan's
    shutil.copy(tmp_path / "dcgan/ckpt-000001/generator.safetensors", tmp_path / "mlp/ckpt-000001/generator.safetensors")
    res = runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "mlp"), "--out", str(tmp_path / "g.png")])
    one_error_line(res, r"written for another architecture .*same --model")
    assert not (tmp_path / "g.png").exists()
    res = train("--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "2", "--output", str(tmp_path / "dcgan"),
                "--resume", "latest")  # fmt: skip
    one_error_line(res, r"cannot resume .*model 'dcgan' -> 'mlp'")


def test_mismatching_resume(digits, tmp_path):
    args = ["--dataset", str(digits / "d16"), "--model", "mlp", "--output", str(tmp_path)]
    assert train(*args, "--steps", "2").exit_code == 0
    one_error_line(train(*args, "--steps", "4", "--resume", "latest", "--lr-d", "0.01"),
                   r"cannot resume .*lr_d 0.0002 -> 0.01")  # fmt: skip
    one_error_line(train(*args, "--steps", "4", "--resume", str(tmp_path / "nope")), r"not a checkpoint directory")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")] == ["ckpt-000002"]


def test_unreachable_mlflow_server(digits, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{port}")
    res = runner.invoke(app, ["train", "--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "1",
                              "--output", str(tmp_path / "o"), "--batch-size", "16"])  # fmt: skip
    one_error_line(res, rf"cannot reach the MLflow server at http://\*\*\*@127.0.0.1:{port} .*--no-track")
    assert "secret" not in res.output
    assert not (tmp_path / "o").exists()


def test_generate_bad_input(digits, tmp_path):
    res = train("--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "1", "--output", str(tmp_path))
    assert res.exit_code == 0
    one_error_line(runner.invoke(app, ["generate", "--checkpoint", str(tmp_path), "--labels", "1", "--out", "x.png"]),
                   r"not conditional")  # fmt: skip
    one_error_line(runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "missing"), "--out", "x.png"]),
                   r"does not exist")  # fmt: skip


@pytest.mark.parametrize("flags,pattern", [
    (["--lr-g", "nan"], r"^error: --lr-g must be a finite number above 0, e\.g\. 0\.0002, got nan$"),
    (["--lr-d", "-1"], r"--lr-d: .*finite number above 0"),
    (["--beta1", "1.5"], r"--beta1: .*must be in \[0, 1\)"),
    (["--gp-weight", "inf"], r"--gp-weight must be a finite number of at least 0, .*got inf"),
    (["--d-dropout", "-inf"], r"--d-dropout must be a finite number in \[0, 1\), .*got -inf"),
    (["--seed", "-1"], r"--seed: .*from 0 to"),
    (["--epochs", "2"], r"the flags give both --epochs and --steps; keep one"),
    (["--fid-every", "1", "--fid-backbone", "nope"], r"--fid-backbone 'nope': use one of .*pixels"),
    (["--loss", "hinge", "--label-smoothing"], r"apply only to loss 'bce'"),
    (["--width", "9223372036854775808"], r"--width: .*must be from 1 to 4096"),  # found by test_train_props
    (["--width", "4096", "--latent-dim", "65536"], r"networks of [\d,]+ parameters .*lower --width"),
])  # fmt: skip
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_flags_fail_before_any_work(digits, tmp_path, flags, pattern, dry_run):
    """Issue 13: tracebacks from torch at step 0, or a flag silently dropped; --dry-run makes the same checks."""
    res = train("--dataset", str(digits / "d16"), "--model", "dcgan", "--steps", "2", "--output", str(tmp_path / "o"),
                *flags, *(["--dry-run"] if dry_run else []))  # fmt: skip
    one_error_line(res, pattern)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_unwritable_output_fails_before_training(digits, tmp_path, dry_run):
    """Issue 13: train ran every step, then failed writing its first checkpoint."""
    (tmp_path / "file").write_text("x")
    extra = ["--dry-run"] if dry_run else []
    for output, pattern in ((tmp_path / "file", "is a file, not a directory"),
                            (tmp_path / "file" / "run", "cannot be created: .*file is not a directory"),
                            ("/proc/ganforge-run", "cannot be written")):  # fmt: skip
        res = train("--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "100000", "--output", str(output),
                    *extra)  # fmt: skip
        one_error_line(res, rf"--output {output} {pattern}.*; pass ")
        assert "trained" not in res.stdout


def test_resume_past_the_last_step_is_refused_before_any_work(digits, tmp_path):
    """Issue 22: --steps below the checkpoint's step printed "trained 300 steps in 0.0s ... checkpoint None", exit 0."""
    args = ["--dataset", str(digits / "d16"), "--model", "mlp", "--output", str(tmp_path), "--checkpoint-every", "6"]
    assert train(*args, "--steps", "6").exit_code == 0
    for extra in ([], ["--dry-run"]):
        one_error_line(train(*args, "--steps", "3", "--resume", "latest", *extra),
                       r"cannot resume from .*ckpt-000006: it is at step 6 and --steps 3 ends the run before it, so "
                       r"nothing would be trained; pass --steps above 6")  # fmt: skip
        one_error_line(train(*args, "--epochs", "1", "--resume", "latest", *extra),  # 64 images / batch 16
                       r"at step 6 and --epochs 1 \(4 steps\) ends the run before it")  # fmt: skip
    # the run's own end: nothing left to train (a retry after the last checkpoint), said as such
    res = train(*args, "--steps", "6", "--resume", "latest")
    assert res.exit_code == 0 and res.stdout.startswith("nothing to train: --resume latest is already at step 6"), res.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")] == ["ckpt-000006"]


def test_dry_run_makes_the_checks_of_a_real_run(digits, tmp_path):
    args = ["--dataset", str(digits / "d16"), "--model", "mlp", "--output", str(tmp_path)]
    assert train(*args, "--steps", "2").exit_code == 0
    one_error_line(train(*args, "--steps", "2", "--dry-run"), r"already holds checkpoints .*--overwrite")
    one_error_line(train(*args, "--steps", "4", "--resume", "latest", "--width", "16", "--dry-run"),
                   r"cannot resume .*width 8 -> 16")  # fmt: skip
    one_error_line(train("--dataset", str(digits / "d12"), "--model", "dcgan", "--steps", "1", "--dry-run"),
                   r"builds image_size 8, 16, .* got 12")  # fmt: skip
    one_error_line(train(*args, "--steps", "2", "--batch-size", "4096", "--overwrite", "--dry-run"),
                   r"fewer than --batch-size 4096")  # fmt: skip
    assert train(*args, "--steps", "4", "--resume", "latest", "--dry-run").exit_code == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")] == ["ckpt-000002"]


def test_help_states_the_precedence_the_code_applies():
    """Issue 13: `train --help` said flags < --preset < --config, the reverse of resolve_config."""
    res = runner.invoke(app, ["train", "--help"], terminal_width=200)
    text = " ".join(res.stdout.split())
    assert "defaults < --config file < --preset < flags" in text
    assert "one layer giving both is an error" in text


def test_generate_image_suffix_writes_one_grid_in_that_format(digits, tmp_path):
    """Issue 13: `generate --out x.jpg` made a folder of PNGs named x.jpg."""
    assert train("--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "1", "--output", str(tmp_path / "r")
                 ).exit_code == 0  # fmt: skip
    for name, fmt in (("x.jpg", "JPEG"), ("x.webp", "WEBP"), ("sub/x.PNG", "PNG")):
        res = runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--out",
                                  str(tmp_path / name)])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert (tmp_path / name).is_file() and Image.open(tmp_path / name).format == fmt
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.PNG"]  # no temp file left


def test_generate_bad_out_and_flags_fail_before_any_work(digits, tmp_path):
    assert train("--dataset", str(digits / "d16"), "--model", "mlp", "--steps", "1", "--output", str(tmp_path / "r")
                 ).exit_code == 0  # fmt: skip
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "file").write_text("x")

    def gen(*args):
        return runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "r"), *args])

    one_error_line(gen("--out", "/proc/g.png"), r"--out's folder /proc cannot be written")
    one_error_line(gen("--out", "/proc/walk"), r"--out /proc/walk cannot be written")
    one_error_line(gen("--out", str(tmp_path / "dir.png")), r"is a directory; pass a file name")
    one_error_line(gen("--out", str(tmp_path / "file" / "g.png")), r"folder .*file is a file, not a directory")
    one_error_line(gen("--out", str(tmp_path / "o"), "--n", "0"), r"--n must be from 1 to 100000")
    one_error_line(gen("--out", str(tmp_path / "o"), "--seed", "-5"), r"--seed must be an integer from 0")
    one_error_line(gen("--out", str(tmp_path / "o"), "--device", "gpu"), r"--device gpu: use auto, cpu")
    one_error_line(gen("--out", str(tmp_path / "o"), "--weights", "best"), r"--weights 'best': use ema or raw")
    one_error_line(gen("--out", str(tmp_path / "o"), "--labels", "3"), r"not conditional")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file", "r"]
