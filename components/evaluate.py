"""FID, KID and precision/recall of the generator against the dataset."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._base import component


@component
def evaluate(dataset: Input[Dataset], generator: Input[Model], metrics: Output[Metrics], n: int, seed: int,
             backbone: str, experiment: str, parent_run_id: str, pipeline_run_id: str,
             backbone_weights: str = "") -> float:
    """Score ``n`` generated images against the train split; returns the FID (for the gate).

    Args:
        dataset: the ingested dataset.
        generator: the trained checkpoint.
        metrics: every computed number, keyed ``eval/<metric>_<n>_train``.
        n: generated images.
        seed: seed of the latents.
        backbone: feature backbone (pixels, inception-tf, ...).
        experiment: MLflow experiment.
        parent_run_id: the pipeline's parent MLflow run.
        pipeline_run_id: the KFP run id.
        backbone_weights: backbone weights file in the image; "": none.
    """
    import tempfile

    from ganforge.pipeline.steps import evaluate_step, user_errors

    with user_errors():  # a user error: one line, exit 2, never retried
        record, fid = evaluate_step(dataset.metadata["uri"], generator.path, tempfile.mkdtemp(), n=n, seed=seed,
                                    backbone=backbone, backbone_weights=backbone_weights, experiment=experiment,
                                    parent_run_id=parent_run_id, pipeline_run_id=pipeline_run_id)
    for k, v in record["metrics"].items():
        metrics.log_metric(f"eval/{k}", float(v))
    return fid
