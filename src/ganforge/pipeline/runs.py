"""The parent MLflow run of a pipeline run, and the nesting of each step's run under it.

A step finds its parent through two environment variables, set by the step wrappers in
``ganforge.pipeline.steps`` from the task's inputs: ``GANFORGE_PARENT_RUN_ID`` (becomes the tag
``mlflow.parentRunId``) and ``GANFORGE_PIPELINE_RUN_ID`` (the KFP run id, tag
``ganforge.pipeline_run_id``). ``finish_parent`` is the exit handler's logic: the parent ends FAILED
when any step failed, FINISHED otherwise.

MLflow is imported here (besides ``ganforge.tracking``) only for the few client calls on runs that the
tracker interface does not cover (set tags, terminate a run by id).
"""

from __future__ import annotations

from ganforge.tracking import PARENT_ENV, PIPELINE_RUN_ENV  # noqa: F401 - re-exported for the step wrappers
from ganforge.tracking import pipeline_tags as nesting_tags  # noqa: F401

PIPELINE_RUN_TAG = "ganforge.pipeline_run_id"
KFP_SUCCESS = ("SUCCEEDED", "SUCCESS", "COMPLETE")  # KFP's final task states that mean "all steps ran"


def _client():
    from mlflow.tracking import MlflowClient

    from ganforge.tracking import check_reachable, tracking_uri

    check_reachable(tracking_uri())
    return MlflowClient(tracking_uri())


def start_parent(experiment: str, pipeline_run_id: str, params: dict) -> str:
    """Open the parent run (RUNNING until ``finish_parent``), tagged with the KFP run id; returns its id."""
    from mlflow.entities import Param

    import ganforge
    from ganforge.tracking import experiment_id, git_commit

    tags = {PIPELINE_RUN_TAG: pipeline_run_id, "ganforge.step": "pipeline",
            "ganforge.pipeline_version": ganforge.__version__, "git_commit": git_commit()}
    client = _client()
    exp_id = experiment_id(client, experiment)
    run_id = client.create_run(exp_id, tags=tags, run_name=f"pipeline-{pipeline_run_id[:12]}").info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
    return run_id


def log_outcome(run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
    """Copy the headline numbers and the gate's decision onto the parent run."""
    client = _client()
    for k, v in metrics.items():
        client.log_metric(run_id, k, float(v))
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v)[:5000])


def find_parent(experiment: str, pipeline_run_id: str) -> str | None:
    """The parent run of a pipeline run, found by its tags (None when it was never opened)."""
    runs = [r for r in find_runs(experiment, pipeline_run_id) if r.data.tags.get("ganforge.step") == "pipeline"]
    return runs[0].info.run_id if runs else None


def finish_parent(experiment: str, pipeline_run_id: str, state: str, error: str = "") -> str:
    """End the parent run: FINISHED when ``state`` is a KFP success state, else FAILED.

    The exit handler cannot take outputs of the tasks it guards, so it finds the parent by the KFP run id.

    Returns:
        One line, the pipeline's output: the run's status, then the gate's decision or the failure, e.g.
        ``FINISHED: not registered: FID 212.40 is above max_fid 100``.
    """
    run_id = find_parent(experiment, pipeline_run_id)
    if run_id is None:
        return f"FAILED: no parent run was opened ({error or state})"
    client = _client()
    status = "FINISHED" if state.upper() in KFP_SUCCESS else "FAILED"
    client.set_tag(run_id, "ganforge.pipeline_state", state)
    if error:
        client.set_tag(run_id, "ganforge.pipeline_error", error[:5000])
    client.set_terminated(run_id, status)
    tags = client.get_run(run_id).data.tags
    registered = tags.get("ganforge.registered_model")
    why = tags.get("ganforge.gate", "the gate was not reached") if status == "FINISHED" else (error or state)
    return f"{status}: {why}" + (f"; registered {registered}" if registered else "")


def find_runs(experiment: str, pipeline_run_id: str) -> list:
    """All runs (parent and steps) of one pipeline run, oldest first."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'")
    return sorted(runs, key=lambda r: r.info.start_time)
