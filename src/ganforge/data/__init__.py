"""Datasets: ingest sources into versioned Parquet, and load them back.

``load(uri, split)`` returns an :class:`ImageData` (uint8 (N, C, H, W) tensor + labels, and the
fingerprint it verified against the shards); ``verified_fingerprint(uri)`` checks identity alone;
``ParquetImageDataset`` streams splits that do not fit in memory; ``ganforge.data.ingest.ingest``
writes datasets (kept in its own module: a package attribute named ``ingest`` would be replaced by
the submodule of that name as soon as it is imported).
"""

__all__ = ["ImageData", "ParquetImageDataset", "load", "read_manifest", "verified_fingerprint"]


def __getattr__(name: str):
    # lazily: the loader imports torch, and light modules (the pipeline's parameters) read
    # ganforge.data.sources' names without it
    if name in __all__:
        from ganforge.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'ganforge.data' has no attribute {name!r}")
