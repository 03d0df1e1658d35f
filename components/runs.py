"""Open and close the pipeline's parent MLflow run (the close is the pipeline's exit handler)."""

from kfp import dsl

from components._base import component


@component
def start_run(experiment: str, pipeline_run_id: str, dataset: str, preset: str, model_name: str,
              max_fid: float) -> str:
    """Open the parent MLflow run of this pipeline run and return its id.

    Args:
        experiment: MLflow experiment of all the pipeline's runs.
        pipeline_run_id: the KFP run id (tag ``ganforge.pipeline_run_id``).
        dataset: dataset URI (a param of the parent run).
        preset: training preset (a param of the parent run).
        model_name: registered model name (a param of the parent run).
        max_fid: the gate's FID limit (a param of the parent run).
    """
    from ganforge.pipeline.runs import start_parent

    params = {"dataset": dataset, "preset": preset, "model_name": model_name, "max_fid": max_fid}
    return start_parent(experiment, pipeline_run_id, params)


@component
def finish_run(experiment: str, pipeline_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Exit handler: mark the parent run FINISHED, or FAILED when any step failed; returns why (one line).

    Args:
        experiment: MLflow experiment of the parent run.
        pipeline_run_id: the KFP run id the parent run is tagged with.
        status: KFP's final status of the steps inside the exit handler.
    """
    from ganforge.pipeline.runs import finish_parent

    return finish_parent(experiment, pipeline_run_id, status.state, status.error_message or "")
