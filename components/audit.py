"""Memorisation audit: nearest training images of generated ones, against a held-out baseline."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components._base import component


@component
def audit(dataset: Input[Dataset], generator: Input[Model], metrics: Output[Metrics], report: Output[HTML],
          n: int, seed: int, experiment: str, parent_run_id: str,
          pipeline_run_id: str) -> NamedTuple("AuditOutputs", verdict=str, reasons=list):
    """Audit ``n`` generated images; the HTML report shows the numbers and the closest pairs.

    Args:
        dataset: the ingested dataset (train and a held-out split).
        generator: the trained checkpoint.
        metrics: the audit statistics, keyed ``audit/<name>``.
        report: HTML page with verdict, reasons, statistics and the nearest-neighbour sheet.
        n: generated images audited.
        seed: seed of the latents.
        experiment: MLflow experiment.
        parent_run_id: the pipeline's parent MLflow run.
        pipeline_run_id: the KFP run id.
    """
    import tempfile
    from collections import namedtuple

    from ganforge.pipeline.steps import audit_metrics, audit_step, user_errors

    with user_errors():  # a user error: one line, exit 2, never retried
        result = audit_step(dataset.metadata["uri"], generator.path, tempfile.mkdtemp(), report.path, n=n,
                            seed=seed, experiment=experiment, parent_run_id=parent_run_id,
                            pipeline_run_id=pipeline_run_id)
    for k, v in audit_metrics(result).items():
        metrics.log_metric(k, v)
    return namedtuple("AuditOutputs", ["verdict", "reasons"])(result.verdict, list(result.reasons))
