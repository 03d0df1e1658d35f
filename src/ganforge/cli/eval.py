"""Judging commands: ``ganforge evaluate`` (FID/KID/PRDC) and ``ganforge audit`` (memorisation).

Both take their options from the library's config models, whose shared base holds the dozen options
they have in common (what is judged, against which dataset, on which device, tracked where).
"""

from __future__ import annotations

import json

import typer

from ganforge.audit.run import AuditConfig
from ganforge.cli.common import sigterm_exits, user_errors
from ganforge.cli.options import Options, command
from ganforge.evaluate import EvalConfig
from ganforge.judgement import PROVENANCE

# Renamed in 0.2: --model named a checkpoint here but a model family in `train`; the feature space was
# --space in audit but --backbone in evaluate. Renamed in 0.3: --heldout-split became --baseline (which also
# takes leave-one-out and auto). The old names work for one release, with a warning.
EVALUATE = Options(EvalConfig, "evaluate", aliases={"checkpoint": "--model"})
AUDIT = Options(AuditConfig, "audit", aliases={"checkpoint": "--model", "backbone": "--space",
                                                       "baseline": "--heldout-split"})


def evaluate_command(**flags) -> None:
    """Measure generated images against a dataset split: FID, KID, precision/recall/density/coverage."""
    from ganforge.evaluate import evaluate

    cfg = EVALUATE.build(flags)
    with sigterm_exits():
        record = evaluate(cfg)
    summary = {"metrics": record["metrics"], "n": record["n"], "n_real": record["n_real"], "split": record["split"],
               "backbone": record["backbone"]["backbone"], "backbone_sha256": record["backbone"]["backbone_sha256"],
               **{k: record["judged"][k] for k in PROVENANCE if k in record["judged"]},
               "mlflow_run_id": record.get("mlflow_run_id")}
    typer.echo(json.dumps(summary, indent=2))


def audit_command(**flags) -> None:
    """Nearest-neighbour memorisation audit: are generated images copies of training images?"""
    from ganforge.audit.run import audit

    cfg = AUDIT.build(flags)
    with sigterm_exits():
        report = audit(cfg)
    typer.echo(f"audit {report.verdict}: {report.n_flagged} of {report.n_generated} generated images flagged as "
               f"copies at alpha={report.alpha:g} ({report.expected_flagged:.2g} expected, p = "
               f"{report.flag_test_p_value:.2g}; {report.baseline} baseline of {report.n_baseline}), "
               f"{report.exact_duplicates} exact copies, {report.fraction_below_baseline:.1%} below the baseline's "
               f"{report.thresholds.baseline_quantile:.0%} distance, Z_U {report.z_u:.2f}")
    for f in report.flagged[:10]:
        how = ", mirrored" * f.flipped + (f", shifted {f.shift}" if any(f.shift) else "")
        typer.echo(f"  flagged: generated {f.generated_index} ~ train {f.train_index}{how}, distance "
                   f"{f.distance:.4g}, p = {f.p_value:.2g}")
    for reason in report.reasons:
        typer.echo(f"  - {reason}")
    if report.verdict == "fail":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``audit``."""
    app.command("evaluate")(user_errors(command(evaluate_command, EVALUATE)))
    app.command("audit")(user_errors(command(audit_command, AUDIT)))
