"""The registration gate: FID at most the limit and a passed audit."""

from kfp.dsl import Markdown, Output

from components._base import component


@component
def gate(fid: float, max_fid: float, audit_verdict: str, audit_reasons: list, parent_run_id: str,
         decision: Output[Markdown]) -> bool:
    """Decide whether to register; returns True to register. ``decision`` (and the parent run) say why not.

    Args:
        fid: the evaluated FID.
        max_fid: the largest FID that may be registered.
        audit_verdict: pass or fail.
        audit_reasons: the audit's reasons for failing.
        parent_run_id: the pipeline's parent MLflow run.
        decision: the decision and its reasons as Markdown.
    """
    from ganforge.pipeline.steps import gate_step, user_errors

    with user_errors():  # a user error: one line, exit 2, never retried
        outcome = gate_step(fid, max_fid, audit_verdict, audit_reasons, parent_run_id)
    with open(decision.path, "w") as f:
        f.write(f"**{'register' if outcome.passed else 'do not register'}**: {outcome.reasons}\n")
    return outcome.passed
