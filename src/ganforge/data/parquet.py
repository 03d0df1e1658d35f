"""The on-disk dataset format: Parquet shards plus ``manifest.json``.

Layout under a dataset URI::

    manifest.json            written last; a dataset without it does not exist for readers
    v-<fingerprint[:16]>/    the shards of the published version (part-00000.parquet, ...)
    _tmp-<random>/           shards being written (removed on failure or by the next ingest)

Every shard has the columns of :data:`SCHEMA`; ``image`` holds lossless PNG bytes and ``sha256``
the hash of the decoded pixels (see ``ganforge.data.images.pixel_sha256``).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from ganforge.errors import GanforgeError
from ganforge.storage import Location

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("split", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("channels", pa.int8()),
        ("image", pa.binary()),
        ("sha256", pa.string()),
        ("source_key", pa.string()),
    ]
)


class ShardWriter:
    """Writes rows into zstd Parquet shards of about ``shard_size_mb`` each under ``loc/prefix``."""

    def __init__(self, loc: Location, prefix: str, shard_size_mb: float, row_group_rows: int = 2048):
        self.loc, self.prefix = loc, prefix
        self.max_bytes = int(shard_size_mb * 1e6)
        self.row_group_rows = row_group_rows
        self.shards: list[dict] = []  # {"path", "rows", "bytes"} relative to the dataset root
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[dict] = []
        self._shard_bytes = 0

    def add(self, row: dict) -> None:
        self._buffer.append(row)
        self._shard_bytes += len(row["image"])
        if len(self._buffer) >= self.row_group_rows:
            self._flush()
        if self._shard_bytes >= self.max_bytes:
            self._close_shard()

    def close(self) -> list[dict]:
        self._close_shard()
        return self.shards

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            name = f"part-{len(self.shards):05d}.parquet"
            self.shards.append({"path": f"{self.prefix}/{name}", "rows": 0, "bytes": 0})
            sink = self.loc.fs.open_output_stream(self.loc.join(self.prefix, name))
            self._writer = pq.ParquetWriter(sink, SCHEMA, compression="zstd")
            self._sink = sink
        table = pa.Table.from_pylist(self._buffer, schema=SCHEMA)
        self._writer.write_table(table)
        self.shards[-1]["rows"] += table.num_rows
        self._buffer = []

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self.shards[-1]["bytes"] = self._shard_bytes
            self._writer, self._shard_bytes = None, 0

    def abort(self) -> None:
        """Drop open file handles after a failure (the caller removes the temporary prefix)."""
        try:
            if self._writer is not None:
                self._writer.close()
                self._sink.close()
        except Exception:  # noqa: BLE001 - already failing; the original error matters
            pass
        self._writer = None


def fingerprint(records: list[tuple[str, int, str]]) -> str:
    """The dataset's identity: SHA-256 over the sorted (pixel sha256, label, split) triples.

    Sorting makes it independent of row order and sharding; it changes with any pixel, label or
    split assignment.
    """
    h = hashlib.sha256(f"ganforge-dataset-v{SCHEMA_VERSION}\n".encode())
    for sha, label, split in sorted(records):
        h.update(f"{sha} {label} {split}\n".encode())
    return h.hexdigest()


def read_manifest(loc: Location) -> dict:
    """The manifest at ``loc``; a dataset without one is unfinished or absent."""
    if not loc.exists(MANIFEST):
        raise GanforgeError(
            f"no dataset at {loc.uri} (no {MANIFEST}; an ingest may have been interrupted); "
            "run `ganforge ingest ... --output` to create it"
        )
    manifest = json.loads(loc.read_bytes(MANIFEST))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise GanforgeError(
            f"dataset at {loc.uri} has schema version {manifest.get('schema_version')}, this ganforge reads "
            f"{SCHEMA_VERSION}; re-ingest it with --overwrite"
        )
    return manifest


def write_manifest(loc: Location, manifest: dict) -> None:
    loc.write_bytes_atomic(json.dumps(manifest, indent=2, sort_keys=True).encode(), MANIFEST)


def read_rows(loc: Location, manifest: dict, columns: list[str], split: str | None = None) -> pa.Table:
    """The listed columns of every row (of one split), in manifest shard order."""
    if split is not None and split not in manifest["counts"]["splits"]:
        have = ", ".join(sorted(manifest["counts"]["splits"])) or "none"
        raise GanforgeError(f"dataset {loc.uri} has no split {split!r} (it has: {have}); pick one of those")
    tables = []
    for shard in manifest["shards"]:
        filters = [("split", "=", split)] if split is not None else None
        try:
            with loc.fs.open_input_file(loc.join(shard["path"])) as f:
                tables.append(pq.read_table(f, columns=columns, filters=filters))
        except FileNotFoundError:
            raise GanforgeError(
                f"dataset {loc.uri} lists shard {shard['path']} but it is missing; re-ingest with --overwrite"
            ) from None
    if not tables:
        return pa.schema([SCHEMA.field(c) for c in columns]).empty_table()
    return pa.concat_tables(tables)
