"""Reading a ganforge dataset back: one uint8 tensor in memory, or a lazy torch Dataset.

``load`` decodes the PNGs once (all cores), then keeps the raw pixels in a local cache keyed by the
dataset's fingerprint, so the next load is a file read. The fingerprint is the content's identity,
so the cache can never serve stale pixels for a re-ingested dataset.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ganforge.data.images import decode_png
from ganforge.data.parquet import read_manifest as _read_manifest
from ganforge.data.parquet import read_rows, read_shard
from ganforge.errors import GanforgeError
from ganforge.outputs import save_npy_atomic
from ganforge.storage import parse


@dataclass
class ImageData:
    """A split of a dataset in memory.

    Attributes:
        images: (N, C, H, W) uint8 tensor (on ``device`` when one was asked for).
        labels: (N,) int64 tensor of label ids, indexing ``class_names``.
        class_names: the dataset's class names.
        fingerprint: the dataset's content fingerprint (its identity).
        uri: where the dataset lives.
        split: which split this is.
        manifest: the whole manifest.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    fingerprint: str
    uri: str
    split: str
    manifest: dict = field(repr=False)

    def __len__(self) -> int:
        return self.images.shape[0]


def default_cache_dir() -> str:
    return os.environ.get("GANFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ganforge")


def read_manifest(uri: str) -> dict:
    """The manifest of the dataset at ``uri``; GanforgeError when there is none."""
    return _read_manifest(parse(uri))


def load(
    uri: str,
    split: str = "train",
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> ImageData:
    """Load one split of the dataset at ``uri`` as a uint8 tensor.

    Args:
        uri: local path or s3:// URI of a dataset written by ``ganforge ingest``.
        split: ``train``, ``test`` or ``val`` (whatever the manifest lists).
        device: where to put the tensors (e.g. ``cuda``); None leaves them on the CPU.
        cache_dir: where decoded pixels are cached; None: ``$GANFORGE_CACHE_DIR`` or ~/.cache/ganforge.
        use_cache: False decodes from Parquet every time and writes no cache.
    """
    loc = parse(uri)
    manifest = _read_manifest(loc)
    fp = manifest["fingerprint"]
    cached = _cache_paths(cache_dir or default_cache_dir(), fp, split) if use_cache else None
    if cached and all(os.path.exists(p) for p in cached):
        # Copy-on-write map: no read or copy up front, pages come from the OS cache on first touch,
        # and the tensor stays writable without ever changing the cache file.
        images_np, labels_np = np.load(cached[0], mmap_mode="c"), np.load(cached[1])
    else:
        images_np, labels_np = _decode_split(loc, manifest, split)
        if cached:
            save_npy_atomic(cached[1], labels_np)
            save_npy_atomic(cached[0], images_np)  # images last: its presence marks a complete entry
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    if device is not None:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    return ImageData(images, labels, list(manifest["class_names"]), fp, loc.uri, split, manifest)


def _decode_split(loc, manifest: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode every PNG of ``split`` into one (N, C, H, W) uint8 array, in id order."""
    table = read_rows(loc, manifest, ["id", "label", "image"], split=split)
    ids = table.column("id").to_numpy()
    order = np.argsort(ids, kind="stable")
    pngs = table.column("image").to_pylist()
    labels = table.column("label").to_numpy().astype(np.int64)[order]
    meta = manifest["image"]
    c, h, w = meta["channels"], meta["height"], meta["width"]
    out = np.empty((len(pngs), c, h, w), dtype=np.uint8)

    def work(span: range) -> None:
        for k in span:
            out[k] = _decode_checked(loc.uri, pngs[order[k]], int(ids[order[k]]), c, h, w)

    n_workers = os.cpu_count() or 1
    step = max(1, -(-len(pngs) // (n_workers * 4)))
    with ThreadPoolExecutor(n_workers) as pool:  # zlib inflate releases the GIL
        list(pool.map(work, [range(s, min(s + step, len(pngs))) for s in range(0, len(pngs), step)]))
    return out, labels


def _decode_checked(uri: str, png, row_id: int, c: int, h: int, w: int) -> np.ndarray:
    """One stored PNG as (C, H, W) uint8, or a GanforgeError naming the row when it is not one."""
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
    return pixels.transpose(2, 0, 1)


def _cache_paths(cache_dir: str, fp: str, split: str) -> tuple[str, str]:
    d = os.path.join(cache_dir, "datasets", fp)
    return os.path.join(d, f"{split}-images.npy"), os.path.join(d, f"{split}-labels.npy")


class ParquetImageDataset(torch.utils.data.Dataset):
    """A lazy dataset for splits that do not fit in memory: decodes one row group at a time.

    Items are ``(image uint8 (C, H, W) tensor, label int)``. Each DataLoader worker opens its own
    file handles; the most recent row group is kept decoded-in-Parquet (not as pixels).
    """

    def __init__(self, uri: str, split: str = "train"):
        import pyarrow.parquet as pq

        self.loc = parse(uri)
        self.manifest = _read_manifest(self.loc)
        self.split = split
        self.channels = self.manifest["image"]["channels"]
        self._index: list[tuple[str, int, np.ndarray]] = []  # (shard path, row group, row offsets)
        if split not in self.manifest["counts"]["splits"]:
            have = ", ".join(sorted(self.manifest["counts"]["splits"]))
            raise GanforgeError(f"dataset {self.loc.uri} has no split {split!r} (it has: {have}); pick one of those")
        for shard in self.manifest["shards"]:
            read_shard(self.loc, shard, ["split"])  # checks the shard is there, whole and ingest's
            with self.loc.fs.open_input_file(self.loc.join(shard["path"])) as f:
                pf = pq.ParquetFile(f, page_checksum_verification=True)
                for rg in range(pf.num_row_groups):
                    splits = pf.read_row_group(rg, columns=["split"]).column("split").to_numpy(zero_copy_only=False)
                    rows = np.flatnonzero(splits == split)
                    if len(rows):
                        self._index.append((shard["path"], rg, rows))
        self._starts = np.cumsum([0] + [len(r) for _, _, r in self._index])
        self._cached: tuple[tuple[str, int], object] | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int):
        import pyarrow.parquet as pq

        if not 0 <= i < len(self):
            raise IndexError(i)
        g = int(np.searchsorted(self._starts, i, side="right") - 1)
        path, rg, rows = self._index[g]
        if self._cached is None or self._cached[0] != (path, rg):
            try:
                with self.loc.fs.open_input_file(self.loc.join(path)) as f:
                    pf = pq.ParquetFile(f, page_checksum_verification=True)
                    table = pf.read_row_group(rg, columns=["image", "label"])
            except (OSError, ValueError) as err:  # pyarrow's errors for damaged or vanished files
                reason = " ".join(str(err).split())[:160]
                raise GanforgeError(
                    f"dataset {self.loc.uri}: shard {path} cannot be read ({reason}); re-ingest with --overwrite"
                ) from None
            self._cached = ((path, rg), table)
        table = self._cached[1]
        row = int(rows[i - self._starts[g]])
        png = table.column("image")[row].as_py()
        meta = self.manifest["image"]
        pixels = _decode_checked(self.loc.uri, png, i, self.channels, meta["height"], meta["width"])
        image = torch.from_numpy(pixels.copy())
        return image, int(table.column("label")[row].as_py())
