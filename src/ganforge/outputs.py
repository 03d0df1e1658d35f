"""A command's local output files: paths checked before the work that fills them, and written so no half
file is ever seen (temp name in the same folder, then rename).

Run files, reports, generated images and caches go through here; a dataset or artefact at a URI (a local
path or ``s3://``) is ``ganforge.storage``'s, whose local writes also fsync (a manifest there commits a
dataset). Images become file bytes in ``ganforge.pictures``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from ganforge.errors import GanforgeError


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """Fail now, not after minutes of work, when ``path`` cannot become a writable directory.

    Creates nothing (a failed command leaves no empty folder behind): the nearest existing ancestor must
    be a directory in which a file can be created, probed rather than asked of ``os.access`` (root passes
    every access check, yet cannot write on a read-only mount).

    Raises:
        GanforgeError: ``path`` is a file, lies under a file, or cannot be written.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise GanforgeError(f"{flag} {path} is a file, not a directory; pass a directory path")
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise GanforgeError(f"{flag} {path} cannot be created: {probe} is not a directory; pass another path")
    try:
        fd, name = tempfile.mkstemp(prefix=".ganforge-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise GanforgeError(
            f"{flag} {path} cannot be written ({exc.strerror} in {probe}); pass a directory you can write to"
        ) from None
    return p


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """``write_bytes_atomic`` of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def save_npy_atomic(path: str | Path, array) -> None:
    """``np.save`` through a temp name in the same folder, then rename: readers never see half a file."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.tmp.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
