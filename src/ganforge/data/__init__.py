"""Datasets: ingest sources into versioned Parquet, and load them back.

``load(uri, split)`` returns an :class:`ImageData` (uint8 (N, C, H, W) tensor + labels);
``ParquetImageDataset`` streams splits that do not fit in memory; ``ingest`` writes datasets.
"""

from ganforge.data.loader import ImageData, ParquetImageDataset, load, read_manifest

__all__ = ["ImageData", "ParquetImageDataset", "load", "read_manifest", "ingest"]


def ingest(source: str, output: str, **options):
    """Library twin of ``ganforge ingest``; see ``ganforge.config.IngestConfig`` for the options."""
    from ganforge.data.ingest import ingest as _ingest

    return _ingest(source, output, **options)
