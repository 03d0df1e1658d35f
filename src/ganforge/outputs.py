"""Output paths checked before the work that fills them, and written so no half file is ever seen."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ganforge.errors import GanforgeError


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """Fail now, not after minutes of work, when ``path`` cannot become a writable directory.

    Creates nothing: the nearest existing ancestor must be a writable directory (a failed command
    leaves no empty folder behind).

    Raises:
        GanforgeError: ``path`` is a file, or lies under a file or an unwritable directory.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise GanforgeError(f"{flag} {path} is a file, not a directory; pass a directory path")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise GanforgeError(f"{flag} {path} cannot be created: {probe} is a file; pass another directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GanforgeError(f"{flag} {path} is not writable ({probe} denies writing); pass a directory you can "
                            "write to")
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
