"""The on-disk dataset format: Parquet shards plus ``manifest.json``.

Layout under a dataset URI::

    manifest.json                     written last; a dataset without it does not exist for readers
    v-<fingerprint[:16]>-<random>/    the shards of the published version (part-00000.parquet, ...)
    _tmp-<random>/                    shards being written (removed on failure or by the next ingest)
    .lock                             local only: held by the ingest writing here (see storage.exclusive_lock)

``<random>`` is the writing ingest's own token, so two concurrent ingests never share a directory.
``read_manifest`` checks the manifest's structure and ``read_rows`` each shard against it, so a
truncated, edited or corrupt file is a one-line error naming the file, never a traceback.

Every shard has the columns of :data:`SCHEMA`; ``image`` holds lossless PNG bytes and ``sha256``
the hash of the decoded pixels (see ``ganforge.data.images.pixel_sha256``).

A dataset whose source has per-image yes/no attributes (CelebA's ``Smiling``, ...) has one column more,
``attributes`` (:data:`ATTRIBUTES`): per row a string of ``0``/``1``, one character per name of the
manifest's ``attributes`` list, in that order.

Identity: the manifest's ``fingerprint`` is :func:`fingerprint` of every row's (pixel sha256, label,
split), and of its attribute bits and the attribute names when the dataset has them; each shard entry
carries ``sha256``, the SHA-256 of the shard file's bytes, hashed while ingest wrote them.
``read_shard`` checks that digest, so a shard replaced or edited after ingest is refused; manifests
written before shard digests existed have none, and readers then verify by content (``table_fingerprint``
against the claimed fingerprint, decoded pixels against ``sha256``; see ``ganforge.data.loader``).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ganforge.errors import GanforgeError
from ganforge.storage import Location, describe_io_error

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
# The column of datasets with attributes only: "0"/"1" per attribute, in the manifest's order of names.
ATTRIBUTES = pa.field("attributes", pa.string())


def schema(attributes: bool) -> pa.Schema:
    """The shards' columns: :data:`SCHEMA`, and :data:`ATTRIBUTES` for a dataset with attributes."""
    return SCHEMA.append(ATTRIBUTES) if attributes else SCHEMA


def column(name: str) -> pa.Field:
    """The field of a shard column by name (KeyError for a column no shard has)."""
    return ATTRIBUTES if name == ATTRIBUTES.name else SCHEMA.field(name)


class _HashingSink:
    """A write-only file object for ``pa.PythonFile``: forwards to ``sink`` and hashes what passes through.

    The shard's digest is taken from the very bytes written, in one pass, for local paths and S3 alike.
    """

    def __init__(self, sink):
        self._sink = sink
        self.hash = hashlib.sha256()
        self.closed = False

    def write(self, data) -> int:
        self.hash.update(data)
        return self._sink.write(data)

    def tell(self) -> int:
        return self._sink.tell()

    def flush(self) -> None:
        self._sink.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:  # the ShardWriter closes the real sink itself
        self.closed = True


class ShardWriter:
    """Writes rows into zstd Parquet shards of about ``shard_size_mb`` each under ``loc/prefix``.

    Each entry of :attr:`shards` records the shard file's SHA-256 (``sha256``) for readers to check.
    """

    def __init__(self, loc: Location, prefix: str, shard_size_mb: float, row_group_rows: int = 2048,
                 columns: pa.Schema = SCHEMA):
        self.loc, self.prefix, self.schema = loc, prefix, columns
        self.max_bytes = int(shard_size_mb * 1e6)
        self.row_group_rows = row_group_rows
        self.shards: list[dict] = []  # {"path", "rows", "bytes", "sha256"}, path relative to the dataset root
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
            self._sink, self._hashing = sink, _HashingSink(sink)
            # Page CRCs let readers tell a damaged shard from a valid one (zstd alone has no checksum).
            self._writer = pq.ParquetWriter(pa.PythonFile(self._hashing, mode="w"), self.schema, compression="zstd",
                                            write_page_checksum=True)
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table)
        self.shards[-1]["rows"] += table.num_rows
        self._buffer = []

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self.shards[-1]["bytes"] = self._shard_bytes
            self.shards[-1]["sha256"] = self._hashing.hash.hexdigest()
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


def fingerprint(records: list[tuple[str, int, str]] | list[tuple[str, int, str, str]],
                attribute_names: list[str] | None = None) -> str:
    """The dataset's identity: SHA-256 over the sorted (pixel sha256, label, split) triples.

    Sorting makes it independent of row order and sharding; it changes with any pixel, label or
    split assignment. A dataset with attributes passes their names and (sha256, label, split, bits)
    records: the names are hashed first and each line ends in the row's bits, so renaming, reordering or
    flipping an attribute changes it too. Without attributes the value is what it always was.
    """
    h = hashlib.sha256(_fingerprint_header(attribute_names))
    for record in sorted(records):
        h.update((" ".join(map(str, record)) + "\n").encode())
    return h.hexdigest()


FINGERPRINT_COLUMNS = ["sha256", "label", "split"]


def _fingerprint_header(attribute_names: list[str] | None) -> bytes:
    head = f"ganforge-dataset-v{SCHEMA_VERSION}\n"
    if attribute_names is not None:  # JSON: names may hold any character but are read back unambiguously
        head += f"attributes {json.dumps(attribute_names)}\n"
    return head.encode()


def table_fingerprint(table: pa.Table, attribute_names: list[str] | None = None) -> str:
    """:func:`fingerprint` of a table's ``sha256``, ``label`` and ``split`` columns (and ``attributes``
    when ``attribute_names`` is given), computed in Arrow.

    The same value as ``fingerprint(list of (sha256, label, split[, bits]), attribute_names)``: Arrow orders
    strings by their UTF-8 bytes, which is Python's code-point order, and numbers by value; the lines
    ``"sha label split[ bits]\\n"`` are built in Arrow and hashed straight from its buffer, without a Python
    string per row. The columns must hold no nulls.
    """
    columns = FINGERPRINT_COLUMNS + ([ATTRIBUTES.name] if attribute_names is not None else [])
    t = table.select(columns)
    t = t.take(pc.sort_indices(t, sort_keys=[(c, "ascending") for c in columns]))
    fields = [t.column("sha256"), pc.cast(t.column("label"), pa.string()), *(t.column(c) for c in columns[2:])]
    fields[-1] = pc.binary_join_element_wise(fields[-1], "", "\n")  # the last field ends the line
    lines = pc.binary_join_element_wise(*fields, " ")
    h = hashlib.sha256(_fingerprint_header(attribute_names))
    for chunk in lines.chunks:
        if len(chunk):  # a string array's values are its strings back to back, from offsets[0] to offsets[-1]
            chunk = pc.cast(chunk, pa.large_string())  # 64-bit offsets, whatever the size
            offsets = chunk.buffers()[1]
            first, last = (int.from_bytes(offsets[8 * i : 8 * i + 8], "little", signed=True)
                           for i in (chunk.offset, chunk.offset + len(chunk)))
            h.update(memoryview(chunk.buffers()[2])[first:last])
    return h.hexdigest()


def _is_sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def read_manifest(loc: Location) -> dict:
    """The manifest at ``loc``, checked; a dataset without one is unfinished or absent.

    Raises:
        GanforgeError: no manifest, an unreadable location, another schema version, or a manifest
            that is not what ingest writes (truncated, edited, corrupt).
    """
    return parse_manifest(read_manifest_bytes(loc), loc.uri)


def read_manifest_bytes(loc: Location) -> bytes:
    """The raw bytes of the manifest at ``loc`` (unchecked: pass them to :func:`parse_manifest`).

    Raises:
        GanforgeError: no manifest, or an unreadable location.
    """
    if not loc.exists(MANIFEST):
        raise GanforgeError(
            f"no dataset at {loc.uri} (no {MANIFEST}; an ingest may have been interrupted); "
            "run `ganforge ingest ... --output` to create it"
        )
    try:
        return loc.read_bytes(MANIFEST)
    except FileNotFoundError:  # deleted between the two calls
        raise GanforgeError(f"no dataset at {loc.uri} (its {MANIFEST} vanished while reading); run it again") from None


def parse_manifest(data: bytes, uri: str) -> dict:
    """Decode and check the bytes of a ``manifest.json`` read from ``uri``.

    Raises:
        GanforgeError: not a manifest of this schema version, or an inconsistent one.
    """
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        _corrupt(uri, f"not valid JSON: {err}")
    if not isinstance(manifest, dict):
        _corrupt(uri, f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise GanforgeError(
            f"dataset at {uri} has schema version {manifest.get('schema_version')!r}, this ganforge reads "
            f"{SCHEMA_VERSION}; re-ingest it with --overwrite"
        )
    problem = _manifest_problem(manifest)
    if problem:
        _corrupt(uri, problem)
    return manifest


def _corrupt(uri: str, problem: str):
    problem = " ".join(problem.split())[:200]
    raise GanforgeError(
        f"dataset at {uri} has a corrupt {MANIFEST} ({problem}); re-ingest it: ganforge ingest ... "
        f"--output {uri} --overwrite"
    )


def _is_count(v, least: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _manifest_problem(m: dict) -> str | None:
    """What is wrong with a decoded manifest, or None; checks every field readers rely on."""
    if not _is_sha256(m.get("fingerprint")):
        return "fingerprint is not a SHA-256 hex digest"
    src = m.get("source")
    if not (isinstance(src, dict) and isinstance(src.get("name"), str)) or not isinstance(m.get("options"), dict):
        return "source or options missing"
    image = m.get("image")
    if not (isinstance(image, dict) and _is_count(image.get("height"), 1) and _is_count(image.get("width"), 1)
            and image.get("channels") in (1, 3) and not isinstance(image.get("channels"), bool)):
        return "image needs height and width >= 1 and channels 1 or 3"
    names = m.get("class_names")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        return "class_names must be a non-empty list of names"
    if "attributes" in m:  # only datasets with attributes have the key
        attributes = m["attributes"]
        named = isinstance(attributes, list) and all(isinstance(n, str) and n for n in attributes)
        if not (named and attributes and len(set(attributes)) == len(attributes)):
            return "attributes must be a non-empty list of distinct names"
    counts = m.get("counts")
    if not isinstance(counts, dict):
        return "counts missing"
    splits, classes = counts.get("splits"), counts.get("classes")
    if not (isinstance(splits, dict) and splits and all(isinstance(k, str) and _is_count(v, 1) for k, v in splits.items())):
        return "counts.splits must map split names to image counts >= 1"
    if not (isinstance(classes, dict) and set(classes) == set(splits)):
        return "counts.classes must have the splits of counts.splits"
    for split, per_class in classes.items():
        if not (isinstance(per_class, dict) and all(k in names and _is_count(v) for k, v in per_class.items())
                and sum(per_class.values()) == splits[split]):
            return f"counts.classes[{split!r}] does not add up to counts.splits[{split!r}]"
    if not _is_count(counts.get("total")) or counts["total"] != sum(splits.values()):
        return "counts.total is not the sum of counts.splits"
    shards = m.get("shards")
    if not isinstance(shards, list):
        return "shards must be a list"
    for shard in shards:
        path = shard.get("path") if isinstance(shard, dict) else None
        if not (isinstance(path, str) and path and _is_count(shard.get("rows"))):
            return "every shard needs a path and a row count"
        parts = path.split("/")
        if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
            return f"shard path {path!r} is not inside the dataset"
        if "sha256" in shard and not _is_sha256(shard["sha256"]):  # optional: older manifests have none
            return f"shard {path!r} has a sha256 that is not a SHA-256 hex digest"
    if sum(shard["rows"] for shard in shards) != counts["total"]:
        return "the shards' rows do not add up to counts.total"
    return None


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def write_manifest(loc: Location, manifest: dict) -> None:
    loc.write_bytes_atomic(manifest_bytes(manifest), MANIFEST)


def read_rows(loc: Location, manifest: dict, columns: list[str], split: str | None = None) -> pa.Table:
    """The listed columns of every row (of one split), in manifest shard order.

    Raises:
        GanforgeError: no such split; a shard that is missing, unreadable, corrupt, or whose rows or
            columns disagree with the manifest (each names the shard and says to re-ingest).
    """
    if split is not None and split not in manifest["counts"]["splits"]:
        have = ", ".join(sorted(manifest["counts"]["splits"])) or "none"
        raise GanforgeError(f"dataset {loc.uri} has no split {split!r} (it has: {have}); pick one of those")
    tables = []
    for shard in manifest["shards"]:
        table = read_shard(loc, shard, columns + (["split"] if split is not None and "split" not in columns else []))
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split)).select(columns)
        tables.append(table)
    if not tables:
        return pa.schema([column(c) for c in columns]).empty_table()
    out = pa.concat_tables(tables)
    expected = manifest["counts"]["splits"][split] if split is not None else manifest["counts"]["total"]
    if out.num_rows != expected:
        what = f"split {split!r}" if split is not None else "the dataset"
        raise GanforgeError(
            f"dataset {loc.uri}: the shards hold {out.num_rows} rows of {what} but the manifest says {expected}; "
            "the files were changed after ingest, re-ingest with --overwrite"
        )
    return out


DIGEST_IN_MEMORY = 256 * 2**20  # shards up to this size are read once into memory, hashed and parsed there


def read_shard(loc: Location, shard: dict, columns: list[str], check_digest: bool = True) -> pa.Table:
    """One shard's columns, checked against :data:`SCHEMA`, the manifest's row count and its digest.

    When the manifest's entry has a ``sha256`` (ingest writes one; older manifests have none) and
    ``check_digest`` is on, the file's bytes must hash to it: a shard replaced or edited after ingest
    is refused even when it is valid Parquet with the right row count. The bytes hashed are the bytes
    parsed (one read), except for shards over :data:`DIGEST_IN_MEMORY`, which are hashed in a streaming
    pass and then read again.

    Raises:
        GanforgeError: the shard is missing, unreadable, not Parquet, not what ingest wrote, or changed.
    """
    path = shard["path"]
    fix = "re-ingest with --overwrite"
    digest = shard.get("sha256") if check_digest else None
    try:
        with loc.fs.open_input_file(loc.join(path)) as f:
            source = f
            if digest is not None:
                source = _check_digest(loc, path, f, digest)
            pf = pq.ParquetFile(source, page_checksum_verification=True)
            if pf.metadata.num_rows != shard["rows"]:
                raise GanforgeError(
                    f"dataset {loc.uri}: shard {path} has {pf.metadata.num_rows} rows, the manifest says "
                    f"{shard['rows']}; {fix}"
                )
            table = pf.read(columns=columns)
    except FileNotFoundError:
        raise GanforgeError(f"dataset {loc.uri} lists shard {path} but it is missing; {fix}") from None
    except (pa.ArrowException, ValueError, OSError) as err:
        # S3 transport errors say "AWS Error"; any other OSError is Parquet failing on the bytes.
        if isinstance(err, PermissionError) or (isinstance(err, OSError) and "AWS Error" in str(err)):
            raise GanforgeError(describe_io_error(loc, f"read shard {path} of", err)) from None
        reason = " ".join(str(err).split())[:160]
        raise GanforgeError(f"dataset {loc.uri}: shard {path} is corrupt ({reason}); {fix}") from None
    want = pa.schema([column(c) for c in columns])
    if not table.schema.equals(want, check_metadata=False):
        raise GanforgeError(f"dataset {loc.uri}: shard {path} does not have ganforge's columns and types; {fix}")
    return table


def _check_digest(loc: Location, path: str, f, digest: str):
    """What to parse ``f`` from once its bytes hashed to ``digest``; GanforgeError naming the shard if not."""
    h = hashlib.sha256()
    if f.size() <= DIGEST_IN_MEMORY:
        buf = f.read_buffer()
        h.update(buf)  # hashlib releases the GIL on large buffers
        source = pa.BufferReader(buf)
    else:
        while chunk := f.read_buffer(16 * 2**20):
            h.update(chunk)
        f.seek(0)
        source = f
    if h.hexdigest() != digest:
        raise GanforgeError(
            f"dataset {loc.uri}: shard {path} changed after ingest (its SHA-256 is not the one in {MANIFEST}); "
            "re-ingest with --overwrite"
        )
    return source
