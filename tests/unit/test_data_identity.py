"""Verified identity of datasets (issue 22): what ``load`` serves, and the fingerprint it reports, were
checked against the bytes read; the pixel cache never serves a forged, stale or damaged entry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from ganforge.data import ParquetImageDataset, load, loader, read_manifest, verified_fingerprint
from ganforge.data.images import decode_png, encode_png, pixel_sha256
from ganforge.data.parquet import fingerprint, table_fingerprint
from ganforge.errors import GanforgeError


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Two different 16 px digits datasets, A and B (read-only: tests copy what they change)."""
    from ganforge.data.ingest import ingest

    root = tmp_path_factory.mktemp("identity")
    a = ingest("digits", output=str(root / "a"), image_size=16, limit=40)
    b = ingest("digits", output=str(root / "b"), image_size=16, limit=24, split_seed=1)
    assert a.fingerprint != b.fingerprint
    return {"a": str(root / "a"), "b": str(root / "b")}


@pytest.fixture
def ds(originals, tmp_path):
    """Fresh copies (cp -r) of A and B, plus a truth table of their pixels decoded without any cache."""
    out = {}
    for name, src in originals.items():
        shutil.copytree(src, tmp_path / name)
        out[name] = str(tmp_path / name)
    return out


def manifest_of(uri: str) -> dict:
    return json.loads(Path(uri, "manifest.json").read_text())


def write_manifest(uri: str, m: dict) -> None:
    Path(uri, "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True))


def forge(uri: str, fp: str) -> None:
    """The reported attack: write another dataset's fingerprint into a (copied) dataset's manifest."""
    m = manifest_of(uri)
    m["fingerprint"] = fp
    write_manifest(uri, m)


def truth(uri: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    d = load(uri, split, use_cache=False)
    return d.images.clone(), d.labels.clone()


def same(data, expected) -> bool:
    return torch.equal(data.images, expected[0]) and torch.equal(data.labels, expected[1])


def shard_path(uri: str, k: int = 0) -> Path:
    return Path(uri, manifest_of(uri)["shards"][k]["path"])


def inverted_shard(path: Path, keep_sha: bool = False) -> None:
    """Rewrite a shard with the same rows and ids but other pixels (inverted), as a careful forger would:
    the sha256 column follows the new pixels unless ``keep_sha``."""
    table = pq.read_table(path)
    images, shas = [], []
    for png, c in zip(table.column("image").to_pylist(), table.column("channels").to_pylist()):
        pixels = 255 - decode_png(png, c)
        images.append(encode_png(pixels))
        shas.append(pixel_sha256(pixels))
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    if not keep_sha:
        table = table.set_column(table.schema.get_field_index("sha256"), "sha256", pa.array(shas, pa.string()))
    pq.write_table(table, path, compression="zstd")


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_decodes(monkeypatch) -> list:
    calls = []
    real = loader.decode_png

    def counting(png, channels):
        calls.append(1)
        return real(png, channels)

    monkeypatch.setattr(loader, "decode_png", counting)
    return calls


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# --- the format: shard digests and the Arrow fingerprint ----------------------------------------------------


def test_ingest_records_each_shard_files_digest(tmp_path):
    from ganforge.data.ingest import ingest

    out = tmp_path / "ds"
    ingest("digits", output=str(out), image_size=8, limit=30, shard_size_mb=0.002)
    shards = read_manifest(str(out))["shards"]
    assert len(shards) > 1
    for shard in shards:
        assert shard["sha256"] == file_sha(out / shard["path"])


def test_manifest_with_a_malformed_shard_digest_is_refused(ds):
    m = manifest_of(ds["a"])
    m["shards"][0]["sha256"] = "not-a-digest"
    write_manifest(ds["a"], m)
    with pytest.raises(GanforgeError, match="corrupt manifest.json.*sha256 that is not a SHA-256"):
        load(ds["a"])


@pytest.mark.parametrize("splits", [["train", "val"], ["b", "a", "é", "ä", "z"], ["x"]])
def test_table_fingerprint_is_the_fingerprint(splits):
    rng = np.random.default_rng(len(splits))
    n = 300
    shas = [hashlib.sha256(bytes([i % 50])).hexdigest() for i in range(n)]  # duplicates on purpose
    labels = rng.integers(0, 12, n).tolist()
    split = [splits[i] for i in rng.integers(0, len(splits), n)]
    table = pa.table({"sha256": shas, "label": pa.array(labels, pa.int32()), "split": split})
    chunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 100), table.slice(107)])  # as read from shards
    assert table_fingerprint(table) == table_fingerprint(chunked) == fingerprint(list(zip(shas, labels, split)))


# --- the reported defect: a forged fingerprint ---------------------------------------------------------------


@pytest.mark.parametrize("order", ["forged_first", "genuine_first"])
def test_forged_fingerprint_is_refused_and_never_poisons_the_genuine_cache(ds, tmp_path, order):
    genuine = ds["b"]
    expected = truth(genuine)
    fp_a, fp_b = manifest_of(ds["a"])["fingerprint"], manifest_of(genuine)["fingerprint"]
    forged = str(tmp_path / "forged")
    shutil.copytree(ds["a"], forged)
    forge(forged, fp_b)
    if order == "genuine_first":
        assert same(load(genuine), expected)
    with pytest.raises(GanforgeError) as err:
        load(forged)
    msg = str(err.value)
    assert "\n" not in msg and "manifest.json" in msg and "--overwrite" in msg
    assert f"claims fingerprint {fp_b[:16]} but the shards hold {fp_a[:16]}" in msg
    with pytest.raises(GanforgeError, match="claims fingerprint"):
        load(forged)  # refused again: no cache entry or record was left behind for it
    with pytest.raises(GanforgeError, match="claims fingerprint"):
        load(forged, use_cache=False)
    for _ in range(2):  # cold then warm (or warm twice): B's own pixels, under B's fingerprint
        got = load(genuine)
        assert same(got, expected) and got.fingerprint == fp_b


def test_forged_fingerprint_without_shard_digests_is_refused(ds):
    """A forger who also strips the shard digests (an old-style manifest) is caught by content."""
    m = manifest_of(ds["a"])
    for shard in m["shards"]:
        del shard["sha256"]
    m["fingerprint"] = manifest_of(ds["b"])["fingerprint"]
    write_manifest(ds["a"], m)
    with pytest.raises(GanforgeError, match="claims fingerprint"):
        load(ds["a"])


def test_forged_fingerprint_is_refused_by_every_reader(ds):
    from ganforge.metrics.features import get_extractor
    from ganforge.metrics.real_features import real_features

    genuine_fp = manifest_of(ds["b"])["fingerprint"]
    pixels = get_extractor("pixels")
    real_features(ds["b"], "train", pixels, None, 64)  # B's features are cached under B's fingerprint
    forge(ds["a"], genuine_fp)
    with pytest.raises(GanforgeError, match="claims fingerprint"):
        real_features(ds["a"], "train", pixels, None, 64)  # before: B's cached features, silently
    with pytest.raises(GanforgeError, match="claims fingerprint"):
        ParquetImageDataset(ds["a"], "train")
    with pytest.raises(GanforgeError, match="claims fingerprint"):
        verified_fingerprint(ds["a"])
    assert verified_fingerprint(ds["b"]) == genuine_fp


def test_train_on_a_forged_dataset_exits_2_with_one_error_line(ds, tmp_path):
    from ganforge.cli import app

    forge(ds["a"], manifest_of(ds["b"])["fingerprint"])
    res = CliRunner().invoke(app, ["train", "--dataset", ds["a"], "--output", str(tmp_path / "run"), "--steps", "2",
                                   "--model", "dcgan", "--batch-size", "8", "--width", "8", "--latent-dim", "8",
                                   "--no-track"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "claims fingerprint" in lines[0] and "manifest.json" in lines[0]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("ckpt-*"))


# --- stale data: replaced shards, edited manifests -------------------------------------------------------


def test_replaced_shard_is_refused_never_served_stale(ds):
    uri = ds["a"]
    before = truth(uri)
    assert same(load(uri), before)  # cached and recorded
    inverted_shard(shard_path(uri))  # same rows and ids, other pixels, consistent sha256 column
    for use_cache in (True, False):
        with pytest.raises(GanforgeError, match="shard .*part-00000.parquet changed after ingest.*--overwrite"):
            load(uri, use_cache=use_cache)
    with pytest.raises(GanforgeError, match="changed after ingest"):
        ParquetImageDataset(uri)


def test_replaced_shard_of_an_old_manifest_is_refused_by_content(ds):
    uri = ds["a"]
    m = manifest_of(uri)
    for shard in m["shards"]:
        del shard["sha256"]
    write_manifest(uri, m)
    before = truth(uri)
    assert same(load(uri), before)
    inverted_shard(shard_path(uri))
    with pytest.raises(GanforgeError, match="claims fingerprint"):  # the rows' hashes changed
        load(uri)
    inverted_shard(shard_path(uri))  # back to the original pixels, in a rewritten file: loads right
    assert same(load(uri), before)
    inverted_shard(shard_path(uri), keep_sha=True)  # other pixels under the original hashes
    with pytest.raises(GanforgeError, match="image id .* in shard .* does not match its sha256"):
        load(uri)


@pytest.mark.parametrize("bad", ["uppercase", "garbage", "short"])
def test_malformed_sha256_values_are_refused(ds, bad):
    """A forger who rewrites the sha256 column (and the manifest to match) still cannot pass other values off."""
    uri = ds["a"]
    path = shard_path(uri)
    table = pq.read_table(path)
    shas = table.column("sha256").to_pylist()
    first_train = table.column("split").to_pylist().index("train")
    good = shas[first_train]
    shas[first_train] = {"uppercase": good.upper(), "garbage": "z" * 64, "short": good[:-1]}[bad]
    table = table.set_column(table.schema.get_field_index("sha256"), "sha256", pa.array(shas, pa.string()))
    pq.write_table(table, path, compression="zstd")
    m = manifest_of(uri)
    m["shards"][0]["sha256"] = file_sha(path)
    m["fingerprint"] = table_fingerprint(table)
    write_manifest(uri, m)
    row_id = table.column("id")[first_train].as_py()
    with pytest.raises(GanforgeError, match=f"image id {row_id} in shard .* does not match its sha256"):
        load(uri)
    stream = ParquetImageDataset(uri, "train")
    with pytest.raises(GanforgeError, match="does not match its sha256"):
        [stream[i] for i in range(len(stream))]


def test_consistently_rewritten_dataset_is_reverified_not_served_stale(ds):
    """Shards and manifest rewritten together (a new dataset in place): the new pixels, never the cached old."""
    uri = ds["a"]
    before = truth(uri)
    assert same(load(uri), before)
    path = shard_path(uri)
    inverted_shard(path)
    m = manifest_of(uri)
    m["shards"][0]["sha256"] = file_sha(path)
    rows = pq.read_table(path, columns=["sha256", "label", "split"])
    m["fingerprint"] = table_fingerprint(rows)
    write_manifest(uri, m)
    got = load(uri)
    assert torch.equal(got.images, 255 - before[0]) and torch.equal(got.labels, before[1])
    assert got.fingerprint == m["fingerprint"]


def test_shard_digest_edited_in_the_manifest_is_refused(ds):
    uri = ds["a"]
    load(uri)
    m = manifest_of(uri)
    m["shards"][0]["sha256"] = "0" * 64
    write_manifest(uri, m)
    with pytest.raises(GanforgeError, match="changed after ingest"):
        load(uri)


def test_renamed_class_in_the_manifest_is_refused(ds):
    uri = ds["a"]
    load(uri)
    m = manifest_of(uri)
    old = m["class_names"][1]
    m["class_names"][1] = "seven"  # consistently: the manifest's own checks pass
    m["counts"]["classes"] = {s: {("seven" if k == old else k): v for k, v in c.items()}
                              for s, c in m["counts"]["classes"].items()}
    write_manifest(uri, m)
    with pytest.raises(GanforgeError, match="manifest.json names label 1 'seven' but the shards call it '1'"):
        load(uri)


def test_harmless_manifest_edit_is_reverified_and_loads(ds, monkeypatch):
    uri = ds["a"]
    before = truth(uri)
    load(uri)
    m = manifest_of(uri)
    m["created_at"] = "2000-01-01T00:00:00Z"
    write_manifest(uri, m)
    calls = count_decodes(monkeypatch)
    assert same(load(uri), before)
    assert len(calls) == len(before[0]), "an edited manifest must be verified again (decoded), not trusted"
    calls.clear()
    assert same(load(uri), before) and not calls


def test_lazy_dataset_refuses_a_shard_replaced_after_it_was_opened(ds):
    uri = ds["a"]
    stream = ParquetImageDataset(uri, "train")
    assert stream.fingerprint == manifest_of(uri)["fingerprint"]
    expected = truth(uri)
    assert torch.equal(stream[0][0], expected[0][0]) and stream[0][1] == int(expected[1][0])
    inverted_shard(shard_path(uri))
    stream._cached = None  # as a DataLoader worker that opens the file afresh
    with pytest.raises(GanforgeError, match="item 0 in shard .* does not match its sha256"):
        stream[0]


# --- the cache: warm loads, damaged entries, copies --------------------------------------------------------


def test_warm_load_decodes_nothing_and_reads_no_shard(ds, monkeypatch):
    uri = ds["a"]
    calls = count_decodes(monkeypatch)
    first = load(uri)
    assert len(calls) == len(first)

    def no_parquet(*args, **kwargs):
        raise AssertionError("a warm load read a shard")

    monkeypatch.setattr(loader, "read_shard", no_parquet)
    calls.clear()
    second = load(uri)
    assert not calls and same(second, (first.images, first.labels))
    assert second.fingerprint == first.fingerprint == manifest_of(uri)["fingerprint"]


def test_copied_dataset_loads_right_and_is_verified_once(ds, tmp_path, monkeypatch):
    uri = ds["a"]
    expected = truth(uri)
    assert same(load(uri), expected)
    copy = str(tmp_path / "copy")
    shutil.copytree(uri, copy)
    calls = count_decodes(monkeypatch)
    assert same(load(copy), expected)
    assert len(calls) == len(expected[0]), "a new location is verified (decoded) before the cache serves it"
    calls.clear()
    assert same(load(copy), expected) and same(load(uri), expected) and not calls


def test_old_manifest_without_shard_digests_still_loads(ds):
    uri = ds["a"]
    expected = truth(uri)
    m = manifest_of(uri)
    for shard in m["shards"]:
        del shard["sha256"]
    write_manifest(uri, m)
    for _ in range(2):
        got = load(uri)
        assert same(got, expected) and got.fingerprint == m["fingerprint"]
    stream = ParquetImageDataset(uri, "train")
    assert len(stream) == len(expected[0]) and torch.equal(stream[3][0], expected[0][3])


def entry_files(split: str = "train") -> dict[str, Path]:
    root = Path(os.environ["GANFORGE_CACHE_DIR"], "datasets")
    found = {}
    for kind in ("images.npy", "labels.npy", "meta.json"):
        (path,) = [p for p in root.glob(f"*/{split}-*-{kind}")]
        found[kind] = path
    return found


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "truncated images": lambda f: truncate(f["images.npy"]),
    "images of another shape": lambda f: np.save(f["images.npy"], np.zeros((3, 1, 16, 16), np.uint8)),
    "images of the same size, other shape": lambda f: np.save(
        f["images.npy"], np.load(f["images.npy"]).reshape(-1, 1, 16 * 16, 1)),
    "garbage labels": lambda f: f["labels.npy"].write_bytes(b"\x93NUMPY garbage"),
    "labels out of range": lambda f: np.save(f["labels.npy"], np.full(len(np.load(f["labels.npy"])), 99, np.int64)),
    "meta deleted": lambda f: f["meta.json"].unlink(),
    "meta garbage": lambda f: f["meta.json"].write_text("{"),
    "meta of another split": lambda f: f["meta.json"].write_text(
        json.dumps(json.loads(f["meta.json"].read_text()) | {"split": "val"})),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_cache_entry_is_rebuilt_with_one_warning(ds, capsys, damage):
    uri = ds["a"]
    expected = truth(uri)
    load(uri)
    capsys.readouterr()
    DAMAGES[damage](entry_files())
    got = load(uri)
    assert same(got, expected)
    err = capsys.readouterr().err
    (line,) = warnings_in(err)
    assert "pixel cache" in line and "rebuilding it" in line and uri in line
    assert "Traceback" not in err
    assert same(load(uri), expected) and not warnings_in(capsys.readouterr().err)


def test_truncated_cache_file_gives_no_mmap_traceback(ds, capsys, monkeypatch):
    """The reported traceback: ``mmap length is greater than file size``."""
    uri = ds["a"]
    load(uri)
    truncate(entry_files()["images.npy"])
    calls = count_decodes(monkeypatch)
    got = load(uri)
    assert len(calls) == len(got)  # rebuilt from the shards, verified
    assert len(warnings_in(capsys.readouterr().err)) == 1


def test_unwritable_cache_still_loads_with_a_warning(ds, tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    expected = truth(ds["a"])
    got = load(ds["a"], cache_dir=str(blocked / "cache"))
    assert same(got, expected)
    (line,) = warnings_in(capsys.readouterr().err)
    assert "cannot write the pixel cache" in line


def test_each_split_is_verified_before_it_is_served(ds, monkeypatch):
    uri = ds["a"]
    load(uri, "train")
    calls = count_decodes(monkeypatch)
    val = load(uri, "val")
    assert len(calls) == len(val)  # the location is known, but val's pixels were never checked
    calls.clear()
    load(uri, "val")
    load(uri, "train")
    assert not calls


# --- S3 -------------------------------------------------------------------------------------------------


def test_s3_shard_digests_and_replaced_shard(s3_env, originals):
    import boto3

    from ganforge.data.ingest import ingest
    from ganforge.storage import s3_endpoint

    uri = f"s3://{s3_env}/digits"
    ingest("digits", output=uri, image_size=16, limit=24)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(), region_name="us-east-1")
    shard = read_manifest(uri)["shards"][0]
    key = f"digits/{shard['path']}"
    body = s3.get_object(Bucket=s3_env, Key=key)["Body"].read()
    assert shard["sha256"] == hashlib.sha256(body).hexdigest()
    first = load(uri)
    assert same(load(uri), (first.images, first.labels))
    s3.put_object(Bucket=s3_env, Key=key, Body=Path(shard_path(originals["b"])).read_bytes())
    with pytest.raises(GanforgeError, match="changed after ingest"):
        load(uri)


def test_lazy_dataset_pickles_for_dataloader_workers(ds):
    import pickle

    stream = ParquetImageDataset(ds["a"], "val")
    again = pickle.loads(pickle.dumps(stream))
    assert torch.equal(again[1][0], stream[1][0]) and again.fingerprint == stream.fingerprint


def test_ingest_does_not_reuse_a_dataset_whose_claim_does_not_verify(ds, originals, capfd):
    """The same inputs into a forged copy: ingest reports the verified fingerprint, never the forged claim."""
    from ganforge.data.ingest import ingest

    genuine = read_manifest(originals["a"])["fingerprint"]
    forge(ds["a"], read_manifest(originals["b"])["fingerprint"])
    res = ingest("digits", output=ds["a"], image_size=16, limit=40)
    err = capfd.readouterr().err
    assert "does not verify" in err and "ingesting it again" in err
    assert not res.reused and res.fingerprint == genuine == read_manifest(ds["a"])["fingerprint"]
    again = ingest("digits", output=ds["a"], image_size=16, limit=40)  # now whole: reused, with its checked value
    assert again.reused and again.fingerprint == genuine
