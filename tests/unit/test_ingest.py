"""Ingest and load on local storage, with an in-memory source of known pixels."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ganforge.data import ParquetImageDataset, load, read_manifest
from ganforge.data.images import pixel_sha256, prepare
from ganforge.data.ingest import ingest
from ganforge.data.sources import SOURCES, Source
from ganforge.errors import GanforgeError


def make_source(n=60, shape=(12, 16, 3), splits=None, seed=0, fail_at=None, classes=("cat", "dog", "owl")):
    """A source of ``n`` random images of ``shape``; ``fail_at`` makes reading that index raise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n) % len(classes)

    def read(indices):
        if fail_at is not None and fail_at in set(indices.tolist()):
            raise GanforgeError(f"cannot decode image {fail_at}; remove or replace it")
        return [pixels[i] for i in indices]

    src = Source("digits", list(classes), labels, None if splits is None else np.asarray(splits), read)
    return src, pixels, labels


@pytest.fixture
def fake_source(monkeypatch):
    """Install a fake under the name ``digits``; returns a setter taking make_source's kwargs."""
    box = {}

    def install(**kwargs):
        src, pixels, labels = make_source(**kwargs)
        monkeypatch.setitem(SOURCES, "digits", lambda input_path, download: src)
        box.update(src=src, pixels=pixels, labels=labels)
        return box

    return install


def test_round_trip_exact_pixels_labels_and_manifest(tmp_path, fake_source):
    box = fake_source(n=50)
    out = tmp_path / "ds"
    res = ingest("digits", str(out), val_fraction=0.2, shard_size_mb=0.001)
    m = read_manifest(str(out))
    assert m["counts"]["total"] == 50 and m["counts"]["splits"] == {"train": 40, "val": 10}
    assert m["fingerprint"] == res.fingerprint and m["schema_version"] == 1
    assert m["image"] == {"height": 12, "width": 16, "channels": 3, "encoding": "png"}
    assert sum(c for c in m["counts"]["classes"]["train"].values()) == 40
    assert len(m["shards"]) > 1, "a tiny --shard-size-mb must split the data into several shards"
    cols = pq.read_schema(os.path.join(out, m["shards"][0]["path"])).names
    for c in ["id", "split", "label", "label_name", "height", "width", "channels", "image", "sha256"]:
        assert c in cols
    assert pq.ParquetFile(os.path.join(out, m["shards"][0]["path"])).metadata.row_group(0).column(0).compression == "ZSTD"

    both = [load(str(out), split=s) for s in ("train", "val")]
    got = torch.cat([b.images for b in both]).permute(0, 2, 3, 1).numpy()
    got_labels = torch.cat([b.labels for b in both]).numpy()
    # every written image is exactly one of the source's, with its label
    by_hash = {pixel_sha256(p): (p, int(lbl)) for p, lbl in zip(box["pixels"], box["labels"])}
    for image, label in zip(got, got_labels):
        ref, ref_label = by_hash[pixel_sha256(image)]
        assert np.array_equal(image, ref) and label == ref_label
    assert both[0].class_names == ["cat", "dog", "owl"] and both[0].images.dtype == torch.uint8


def test_rerun_is_idempotent_and_overwrite_rewrites(tmp_path, fake_source):
    fake_source(n=20)
    out = str(tmp_path / "ds")
    first = ingest("digits", out)
    again = ingest("digits", out)
    assert again.reused and again.fingerprint == first.fingerprint
    rewritten = ingest("digits", out, overwrite=True)
    assert not rewritten.reused and rewritten.fingerprint == first.fingerprint
    with pytest.raises(GanforgeError, match="--overwrite"):
        ingest("digits", out, val_fraction=0.5)
    changed = ingest("digits", out, val_fraction=0.5, overwrite=True)
    assert changed.fingerprint != first.fingerprint
    assert sorted(os.listdir(out)) == ["manifest.json", next(d for d in os.listdir(out) if d.startswith("v-"))]
    assert next(d for d in os.listdir(out) if d.startswith("v-")).startswith(f"v-{changed.fingerprint[:16]}-")


def test_fingerprint_depends_on_content_not_shards(tmp_path, fake_source):
    fake_source(n=30)
    a = ingest("digits", str(tmp_path / "a"), shard_size_mb=0.001)
    b = ingest("digits", str(tmp_path / "b"), shard_size_mb=100)
    assert a.fingerprint == b.fingerprint
    fake_source(n=30, seed=1)
    c = ingest("digits", str(tmp_path / "c"))
    assert c.fingerprint != a.fingerprint


def test_classes_limit_and_source_splits(tmp_path, fake_source):
    splits = ["train"] * 40 + ["test"] * 20
    fake_source(n=60, splits=splits)
    out = str(tmp_path / "ds")
    ingest("digits", out, classes=("owl", "0"), limit=5, split_seed=3)
    m = read_manifest(out)
    assert m["class_names"] == ["cat", "owl"]  # renumbered in source label order
    assert m["counts"]["splits"] == {"test": 5, "train": 5}
    data = load(out, "test")
    assert set(data.labels.tolist()) <= {0, 1}
    with pytest.raises(GanforgeError, match="unknown class 'emu'.*valid"):
        ingest("digits", str(tmp_path / "x"), classes=("emu",))


def test_resize_channels_and_aspect(tmp_path, fake_source):
    box = fake_source(n=6, shape=(12, 16, 3))
    crop = ingest("digits", str(tmp_path / "c"), image_size=8, channels=1, val_fraction=0)
    pad = ingest("digits", str(tmp_path / "p"), image_size=16, aspect="pad", val_fraction=0)
    assert crop.manifest["image"]["channels"] == 1 and pad.manifest["image"]["channels"] == 3
    assert load(str(tmp_path / "c")).images.shape == (6, 1, 8, 8)
    got = load(str(tmp_path / "p")).images.permute(0, 2, 3, 1).numpy()
    assert got.shape == (6, 16, 16, 3)
    # pad mode letterboxes a 12x16 image into 16x16: two black rows above and below, pixels intact
    assert got[:, :2].max() == 0 and got[:, 14:].max() == 0
    assert {pixel_sha256(np.ascontiguousarray(g[2:14])) for g in got} == {pixel_sha256(p) for p in box["pixels"]}
    expect = prepare(box["pixels"][0], 8, 1, "crop")
    assert np.array_equal(load(str(tmp_path / "c")).images[0].permute(1, 2, 0).numpy(), expect)


def test_failure_midway_leaves_nothing(tmp_path, fake_source):
    fake_source(n=3000, fail_at=2500)
    out = tmp_path / "ds"
    with pytest.raises(GanforgeError, match="cannot decode image 2500"):
        ingest("digits", str(out))
    assert not out.exists()  # no manifest, no temporary shards, not even the folder it created
    with pytest.raises(GanforgeError, match="no dataset at"):
        load(str(out))


def test_mixed_shapes_need_image_size(tmp_path, monkeypatch):
    images = [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)]
    src = Source("folder", ["a"], np.zeros(2, np.int64), None, lambda idx: [images[i] for i in idx])
    monkeypatch.setitem(SOURCES, "folder", lambda input_path, download: src)
    with pytest.raises(GanforgeError, match="different shapes.*--image-size"):
        ingest("folder", str(tmp_path / "ds"), val_fraction=0)
    assert ingest("folder", str(tmp_path / "ds"), image_size=4, val_fraction=0).manifest["counts"]["total"] == 2


def test_cached_load_serves_pixels_without_parquet(tmp_path, fake_source, monkeypatch):
    from ganforge.data import loader

    fake_source(n=20)
    out = str(tmp_path / "ds")
    ingest("digits", out, val_fraction=0)
    first = load(out)

    def no_parquet(*args, **kwargs):  # prove the second load reads the cache, not the shards
        raise AssertionError("a warm load read a shard or decoded a PNG")

    with monkeypatch.context() as patch:
        patch.setattr(loader, "read_shard", no_parquet)
        patch.setattr(loader, "decode_png", no_parquet)
        second = load(out)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    m = read_manifest(out)
    for shard in m["shards"]:  # a shard gone is a broken dataset, cached or not
        os.remove(os.path.join(out, shard["path"]))
    for use_cache in (True, False):
        with pytest.raises(GanforgeError, match="shard .* is missing; re-ingest with --overwrite"):
            load(out, use_cache=use_cache)


def test_streaming_dataset_matches_load(tmp_path, fake_source):
    fake_source(n=40)
    out = str(tmp_path / "ds")
    ingest("digits", out, shard_size_mb=0.001)
    data = load(out, "train")
    ds = ParquetImageDataset(out, "train")
    assert len(ds) == len(data)
    stream = {pixel_sha256(ds[i][0].numpy()): ds[i][1] for i in range(len(ds))}
    mem = {pixel_sha256(x.numpy()): int(y) for x, y in zip(data.images, data.labels)}
    assert stream == mem


def test_missing_split_and_bad_options(tmp_path, fake_source):
    fake_source(n=10)
    out = str(tmp_path / "ds")
    ingest("digits", out, val_fraction=0)
    with pytest.raises(GanforgeError, match="no split 'test'"):
        load(out, "test", use_cache=False)
    from pydantic import ValidationError

    for bad in ({"image_size": 0}, {"limit": 0}, {"val_fraction": 1.0}, {"channels": 2}):
        with pytest.raises(ValidationError):
            ingest("digits", str(tmp_path / "y"), **bad)
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert "AWS" not in json.dumps(manifest)


def test_filesystem_without_locks_is_one_line(tmp_path, fake_source, monkeypatch):
    import errno
    import fcntl

    fake_source(n=10)

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(GanforgeError, match="cannot lock .*No locks available.*local disk or to s3://"):
        ingest("digits", str(tmp_path / "ds"))
    assert not (tmp_path / "ds").exists()


def test_ingest_leaves_no_lock_and_one_version(tmp_path, fake_source):
    fake_source(n=10)
    out = tmp_path / "ds"
    first = ingest("digits", str(out), val_fraction=0.2)
    ingest("digits", str(out), val_fraction=0.3, overwrite=True)
    names = sorted(os.listdir(out))
    assert names[0] == "manifest.json" and len(names) == 2 and names[1].startswith("v-"), names
    assert not names[1].startswith(f"v-{first.fingerprint[:16]}")


def test_rerun_removes_a_manifest_write_cut_short(tmp_path, fake_source):
    """A kill inside the manifest's write-then-rename leaves manifest.json.tmp-*; the next ingest removes it."""
    fake_source(n=10)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json.tmp-1c5dc62b").write_text('{"half": ')
    ingest("digits", str(out), val_fraction=0.2)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("v-")) == ["manifest.json"]
