"""``ganforge ingest`` and ``ganforge datasets show`` end to end on real formats, and their bad input."""

from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.data import ParquetImageDataset, load, read_manifest
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
        (None, ["pokemon"], "SOURCE: Input should be"),  # the argument, as the usage line names it
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


# --- issue 13: integrity and bad input, each one line, exit 2, nothing left -------------------------


def _idx_with(tmp_path, **replace: np.ndarray) -> str:
    """A valid MNIST root (30 train, 12 test) whose files named in ``replace`` hold other arrays."""
    formats.write_torchvision_idx(tmp_path / "tv", "MNIST", n_train=30, n_test=12)
    names = {"train_labels": "train-labels-idx1-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
             "train_images": "train-images-idx3-ubyte", "test_images": "t10k-images-idx3-ubyte"}
    formats.write_idx_split_files(tmp_path / "tv", "MNIST", {names[k]: formats.idx_bytes(v) for k, v in replace.items()})
    return str(tmp_path / "tv")


@pytest.mark.parametrize(
    "replace, match",
    [
        ({"train_labels": np.zeros(27, np.uint8)}, "has 30 images but train-labels-idx1-ubyte has 27 labels"),
        ({"test_labels": np.zeros(15, np.uint8)}, "has 12 images but t10k-labels-idx1-ubyte has 15 labels"),
        ({"train_labels": np.full(30, 200, np.uint8)}, "labels 200..200, outside 0..9"),
        ({"test_images": np.zeros((12, 0, 0), np.uint8)}, "are not valid IDX files"),
        ({"test_images": np.zeros((12, 20, 20), np.uint8)}, "train images are (28, 28) but t10k images (20, 20)"),
    ],
)
def test_idx_counts_labels_and_shapes_are_refused(tmp_path, replace, match):
    out = tmp_path / "ds"
    result = run("ingest", "mnist", "--input", _idx_with(tmp_path, **replace), "--output", str(out))
    assert_one_line_error(result, match)
    assert not out.exists()


@pytest.mark.parametrize(
    "datasets, match",
    [
        ({"images": np.zeros((3, 0, 0, 3), np.uint8), "ans": np.zeros(3, np.uint8)}, "H, W >= 1"),
        ({"images": np.zeros((3, 8, 8, 3), np.uint8), "ans": np.zeros(2, np.uint8)}, "'images' has 3 rows but 'ans' 2"),
        ({"images": np.zeros((3, 8, 8, 3), np.uint8), "ans": np.array([0, 1, 10], np.uint8)}, "labels 0..10"),
    ],
)
def test_galaxy10_empty_images_and_label_mismatch(tmp_path, datasets, match):
    path = formats.write_galaxy10_arrays(tmp_path / "g.h5", datasets)
    out = tmp_path / "ds"
    assert_one_line_error(run("ingest", "galaxy10", "--input", str(path), "--output", str(out)), match)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--shard-size-mb", "inf"], "--shard-size-mb must be a finite number above 0, e.g. 64, got inf"),
        (["--shard-size-mb", "nan"], "--shard-size-mb must be a finite number above 0, e.g. 64, got nan"),
        (["--shard-size-mb", "1e308"], "--shard-size-mb must be a size in MB"),
        (["--shard-size-mb", "0"], "--shard-size-mb"),
        (["--shard-size-mb", "-1"], "--shard-size-mb"),
        (["--split-seed", "-1"], "--split-seed must be 0 or more"),
        (["--limit", "0"], "--limit"),
        (["--val-fraction", "0.9999"], "leaves the train split empty"),
        (["--val-fraction", "0.0001"], "leaves the val split empty"),
        (["--val-fraction", "1"], "--val-fraction"),
        (["--val-fraction", "-0.1"], "--val-fraction"),
        (["--val-fraction", "nan"], "--val-fraction"),
    ],
)
def test_bad_ingest_flags_refused_before_any_work(tmp_path, args, match):
    out = tmp_path / "ds"
    assert_one_line_error(run("ingest", "digits", "--output", str(out), *args), match)
    assert not out.exists()


def test_existing_empty_output_folder_is_left_as_found(tmp_path):
    formats.write_image_folder(tmp_path / "imgs", n_per_class=12, classes=("a",), size=(8, 8))
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "ds").mkdir()
    assert_one_line_error(run("ingest", "folder", "-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "ds")), "broken.png")
    assert os.listdir(tmp_path / "ds") == []


@pytest.fixture
def small_dataset(tmp_path):
    out = tmp_path / "ds"
    assert run("ingest", "digits", "--output", str(out), "--limit", "40", "--shard-size-mb", "0.005").exit_code == 0
    return out


@pytest.mark.parametrize("n", ["0", "-3", "100000"])
def test_show_n_out_of_range(small_dataset, tmp_path, n):
    grid = tmp_path / "g.png"
    assert_one_line_error(run("datasets", "show", str(small_dataset), "--grid", str(grid), "--n", n), "--n must be")
    assert not grid.exists()


@pytest.mark.parametrize(
    "grid, match",
    [("missing/dir/g.png", "does not exist"), (".", "is a directory"), ("g.xyz", "unknown image format")],
)
def test_show_unwritable_grid_refused_before_reading(small_dataset, tmp_path, grid, match):
    result = run("datasets", "show", str(small_dataset), "--grid", str(tmp_path / grid))
    assert_one_line_error(result, match)
    assert result.stdout == "", "nothing is printed before the check"


def test_show_grid_of_missing_split_is_refused_before_printing(small_dataset, tmp_path):
    result = run("datasets", "show", str(small_dataset), "--grid", str(tmp_path / "g.png"), "--split", "test")
    assert_one_line_error(result, "no split 'test'")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda text: text[: len(text) // 2], "corrupt manifest.json (not valid JSON"),
        (lambda text: "[]", "not an object"),
        (lambda text: text.replace('"fingerprint"', '"fingerprints"'), "fingerprint"),
        (lambda text: text.replace('"height": 8', '"height": 0'), "height and width"),
        (lambda text: text.replace('"rows": ', '"rows": 1', 1), "rows do not add up"),
        (lambda text: text.replace('"path": "v-', '"path": "../v-', 1), "not inside the dataset"),
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 9'), "schema version 9"),
    ],
)
def test_corrupt_manifest_is_one_line_naming_the_fix(small_dataset, mutate, match):
    manifest = small_dataset / "manifest.json"
    manifest.write_text(mutate(manifest.read_text()))
    for args in (["datasets", "show", str(small_dataset)], ["datasets", "show", str(small_dataset), "--grid", "g.png"]):
        assert_one_line_error(run(*args), match)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "schema"])
def test_corrupt_or_missing_shard_names_the_file(small_dataset, tmp_path, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ganforge.errors import GanforgeError

    shard = json.loads((small_dataset / "manifest.json").read_text())["shards"][0]["path"]
    path = small_dataset / shard
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    elif damage == "delete":
        path.unlink()
    else:  # a Parquet file, but not ganforge's columns
        pq.write_table(pa.table({"id": [1], "pixels": [b"x"]}), path)
    result = run("datasets", "show", str(small_dataset), "--grid", str(tmp_path / "g.png"))
    assert_one_line_error(result, shard)
    assert "re-ingest" in result.stderr and not (tmp_path / "g.png").exists()
    with pytest.raises(GanforgeError, match=shard):
        load(str(small_dataset), use_cache=False)
    with pytest.raises(GanforgeError, match=shard):
        ParquetImageDataset(str(small_dataset))


def test_corrupt_png_in_a_shard_names_the_row(small_dataset):
    import pyarrow.parquet as pq

    from ganforge.errors import GanforgeError

    manifest = json.loads((small_dataset / "manifest.json").read_text())
    shard = small_dataset / manifest["shards"][0]["path"]
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[0] = images[0][:20]
    table = table.set_column(table.schema.get_field_index("image"), "image", pa_array(images))
    pq.write_table(table, shard)
    # the shard's digest follows (else "changed after ingest" is the answer), so the row itself is what fails
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (small_dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GanforgeError, match="does not decode.*re-ingest"):
        for split in ("train", "val"):
            load(str(small_dataset), split, use_cache=False)


def pa_array(values: list[bytes]):
    import pyarrow as pa

    return pa.array(values, pa.binary())


def test_unreachable_s3_while_reading_names_endpoint_and_fix(monkeypatch):
    from ganforge.errors import GanforgeError
    from tests.conftest import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    result = run("datasets", "show", "s3://bucket/ds")
    assert_one_line_error(result, f"S3 at {endpoint} is unreachable")
    assert "AWS_ENDPOINT_URL" in result.stderr
    with pytest.raises(GanforgeError, match=f"S3 at {endpoint} is unreachable"):
        load("s3://bucket/ds")  # what train, evaluate and audit call


def test_output_that_is_a_file_is_refused_before_reading_the_source(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    assert_one_line_error(run("ingest", "digits", "--output", str(tmp_path / "taken")), "is a file, not a directory")
    assert (tmp_path / "taken").read_text() == "not a folder"
