"""Register the trained generator in the MLflow model registry (alias ``candidate``)."""

from typing import NamedTuple

from components._base import component


@component
def register(train_run_id: str, model_name: str, parent_run_id: str,
             pipeline_run_id: str) -> NamedTuple("RegisterOutputs", name=str, version=str):
    """Register the training run's generator as a new version of ``model_name``.

    Args:
        train_run_id: the MLflow run of the training step.
        model_name: registered model name.
        parent_run_id: the pipeline's parent MLflow run.
        pipeline_run_id: the KFP run id (a tag of the version).
    """
    from collections import namedtuple

    from ganforge.pipeline.steps import register_step, user_errors

    with user_errors():  # a user error: one line, exit 2, never retried
        out = register_step(train_run_id, model_name, parent_run_id, pipeline_run_id)
    return namedtuple("RegisterOutputs", ["name", "version"])(out["name"], str(out["version"]))
