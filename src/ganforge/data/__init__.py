"""Datasets: ingest sources into versioned Parquet, and load them back.

``load(uri, split)`` returns an :class:`ImageData` (uint8 (N, C, H, W) tensor + labels);
``ParquetImageDataset`` streams splits that do not fit in memory; ``ganforge.data.ingest.ingest``
writes datasets (kept in its own module: a package attribute named ``ingest`` would be replaced by
the submodule of that name as soon as it is imported).
"""

from ganforge.data.loader import ImageData, ParquetImageDataset, load, read_manifest

__all__ = ["ImageData", "ParquetImageDataset", "load", "read_manifest"]
