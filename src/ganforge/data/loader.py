"""Reading a ganforge dataset back: one uint8 tensor in memory, or a lazy torch Dataset.

What a reader hands out is checked against the bytes it read (the dataset's *verified identity*):

* each shard's SHA-256, recorded in the manifest at ingest, is checked as the shard is read
  (``parquet.read_shard``; manifests written before shard digests have none and rely on the next two);
* the fingerprint is recomputed from every row's (pixel sha256, label, split, and attribute bits where the
  dataset has attributes) and must be the one the manifest claims, and the manifest's class names must be
  the rows' label names: a manifest edited, or copied from another dataset, is refused with one line
  naming it;
* each decoded image of the split must hash to its row's ``sha256`` (checked in the decode threads).

So ``ImageData.fingerprint``, which a training run records, is a checked value, not a claim.

``load`` decodes the PNGs once (all cores) and keeps the raw pixels in a local cache keyed by that
verified fingerprint, the split and its row order, written only after every check passed. Beside it, a
small record per dataset location (a hash of its URI) notes what was verified there: the SHA-256 of the
manifest's bytes, each shard file's version (locally size, modification and change times and inode, the
last two of which no user can set back; on S3 size, ETag and modification time) and the splits whose
pixels were checked. A load whose location matches its record serves the cache, after checking the
entry's meta against the manifest's counts and image shape and the files' sizes (no decode, no pixel
hashing); a split not yet checked there is decoded and its pixels checked (the record vouches for the
rest); anything else (a new copy, a replaced shard, an edited manifest) takes the whole verified cold
path. A cache entry that fails its checks (truncated, of another shape, unreadable) is rebuilt with one
``warning:`` line on stderr. Hence the cache serves exactly what a cold load of the same files returns,
or nothing: never stale pixels, never another dataset's.

Cost (benchmarks/data_verify.py, 70k Fashion-MNIST, 2 cores): the checks' work is 3-4% of a cold load
(shard digests, fingerprint, pixel hashes); a warm load stays a memory map, about 0.1 ms slower per split.

What a warm load does not re-check: the cache files' pixel bytes (hashing them would cost a full read of
the split; the cache directory is the user's own, and only a verified load writes it).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ganforge.data.images import decode_png
from ganforge.data.parquet import (
    ATTRIBUTES,
    MANIFEST,
    parse_manifest,
    read_manifest_bytes,
    read_shard,
    table_fingerprint,
)
from ganforge.data.parquet import read_manifest as _read_manifest
from ganforge.errors import GanforgeError
from ganforge.outputs import save_npy_atomic, write_text_atomic
from ganforge.storage import Location, parse

CACHE_FORMAT = 2  # of a cache entry's meta; 1 was the bare .npy pair keyed by the claimed fingerprint
RECORD_FORMAT = "ganforge-verified-location/1"
IDENTITY_COLUMNS = ["sha256", "label", "split", "label_name"]


def identity_columns(manifest: dict) -> list[str]:
    """The columns the identity checks read: :data:`IDENTITY_COLUMNS`, and the attribute bits if any."""
    return IDENTITY_COLUMNS + ([ATTRIBUTES.name] if "attributes" in manifest else [])


@dataclass
class ImageData:
    """A split of a dataset in memory.

    Attributes:
        images: (N, C, H, W) uint8 tensor (on ``device`` when one was asked for).
        labels: (N,) int64 tensor of label ids, indexing ``class_names``.
        class_names: the dataset's class names.
        fingerprint: the dataset's content fingerprint (its identity), verified against the shards.
        uri: where the dataset lives.
        split: which split this is.
        manifest: the whole manifest.
        attributes: (N, A) bool tensor, image i has attribute j, for datasets with attributes (CelebA's);
            None for the others.
        attribute_names: the names of the A attributes (the manifest's ``attributes``); empty when none.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    fingerprint: str
    uri: str
    split: str
    manifest: dict = field(repr=False)
    attributes: torch.Tensor | None = None
    attribute_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]


def default_cache_dir() -> str:
    return os.environ.get("GANFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ganforge")


def read_manifest(uri: str) -> dict:
    """The manifest of the dataset at ``uri``; GanforgeError when there is none.

    Its ``fingerprint`` is the manifest's claim, checked by nothing yet: use ``load(...).fingerprint``
    (or ``ParquetImageDataset(...).fingerprint``) where a cache is keyed or lineage recorded by it.
    """
    return _read_manifest(parse(uri))


def load(
    uri: str,
    split: str = "train",
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> ImageData:
    """Load one split of the dataset at ``uri`` as a uint8 tensor, verified (see the module's docstring).

    Args:
        uri: local path or s3:// URI of a dataset written by ``ganforge ingest``.
        split: ``train``, ``test`` or ``val`` (whatever the manifest lists).
        device: where to put the tensors (e.g. ``cuda``); None leaves them on the CPU.
        cache_dir: where decoded pixels are cached; None: ``$GANFORGE_CACHE_DIR`` or ~/.cache/ganforge.
        use_cache: False decodes (and verifies) from Parquet every time and writes no cache.

    Raises:
        GanforgeError: no such dataset or split, or files that fail a check: one line naming the file.
    """
    loc = parse(uri)
    raw = read_manifest_bytes(loc)
    manifest = parse_manifest(raw, loc.uri)
    _check_split(loc, manifest, split)
    if use_cache:
        images_np, labels_np, fp, attrs_np = _load_cached(loc, raw, manifest, split, cache_dir or default_cache_dir())
    else:
        images_np, labels_np, fp, _, attrs_np = _load_verified(loc, manifest, split)
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    attributes = torch.from_numpy(np.asarray(attrs_np)) if attrs_np is not None else None
    if device is not None:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        attributes = attributes.to(device) if attributes is not None else None
    return ImageData(images, labels, list(manifest["class_names"]), fp, loc.uri, split, manifest, attributes,
                     list(manifest.get("attributes", [])))


def verified_fingerprint(uri: str, cache_dir: str | None = None) -> str:
    """The fingerprint of the dataset at ``uri``, checked against its shards, without decoding an image.

    Served from this location's record in the cache when it vouches for the same manifest bytes and
    shard files (a manifest read and a stat per shard); else the shards' digests, the fingerprint and the
    label names are checked (one read of every shard) and the record written. For keying caches of
    derived data (e.g. real-image features) by a value that was checked, not claimed.

    Raises:
        GanforgeError: no dataset there, or one whose files fail a check (one line naming the file).
    """
    loc = parse(uri)
    raw = read_manifest_bytes(loc)
    return _verify_identity(loc, raw, parse_manifest(raw, loc.uri), cache_dir or default_cache_dir(), [])[0]


def _verify_identity(loc: Location, raw: bytes, manifest: dict, cache_dir: str, columns: list[str]):
    """(verified fingerprint, each shard's ``columns`` (None when none are asked for)), recorded in the cache.

    Hashes nothing when this location's record vouches for the same manifest bytes and shard files.
    """
    manifest_sha = hashlib.sha256(raw).hexdigest()
    stats = _shard_stats(loc, manifest)
    record = _matching_record(cache_dir, loc, manifest_sha, stats)
    if record is not None and not columns:
        return record["fingerprint"], None
    want = identity_columns(manifest) if record is None else columns
    tables = []
    for shard in manifest["shards"]:  # checks each shard is there, whole, ingest's and unchanged
        table = read_shard(loc, shard, list(dict.fromkeys(want + columns)), check_digest=record is None)
        _check_no_nulls(loc, shard, table)
        tables.append(table)
    if record is not None:
        return record["fingerprint"], tables
    fp = _verified_fingerprint(loc, manifest, tables)
    if stats is not None:
        try:
            _write_record(cache_dir, loc, manifest_sha, stats, fp, {})
        except OSError:
            pass  # the record only spares the next reader the hashing
    return fp, tables if columns else None


def _check_split(loc: Location, manifest: dict, split: str) -> None:
    if split not in manifest["counts"]["splits"]:
        have = ", ".join(sorted(manifest["counts"]["splits"])) or "none"
        raise GanforgeError(f"dataset {loc.uri} has no split {split!r} (it has: {have}); pick one of those")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- the verified cold path ----------------------------------------------------------------------------


def _load_verified(loc: Location, manifest: dict, split: str, verify: bool = True, known: str | None = None):
    """Decode every PNG of ``split`` into one (N, C, H, W) uint8 array in id order, checking everything.

    ``known``: the fingerprint this location's record already vouches for (same manifest bytes, same shard
    files): the shards' digests and the fingerprint are not checked again, the split's pixels still are.
    ``verify=False`` skips every check of identity (shard digests, fingerprint, label names, pixel hashes)
    and reads only what decoding needs, as ganforge did before them: for measuring their cost
    (benchmarks/data_verify.py), never for handing data out.

    Returns:
        (images, labels (N,) int64, the verified fingerprint, the split's order digest, and (N, A) bool
        attributes or None for a dataset without them).
    """
    identify = verify and known is None  # check digests, fingerprint and label names
    attributed = "attributes" in manifest
    columns = (["id", "label", "image", "split"] + (["sha256"] if verify else []) + (["label_name"] if identify else [])
               + ([ATTRIBUTES.name] if attributed else []))
    parts, identity = [], []
    for i, shard in enumerate(manifest["shards"]):
        table = read_shard(loc, shard, columns, check_digest=identify)
        if verify:
            _check_no_nulls(loc, shard, table)
        if identify:
            identity.append(table.select(identity_columns(manifest)))
        table = table.filter(pc.equal(table.column("split"), split))
        if verify:
            table = table.append_column("shard", pa.array(np.full(table.num_rows, i, dtype=np.int32)))
        parts.append(table.drop_columns(["split"] + (["label_name"] if identify else [])))
    fp = _verified_fingerprint(loc, manifest, identity) if identify else (known or manifest["fingerprint"])
    table = pa.concat_tables(parts) if parts else None
    expected = manifest["counts"]["splits"][split]
    if table is None or table.num_rows != expected:
        raise GanforgeError(
            f"dataset {loc.uri}: the shards hold {0 if table is None else table.num_rows} rows of split {split!r} "
            f"but the manifest says {expected}; the files were changed after ingest, re-ingest with --overwrite"
        )
    ids = table.column("id").to_numpy()
    order = np.argsort(ids, kind="stable")
    pngs = table.column("image").to_pylist()
    labels = table.column("label").to_numpy().astype(np.int64)[order]
    attributes = _attribute_bits(loc, manifest, table.column(ATTRIBUTES.name).take(order)) if attributed else None
    # each row's expected pixel hash, in id order: 32 raw bytes per row (``expected[32 k : 32 k + 32]``)
    # when every value is 64 hex characters, else the strings (a forged column: compared exactly, and refused)
    expected = _digests(table.column("sha256").take(order)) if verify else None
    shard_of = table.column("shard").to_numpy() if verify else None
    meta = manifest["image"]
    c, h, w = meta["channels"], meta["height"], meta["width"]
    out = np.empty((len(pngs), c, h, w), dtype=np.uint8)
    prefix = hashlib.sha256(f"{h}x{w}x{c}:".encode())  # images.pixel_sha256's, for images of this shape

    def work(span: range) -> None:
        for k in span:
            r = order[k]
            pixels = _decode_checked(loc.uri, pngs[r], int(ids[r]), c, h, w)
            if expected is not None and shard_of is not None:  # verify
                digest = prefix.copy()
                digest.update(pixels.data)
                if (digest.digest() != expected[32 * k : 32 * k + 32] if isinstance(expected, bytes)
                        else digest.hexdigest() != expected[k]):
                    path = manifest["shards"][shard_of[r]]["path"]
                    raise GanforgeError(
                        f"dataset {loc.uri}: image id {int(ids[r])} in shard {path} does not match its sha256 "
                        "(the shard was changed after ingest); re-ingest with --overwrite"
                    )
            out[k] = pixels.transpose(2, 0, 1)

    n_workers = os.cpu_count() or 1
    step = max(1, -(-len(pngs) // (n_workers * 4)))
    with ThreadPoolExecutor(n_workers) as pool:  # zlib inflate releases the GIL
        list(pool.map(work, [range(s, min(s + step, len(pngs))) for s in range(0, len(pngs), step)]))
    return out, labels, fp, _order_digest(expected, labels, attributes) if expected is not None else "", attributes


def _check_no_nulls(loc: Location, shard: dict, table: pa.Table) -> None:
    for name in IDENTITY_COLUMNS + [ATTRIBUTES.name]:
        if name in table.column_names and table.column(name).null_count:
            raise GanforgeError(
                f"dataset {loc.uri}: shard {shard['path']} has empty {name} values, which ingest never writes; "
                "re-ingest with --overwrite"
            )


def _verified_fingerprint(loc: Location, manifest: dict, identity: list[pa.Table]) -> str:
    """The manifest's fingerprint once the rows are shown to hold it; GanforgeError naming the manifest if not.

    Also checks the manifest's class names against the rows' label names (the fingerprint covers label
    ids, not what they are called).
    """
    table = pa.concat_tables(identity)  # a manifest lists at least one shard (its splits are not empty)
    claimed, actual = manifest["fingerprint"], table_fingerprint(table, manifest.get("attributes"))
    fix = f"re-ingest it: ganforge ingest ... --output {loc.uri} --overwrite"
    if actual != claimed:
        raise GanforgeError(
            f"dataset {loc.uri}: its {MANIFEST} claims fingerprint {claimed[:16]} but the shards hold "
            f"{actual[:16]} (the manifest was edited or copied from another dataset); {fix}"
        )
    names = manifest["class_names"]
    pairs = table.select(["label", "label_name"]).group_by(["label", "label_name"]).aggregate([])
    for label, name in zip(pairs.column("label").to_pylist(), pairs.column("label_name").to_pylist()):
        if not (0 <= label < len(names)) or names[label] != name:
            said = repr(names[label]) if 0 <= label < len(names) else "no class"
            raise GanforgeError(
                f"dataset {loc.uri}: its {MANIFEST} names label {label} {said} but the shards call it {name!r} "
                f"(the manifest was edited or copied from another dataset); {fix}"
            )
    return claimed


def _digests(shas: pa.ChunkedArray) -> bytes | list[str]:
    """A sha256 column as its digests' 32 raw bytes back to back, or as strings when one is not 64 hex digits."""
    arr = pc.cast(shas.combine_chunks(), pa.large_string())
    if len(arr) == 0:
        return b""
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8", count=len(arr) + 1, offset=8 * arr.offset)
    if (np.diff(offsets) == 64).all():  # the values are then 64 n characters back to back
        text = bytes(memoryview(arr.buffers()[2])[offsets[0] : offsets[-1]])  # bytes: == is a memcmp
        try:
            raw = binascii.unhexlify(text)
            if binascii.hexlify(raw) == text:  # lowercase, as hexdigest() writes them (and other readers compare)
                return raw
        except binascii.Error:
            pass
    return arr.to_pylist()


def _order_digest(expected: bytes | list[str], labels: np.ndarray, attributes: np.ndarray | None = None) -> str:
    """The split's rows in id order (pixel hashes, labels and any attributes): the fingerprint leaves order
    out, the cache not."""
    h = hashlib.sha256(expected if isinstance(expected, bytes) else "\n".join(expected).encode())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    if attributes is not None:
        h.update(np.packbits(attributes, axis=None).tobytes() + str(attributes.shape).encode())
    return h.hexdigest()


def _attribute_bits(loc: Location, manifest: dict, bits: pa.ChunkedArray) -> np.ndarray:
    """An ``attributes`` column ("0"/"1" per attribute, one string per row) as (N, A) bool.

    Raises:
        GanforgeError: a value that is not A characters of 0 and 1 (ingest never writes one).
    """
    a = len(manifest["attributes"])
    arr = pc.cast(bits.combine_chunks(), pa.large_string())
    if arr.null_count:
        raise GanforgeError(f"dataset {loc.uri}: the shards have empty attributes values, which ingest never writes; "
                            "re-ingest with --overwrite")
    if len(arr) == 0:
        return np.zeros((0, a), dtype=bool)
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8", count=len(arr) + 1, offset=8 * arr.offset)
    values = np.frombuffer(arr.buffers()[2] or pa.py_buffer(b""), dtype=np.uint8)[offsets[0] : offsets[-1]]
    if (np.diff(offsets) != a).any() or ((values != ord("0")) & (values != ord("1"))).any():
        raise GanforgeError(f"dataset {loc.uri}: the shards' attributes are not {a} characters of 0 and 1 per row, as "
                            f"its {MANIFEST} names {a} attributes; re-ingest with --overwrite")
    return (values == ord("1")).reshape(len(arr), a)


def _decode_checked(uri: str, png, row_id: int, c: int, h: int, w: int) -> np.ndarray:
    """One stored PNG as (H, W, C) contiguous uint8, or a GanforgeError naming the row when it is not one."""
    try:
        pixels = decode_png(png, c)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad bytes; all mean "corrupt"
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise GanforgeError(
            f"dataset {uri}: image id {row_id} does not decode ({reason}); re-ingest with --overwrite"
        ) from None
    if pixels.shape != (h, w, c):
        raise GanforgeError(
            f"dataset {uri}: image id {row_id} is {'x'.join(map(str, pixels.shape))}, the manifest says "
            f"{h}x{w}x{c}; re-ingest with --overwrite"
        )
    return np.ascontiguousarray(pixels)


# --- the cache and the per-location records ------------------------------------------------------------


def _load_cached(loc: Location, raw: bytes, manifest: dict, split: str, cache_dir: str):
    """(images, labels, fingerprint, attributes or None): from the cache when this location's record vouches for
    it, else verified."""
    manifest_sha = hashlib.sha256(raw).hexdigest()
    stats = _shard_stats(loc, manifest)  # before reading: a shard changed meanwhile fails the next match
    record = _matching_record(cache_dir, loc, manifest_sha, stats)
    if record is not None and split in record["splits"]:
        fp, order = record["fingerprint"], record["splits"][split]
        paths = _entry_paths(cache_dir, fp, split, order)
        got, problem = _read_entry(paths, manifest, fp, split, order)
        if got is not None:
            images, labels, attributes = got
            return images, labels, fp, attributes
        _warn(f"the pixel cache of {loc.uri} split {split!r} ({os.path.dirname(paths[0])}) is unusable "
              f"({problem}); rebuilding it")
    # the record vouches for these files' identity: only this split's pixels remain to be checked
    images, labels, fp, order, attributes = _load_verified(loc, manifest, split,
                                                          known=record["fingerprint"] if record is not None else None)
    try:
        _write_entry(_entry_paths(cache_dir, fp, split, order), images, labels, fp, split, order, attributes,
                     manifest.get("attributes"))
        if stats is not None:
            splits = dict(record["splits"]) if record is not None else {}
            _write_record(cache_dir, loc, manifest_sha, stats, fp, {**splits, split: order})
    except OSError as err:
        _warn(f"cannot write the pixel cache under {cache_dir} ({err.strerror or err}); the next load decodes again")
    return images, labels, fp, attributes


def _entry_paths(cache_dir: str, fp: str, split: str, order: str) -> tuple[str, str, str, str]:
    """The images, labels, meta and (datasets with attributes only) attributes files of a cache entry."""
    stem = os.path.join(cache_dir, "datasets", fp, f"{split}-{order[:16]}")
    return f"{stem}-images.npy", f"{stem}-labels.npy", f"{stem}-meta.json", f"{stem}-attributes.npy"


def _entry_meta(fp: str, split: str, order: str, shape: tuple[int, ...], attributes: list[str] | None) -> dict:
    meta = {"format": CACHE_FORMAT, "fingerprint": fp, "split": split, "order": order, "shape": list(shape),
            "dtype": "uint8"}
    return meta if attributes is None else meta | {"attributes": attributes}


def _read_entry(paths, manifest: dict, fp: str, split: str, order: str):
    """((images, labels, attributes or None), None) when the entry is whole and is what ``manifest``
    describes; else (None, why)."""
    images_path, labels_path, meta_path, attributes_path = paths
    names = manifest.get("attributes")
    img = manifest["image"]
    n = manifest["counts"]["splits"][split]
    shape = (n, img["channels"], img["height"], img["width"])
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return None, "its meta.json is missing"
    except (OSError, ValueError) as err:
        return None, f"unreadable meta.json: {type(err).__name__}"
    if not isinstance(meta, dict):
        return None, "meta.json is not an object"
    for key, want in _entry_meta(fp, split, order, shape, names).items():
        if meta.get(key) != want:
            return None, f"meta.json says {key} {meta.get(key)!r}, the manifest {want!r}"
    files = [(images_path, "images_bytes"), (labels_path, "labels_bytes")]
    try:
        for path, key in files + ([(attributes_path, "attributes_bytes")] if names is not None else []):
            size = os.path.getsize(path)
            if size != meta.get(key):
                return None, f"{os.path.basename(path)} has {size} bytes, not {meta.get(key)}"
        # Copy-on-write map: no read or copy up front, pages come from the OS cache on first touch,
        # and the tensor stays writable without ever changing the cache file.
        images = np.load(images_path, mmap_mode="c")
        labels = np.load(labels_path)
        attributes = np.load(attributes_path) if names is not None else None
    except Exception as err:  # noqa: BLE001 - any file that does not read as the array it should be is rebuilt
        return None, " ".join(f"{type(err).__name__}: {err}".split())[:160]
    if images.shape != shape or images.dtype != np.uint8:
        return None, f"images are {images.dtype} {images.shape}, not uint8 {shape}"
    if labels.shape != (n,) or labels.dtype != np.int64:
        return None, f"labels are {labels.dtype} {labels.shape}, not int64 ({n},)"
    if n and not (0 <= labels.min() and labels.max() < len(manifest["class_names"])):
        return None, "labels outside the manifest's classes"
    if attributes is not None and names is not None and (attributes.shape != (n, len(names))
                                                         or attributes.dtype != np.bool_):
        return None, f"attributes are {attributes.dtype} {attributes.shape}, not bool ({n}, {len(names)})"
    return (images, labels, attributes), None


def _write_entry(paths, images: np.ndarray, labels: np.ndarray, fp: str, split: str, order: str,
                 attributes: np.ndarray | None = None, names: list[str] | None = None) -> None:
    """Labels, attributes (with their ``names``, if any), images, then the meta: its presence (with the files'
    sizes) marks a whole entry."""
    images_path, labels_path, meta_path, attributes_path = paths
    save_npy_atomic(labels_path, labels)
    sizes = {}
    if attributes is not None:
        save_npy_atomic(attributes_path, attributes)
        sizes["attributes_bytes"] = os.path.getsize(attributes_path)
    save_npy_atomic(images_path, images)
    meta = _entry_meta(fp, split, order, images.shape, names) | sizes | {
        "images_bytes": os.path.getsize(images_path), "labels_bytes": os.path.getsize(labels_path)}
    write_text_atomic(Path(meta_path), json.dumps(meta, sort_keys=True))


def _record_path(cache_dir: str, loc: Location) -> str:
    key = hashlib.sha256(loc.uri.encode()).hexdigest()[:32]
    return os.path.join(cache_dir, "datasets", "locations", f"{key}.json")


def _shard_stats(loc: Location, manifest: dict) -> list | None:
    """What identifies each shard file's current version, or None when one cannot be seen (the cold path
    then says why).

    Locally ``os.stat``'s size, modification and change times and inode: the change time and inode move
    with any write or rename and cannot be set back by a user, so a shard put back with its old size and
    mtime still differs. On S3 the object's size, ETag (which changes with the content) and modification
    time, from one LIST per folder of shards.
    """
    paths = [shard["path"] for shard in manifest["shards"]]
    if loc.is_s3:
        return _s3_shard_stats(loc, paths)
    out = []
    try:
        for path in paths:
            st = os.stat(loc.join(path))
            out.append([path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    except OSError:
        return None
    return out


def _s3_shard_stats(loc: Location, paths: list[str]) -> list | None:
    import posixpath

    from botocore.exceptions import BotoCoreError, ClientError

    from ganforge.storage import s3_client

    bucket, _, prefix = loc.path.partition("/")
    key = lambda path: posixpath.join(prefix, path) if prefix else path  # noqa: E731
    seen = {}
    try:
        pages = s3_client().get_paginator("list_objects_v2")
        for folder in sorted({posixpath.dirname(p) for p in paths}):
            for page in pages.paginate(Bucket=bucket, Prefix=key(folder) + "/" if folder else key("")):
                for obj in page.get("Contents", []):
                    seen[obj["Key"]] = [obj["Size"], obj["ETag"], obj["LastModified"].isoformat()]
    except (BotoCoreError, ClientError):
        return None
    if not all(key(p) in seen for p in paths):
        return None
    return [[p, *seen[key(p)]] for p in paths]


def _matching_record(cache_dir: str, loc: Location, manifest_sha: str, stats: list | None) -> dict | None:
    """This location's record when it vouches for exactly these manifest bytes and shard files, else None."""
    if stats is None:
        return None
    try:
        with open(_record_path(cache_dir, loc)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and record.get("format") == RECORD_FORMAT and record.get("uri") == loc.uri
          and record.get("manifest_sha256") == manifest_sha and record.get("shards") == stats
          and isinstance(record.get("fingerprint"), str) and isinstance(record.get("splits"), dict)
          and all(isinstance(k, str) and isinstance(v, str) for k, v in record["splits"].items()))
    return record if ok else None


def _write_record(cache_dir: str, loc: Location, manifest_sha: str, stats: list, fp: str, splits: dict) -> None:
    record = {"format": RECORD_FORMAT, "uri": loc.uri, "manifest_sha256": manifest_sha, "shards": stats,
              "fingerprint": fp, "splits": splits}
    write_text_atomic(Path(_record_path(cache_dir, loc)), json.dumps(record, sort_keys=True))


# --- the lazy dataset --------------------------------------------------------------------------------------


class ParquetImageDataset(torch.utils.data.Dataset):
    """A lazy dataset for splits that do not fit in memory: decodes one row group at a time.

    Items are ``(image uint8 (C, H, W) tensor, label int)``. Construction verifies the dataset as ``load``
    does (shard digests, fingerprint, label names; skipped when this location's record in the cache vouches
    for the same files) and keeps each row's pixel hash and label; every item's decoded pixels are checked
    against that hash, so a shard replaced after construction cannot slip other pixels in. Each
    DataLoader worker opens its own file handles; the most recent row group is kept decoded-in-Parquet
    (not as pixels).

    Attributes:
        fingerprint: the dataset's verified fingerprint.
    """

    def __init__(self, uri: str, split: str = "train", cache_dir: str | None = None):
        import pyarrow.parquet as pq

        self.loc = parse(uri)
        raw = read_manifest_bytes(self.loc)
        self.manifest = parse_manifest(raw, self.loc.uri)
        self.split = split
        self.channels = self.manifest["image"]["channels"]
        _check_split(self.loc, self.manifest, split)
        self.fingerprint, tables = _verify_identity(self.loc, raw, self.manifest, cache_dir or default_cache_dir(),
                                                    ["split", "sha256", "label"])
        # (shard path, row group, row offsets in it, their pixel sha256s, their labels)
        self._index: list[tuple[str, int, np.ndarray, pa.Array, np.ndarray]] = []
        for shard, table in zip(self.manifest["shards"], tables):
            path = shard["path"]
            try:
                with self.loc.fs.open_input_file(self.loc.join(path)) as f:
                    md = pq.ParquetFile(f).metadata
                    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
            except (OSError, ValueError, pa.ArrowException) as err:
                raise self._unreadable(path, err) from None
            if sum(sizes) != table.num_rows:
                raise self._changed(path)
            start = 0
            for rg, size in enumerate(sizes):
                part = table.slice(start, size)
                rows = np.flatnonzero(part.column("split").to_numpy(zero_copy_only=False) == split)
                if len(rows):
                    self._index.append((path, rg, rows, part.column("sha256").take(rows).combine_chunks(),
                                        part.column("label").take(rows).to_numpy().astype(np.int64)))
                start += size
        self._starts = np.cumsum([0] + [len(entry[2]) for entry in self._index])
        self._cached: tuple[tuple[str, int], pa.Table] | None = None
        meta = self.manifest["image"]
        self._prefix = f"{meta['height']}x{meta['width']}x{self.channels}:".encode()  # bytes: the dataset pickles

    def _unreadable(self, path: str, err: Exception) -> GanforgeError:
        reason = " ".join(str(err).split())[:160]
        return GanforgeError(
            f"dataset {self.loc.uri}: shard {path} cannot be read ({reason}); re-ingest with --overwrite")

    def _changed(self, path: str) -> GanforgeError:
        return GanforgeError(f"dataset {self.loc.uri}: shard {path} changed while it was being read; "
                             "re-ingest with --overwrite")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int):
        import pyarrow.parquet as pq

        if not 0 <= i < len(self):
            raise IndexError(i)
        g = int(np.searchsorted(self._starts, i, side="right") - 1)
        path, rg, rows, shas, labels = self._index[g]
        if self._cached is None or self._cached[0] != (path, rg):
            try:
                with self.loc.fs.open_input_file(self.loc.join(path)) as f:
                    pf = pq.ParquetFile(f, page_checksum_verification=True)
                    table = pf.read_row_group(rg, columns=["image"])
            except (OSError, ValueError, pa.ArrowException) as err:  # pyarrow's errors for damaged or vanished files
                raise self._unreadable(path, err) from None
            self._cached = ((path, rg), table)
        table = self._cached[1]
        k = int(i - self._starts[g])
        row = int(rows[k])
        if row >= table.num_rows:
            raise self._changed(path)
        meta = self.manifest["image"]
        pixels = _decode_checked(self.loc.uri, table.column("image")[row].as_py(), i, self.channels,
                                 meta["height"], meta["width"])
        digest = hashlib.sha256(self._prefix)
        digest.update(pixels.data)
        if digest.hexdigest() != shas[k].as_py():
            raise GanforgeError(f"dataset {self.loc.uri}: item {i} in shard {path} does not match its sha256 (the "
                                "shard was changed after the dataset was opened); re-ingest with --overwrite")
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), int(labels[k])
