"""Ingest a source into a versioned Parquet dataset."""

from kfp.dsl import Dataset, Output

from components._base import component


@component
def ingest(source: str, dataset: str, image_size: int, dataset_out: Output[Dataset],
           input: str = "", limit: int = 0, audit_fraction: float = 0.0):
    """Write ``source`` as a Parquet dataset at ``dataset``; reuses it when the inputs are unchanged.

    Args:
        source: an ingest source's name (`ganforge ingest --help` lists them).
        dataset: dataset URI to write (local directory or s3://).
        image_size: square side in pixels.
        dataset_out: the dataset; metadata holds its ``uri`` and ``fingerprint``.
        input: the source's file or directory; "": the source's default.
        limit: at most this many images per split; 0: all.
        audit_fraction: share of the training images carved out as split 'audit' (the audit's baseline); 0: none.
    """
    from ganforge.pipeline.steps import ingest_step, user_errors

    with user_errors():  # a user error: one line, exit 2, never retried
        result = ingest_step(source, dataset, input, image_size, limit, audit_fraction)
    dataset_out.metadata.update({"uri": result.uri, "fingerprint": result.fingerprint, "reused": result.reused})
    with open(dataset_out.path, "w") as f:  # the artifact itself points at the dataset
        f.write(result.uri)



