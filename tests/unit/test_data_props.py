"""Property-based bad input for ingest and dataset reading (issue 13).

Every example either succeeds with a valid result (a dataset readable end to end, with the counts,
labels and pixels the input implies) or fails with exit 2 and one ``error:`` line, leaving no output
behind. Never a traceback, never a partial dataset, never a silently different one.

Malformed files of every source format (IDX, HDF5, image folders), manifests and Parquet shards,
and the flags of ``ingest`` and ``datasets show``. ``GANFORGE_HYPOTHESIS_EXAMPLES`` sets the number of
examples per test (default 40) for a long run on demand.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.data import ParquetImageDataset, load, read_manifest
from ganforge.errors import GanforgeError
from tests import formats

settings.register_profile(
    "ganforge-data-props",
    max_examples=int(os.environ.get("GANFORGE_HYPOTHESIS_EXAMPLES") or 40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPS = settings.get_profile("ganforge-data-props")
runner = CliRunner()
QUIET = {"GANFORGE_PROGRESS": "0"}


def cli(*args: str):
    # A fresh pixel cache each call: a cached copy of the base dataset would hide damaged shards.
    with tempfile.TemporaryDirectory() as cache:
        return runner.invoke(app, [str(a) for a in args], env={**QUIET, "GANFORGE_CACHE_DIR": cache})


def outcome(result) -> str:
    """``ok`` or ``error``; fails the test on a traceback, another exit code or a multi-line error."""
    if result.exit_code == 0:
        return "ok"
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"traceback: {exc!r}\n{result.output}"
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return "error"


def assert_dataset_matches(out: Path, splits: dict[str, int] | None = None) -> dict:
    """Readable end to end: every split loads (in memory and streamed) with the manifest's counts."""
    manifest = read_manifest(str(out))
    meta = manifest["image"]
    for split, count in manifest["counts"]["splits"].items():
        data = load(str(out), split, use_cache=False)
        assert data.images.shape == (count, meta["channels"], meta["height"], meta["width"])
        assert int(data.labels.max()) < len(manifest["class_names"])
        assert len(ParquetImageDataset(str(out), split)) == count
    if splits is not None:
        assert manifest["counts"]["splits"] == splits
    return manifest


def assert_nothing_left(out: Path) -> None:
    assert not out.exists(), f"a refused ingest left {sorted(os.listdir(out))}"


# --- IDX (mnist) -------------------------------------------------------------------------------------

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@st.composite
def idx_inputs(draw):
    """Four IDX files as arrays (maybe inconsistent) plus optional byte damage to some files."""
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    n_train, n_test = draw(st.integers(0, 6)), draw(st.integers(0, 4))
    # Mostly valid labels, so that valid and invalid inputs both come up often.
    label_pool = st.integers(0, 9) if draw(st.integers(0, 2)) else st.one_of(st.integers(0, 9), st.integers(10, 255))
    arrays = {
        IDX_NAMES[0]: np.full((n_train, h, w), draw(st.integers(0, 255)), np.uint8),
        IDX_NAMES[1]: np.array(draw(st.lists(label_pool, min_size=n_train, max_size=n_train)), np.uint8),
        IDX_NAMES[2]: np.full((n_test, h, w), 7, np.uint8),
        IDX_NAMES[3]: np.array(draw(st.lists(label_pool, min_size=n_test, max_size=n_test)), np.uint8),
    }
    if draw(st.integers(0, 2)) == 0:  # disagreeing shapes and counts
        name = draw(st.sampled_from(IDX_NAMES))
        shape = arrays[name].shape
        arrays[name] = np.zeros(tuple(draw(st.integers(0, 6)) for _ in shape), np.uint8)
    data = {name: formats.idx_bytes(a) for name, a in arrays.items()}
    damaged = False
    for name in draw(st.lists(st.sampled_from(IDX_NAMES), max_size=2, unique=True)):
        raw = data[name]
        how = draw(st.sampled_from(["truncate", "append", "magic", "flip"]))
        if how == "truncate":
            new = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
        elif how == "append":
            new = raw + draw(st.binary(min_size=1, max_size=20))
        elif how == "magic":
            new = draw(st.binary(min_size=4, max_size=4)) + raw[4:]
        else:
            at = draw(st.integers(0, max(0, len(raw) - 1)))
            new = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :] if raw else raw
        damaged |= new != raw
        data[name] = new
    return arrays, data, damaged


def idx_valid(arrays: dict[str, np.ndarray]) -> bool:
    tr_x, tr_y, te_x, te_y = (arrays[n] for n in IDX_NAMES)
    return (
        tr_x.ndim == te_x.ndim == 3 and tr_y.ndim == te_y.ndim == 1
        and len(tr_x) == len(tr_y) >= 1 and len(te_x) == len(te_y) >= 1
        and tr_x.shape[1:] == te_x.shape[1:] and min(tr_x.shape[1:]) >= 1
        and int(max(tr_y.max(), te_y.max())) <= 9
    )


@PROPS
@given(idx_inputs())
def test_idx_files_valid_exactly_or_refused(case):
    arrays, data, damaged = case
    with tempfile.TemporaryDirectory() as tmp:
        formats.write_idx_split_files(tmp, "MNIST", data)
        out = Path(tmp) / "ds"
        kind = outcome(cli("ingest", "mnist", "--input", tmp, "--output", out))
        event(f"outcome: {kind}")
        if damaged:  # damaged bytes may still parse (a flipped pixel): then it is what torchvision reads
            if kind == "ok":
                assert_dataset_matches(out)
            else:
                assert_nothing_left(out)
            return
        assert kind == ("ok" if idx_valid(arrays) else "error"), arrays
        if kind == "ok":
            m = assert_dataset_matches(out, {"train": len(arrays[IDX_NAMES[1]]), "test": len(arrays[IDX_NAMES[3]])})
            assert load(str(out), "test", use_cache=False).labels.tolist() == arrays[IDX_NAMES[3]].tolist()
            assert m["image"]["height"] == arrays[IDX_NAMES[0]].shape[1]
        else:
            assert_nothing_left(out)


# --- HDF5 (galaxy10) ---------------------------------------------------------------------------------

DTYPES = [np.uint8, np.int16, np.float32, np.bool_]


@st.composite
def h5_layouts(draw):
    datasets = {}
    if draw(st.integers(0, 5)):  # mostly present
        galaxy_like = st.tuples(st.integers(0, 9), st.integers(0, 4), st.integers(0, 4), st.just(3))
        odd = st.lists(st.integers(0, 4), min_size=1, max_size=5).map(tuple)
        shape = draw(galaxy_like if draw(st.integers(0, 3)) else odd)
        dtype = draw(st.sampled_from(DTYPES)) if draw(st.integers(0, 3)) == 0 else np.uint8
        datasets["images"] = np.ones(shape, dtype)
    if draw(st.integers(0, 5)):
        images = datasets.get("images")
        n = len(images) if images is not None and images.ndim and draw(st.integers(0, 3)) else draw(st.integers(0, 8))
        pool = st.integers(-3, 12) if draw(st.integers(0, 3)) == 0 else st.integers(0, 9)
        labels = draw(st.lists(pool, min_size=n, max_size=n))
        dtype = draw(st.sampled_from([np.int64, np.uint8, np.float32])) if draw(st.integers(0, 3)) == 0 else np.int64
        shape = (n,) if draw(st.integers(0, 4)) else (n, 1)
        datasets["ans"] = np.array(labels, dtype=np.int64).reshape(shape).astype(dtype)
    group = draw(st.sampled_from([None, "images", "ans"])) if draw(st.integers(0, 6)) == 0 else None
    return datasets, group, draw(st.sampled_from([0.0, 0.1, 0.5]))


def h5_valid(datasets: dict, group: str | None, val_fraction: float) -> bool:
    images, ans = datasets.get("images"), datasets.get("ans")
    if images is None or ans is None or group is not None:
        return False
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or 0 in images.shape[:3]:
        return False
    if ans.ndim != 1 or ans.dtype.kind not in "iu" or len(ans) != len(images):
        return False
    if ans.min() < 0 or ans.max() > 9:
        return False
    n_val = round(val_fraction * len(ans))
    return val_fraction == 0 or 0 < n_val < len(ans)


@PROPS
@given(h5_layouts())
def test_galaxy10_h5_valid_exactly_or_refused(case):
    datasets, group, val_fraction = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.h5"
        with h5py.File(path, "w") as f:
            for name, array in datasets.items():
                if name != group:
                    f.create_dataset(name, data=array)
            if group is not None:
                f.create_group(group)
        out = Path(tmp) / "ds"
        kind = outcome(cli("ingest", "galaxy10", "-i", path, "-o", out, "--val-fraction", val_fraction))
        event(f"outcome: {kind}")
        assert kind == ("ok" if h5_valid(datasets, group, val_fraction) else "error"), datasets
        if kind == "ok":
            m = assert_dataset_matches(out)
            assert m["counts"]["total"] == len(datasets["ans"])
        else:
            assert_nothing_left(out)


# --- image folders -----------------------------------------------------------------------------------

KINDS = ["png", "png-grey", "jpeg", "png-rgba", "png-16", "empty", "garbage", "truncated", "text", "hidden", "dir.png"]


def _file_bytes(kind: str, size: tuple[int, int], seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    if kind in ("empty",):
        return b""
    if kind == "garbage":
        return rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    if kind == "text":
        return b"not an image"
    mode_array = {
        "png-grey": rng.integers(0, 256, (h, w), dtype=np.uint8),
        "png-rgba": rng.integers(0, 256, (h, w, 4), dtype=np.uint8),
        "png-16": rng.integers(0, 65536, (h, w), dtype=np.uint16),
    }.get(kind, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    Image.fromarray(mode_array).save(buf, format="JPEG" if kind == "jpeg" else "PNG")
    data = buf.getvalue()
    return data[: len(data) // 2] if kind == "truncated" else data


@st.composite
def folders(draw):
    """(entries: [(relative path, kind, size)], flags)."""
    layout = draw(st.sampled_from(["flat", "classes"]))
    entries = []
    sizes = st.tuples(st.integers(1, 6), st.integers(1, 6))
    for cls in (["."] if layout == "flat" else draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True))):
        for i in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(KINDS)) if draw(st.integers(0, 2)) == 0 else "png"
            nested = layout == "classes" and draw(st.integers(0, 4)) == 0
            ext = {"jpeg": "jpg", "text": "txt"}.get(kind, "png")
            name = (".hidden{i}" if kind == "hidden" else f"f{i}") + f".{ext}"
            rel = "/".join(p for p in (cls, "sub" if nested else "", name.format(i=i)) if p and p != ".")
            entries.append((rel, kind, draw(sizes)))
    if layout == "classes" and draw(st.integers(0, 6)) == 0:
        entries.append(("loose.png", "png", (3, 3)))
    flags = []
    if draw(st.booleans()):
        flags += ["--image-size", str(draw(st.sampled_from([1, 4, 7])))]
    if draw(st.booleans()):
        flags += ["--channels", str(draw(st.sampled_from([1, 3])))]
    flags += ["--val-fraction", str(draw(st.sampled_from([0.0, 0.3]))), "--aspect", draw(st.sampled_from(["crop", "pad"]))]
    return entries, flags


@PROPS
@given(folders())
def test_image_folders_whole_dataset_or_refused(case):
    entries, flags = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        root.mkdir()
        for seed, (rel, kind, size) in enumerate(entries):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir.png":
                path.mkdir(exist_ok=True)
            else:
                path.write_bytes(_file_bytes(kind, size, seed))
        out = Path(tmp) / "ds"
        kind = outcome(cli("ingest", "folder", "-i", root, "-o", out, *flags))
        event(f"outcome: {kind}")
        counted = [e for e in entries if e[1] not in ("text", "hidden", "dir.png")]
        if kind == "ok":
            assert not [e for e in counted if e[1] in ("empty", "garbage", "truncated")], "a broken file was ingested"
            m = assert_dataset_matches(out)
            assert m["counts"]["total"] == len(counted)
        else:
            assert_nothing_left(out)


# --- manifests and shards of a real dataset ----------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _base_dataset() -> str:
    """digits at 8 px, 60 per split, in several shards; built once per session (read-only copy source)."""
    from ganforge.data.ingest import ingest

    out = os.path.join(tempfile.mkdtemp(prefix="gf-props-"), "ds")
    ingest("digits", out, limit=60, shard_size_mb=0.004, val_fraction=0.5)
    return out


@pytest.fixture(scope="module")
def base():
    path = _base_dataset()
    yield path
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    _base_dataset.cache_clear()


def _reference(base: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: (d.images, d.labels) for s in ("train", "val") for d in [load(base, s, use_cache=False)]}


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.integers(2**62, 2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.just([]), st.just({}), st.just("../../etc"), st.just("v-x/part-00000.parquet"),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def manifest_mutations(draw, manifest: dict):
    paths = [p for p in _paths(manifest) if p]
    how = draw(st.sampled_from(["replace", "delete", "truncate", "byte"]))
    if how in ("truncate", "byte"):
        return how, None, draw(st.integers(0, 10_000)), draw(st.integers(0, 255))
    return how, draw(st.sampled_from(paths)), draw(JSON_LEAVES), None


def _apply(text: str, manifest: dict, mutation) -> str:
    how, path, value, byte = mutation
    if how == "truncate":
        return text[: value % max(1, len(text))]
    if how == "byte":
        at = value % len(text)
        return text[:at] + chr(byte) + text[at + 1 :]
    doc = json.loads(text)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if how == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(doc)


@PROPS
@given(data=st.data())
def test_mutated_manifest_reads_right_or_refuses(base, data):
    text = Path(base, "manifest.json").read_text()
    mutation = data.draw(manifest_mutations(json.loads(text)))
    reference = _reference_cached(base)
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "ds"
        shutil.copytree(base, ds)
        (ds / "manifest.json").write_text(_apply(text, json.loads(text), mutation))
        grid = Path(tmp) / "g.png"
        kind = outcome(cli("datasets", "show", ds, "--grid", grid, "--n", "4", "--split", "val"))
        event(f"outcome: {kind}")
        assert grid.exists() == (kind == "ok")
        _check_reads(ds, reference)


@functools.lru_cache(maxsize=1)
def _reference_cached(base: str):
    return _reference(base)


def _check_reads(ds: Path, reference) -> None:
    """Each split loads exactly the reference pixels and labels, or raises GanforgeError."""
    for split, (images, labels) in reference.items():
        try:
            got = load(str(ds), split, use_cache=False)
        except GanforgeError as err:
            assert "\n" not in str(err)
            continue
        assert torch.equal(got.images, images) and torch.equal(got.labels, labels), f"{split} read differently"
        try:
            stream = ParquetImageDataset(str(ds), split)
            items = [stream[i] for i in range(len(stream))]
        except GanforgeError:
            continue
        assert len(items) == len(images)


@PROPS
@given(
    how=st.sampled_from(["truncate", "flip", "append", "schema", "empty"]),
    which=st.integers(0, 100),
    at=st.integers(0, 10**9),
    xor=st.integers(1, 255),
)
def test_damaged_shard_reads_right_or_refuses(base, how, which, at, xor):
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = _reference_cached(base)
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "ds"
        shutil.copytree(base, ds)
        shards = read_manifest(str(ds))["shards"]
        path = ds / shards[which % len(shards)]["path"]
        raw = path.read_bytes()
        if how == "truncate":
            path.write_bytes(raw[: at % len(raw)])
        elif how == "flip":
            i = at % len(raw)
            path.write_bytes(raw[:i] + bytes([raw[i] ^ xor]) + raw[i + 1 :])
        elif how == "append":
            path.write_bytes(raw + bytes([xor]) * (at % 50 + 1))
        elif how == "empty":
            path.write_bytes(b"")
        else:
            table = pq.read_table(path)
            cols = {n: table.column(n) for n in table.column_names}
            victim = table.column_names[at % len(cols)]
            cols[victim] = pa.array([str(v) for v in cols[victim].to_pylist()]) if xor % 2 else None
            pq.write_table(pa.table({k: v for k, v in cols.items() if v is not None}), path)
        grid = Path(tmp) / "g.png"
        kind = outcome(cli("datasets", "show", ds, "--grid", grid, "--n", "64"))
        event(f"outcome: {kind}")
        assert grid.exists() == (kind == "ok")
        _check_reads(ds, reference)


# --- flags -------------------------------------------------------------------------------------------

ODD_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-9, 1e308, -1.0]))


@PROPS
@given(
    limit=st.one_of(st.integers(-3, 30), st.sampled_from([2**31, 2**63])),
    val=st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0]), ODD_FLOATS),
    shard=st.one_of(st.sampled_from([0.001, 0.01, 64.0]), ODD_FLOATS),
    seed=st.one_of(st.integers(-2, 3), st.sampled_from([2**32, 2**64, 2**100])),
    size=st.one_of(st.none(), st.integers(-1, 12), st.sampled_from([4096, 4097])),
    channels=st.one_of(st.none(), st.integers(0, 4)),
    aspect=st.sampled_from(["crop", "pad", "stretch", ""]),
    classes=st.one_of(st.none(), st.sampled_from(["0", "1,2", "9,9", "10", "x", ",", "-1"])),
)
def test_ingest_flags_valid_dataset_or_one_line(limit, val, shard, seed, size, channels, aspect, classes):
    args = ["--limit", limit, "--val-fraction", repr(val), "--shard-size-mb", repr(shard), "--split-seed", seed,
            "--aspect", aspect]
    args += ["--image-size", size] if size is not None else []
    args += ["--channels", channels] if channels is not None else []
    args += ["--classes", classes] if classes is not None else []
    assume(size is None or size <= 64 or size > 4096)  # a 4096 px digits dataset is valid, only slow
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        kind = outcome(cli("ingest", "digits", "--output", out, *args))
        event(f"outcome: {kind}")
        if kind == "error":
            assert_nothing_left(out)
            return
        m = assert_dataset_matches(out)
        assert all(c <= limit for c in m["counts"]["splits"].values())
        assert 0 < limit and (val == 0 or 0 < val < 1) and math.isfinite(shard) and seed >= 0
        if size is not None:
            assert m["image"]["height"] == m["image"]["width"] == size
        if channels is not None:
            assert m["image"]["channels"] == channels


@PROPS
@given(
    n=st.one_of(st.integers(-5, 70), st.sampled_from([4096, 4097, 2**40])),
    split=st.sampled_from(["train", "val", "test", ""]),
    grid=st.sampled_from(["g.png", "g.jpg", "g.xyz", "g", "missing/g.png", ".", "sub"]),
)
def test_show_flags_grid_or_one_line(base, n, split, grid):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sub").mkdir()
        target = Path(tmp) / grid
        before = sorted(os.listdir(tmp))
        kind = outcome(cli("datasets", "show", base, "--grid", target, "--n", n, "--split", split))
        event(f"outcome: {kind}")
        if kind == "ok":
            assert target.is_file() and 1 <= n <= 4096 and split in ("train", "val")
        else:
            assert sorted(os.listdir(tmp)) == before, "a refused grid leaves nothing"
