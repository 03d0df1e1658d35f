"""Train a generator, resuming from the run's newest checkpoint when the task is retried."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._base import component


@component
def train(dataset: Input[Dataset], generator: Output[Model], metrics: Output[Metrics], work_dir: str,
          seed: int, gpus: int, experiment: str, parent_run_id: str, pipeline_run_id: str,
          preset: str = "digits-tiny", model: str = "", epochs: int = 0, steps: int = 0) -> str:
    """Train on the dataset; the final checkpoint becomes the ``generator`` artifact. Returns the MLflow run id.

    Args:
        dataset: the ingested dataset (its URI in metadata).
        generator: the final checkpoint directory.
        metrics: the last logged training numbers.
        work_dir: directory kept across retries; checkpoints go to ``<work_dir>/<pipeline_run_id>/train``.
        seed: training seed.
        gpus: GPUs; more than one trains with torchrun DDP.
        experiment: MLflow experiment.
        parent_run_id: the pipeline's parent MLflow run.
        pipeline_run_id: the KFP run id.
        preset: training preset; "": none.
        model: model family; "": the preset's.
        epochs: epochs; 0: the preset's.
        steps: generator updates; 0: the preset's.

    The training flags (preset, model, epochs, steps, seed: ``ganforge.pipeline.params.train_flags()``, which
    a test holds equal to them) go on to training by name.
    """
    from ganforge.pipeline.steps import train_step, user_errors

    with user_errors():  # a user error: one line, exit 2, and a retried attempt fails on it at once
        result = train_step(dataset.metadata["uri"], work_dir, generator.path, gpus=gpus, experiment=experiment,
                            parent_run_id=parent_run_id, pipeline_run_id=pipeline_run_id, preset=preset,
                            model=model, epochs=epochs, steps=steps, seed=seed)
    generator.metadata.update({"run_id": result.run_id or "", "step": result.step,
                               "dataset_fingerprint": dataset.metadata["fingerprint"]})
    for k, v in result.metrics.items():
        metrics.log_metric(k, float(v))
    return result.run_id or ""
