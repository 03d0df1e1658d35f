"""Ingest: a source becomes a versioned Parquet dataset, published atomically and idempotently."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ganforge import __version__
from ganforge.config import IngestConfig
from ganforge.data import images as img
from ganforge.data.parquet import (
    SCHEMA,
    SCHEMA_VERSION,
    ShardWriter,
    fingerprint,
    read_manifest,
    write_manifest,
)
from ganforge.data.sources import Source, open_source
from ganforge.errors import GanforgeError
from ganforge.progress import progress_bar
from ganforge.storage import Location, check_writable, parse

log = logging.getLogger(__name__)

READ_CHUNK = 1024  # images read from the source at once: bounds memory for 256 px RGB (~200 MB)


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
    t0 = time.perf_counter()
    loc = parse(cfg.output)
    check_writable(loc)
    inputs_key = _inputs_key(cfg)
    existing = _existing_manifest(loc)
    if existing is not None and not cfg.overwrite:
        if existing.get("inputs_key") == inputs_key:
            log.info("dataset at %s is up to date (fingerprint %s)", loc.uri, existing["fingerprint"])
            return IngestResult(loc.uri, existing["fingerprint"], existing, True, time.perf_counter() - t0)
        raise GanforgeError(
            f"a different dataset already exists at {loc.uri} (source {existing['source']['name']}, "
            f"fingerprint {existing['fingerprint'][:12]}); pass --overwrite or choose another --output"
        )

    src = open_source(cfg.source, cfg.input, cfg.download)
    selected, splits, labels, class_names = select(src, cfg)
    if len(selected) == 0:
        raise GanforgeError(f"source {cfg.source} has no images left after --classes/--limit; loosen them")

    _remove_stale_tmp(loc)
    tmp = f"_tmp-{uuid.uuid4().hex[:12]}"
    loc.makedirs(tmp)
    try:
        shards, records, shape = _write_shards(loc, tmp, src, cfg, selected, splits, labels, class_names)
        fp = fingerprint(records)
        version = f"v-{fp[:16]}"
        if loc.exists(version):  # same content published before (an --overwrite of identical data)
            loc.remove_tree(version)
        loc.move_tree(tmp, version)
    except BaseException:
        loc.remove_tree(tmp)  # nothing half-written survives a failure or Ctrl-C
        raise
    for shard in shards:
        shard["path"] = shard["path"].replace(tmp, version, 1)
    manifest = _manifest(cfg, src, inputs_key, fp, shards, records, shape, class_names)
    write_manifest(loc, manifest)  # the commit point
    _remove_unreferenced_versions(loc, keep=version)
    return IngestResult(loc.uri, fp, manifest, False, time.perf_counter() - t0)


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
        splits[rng.permutation(candidates)[:n_val]] = "val"
        splits = splits.astype(str)
    chosen = []
    for split in sorted(set(splits[mask])):
        idx = np.flatnonzero(mask & (splits == split))
        if cfg.limit is not None and len(idx) > cfg.limit:
            idx = rng.choice(idx, size=cfg.limit, replace=False)
        chosen.append(idx)
    indices = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return indices, splits[indices], remap[labels[indices]], [src.class_names[i] for i in keep_ids]


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
    writer = ShardWriter(loc, tmp, cfg.shard_size_mb)
    records: list[tuple[str, int, str]] = []
    shapes: set[tuple[int, int, int]] = set()
    workers = os.cpu_count() or 1

    def encode(batch: list[np.ndarray]) -> list[tuple[np.ndarray, bytes, str]]:
        outs = [img.prepare(image, cfg.image_size, cfg.channels, cfg.aspect) for image in batch]
        return [(out, img.encode_png(out), img.pixel_sha256(out)) for out in outs]

    def encoded(images: list[np.ndarray]):
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
                for j, (out, png, sha) in enumerate(encoded(src.read(chunk))):
                    i = start + j
                    shapes.add(out.shape)
                    img.check_uniform(shapes)
                    label = int(labels[i])
                    records.append((sha, label, str(splits[i])))
                    writer.add(_row(i, splits[i], label, class_names[label], out, png, sha, src, chunk[j]))
                bar.advance(len(chunk))
            shards = writer.close()  # the last shard's flush belongs to the step
    except BaseException:
        writer.abort()
        raise
    return shards, records, shapes.pop()


def _row(i, split, label, label_name, out, png, sha, src, src_index) -> dict:
    key = str(src.keys[src_index]) if src.keys is not None else str(int(src_index))
    h, w, c = out.shape
    return dict(id=i, split=str(split), label=label, label_name=label_name, height=h, width=w,
                channels=c, image=png, sha256=sha, source_key=key)


def _manifest(cfg, src, inputs_key, fp, shards, records, shape, class_names) -> dict:
    split_counts = Counter(r[2] for r in records)
    class_counts: dict[str, Counter] = {}
    for _, label, split in records:
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
        "counts": {
            "total": len(records),
            "splits": dict(sorted(split_counts.items())),
            "classes": {s: dict(sorted(c.items())) for s, c in sorted(class_counts.items())},
        },
        "columns": [f.name for f in SCHEMA],
        "shards": shards,
    }


def _inputs_key(cfg: IngestConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.inputs(), sort_keys=True).encode()).hexdigest()


def _existing_manifest(loc: Location) -> dict | None:
    try:
        return read_manifest(loc)
    except GanforgeError:
        return None


def _remove_stale_tmp(loc: Location) -> None:
    """Leftovers of interrupted ingests: never referenced by a manifest, safe to delete."""
    for name in loc.listdir():
        if name.startswith("_tmp-"):
            loc.remove_tree(name)


def _remove_unreferenced_versions(loc: Location, keep: str) -> None:
    for name in loc.listdir():
        if name.startswith("v-") and name != keep:
            loc.remove_tree(name)
