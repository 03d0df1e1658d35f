"""Galaxy10 DECals: 17,736 colour galaxy images (256x256, g/r/z bands) in 10 morphology classes.

Read from the HDF5 file astroNN distributes (``Galaxy10_DECals.h5``, about 2.7 GB): ``images``
(N, 256, 256, 3) uint8 and ``ans`` (N,) uint8. Only the labels are read on open; images are read in
chunks on demand, so the file is never loaded whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ganforge.data.sources.base import Source
from ganforge.errors import GanforgeError

GALAXY10_FILE_NAME = "Galaxy10_DECals.h5"
# Published by astroNN: ``file_hash`` in ``load_data`` of henrysky/astroNN
# src/astroNN/datasets/galaxy10.py, and "SHA256:" in its docs/source/galaxy10.rst (Zenodo record 10845026).
GALAXY10_SHA256 = "19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571"
# Where ``astroNN.datasets.load_galaxy10()`` saves the file (astroNN_CACHE_DIR/datasets/).
DEFAULT_PATH = Path("~/.astroNN/datasets") / GALAXY10_FILE_NAME
ASTRONN_COMMAND = 'python -c "from astroNN.datasets import load_galaxy10; load_galaxy10()"'

# The class names of astroNN's documentation (docs/source/galaxy10.rst); astroNN's code dict
# ``Galaxy10Class`` abbreviates them and still carries the SDSS-era "Smooth, Cigar shaped" at id 3.
GALAXY10_CLASSES = [
    "Disturbed Galaxies",
    "Merging Galaxies",
    "Round Smooth Galaxies",
    "In-between Round Smooth Galaxies",
    "Cigar Shaped Smooth Galaxies",
    "Barred Spiral Galaxies",
    "Unbarred Tight Spiral Galaxies",
    "Unbarred Loose Spiral Galaxies",
    "Edge-on Galaxies without Bulge",
    "Edge-on Galaxies with Bulge",
]

HASH_BLOCK_BYTES = 8 * 1024 * 1024
EXPECTED_LAYOUT = (
    "expected astroNN's layout: dataset 'images' (N, H, W, 3) uint8 and dataset 'ans' (N,) integer "
    "labels 0..9"
)


def open_galaxy10(input_path: str | None, download: bool) -> Source:
    """Open the Galaxy10 DECals HDF5 file.

    Args:
        input_path: the ``.h5`` file, or a folder holding ``Galaxy10_DECals.h5``; None means astroNN's
            download location ``~/.astroNN/datasets/Galaxy10_DECals.h5``.
        download: when the file is missing, fetch it with astroNN (if installed; needs network).

    Returns:
        A ``Source`` without splits; ``keys`` are row indices in the file and ``details`` carry the file
        name, size and (for the known file) its verified SHA-256.

    Raises:
        GanforgeError: the file is missing, is not the published file (SHA-256 mismatch) or does not
            have astroNN's layout.
    """
    path = _resolve_path(input_path)
    if not path.is_file():
        if not download:
            raise GanforgeError(
                f"Galaxy10 file not found at {path}; download it with {ASTRONN_COMMAND} (astroNN saves it to "
                f"{DEFAULT_PATH}) and pass its path as the input, or re-run with --download"
            )
        _download_with_astronn(path)
    details = {"file_name": path.name, "size_bytes": path.stat().st_size}
    # Only the published file has a known hash; a user's own file in this layout is taken as is.
    if path.name == GALAXY10_FILE_NAME:
        details["sha256"] = _verify_sha256(path)
    labels = _read_labels(path)

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return _read_images(path, indices)

    return Source(
        name="galaxy10",
        class_names=list(GALAXY10_CLASSES),
        labels=labels,
        splits=None,
        read=read,
        keys=np.arange(len(labels), dtype=np.int64),
        details=details,
    )


def file_sha256(path: Path) -> str:
    """SHA-256 of a file as lowercase hex, streamed in 8 MB blocks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _resolve_path(input_path: str | None) -> Path:
    path = Path(input_path).expanduser() if input_path else DEFAULT_PATH.expanduser()
    return path / GALAXY10_FILE_NAME if path.is_dir() else path


def _verify_sha256(path: Path) -> str:
    actual = file_sha256(path)
    if actual != GALAXY10_SHA256:
        raise GanforgeError(
            f"{path} has SHA-256 {actual}, not the published {GALAXY10_SHA256}: the file is incomplete or "
            f"corrupt; delete it and download it again with {ASTRONN_COMMAND}"
        )
    return actual


def _download_with_astronn(path: Path) -> None:
    """Let astroNN fetch the file into its cache, which must be where we were asked to read it."""
    try:
        from astroNN.config import astroNN_CACHE_DIR
        from astroNN.datasets import load_galaxy10
    except ImportError:
        raise GanforgeError(
            f"Galaxy10 file not found at {path} and --download needs astroNN, which is not installed; "
            f"pip install astroNN, or download {GALAXY10_FILE_NAME} from "
            "https://zenodo.org/records/10845026 and pass its path as the input"
        ) from None
    target = Path(astroNN_CACHE_DIR).expanduser() / "datasets" / GALAXY10_FILE_NAME
    if target.resolve() != path.resolve():
        raise GanforgeError(
            f"--download saves Galaxy10 where astroNN keeps it ({target}), not at {path}; leave the input "
            "path unset to use astroNN's location"
        )
    # astroNN verifies the hash and re-downloads a corrupt file; its return value (every image in
    # memory, ~3.5 GB) is dropped at once.
    load_galaxy10()
    if not path.is_file():
        raise GanforgeError(f"astroNN did not leave {path}; run {ASTRONN_COMMAND} and check its output")


def _read_labels(path: Path) -> np.ndarray:
    """Check the layout and return ``ans`` as int64; images are only inspected, never read here."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise GanforgeError(f"{path} is not a readable HDF5 file ({err}); {EXPECTED_LAYOUT}") from err
    with f:
        images, ans = f.get("images"), f.get("ans")
        for key, obj in (("images", images), ("ans", ans)):
            if not isinstance(obj, h5py.Dataset):
                raise GanforgeError(f"{path.name} has no dataset {key!r}; {EXPECTED_LAYOUT}")
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or 0 in images.shape[:3]:
            raise GanforgeError(f"{path.name}: 'images' is {images.shape} {images.dtype}; {EXPECTED_LAYOUT}, N, H, W >= 1")
        if ans.ndim != 1 or ans.dtype.kind not in "iu":
            raise GanforgeError(f"{path.name}: 'ans' is {ans.shape} {ans.dtype}; {EXPECTED_LAYOUT}")
        if ans.shape[0] != images.shape[0]:
            raise GanforgeError(
                f"{path.name}: 'images' has {images.shape[0]} rows but 'ans' {ans.shape[0]}; {EXPECTED_LAYOUT}"
            )
        try:
            labels = ans[()].astype(np.int64)
        except (OSError, ValueError) as err:
            raise GanforgeError(f"{path.name}: 'ans' cannot be read ({err}); the file is damaged, get it again") from err
    if labels.size and (labels.min() < 0 or labels.max() >= len(GALAXY10_CLASSES)):
        raise GanforgeError(
            f"{path.name}: 'ans' holds labels {labels.min()}..{labels.max()}; {EXPECTED_LAYOUT}"
        )
    return labels


def _read_images(path: Path, indices: np.ndarray) -> list[np.ndarray]:
    """Read rows ``indices`` as (H, W, 3) uint8 arrays, one slice per run of consecutive rows."""
    import h5py

    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return []
    # h5py wants increasing, unique rows; slices read a run of neighbours in one call.
    rows, inverse = np.unique(indices, return_inverse=True)
    with h5py.File(path, "r") as f:
        images = f["images"]
        # h5py clips out-of-range slices silently; a bad index is a caller bug, so fail loudly.
        if rows[0] < 0 or rows[-1] >= images.shape[0]:
            raise IndexError(f"Galaxy10 rows {rows[0]}..{rows[-1]} outside 0..{images.shape[0] - 1}")
        try:
            blocks = [images[start:stop] for start, stop in _runs(rows)]
        except (OSError, ValueError) as err:  # a damaged chunk, or a filter this h5py lacks
            reason = " ".join(str(err).split())[:160]
            raise GanforgeError(
                f"{path.name}: 'images' rows {rows[0]}..{rows[-1]} cannot be read ({reason}); the file is damaged, "
                "get it again"
            ) from err
    stacked = np.concatenate(blocks)
    return list(stacked[inverse])


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of consecutive values in sorted unique ``rows``."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.r_[0, breaks]]
    stops = rows[np.r_[breaks - 1, len(rows) - 1]] + 1
    return list(zip(starts.tolist(), stops.tolist()))
