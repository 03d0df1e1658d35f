"""CIFAR-10 in its binary version: ``cifar-10-batches-bin/`` of ``cifar-10-binary.tar.gz``.

The layout (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"): ``data_batch_1.bin`` ..
``data_batch_5.bin`` (the train split) and ``test_batch.bin`` (the test split) hold 10,000 records each of
3,073 bytes: a label byte 0..9, then the 32x32 image as three 1,024-byte planes, red, green, blue, each row
after row. ``batches.meta.txt`` names the classes, one per line, in label order. Nothing is unpickled
(the Python version of the data is pickles); only the label bytes are read on open, and ingest reads the
records it keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganforge.data.sources.base import RowKeys, Source, read_by_part
from ganforge.data.sources.torchvision_idx import resolve_root
from ganforge.errors import GanforgeError

FOLDER = "cifar-10-batches-bin"
META_FILE = "batches.meta.txt"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE  # the label byte, then the red, green and blue planes
WHERE = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 binary version)"


def open_cifar10(input_path: str | None, download: bool) -> Source:
    """Open CIFAR-10's binary batches.

    Args:
        input_path: the ``cifar-10-batches-bin`` folder, or a folder holding it; None means the data root
            (``$GANFORGE_DATA_ROOT`` or ``~/.cache/ganforge/torchvision``) holding it.
        download: not supported (the file is not fetched by ganforge); only named in the error.

    Returns:
        A ``Source`` of (32, 32, 3) uint8 images with splits ``train`` (the data batches) and ``test``; the
        class names of ``batches.meta.txt``; ``keys`` are ``<batch file stem>/<record>``.

    Raises:
        GanforgeError: a missing file, a file that is not whole records, a label naming no class, or a
            class list that is empty or repeats a name.
    """
    folder = _resolve_folder(input_path)
    files = [*TRAIN_FILES, TEST_FILE]
    missing = [name for name in [META_FILE, *files] if not (folder / name).is_file()]
    if missing:
        note = " (--download does not fetch it)" if download else ""
        raise GanforgeError(
            f"CIFAR-10 binary files missing in {folder}: {', '.join(missing)}; extract cifar-10-binary.tar.gz "
            f"from {WHERE}{note} and give its {FOLDER} folder as the input"
        )
    class_names = _read_class_names(folder / META_FILE)
    counts = [_count_records(folder / name) for name in files]
    labels = np.concatenate([_read_labels(folder / name, n, class_names) for name, n in zip(files, counts)])
    starts = np.cumsum([0, *counts]).astype(np.int64)
    splits = np.repeat(np.array(["train"] * len(TRAIN_FILES) + ["test"]), counts)

    def read_part(p: int, rows: np.ndarray) -> np.ndarray:
        records = _read_records(folder / files[p], rows)
        return records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # (K, 3, 32, 32) planes -> pixels

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return read_by_part(starts, indices, read_part)

    return Source(
        name="cifar10",
        class_names=class_names,
        labels=labels,
        splits=splits,
        read=read,
        keys=RowKeys([Path(name).stem for name in files], counts),
        details={"folder": folder.resolve().name, "files": dict(zip(files, counts))},
    )


def _resolve_folder(input_path: str | None) -> Path:
    root = Path(input_path).expanduser() if input_path else resolve_root(None)
    if not root.exists():
        raise GanforgeError(f"{root} does not exist; extract cifar-10-binary.tar.gz from {WHERE} and give its "
                            f"{FOLDER} folder as the input")
    if not root.is_dir():
        raise GanforgeError(f"{root} is a file; give the {FOLDER} folder (of cifar-10-binary.tar.gz) as the input")
    return root / FOLDER if (root / FOLDER).is_dir() else root


def _read_class_names(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise GanforgeError(f"{path} is not text ({err.reason}); it names one class per line, extract it "
                            "again") from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise GanforgeError(f"{path} names no class; it names one class per line (airplane, ...), extract it again")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GanforgeError(f"{path} names class {repeated[0]!r} twice; each line names another class, extract it "
                            "again")
    return names


def _count_records(path: Path) -> int:
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        whole, rest = divmod(size, RECORD_BYTES)
        raise GanforgeError(
            f"{path} is {size} bytes: {whole} whole {RECORD_BYTES}-byte records and {rest} bytes more (a record is a "
            f"label byte and 3x{SIDE}x{SIDE} pixel bytes); the file is cut short or not CIFAR-10's binary version, "
            "extract it again"
        )
    return size // RECORD_BYTES


def _read_labels(path: Path, n: int, class_names: list[str]) -> np.ndarray:
    """The first byte of each of the ``n`` records, read in blocks so that memory stays flat."""
    labels = np.empty(n, dtype=np.int64)
    block = 4096  # records per read: 12 MB
    with open(path, "rb") as f:
        for start in range(0, n, block):
            want = min(block, n - start)
            data = np.frombuffer(f.read(want * RECORD_BYTES), dtype=np.uint8)
            if data.size != want * RECORD_BYTES:
                raise GanforgeError(f"{path} changed while it was read; run the ingest again")
            labels[start : start + want] = data.reshape(want, RECORD_BYTES)[:, 0]
    bad = np.flatnonzero(labels >= len(class_names))
    if len(bad):
        raise GanforgeError(
            f"{path} record {bad[0]} has label {labels[bad[0]]}, but {META_FILE} names {len(class_names)} classes "
            f"({len(bad)} such records); the file is damaged or not CIFAR-10's (CIFAR-100's records have two label "
            "bytes), extract it again"
        )
    return labels


def _read_records(path: Path, rows: np.ndarray) -> np.ndarray:
    """Records ``rows`` (sorted) of ``path`` as (K, 3073) uint8, one read per run of neighbouring records."""
    out = np.empty((len(rows), RECORD_BYTES), dtype=np.uint8)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    with open(path, "rb") as f:
        for lo, hi in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()):
            f.seek(int(rows[lo]) * RECORD_BYTES)
            got = f.readinto(out[lo:hi].data.cast("B"))  # (hi - lo) whole records, straight into ``out``
            if got != (hi - lo) * RECORD_BYTES:
                raise GanforgeError(f"{path} is shorter than when it was opened (it changed during the ingest); "
                                    "run the ingest again")
    return out
