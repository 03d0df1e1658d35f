"""Ingest: a source becomes a versioned Parquet dataset, published atomically and idempotently."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ganforge import __version__
from ganforge.data import images as img
from ganforge.data.config import IngestConfig
from ganforge.data.parquet import (
    MANIFEST,
    SCHEMA_VERSION,
    ShardWriter,
    fingerprint,
    manifest_bytes,
    parse_manifest,
    schema,
    write_manifest,
)
from ganforge.data.sources import Source, open_source
from ganforge.errors import GanforgeError
from ganforge.names import AUDIT_SPLIT
from ganforge.progress import progress_bar
from ganforge.storage import Location, check_writable, exclusive_lock, parse, put_if_unchanged, read_with_tag

log = logging.getLogger(__name__)

READ_CHUNK = 1024  # images read from the source at once: bounds memory for 256 px RGB (~200 MB)
SHARD_MB_MIN, SHARD_MB_MAX = 0.001, 100_000.0  # 1 kB (a shard per image) to 100 GB


@dataclass
class IngestResult:
    uri: str
    fingerprint: str
    manifest: dict
    reused: bool  # True when an identical dataset was already there and nothing was written
    seconds: float


def ingest(source: str, output: str, **options) -> IngestResult:
    """Turn ``source`` into a Parquet dataset at ``output``; see :class:`IngestConfig` for options."""
    return run_ingest(IngestConfig(source=source, output=output, **options))


def run_ingest(cfg: IngestConfig) -> IngestResult:
    """Ingest as ``cfg`` says; every input is checked before anything is written.

    Concurrent ingests into one location never both publish: locally they take turns (a lock in the
    output directory), on S3 the manifest is committed with a conditional PUT and the loser fails
    with one line. When the loser wanted the same dataset it reports the winner's as up to date.
    A failed ingest leaves the location as it found it (a directory it created is removed).

    Raises:
        GanforgeError: bad options or source files, a different dataset at ``output`` (without
            ``overwrite``), an unreachable or unwritable location, or a lost race on S3.
    """
    t0 = time.perf_counter()
    check_options(cfg)
    loc = parse(cfg.output)
    check_writable(loc)
    inputs_key = _inputs_key(cfg)
    existing, tag = _existing_manifest(loc)
    reused = _reuse_or_refuse(loc, cfg, existing, inputs_key, t0)
    if reused is not None:
        return reused

    src = open_source(cfg.source, cfg.input, cfg.download)
    check_source(src)
    selected, splits, labels, class_names = select(src, cfg)
    if len(selected) == 0:
        raise GanforgeError(f"source {cfg.source} has no images left after --classes/--limit; loosen them")

    def write() -> IngestResult:
        return _write_and_publish(loc, cfg, src, inputs_key, selected, splits, labels, class_names, tag, t0)

    if loc.is_s3:
        return write()
    created = not os.path.exists(loc.path)
    try:
        with exclusive_lock(loc.path, "ingest"):
            # Another ingest may have published while this one waited for the lock or read the source.
            existing, tag = _existing_manifest(loc)
            reused = _reuse_or_refuse(loc, cfg, existing, inputs_key, t0)
            return reused if reused is not None else write()
    except BaseException:
        if created:
            with contextlib.suppress(OSError):  # not empty: another ingest is using it
                os.rmdir(loc.path)
        raise


def check_options(cfg: IngestConfig) -> None:
    """The checks pydantic's field validators leave: finite sizes and a usable seed.

    Raises:
        GanforgeError: ``shard_size_mb`` not a finite size in range, or a negative ``split_seed``.
    """
    if not (math.isfinite(cfg.shard_size_mb) and SHARD_MB_MIN <= cfg.shard_size_mb <= SHARD_MB_MAX):
        raise GanforgeError(
            f"--shard-size-mb must be a size in MB from {SHARD_MB_MIN} to {SHARD_MB_MAX:.0f}, got {cfg.shard_size_mb}; "
            "e.g. 64"
        )
    if cfg.split_seed < 0:
        # numpy seeds are non-negative; mapping negatives onto them would make two flags one split.
        raise GanforgeError(f"--split-seed must be 0 or more, got {cfg.split_seed}; e.g. --split-seed 0")


def check_source(src: Source) -> None:
    """Labels, splits and keys agree in count and every label names a class.

    A source whose label list is shorter or longer than its images, or holds labels outside its
    classes, would otherwise lose images silently (they fall out of the class filter).

    Raises:
        GanforgeError: a mismatch, naming the source.
    """
    labels = np.asarray(src.labels)
    n = len(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise GanforgeError(f"source {src.name}: labels are {labels.dtype} {labels.shape}, not one integer per image; "
                            "fix the label data")
    for what, values in (("split", src.splits), ("key", src.keys)):
        if values is not None and len(values) != n:
            raise GanforgeError(f"source {src.name} has {n} labels but {len(values)} {what} entries; fix the input")
    _check_attributes(src, n)
    k = len(src.class_names)
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if len(bad):
        where = src.keys[bad[0]] if src.keys is not None else bad[0]
        raise GanforgeError(
            f"source {src.name}: image {where} has label {labels[bad[0]]}, outside 0..{k - 1} ({k} classes; "
            f"{len(bad)} such labels); fix the label data"
        )


def _check_attributes(src: Source, n: int) -> None:
    """Attribute names and values come together: (N, A) bools for A distinct, non-empty names."""
    names, values = src.attribute_names, src.attributes
    if names is None and values is None:
        return
    fix = "fix the attribute data"
    if names is None or values is None:
        raise GanforgeError(f"source {src.name} has attribute {'values' if names is None else 'names'} without "
                            f"attribute {'names' if names is None else 'values'}; {fix}")
    if not names or not all(isinstance(a, str) and a for a in names) or len(set(names)) != len(names):
        raise GanforgeError(f"source {src.name}: attribute names {names!r} are not distinct, non-empty names; {fix}")
    shape = np.shape(values)
    if shape != (n, len(names)) or np.asarray(values).dtype != np.bool_:
        raise GanforgeError(f"source {src.name} has {np.asarray(values).dtype} attributes of shape {shape}, not "
                            f"{n} images x {len(names)} attributes of yes/no; {fix}")


def _reuse_or_refuse(loc: Location, cfg: IngestConfig, existing: dict | None, inputs_key: str, t0: float):
    """An ``IngestResult`` when ``existing`` is this very dataset; raises when it is another one."""
    if existing is None or cfg.overwrite:
        return None
    if existing.get("inputs_key") == inputs_key:
        from ganforge.data.loader import verified_fingerprint

        try:  # reused only for what its files hold: a claim that does not verify is ingested again
            fp = verified_fingerprint(loc.uri)
        except GanforgeError as err:
            print(f"warning: the dataset at {loc.uri} was made from these inputs but does not verify ({err}); "
                  "ingesting it again", file=sys.stderr, flush=True)
            return None
        log.info("dataset at %s is up to date (fingerprint %s)", loc.uri, fp)
        return IngestResult(loc.uri, fp, existing, True, time.perf_counter() - t0)
    raise GanforgeError(
        f"a different dataset already exists at {loc.uri} (source {existing['source']['name']}, "
        f"fingerprint {existing['fingerprint'][:12]}); pass --overwrite or choose another --output"
    )


def _write_and_publish(loc, cfg, src, inputs_key, selected, splits, labels, class_names, tag, t0) -> IngestResult:
    """Write shards under a temporary name, move them to their version directory, commit the manifest.

    Locally the caller holds the lock; on S3 the manifest PUT succeeds only if the manifest is still
    the version ``tag`` seen at the start (absent: None), so a concurrent writer is detected.
    """
    token = uuid.uuid4().hex[:12]
    tmp = f"_tmp-{token}"
    if not loc.is_s3:
        _remove_leftovers(loc, keep=None)  # under the lock: nobody else is writing here
    loc.makedirs(tmp)
    version = None
    try:
        shards, records, shape = _write_shards(loc, tmp, src, cfg, selected, splits, labels, class_names)
        fp = fingerprint(records, src.attribute_names)
        # Unique per ingest, so that a loser on S3 deletes only its own files, never the winner's.
        version = f"v-{fp[:16]}-{token}"
        loc.move_tree(tmp, version)
        for shard in shards:
            shard["path"] = shard["path"].replace(tmp, version, 1)
        manifest = _manifest(cfg, src, inputs_key, fp, shards, records, shape, class_names)
        if loc.is_s3:
            committed = put_if_unchanged(loc, manifest_bytes(manifest), MANIFEST, tag)
        else:
            write_manifest(loc, manifest)  # the commit point
            committed = True
    except BaseException as err:
        loc_cleanup = [tmp] + ([version] if version else [])
        with contextlib.suppress(Exception):  # already failing; the original error matters
            for name in loc_cleanup:
                loc.remove_tree(name)
        if loc.is_s3 and isinstance(err, Exception) and _manifest_changed(loc, tag):
            winner, _ = _existing_manifest(loc)  # the winner removed our files mid-write
            if winner is not None and winner.get("inputs_key") == inputs_key:  # it wanted the same: up to date
                return IngestResult(loc.uri, winner["fingerprint"], winner, True, time.perf_counter() - t0)
            raise _lost_race(loc) from None
        raise
    if not committed:
        loc.remove_tree(version)
        winner, _ = _existing_manifest(loc)
        if winner is not None and winner.get("inputs_key") == inputs_key:
            return IngestResult(loc.uri, winner["fingerprint"], winner, True, time.perf_counter() - t0)
        raise _lost_race(loc)
    _remove_leftovers(loc, keep=version)
    return IngestResult(loc.uri, fp, manifest, False, time.perf_counter() - t0)


def _manifest_changed(loc: Location, tag: str | None) -> bool:
    try:
        return _existing_manifest(loc)[1] != tag
    except GanforgeError:  # cannot tell (the endpoint went away): report the original error
        return False


def _lost_race(loc: Location) -> GanforgeError:
    winner, _ = _existing_manifest(loc)
    fp = f" (fingerprint {winner['fingerprint'][:12]})" if winner else ""
    return GanforgeError(
        f"another ingest published a dataset at {loc.uri}{fp} while this one was writing; nothing of this one was "
        "kept: re-run to reuse that dataset, or pass --overwrite to replace it"
    )


def select(src: Source, cfg: IngestConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Which images to keep, their split and (renumbered) label, without reading any pixels.

    Returns:
        indices (K,) sorted source indices; splits (K,) split names; labels (K,) new label ids;
        class names of the new ids.
    """
    labels = np.asarray(src.labels, dtype=np.int64)
    keep_ids = _class_ids(src.class_names, cfg.classes)
    remap = np.full(max(len(src.class_names), int(labels.max(initial=0)) + 1), -1, dtype=np.int64)
    remap[keep_ids] = np.arange(len(keep_ids))
    mask = remap[labels] >= 0
    rng = np.random.default_rng(cfg.split_seed)
    if src.splits is not None:
        splits = np.asarray(src.splits).astype(str)
    else:  # draw a held-out split so that evaluation and the audit have unseen real images
        splits = np.full(len(labels), "train", dtype=object)
        candidates = np.flatnonzero(mask)
        n_val = int(round(cfg.val_fraction * len(candidates)))
        _check_val_split(cfg.val_fraction, n_val, len(candidates))
        splits[rng.permutation(candidates)[:n_val]] = "val"
        splits = splits.astype(str)
    splits = carve_audit(splits, mask, cfg)
    chosen = []
    for split in sorted(set(splits[mask])):
        idx = np.flatnonzero(mask & (splits == split))
        if cfg.limit is not None and len(idx) > cfg.limit:
            idx = rng.choice(idx, size=cfg.limit, replace=False)
        chosen.append(idx)
    indices = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return indices, splits[indices], remap[labels[indices]], [src.class_names[i] for i in keep_ids]


def carve_audit(splits: np.ndarray, mask: np.ndarray, cfg: IngestConfig) -> np.ndarray:
    """``splits`` with a seeded random ``audit_fraction`` of the kept training images renamed ``audit``.

    Drawn from the training images themselves (after any val carve, before --limit), so that its images
    are exchangeable with the ones a generator trains on: unlike an official test split written by other
    people, on other days, they are what an honest generator's samples look like. Its own random stream
    (seeded by ``split_seed``), so adding it leaves the val split as it was.

    Raises:
        GanforgeError: the source already has an ``audit`` split, or the fraction leaves a split empty.
    """
    if not cfg.audit_fraction:
        return splits
    if np.any(splits == AUDIT_SPLIT):
        raise GanforgeError(f"source {cfg.source} already has a split named {AUDIT_SPLIT!r}; leave out --audit-fraction")
    candidates = np.flatnonzero(mask & (splits == "train"))
    n_audit = int(round(cfg.audit_fraction * len(candidates)))
    if not 0 < n_audit < len(candidates):
        empty = AUDIT_SPLIT if n_audit == 0 else "train"
        raise GanforgeError(f"--audit-fraction {cfg.audit_fraction} of {len(candidates)} training images leaves the "
                            f"{empty} split empty; choose a larger fraction, or 0 for no audit split")
    out = splits.astype(object)
    out[np.random.default_rng([cfg.split_seed, 1]).permutation(candidates)[:n_audit]] = AUDIT_SPLIT
    return out.astype(str)


def carved_splits(cfg: IngestConfig, src_has_splits: bool) -> list[str]:
    """The splits this ingest drew at random from the training source (exchangeable with train)."""
    carved = [] if src_has_splits or not cfg.val_fraction else ["val"]
    return sorted(carved + ([AUDIT_SPLIT] if cfg.audit_fraction else []))


def _check_val_split(fraction: float, n_val: int, n: int) -> None:
    """A non-zero --val-fraction must leave both splits non-empty (0 means: no val split)."""
    if fraction == 0 or n == 0 or 0 < n_val < n:
        return
    empty = "val" if n_val == 0 else "train"
    if n < 2:
        fix = "pass --val-fraction 0 (one image cannot be split)"
    else:
        fix = f"choose one between {1.5 / n:.3g} and {(n - 1.5) / n:.3g}, or 0 for no val split"
    raise GanforgeError(f"--val-fraction {fraction} of {n} images leaves the {empty} split empty; {fix}")


def _class_ids(class_names: list[str], wanted: tuple[str, ...] | None) -> list[int]:
    if not wanted:
        return list(range(len(class_names)))
    ids = []
    for w in wanted:
        if w in class_names:
            ids.append(class_names.index(w))
        elif w.isdigit() and int(w) < len(class_names):
            ids.append(int(w))
        else:
            valid = ", ".join(f"{i}={n!r}" for i, n in enumerate(class_names))
            raise GanforgeError(f"unknown class {w!r} in --classes; valid: {valid}")
    return sorted(set(ids))


def _write_shards(loc, tmp, src, cfg, selected, splits, labels, class_names):
    """Read, prepare, encode and write the selected images; returns shards, fingerprint records, shape."""
    writer = ShardWriter(loc, tmp, cfg.shard_size_mb, columns=schema(src.attributes is not None))
    records: list = []  # (pixel sha256, label, split[, attribute bits]) per row
    shapes: set[tuple[int, int, int]] = set()
    workers = os.cpu_count() or 1

    def encode(batch: list[tuple[np.ndarray, object]]) -> list[tuple[np.ndarray, bytes, str]]:
        outs = [img.prepare(img.check_image(image, key), cfg.image_size, cfg.channels, cfg.aspect)
                for image, key in batch]
        return [(out, img.encode_png(out), img.pixel_sha256(out)) for out in outs]

    def encoded(images: list[tuple[np.ndarray, object]]):
        # A task per slice, not per image: per-task overhead dominates for 28x28 images.
        step = max(1, -(-len(images) // (workers * 4)))
        for part in pool.map(encode, [images[s : s + step] for s in range(0, len(images), step)]):
            yield from part

    try:
        # PIL and zlib release the GIL while they work; the bar counts images read, encoded and written
        with (ThreadPoolExecutor(workers) as pool,
              progress_bar(f"ingest {cfg.source}", len(selected), "img") as bar):
            for start in range(0, len(selected), READ_CHUNK):
                chunk = selected[start : start + READ_CHUNK]
                images = src.read(chunk)
                if len(images) != len(chunk):
                    raise GanforgeError(f"source {src.name} returned {len(images)} images for {len(chunk)} indices; "
                                        "its files changed while reading, re-run")
                keys = src.keys[chunk] if src.keys is not None else chunk
                for j, (out, png, sha) in enumerate(encoded(list(zip(images, keys)))):
                    i = start + j
                    shapes.add(out.shape)
                    img.check_uniform(shapes)
                    label = int(labels[i])
                    row = _row(i, splits[i], label, class_names[label], out, png, sha, src, chunk[j])
                    records.append((sha, label, str(splits[i]), *([row["attributes"]] if "attributes" in row else [])))
                    writer.add(row)
                bar.advance(len(chunk))
            shards = writer.close()  # the last shard's flush belongs to the step
    except BaseException:
        writer.abort()
        raise
    return shards, records, shapes.pop()


def _row(i, split, label, label_name, out, png, sha, src, src_index) -> dict:
    key = str(src.keys[src_index]) if src.keys is not None else str(int(src_index))
    h, w, c = out.shape
    row = dict(id=i, split=str(split), label=label, label_name=label_name, height=h, width=w,
               channels=c, image=png, sha256=sha, source_key=key)
    if src.attributes is not None:  # "0"/"1" per attribute, in the order of src.attribute_names
        row["attributes"] = (np.asarray(src.attributes[src_index], dtype=np.uint8) + ord("0")).tobytes().decode()
    return row


def _manifest(cfg, src, inputs_key, fp, shards, records, shape, class_names) -> dict:
    split_counts = Counter(r[2] for r in records)
    class_counts: dict[str, Counter] = {}
    for _, label, split, *_bits in records:
        class_counts.setdefault(split, Counter())[class_names[label]] += 1
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "ganforge-dataset",
        "fingerprint": fp,
        "ganforge_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"name": src.name, "details": src.details},
        "options": cfg.inputs(),
        "inputs_key": inputs_key,
        "image": {"height": shape[0], "width": shape[1], "channels": shape[2], "encoding": "png"},
        "class_names": class_names,
        **({"attributes": list(src.attribute_names)} if src.attribute_names is not None else {}),
        "carved_splits": [s for s in carved_splits(cfg, src.splits is not None) if s in split_counts],
        "counts": {
            "total": len(records),
            "splits": dict(sorted(split_counts.items())),
            "classes": {s: dict(sorted(c.items())) for s, c in sorted(class_counts.items())},
        },
        "columns": schema(src.attribute_names is not None).names,
        "shards": shards,
    }


def _inputs_key(cfg: IngestConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.inputs(), sort_keys=True).encode()).hexdigest()


def _existing_manifest(loc: Location) -> tuple[dict | None, str | None]:
    """The manifest at ``loc`` (None when absent or unreadable as one) and its S3 version tag."""
    data, tag = read_with_tag(loc, MANIFEST)
    if data is None:
        return None, None
    try:
        return parse_manifest(data, loc.uri), tag
    except GanforgeError:  # a corrupt manifest is no dataset: replace it
        return None, tag


def _remove_leftovers(loc: Location, keep: str | None) -> None:
    """Temporary shards of interrupted ingests and versions no manifest references.

    Locally this runs under the lock; on S3 only after a committed manifest, when a concurrent
    writer's files (if any) are doomed anyway: its conditional commit fails.
    """
    for name in loc.listdir():
        if name.startswith("_tmp-") or (name.startswith("v-") and name != keep):
            loc.remove_tree(name)
        elif name.startswith(f"{MANIFEST}.tmp-") and not loc.is_s3:  # a manifest write cut short by a kill
            with contextlib.suppress(FileNotFoundError):
                os.unlink(loc.join(name))
