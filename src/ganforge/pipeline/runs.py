"""The parent MLflow run of a pipeline run, and the nesting of each step's run under it.

Each step wrapper in ``ganforge.pipeline.steps`` turns its task inputs (the parent run id and the KFP
run id) into a ``ganforge.tracking.RunContext`` and hands it to the library call it makes; the run that
call opens carries the tags ``mlflow.parentRunId`` and ``ganforge.pipeline_run_id``. ``finish_parent``
is the exit handler's logic: the parent ends FAILED when any step failed, FINISHED otherwise. Every
MLflow call goes through ``ganforge.tracking``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ganforge.tracking import PIPELINE_RUN_TAG

KFP_SUCCESS = ("SUCCEEDED", "SUCCESS", "COMPLETE")  # KFP's final task states that mean "all steps ran"


def start_parent(experiment: str, pipeline_run_id: str, params: dict) -> str:
    """Open the parent run (RUNNING until ``finish_parent``), tagged with the KFP run id; returns its id."""
    import ganforge
    from ganforge.tracking import client, create_run, git_commit

    tags = {PIPELINE_RUN_TAG: pipeline_run_id, "ganforge.step": "pipeline",
            "ganforge.pipeline_version": ganforge.__version__, "git_commit": git_commit()}
    return create_run(client(), experiment, f"pipeline-{pipeline_run_id[:12]}", params, tags)


def log_outcome(run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
    """Copy the headline numbers and the gate's decision onto the parent run."""
    from ganforge.tracking import client

    c = client()
    for k, v in metrics.items():
        c.log_metric(run_id, k, float(v))
    for name, text in tags.items():
        c.set_tag(run_id, name, str(text)[:5000])


SAMPLES_KEY = "samples"  # the parent run's image key: the chart view shows it beside the runs table's columns


def log_samples(run_id: str, grid_png: Path, step: int) -> None:
    """Put the final sample grid on the parent run (MLflow's image card, one per step logged)."""
    import numpy as np
    from PIL import Image

    from ganforge.tracking import log_image_to

    with Image.open(grid_png) as im:
        image = np.asarray(im.convert("RGB"))
    refused = log_image_to(run_id, image, SAMPLES_KEY, step)
    if refused:  # a picture for humans: its loss must not fail a finished training
        print(f"warning: the sample grid did not reach the parent run {run_id}: {refused}", file=sys.stderr)


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
    from ganforge.tracking import client

    run_id = find_parent(experiment, pipeline_run_id)
    if run_id is None:
        return f"FAILED: no parent run was opened ({error or state})"
    c = client()
    status = "FINISHED" if state.upper() in KFP_SUCCESS else "FAILED"
    c.set_tag(run_id, "ganforge.pipeline_state", state)
    if error:
        c.set_tag(run_id, "ganforge.pipeline_error", error[:5000])
    c.set_terminated(run_id, status)
    tags = c.get_run(run_id).data.tags
    registered = tags.get("ganforge.registered_model")
    why = tags.get("ganforge.gate", "the gate was not reached") if status == "FINISHED" else (error or state)
    return f"{status}: {why}" + (f"; registered {registered}" if registered else "")


def find_runs(experiment: str, pipeline_run_id: str) -> list:
    """All runs (parent and steps) of one pipeline run, oldest first."""
    from ganforge.tracking import search_runs

    runs = search_runs(experiment, f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'")
    return sorted(runs, key=lambda r: r.info.start_time)
