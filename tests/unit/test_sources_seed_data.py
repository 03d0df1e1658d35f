"""The data of seed 001 (Generative Deep Learning): Quick, Draw! bitmaps, CIFAR-10's binary batches and a CelebA
folder with its attribute table, each written here in its real format, ingested through the real code and CLI,
and read back; their bad files are one error line and leave no dataset behind; and the book's "add a smile":
``reconstruct --attribute Smiling`` on an ae trained on the tiny CelebA (issue 24, item 3)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.data import ParquetImageDataset, load, read_manifest, verified_fingerprint
from ganforge.data.images import pixel_sha256, prepare
from ganforge.data.parquet import fingerprint, table_fingerprint
from ganforge.data.sources import RowKeys, open_source
from ganforge.errors import GanforgeError
from tests import formats

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, pattern: str) -> str:
    """The command exited 2 with exactly one ``error:`` line on stderr, matching ``pattern``."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@contextlib.contextmanager
def raises_one_line(pattern: str):
    with pytest.raises(GanforgeError, match=pattern) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


def assert_nothing_left(out: Path) -> None:
    assert not out.exists() or os.listdir(out) == [], f"a failed ingest left {os.listdir(out)}"


def test_row_keys_index_like_an_array():
    keys = RowKeys(["camel", "cat"], [3, 2])
    assert len(keys) == 5 and keys[0] == "camel/0" and keys[np.int64(4)] == "cat/1"
    assert keys[np.array([2, 3])].tolist() == ["camel/2", "cat/0"] and keys[np.array([], np.int64)].tolist() == []
    with pytest.raises(IndexError):
        keys[5]


# --- Quick, Draw! ----------------------------------------------------------------------------------------------


def test_quickdraw_folder_is_one_class_per_file_with_exact_pixels(tmp_path):
    camel = formats.write_quickdraw_npy(tmp_path, "camel", n=5, seed=1)
    balloon = formats.write_quickdraw_npy(tmp_path, "hot air balloon", n=3, seed=2)
    src = open_source("quickdraw", str(tmp_path))
    assert src.class_names == ["camel", "hot air balloon"] and src.splits is None
    assert src.labels.tolist() == [0] * 5 + [1] * 3
    assert src.keys[np.array([4, 5])].tolist() == ["camel/4", "hot air balloon/0"]
    images = src.read(np.array([1, 4, 6]))
    assert all(x.shape == (28, 28, 1) and x.dtype == np.uint8 for x in images)
    for image, row in zip(images, [camel[1], camel[4], balloon[1]]):
        np.testing.assert_array_equal(image[..., 0], row.reshape(28, 28))  # row after row
    one = open_source("quickdraw", str(tmp_path / "full_numpy_bitmap_camel.npy"))
    assert one.class_names == ["camel"] and len(one) == 5


def test_quickdraw_cli_limit_keeps_rows_with_their_keys(tmp_path):
    drawings = formats.write_quickdraw_npy(tmp_path / "qd", "camel", n=40, seed=3)
    out = tmp_path / "ds"
    res = run("ingest", "quickdraw", "--input", tmp_path / "qd" / "full_numpy_bitmap_camel.npy", "--output", out,
              "--limit", "6", "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    data = load(str(out))
    assert data.class_names == ["camel"] and data.images.shape == (6, 1, 28, 28) and data.labels.tolist() == [0] * 6
    import pyarrow.parquet as pq

    shard = out / read_manifest(str(out))["shards"][0]["path"]
    keys = pq.read_table(shard, columns=["source_key", "id"]).sort_by("id").column("source_key").to_pylist()
    rows = [int(k.split("/")[1]) for k in keys]
    assert all(k.startswith("camel/") for k in keys) and len(set(rows)) == 6
    for image, row in zip(data.images, rows):  # each kept drawing is the row its key names
        np.testing.assert_array_equal(image[0].numpy(), drawings[row].reshape(28, 28))


def test_quickdraw_reads_only_the_rows_it_keeps(tmp_path, monkeypatch):
    formats.write_quickdraw_npy(tmp_path, "camel", n=200, seed=4)
    loads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **kw: loads.append(kw) or real_load(*a, **kw))
    src = open_source("quickdraw", str(tmp_path))
    assert loads == [{"mmap_mode": "r", "allow_pickle": False}]  # mapped, never read whole, never unpickled
    assert len(src.read(np.array([3, 150]))) == 2


def _quickdraw_bad(folder: Path, how: str) -> None:
    path = folder / "full_numpy_bitmap_camel.npy"
    if how == "28x28":
        np.save(path, np.zeros((3, 28, 28), np.uint8))
    elif how == "float":
        np.save(path, np.zeros((3, 784), np.float32))
    elif how == "empty":
        np.save(path, np.zeros((0, 784), np.uint8))
    elif how == "text":
        path.write_bytes(b"camel,1,2,3\n")
    elif how == "objects":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif how == "truncated":
        formats.write_quickdraw_npy(folder, "camel", n=4)
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "twice":
        formats.write_quickdraw_npy(folder, "camel")
        np.save(folder / "camel.npy", np.zeros((2, 784), np.uint8))
    elif how == "none":
        (folder / "notes.txt").write_text("no bitmaps")


@pytest.mark.parametrize("how, pattern", [
    ("28x28", r"full_numpy_bitmap_camel.npy holds a uint8 array of shape 3x28x28; expected .*\(N, 784\)"),
    ("float", "holds a float32 array of shape 3x784"),
    ("empty", "holds no drawings"),
    ("text", "is not a .npy array file"),
    ("objects", "is not a whole .npy array"),
    ("truncated", r"is not a whole .npy array \(mmap length is greater than file size\)"),
    ("twice", "camel.npy and full_numpy_bitmap_camel.npy are both category 'camel'; keep one of them"),
    ("none", r"no .npy files in"),
])
def test_quickdraw_bad_files_are_one_line_and_leave_nothing(tmp_path, how, pattern):
    folder = tmp_path / "qd"
    folder.mkdir()
    _quickdraw_bad(folder, how)
    out = tmp_path / "ds"
    one_error_line(run("ingest", "quickdraw", "--input", folder, "--output", out), pattern)
    assert_nothing_left(out)


def test_quickdraw_needs_an_input():
    with raises_one_line("the quickdraw source needs an input path"):
        open_source("quickdraw")


# --- CIFAR-10, binary version ----------------------------------------------------------------------------------


def test_cifar10_records_are_label_then_red_green_blue_planes(tmp_path):
    images, labels, splits = formats.write_cifar10_bin(tmp_path, n_per_batch=(2, 1, 1, 1, 1), n_test=2, seed=5)
    src = open_source("cifar10", str(tmp_path))  # the folder holding cifar-10-batches-bin
    assert src.class_names == list(formats.CIFAR10_CLASSES)
    assert src.labels.tolist() == labels.tolist() and src.splits.tolist() == splits.tolist()
    keys = src.keys[np.array([0, 2, 6, 7])].tolist()
    assert keys == ["data_batch_1/0", "data_batch_2/0", "test_batch/0", "test_batch/1"]
    got = src.read(np.arange(len(labels)))
    for image, want in zip(got, images):
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, want)
    # a record built by hand: the planes are red, green, blue, each row after row
    planes = np.arange(3 * 1024, dtype=np.int64).reshape(3, 32, 32) % 251
    folder = tmp_path / "cifar-10-batches-bin"
    (folder / "test_batch.bin").write_bytes(bytes([7]) + planes.astype(np.uint8).tobytes())
    src = open_source("cifar10", str(folder))  # the batches folder itself
    pixel = src.read(np.array([len(src) - 1]))[0]
    assert src.labels[-1] == 7 and src.class_names[7] == "horse"
    assert pixel[0, 0].tolist() == [0, 1024 % 251, 2048 % 251]  # a plane of 1,024 bytes per colour
    assert pixel[0, 1].tolist() == [1, 1025 % 251, 2049 % 251]  # x = 1: the next byte of each plane
    assert pixel[1, 0].tolist() == [32, 1056 % 251, 2080 % 251]  # y = 1: a row of 32 bytes further


def test_cifar10_classes_horse_by_name_through_the_cli(tmp_path):
    images, labels, splits = formats.write_cifar10_bin(tmp_path / "raw", n_per_batch=(12, 12, 12, 12, 12), n_test=20,
                                                       seed=6)
    out = tmp_path / "horses"
    res = run("ingest", "cifar10", "--input", tmp_path / "raw" / "cifar-10-batches-bin", "--output", out,
              "--classes", "horse")
    assert res.exit_code == 0, res.output
    m = read_manifest(str(out))
    horse = labels == formats.CIFAR10_CLASSES.index("horse")
    assert m["class_names"] == ["horse"] and m["image"] == {"height": 32, "width": 32, "channels": 3, "encoding": "png"}
    per_split = {s: int((horse & (splits == s)).sum()) for s in ("test", "train")}
    assert m["counts"]["splits"] == {s: n for s, n in per_split.items() if n}
    train = load(str(out), "train")
    want = images[horse & (splits == "train")]
    assert train.labels.tolist() == [0] * len(want)
    np.testing.assert_array_equal(train.images.permute(0, 2, 3, 1).numpy(), want)  # in file order
    one_error_line(run("ingest", "cifar10", "--input", tmp_path / "raw", "--output", tmp_path / "none", "--classes",
                       "pegasus"), r"unknown class 'pegasus' in --classes; valid: 0='airplane', .*7='horse'")
    assert_nothing_left(tmp_path / "none")


def _cifar_damage(folder: Path, how: str) -> None:
    if how == "truncated":
        data = (folder / "data_batch_3.bin").read_bytes()
        (folder / "data_batch_3.bin").write_bytes(data[:-5])
    elif how == "missing":
        (folder / "test_batch.bin").unlink()
    elif how == "label":
        data = bytearray((folder / "data_batch_2.bin").read_bytes())
        data[formats.CIFAR10_RECORD] = 12  # the second record's label byte
        (folder / "data_batch_2.bin").write_bytes(bytes(data))
    elif how == "meta":
        (folder / "batches.meta.txt").write_text("\n\n")


@pytest.mark.parametrize("how, pattern", [
    ("truncated", r"data_batch_3.bin is 6141 bytes: 1 whole 3073-byte records and 3068 bytes more .* cut short"),
    ("missing", r"CIFAR-10 binary files missing in .*cifar-10-batches-bin: test_batch.bin; extract cifar-10-binary"),
    ("label", r"data_batch_2.bin record 1 has label 12, but batches.meta.txt names 10 classes"),
    ("meta", r"batches.meta.txt names no class"),
])
def test_cifar10_bad_files_are_one_line_and_leave_nothing(tmp_path, how, pattern):
    formats.write_cifar10_bin(tmp_path, n_per_batch=(2, 2, 2, 2, 2), n_test=2)
    _cifar_damage(tmp_path / "cifar-10-batches-bin", how)
    out = tmp_path / "ds"
    one_error_line(run("ingest", "cifar10", "--input", tmp_path, "--output", out), pattern)
    assert_nothing_left(out)


def test_cifar10_default_root_is_the_data_root(tmp_path, monkeypatch):
    formats.write_cifar10_bin(tmp_path)
    monkeypatch.setenv("GANFORGE_DATA_ROOT", str(tmp_path))
    assert len(open_source("cifar10")) == 13
    monkeypatch.setenv("GANFORGE_DATA_ROOT", str(tmp_path / "elsewhere"))
    with raises_one_line(r"elsewhere does not exist; extract cifar-10-binary.tar.gz"):
        open_source("cifar10", download=True)


# --- CelebA ------------------------------------------------------------------------------------------------------


def test_celeba_attributes_partition_and_pixels(tmp_path):
    written = formats.write_celeba(tmp_path, n=8, seed=7)
    src = open_source("celeba", str(tmp_path))
    assert src.attribute_names == formats.CELEBA_ATTRIBUTES and src.attribute_names[31] == "Smiling"
    np.testing.assert_array_equal(src.attributes, np.stack([w.attributes for w in written.values()]))
    assert src.splits.tolist() == [("train", "val", "test")[w.partition] for w in written.values()]
    assert src.keys.tolist() == list(written) and src.class_names == ["img_align_celeba"]
    assert src.labels.tolist() == [0] * 8
    for image, (name, w) in zip(src.read(np.arange(8)), written.items()):
        with Image.open(tmp_path / "img_align_celeba" / name) as jpeg:
            np.testing.assert_array_equal(image, np.asarray(jpeg.convert("RGB")))
        assert np.abs(image.astype(int) - w.pixels).mean() < 20  # the JPEG (4:2:0) of what was written, not another


def test_celeba_cli_stores_attributes_and_loads_them_back(tmp_path):
    written = formats.write_celeba(tmp_path / "celeba", n=12, size=(26, 22), seed=8)
    out = tmp_path / "faces"
    res = run("ingest", "celeba", "--input", tmp_path / "celeba", "--output", out, "--image-size", "16")
    assert res.exit_code == 0, res.output
    m = read_manifest(str(out))
    assert m["attributes"] == formats.CELEBA_ATTRIBUTES and m["columns"][-1] == "attributes"
    assert m["counts"]["splits"] == {"test": 3, "train": 6, "val": 3}
    names = list(written)
    for split, part in (("train", 0), ("val", 1), ("test", 2)):
        data = load(str(out), split)
        rows = [n for n in names if written[n].partition == part]
        assert data.attribute_names == formats.CELEBA_ATTRIBUTES and data.attributes.dtype == torch.bool
        np.testing.assert_array_equal(data.attributes.numpy(), np.stack([written[n].attributes for n in rows]))
        for image, name in zip(data.images, rows):  # centre-cropped to 22x22, then resized to 16
            with Image.open(tmp_path / "celeba" / "img_align_celeba" / name) as jpeg:
                want = prepare(np.asarray(jpeg.convert("RGB")), 16, None, "crop")
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), want)
        warm = load(str(out), split)  # served by the pixel cache: the same attributes
        assert torch.equal(warm.attributes, data.attributes) and torch.equal(warm.images, data.images)
    shown = run("datasets", "show", str(out))
    assert "attributes (40): 5_o_Clock_Shadow," in shown.stdout and "Smiling" in shown.stdout
    lazy = ParquetImageDataset(str(out), "val")  # verifies the identity, attribute bits included, as load does
    assert lazy.fingerprint == m["fingerprint"] and len(lazy) == 3
    for bad in ([], ["Smiling", "Smiling"], [""]):
        edited = dict(m, attributes=bad)
        (out / "manifest.json").write_text(json.dumps(edited, indent=2, sort_keys=True))
        with raises_one_line(r"corrupt manifest.json \(attributes must be a non-empty list of distinct names\)"):
            read_manifest(str(out))


def test_celeba_fingerprint_covers_the_attributes(tmp_path):
    formats.write_celeba(tmp_path / "a", n=6, seed=9)
    first = run("ingest", "celeba", "--input", tmp_path / "a", "--output", tmp_path / "ds1", "--image-size", "8")
    assert first.exit_code == 0, first.output
    fp1 = read_manifest(str(tmp_path / "ds1"))["fingerprint"]
    table = tmp_path / "a" / "list_attr_celeba.txt"
    lines = table.read_text().splitlines()
    lines[2] = lines[2][:-2] + ("-1" if lines[2].endswith(" 1") else " 1")  # flip one image's last attribute
    table.write_text("\n".join(lines) + "\n")
    again = run("ingest", "celeba", "--input", tmp_path / "a", "--output", tmp_path / "ds2", "--image-size", "8")
    assert again.exit_code == 0, again.output
    m2 = read_manifest(str(tmp_path / "ds2"))
    assert m2["fingerprint"] != fp1  # the same pixels, labels and splits
    # the fingerprint is recomputed from the shards, bits and names included, whichever way it is computed
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "ds2" / m2["shards"][0]["path"]).to_pylist()  # one shard
    records = [(r["sha256"], r["label"], r["split"], r["attributes"]) for r in rows]
    assert fingerprint(records, m2["attributes"]) == m2["fingerprint"] == verified_fingerprint(str(tmp_path / "ds2"))
    shard = pq.read_table(tmp_path / "ds2" / m2["shards"][0]["path"])
    assert table_fingerprint(shard, m2["attributes"]) == m2["fingerprint"]
    # renaming attributes in the manifest (Smiling <-> Young) is refused, as an edited class name is
    m2["attributes"][31], m2["attributes"][39] = m2["attributes"][39], m2["attributes"][31]
    (tmp_path / "ds2" / "manifest.json").write_text(json.dumps(m2, indent=2, sort_keys=True))
    with raises_one_line("claims fingerprint .* but the shards hold"):
        load(str(tmp_path / "ds2"), use_cache=False)


def test_fingerprint_without_attributes_is_unchanged():
    """Datasets ingested before attributes existed keep their fingerprints: the formula is the old one."""
    records = [("b" * 64, 1, "train"), ("a" * 64, 0, "val")]
    old = hashlib.sha256(b"ganforge-dataset-v1\n" + f"{'a' * 64} 0 val\n{'b' * 64} 1 train\n".encode()).hexdigest()
    assert fingerprint(records) == old
    with_bits = fingerprint([(*r, "01") for r in records], ["Smiling", "Young"])
    assert with_bits != old and with_bits != fingerprint([(*r, "01") for r in records], ["Young", "Smiling"])


def test_celeba_kaggle_csv_layout_reads_the_same(tmp_path):
    txt = formats.write_celeba(tmp_path / "txt", n=8, seed=10)
    formats.write_celeba(tmp_path / "csv", n=8, seed=10, csv=True)
    a, b = open_source("celeba", str(tmp_path / "txt")), open_source("celeba", str(tmp_path / "csv"))
    assert a.attribute_names == b.attribute_names and np.array_equal(a.attributes, b.attributes)
    assert a.splits.tolist() == b.splits.tolist() and b.keys.tolist() == list(txt)
    assert b.details["image_folder"] == "img_align_celeba/img_align_celeba"
    assert [pixel_sha256(x) for x in a.read(np.arange(8))] == [pixel_sha256(x) for x in b.read(np.arange(8))]


def test_celeba_without_partition_draws_a_val_split(tmp_path):
    formats.write_celeba(tmp_path / "c", n=10, partition=False)
    assert open_source("celeba", str(tmp_path / "c")).splits is None
    res = run("ingest", "celeba", "--input", tmp_path / "c", "--output", tmp_path / "ds", "--image-size", "8",
              "--val-fraction", "0.2")
    assert res.exit_code == 0, res.output
    assert read_manifest(str(tmp_path / "ds"))["counts"]["splits"] == {"train": 8, "val": 2}


def _celeba_damage(root: Path, how: str) -> None:
    table = root / "list_attr_celeba.txt"
    lines = table.read_text().splitlines()
    if how == "missing image":
        (root / "img_align_celeba" / "000004.jpg").unlink()
    elif how == "count":
        lines[0] = "9"
    elif how == "short line":
        lines[3] = " ".join(lines[3].split()[:-2])  # two values short
    elif how == "value":
        lines[4] = lines[4].replace("-1", " 0", 1)
    elif how == "repeated":
        lines[5] = lines[2]
    elif how == "partition":
        part = root / "list_eval_partition.txt"
        part.write_text("".join(part.read_text().splitlines(keepends=True)[:-1]))
    elif how == "no table":
        table.unlink()
    table.write_text("\n".join(lines) + "\n") if table.exists() else None


@pytest.mark.parametrize("how, pattern", [
    ("missing image", r"list_attr_celeba.txt lists 1 image\(s\) missing from .*img_align_celeba \(first: 000004.jpg\)"),
    ("count", r"says 9 images on line 1 but lists 6"),
    ("short line", r"list_attr_celeba.txt line 4 has 38 values for 40 attributes"),
    ("value", r"list_attr_celeba.txt line 5 holds '0'; attributes are 1 \(has it\) or -1"),
    ("repeated", r"line 6 lists 000001.jpg again"),
    ("partition", r"list_eval_partition.txt leaves out 1 listed image\(s\) \(first: 000006.jpg\)"),
    ("no table", r"no list_attr_celeba.txt or list_attr_celeba.csv in"),
])
def test_celeba_bad_files_are_one_line_and_leave_nothing(tmp_path, how, pattern):
    formats.write_celeba(tmp_path / "c", n=6)
    _celeba_damage(tmp_path / "c", how)
    out = tmp_path / "ds"
    one_error_line(run("ingest", "celeba", "--input", tmp_path / "c", "--output", out, "--image-size", "8"), pattern)
    assert_nothing_left(out)


def test_celeba_undecodable_image_mid_ingest_leaves_nothing(tmp_path):
    formats.write_celeba(tmp_path / "c", n=6)
    (tmp_path / "c" / "img_align_celeba" / "000005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "ds"
    one_error_line(run("ingest", "celeba", "--input", tmp_path / "c", "--output", out, "--image-size", "8"),
                   r"cannot decode image .*000005.jpg")
    assert_nothing_left(out)


# --- reconstruct --attribute Smiling ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A tiny CelebA folder ingested at 16 px (16 train images, Smiling on 6) and an ae trained on it briefly."""
    from ganforge.data.ingest import ingest
    from ganforge.training import TrainConfig, train

    root = tmp_path_factory.mktemp("faces")
    written = formats.write_celeba(root / "celeba", n=16, seed=11, partition=False)
    smiling = formats.CELEBA_ATTRIBUTES.index("Smiling")
    table = root / "celeba" / "list_attr_celeba.txt"
    lines = table.read_text().splitlines()
    for k in range(len(written)):  # Smiling on the first 6 only, Eyeglasses on none
        fields = lines[2 + k].split()
        fields[1 + smiling] = "1" if k < 6 else "-1"
        fields[1 + formats.CELEBA_ATTRIBUTES.index("Eyeglasses")] = "-1"
        lines[2 + k] = " ".join(fields)
    table.write_text("\n".join(lines) + "\n")
    ingest("celeba", output=str(root / "ds"), input=str(root / "celeba"), image_size=16, val_fraction=0)
    train(TrainConfig(dataset=str(root / "ds"), model="ae", batch_size=8, width=8, latent_dim=4, lr_g=2e-3,
                      g_norm="none", steps=10, track=False, log_every=10, checkpoint_every=10,
                      output=str(root / "ae")))  # fmt: skip
    return {"dataset": str(root / "ds"), "ae": str(root / "ae")}


def test_reconstruct_attribute_smiling_is_the_books_latent_arithmetic(faces, tmp_path):
    from ganforge.latent import decode, encode, load_autoencoder

    out = tmp_path / "smile.png"
    res = run("reconstruct", "--checkpoint", faces["ae"], "--dataset", faces["dataset"], "--attribute", "Smiling",
              "--n", "2", "--alphas=0,1.5", "--out", out)
    assert res.exit_code == 0, res.output
    assert "x the attribute 'Smiling' vector" in res.stdout
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape == (2 + 18 * 2, 2 + 18 * 3, 3)  # 2 rows of original + 2 alphas, 16 px cells, 2 px padding
    ae = load_autoencoder(faces["ae"])
    data = load(faces["dataset"])
    z = encode(ae, data.images)
    has = data.attributes[:, formats.CELEBA_ATTRIBUTES.index("Smiling")]
    assert has.tolist() == [True] * 6 + [False] * 10
    vector = z[:6].mean(0) - z[6:].mean(0)  # mean latent with the attribute minus mean latent without it
    want = decode(ae, z[:2] + 1.5 * vector)
    want = ((want + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for row in range(2):
        cell = grid[2 + 18 * row : 18 + 18 * row, 2 + 18 * 2 : 18 + 18 * 2]
        assert np.abs(cell.astype(int) - want[row]).max() <= 1


def test_reconstruct_attribute_errors_are_one_line(faces, tmp_path):
    base = ["--checkpoint", faces["ae"], "--dataset", faces["dataset"], "--out", tmp_path / "x.png"]
    line = one_error_line(run("reconstruct", *base, "--attribute", "Smilling"),
                          r"unknown attribute 'Smilling'; the dataset's attributes: 5_o_Clock_Shadow, .*Smiling, "
                          r".*Young; its classes: img_align_celeba \(or ids 0 to 0\)")
    assert "Wearing_Necktie" in line
    one_error_line(run("reconstruct", *base, "--attribute", "Eyeglasses"),
                   "needs images with and without the attribute; got 0 of 16")
    assert not (tmp_path / "x.png").exists()
    # a name that is no attribute is looked up among the classes
    one_error_line(run("reconstruct", *base, "--attribute", "img_align_celeba"),  # the one class: every image has it
                   "needs images with and without the attribute; got 16 of 16")


def test_damaged_attributes_cache_is_rebuilt_with_one_warning(faces, capsys):
    first = load(faces["dataset"])
    [cached] = Path(os.environ["GANFORGE_CACHE_DIR"]).glob("datasets/*/train-*-attributes.npy")
    np.save(cached, np.zeros((16, 3), bool))  # another shape: its size no longer matches the entry's meta
    again = load(faces["dataset"])
    assert torch.equal(again.attributes, first.attributes)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "attributes.npy has" in warnings[0] and "rebuilding it" in warnings[0]


def test_encode_keeps_the_attributes(faces, tmp_path):
    res = run("encode", "--checkpoint", faces["ae"], "--dataset", faces["dataset"], "--limit", "5",
              "--out", tmp_path / "z.npz")
    assert res.exit_code == 0, res.output
    got = np.load(tmp_path / "z.npz")
    assert got["z"].shape == (5, 4) and got["attributes"].shape == (5, 40)
    assert got["attribute_names"].tolist() == formats.CELEBA_ATTRIBUTES
    assert got["attributes"][:, formats.CELEBA_ATTRIBUTES.index("Smiling")].tolist() == [True] * 5
