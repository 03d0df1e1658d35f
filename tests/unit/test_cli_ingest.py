"""``ganforge ingest`` and ``ganforge datasets show`` end to end on real formats, and their bad input."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.data import load, read_manifest
from ganforge.data.images import pixel_sha256
from tests import formats

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, match: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0], lines[0]


def test_mnist_idx_round_trip_through_cli(tmp_path):
    tr_x, tr_y, te_x, te_y = formats.write_torchvision_idx(tmp_path / "tv", "MNIST", n_train=30, n_test=12)
    out = tmp_path / "ds"
    res = run("ingest", "mnist", "--input", str(tmp_path / "tv"), "--output", str(out))
    assert res.exit_code == 0, res.output
    assert "train=30" in res.stdout and "test=12" in res.stdout
    test = load(str(out), "test")
    assert torch.equal(test.images[:, 0], torch.from_numpy(te_x)) and test.labels.tolist() == te_y.tolist()
    again = run("ingest", "mnist", "--input", str(tmp_path / "tv"), "--output", str(out))
    assert "up to date" in again.stdout and read_manifest(str(out))["fingerprint"] in again.stdout


def test_galaxy10_h5_resized_to_64_conditional_labels(tmp_path):
    images, labels = formats.write_galaxy10_h5(tmp_path / "g.h5", n=12, seed=1, size=96)
    out = tmp_path / "ds"
    res = run("ingest", "galaxy10", "--input", str(tmp_path / "g.h5"), "--output", str(out),
              "--image-size", "64", "--val-fraction", "0.25")
    assert res.exit_code == 0, res.output
    m = read_manifest(str(out))
    assert m["image"] == {"height": 64, "width": 64, "channels": 3, "encoding": "png"}
    assert m["counts"]["splits"] == {"train": 9, "val": 3} and len(m["class_names"]) == 10
    both = torch.cat([load(str(out), s).labels for s in ("train", "val")])
    assert sorted(both.tolist()) == sorted(labels.tolist())


def test_folder_grey_and_show_grid(tmp_path):
    formats.write_image_folder(tmp_path / "imgs", n_per_class=5, classes=("prints", "scrolls"), size=(20, 30))
    out = tmp_path / "ds"
    res = run("ingest", "folder", "--input", str(tmp_path / "imgs"), "--output", str(out),
              "--image-size", "16", "--channels", "1", "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    shown = run("datasets", "show", str(out), "--grid", str(tmp_path / "grid.png"), "--n", "8")
    assert shown.exit_code == 0, shown.output
    assert "prints" in shown.stdout and "scrolls" in shown.stdout and "fingerprint" in shown.stdout
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] > 16 and grid.size[1] > 16


def test_digits_values_are_scaled_exactly(tmp_path):
    from sklearn.datasets import load_digits

    out = tmp_path / "ds"
    assert run("ingest", "digits", "--output", str(out), "--val-fraction", "0").exit_code == 0
    data = load(str(out))
    ref = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    assert sorted(pixel_sha256(x[:, :, None]) for x in ref) == sorted(
        pixel_sha256(x.permute(1, 2, 0).numpy()) for x in data.images
    )


@pytest.mark.parametrize(
    "setup, args, match",
    [
        (None, ["mnist", "--input", "{tmp}/nothing-here"], "MNIST not found"),
        (None, ["galaxy10", "--input", "{tmp}/missing.h5"], "astroNN"),
        ("bad_h5", ["galaxy10", "--input", "{tmp}/bad.h5"], "images"),
        ("bad_image", ["folder", "--input", "{tmp}/imgs"], "broken.png"),
        ("empty_dir", ["folder", "--input", "{tmp}/empty"], "no images"),
        (None, ["digits", "--image-size", "0"], "--image-size"),
        (None, ["digits", "--channels", "2"], "--channels"),
        (None, ["digits", "--classes", "eleven"], "unknown class 'eleven'"),
        (None, ["pokemon"], "source"),
    ],
)
def test_bad_input_one_line_exit_2_and_nothing_left(tmp_path, setup, args, match):
    if setup == "bad_h5":
        with h5py.File(tmp_path / "bad.h5", "w") as f:
            f["pictures"] = np.zeros((2, 8, 8, 3), np.uint8)
    elif setup == "bad_image":
        formats.write_image_folder(tmp_path / "imgs", n_per_class=12, classes=("a",), size=(8, 8))
        (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif setup == "empty_dir":
        (tmp_path / "empty").mkdir()
    out = tmp_path / "ds"
    result = run("ingest", *[a.format(tmp=tmp_path) for a in args], "--output", str(out))
    assert_one_line_error(result, match)
    assert not out.exists() or os.listdir(out) == [], "a failed ingest leaves no partial dataset"


def test_show_without_manifest_is_one_line(tmp_path):
    (tmp_path / "half").mkdir()
    assert_one_line_error(run("datasets", "show", str(tmp_path / "half")), "no dataset at")


def test_help_explains_every_command():
    res = run("--help")
    assert res.exit_code == 0 and "ingest" in res.stdout and "datasets" in res.stdout
    ingest_help = run("ingest", "--help").stdout
    for flag in ["--output", "--input", "--image-size", "--channels", "--aspect", "--limit", "--classes",
                 "--split-seed", "--val-fraction", "--shard-size-mb", "--overwrite", "--download"]:
        assert flag in ingest_help
