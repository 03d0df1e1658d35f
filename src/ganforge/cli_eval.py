"""Judging commands: ``ganforge evaluate`` (FID/KID/PRDC) and ``ganforge audit`` (memorisation)."""

from __future__ import annotations

from typing import Optional

import typer

from ganforge.evaluation import PROVENANCE, AuditConfig, EvalConfig


def _h(model, name: str) -> str:
    return model.model_fields[name].description or ""


def evaluate_command(
    dataset: str = typer.Option(..., "--dataset", help=_h(EvalConfig, "dataset")),
    model: Optional[str] = typer.Option(None, "--model", help=_h(EvalConfig, "model")),
    images: Optional[str] = typer.Option(None, "--images", help=_h(EvalConfig, "images")),
    weights: Optional[str] = typer.Option(None, "--weights", help=_h(EvalConfig, "weights")),
    metrics: str = typer.Option("fid,kid,prdc", "--metrics", help="Comma-separated: fid, kid, prdc."),
    n: int = typer.Option(10000, "--n", help=_h(EvalConfig, "n")),
    n_real: Optional[int] = typer.Option(None, "--n-real", help=_h(EvalConfig, "n_real")),
    split: str = typer.Option("train", "--split", help=_h(EvalConfig, "split")),
    backbone: str = typer.Option("inception-tf", "--backbone", help=_h(EvalConfig, "backbone")),
    backbone_weights: Optional[str] = typer.Option(None, "--backbone-weights", help=_h(EvalConfig, "backbone_weights")),
    backbone_sha256: Optional[str] = typer.Option(None, "--backbone-sha256", help=_h(EvalConfig, "backbone_sha256")),
    batch_size: int = typer.Option(64, "--batch-size", help=_h(EvalConfig, "batch_size")),
    seed: int = typer.Option(0, "--seed", help=_h(EvalConfig, "seed")),
    device: str = typer.Option("auto", "--device", help=_h(EvalConfig, "device")),
    output: Optional[str] = typer.Option(None, "--output", help=_h(EvalConfig, "output")),
    experiment: str = typer.Option("ganforge", "--experiment", help=_h(EvalConfig, "experiment")),
    track: bool = typer.Option(True, "--track/--no-track", help=_h(EvalConfig, "track")),
) -> None:
    """Measure generated images against a dataset split: FID, KID, precision/recall/density/coverage."""
    import json

    from ganforge.cli import sigterm_exits
    from ganforge.evaluation import evaluate

    cfg = EvalConfig(dataset=dataset, model=model, images=images, weights=weights, n=n, n_real=n_real, split=split,
                     metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()), backbone=backbone,
                     backbone_weights=backbone_weights, backbone_sha256=backbone_sha256, batch_size=batch_size, seed=seed, device=device,
                     output=output, experiment=experiment, track=track)
    with sigterm_exits():
        record = evaluate(cfg)
    summary = {"metrics": record["metrics"], "n": record["n"], "n_real": record["n_real"], "split": record["split"],
               "backbone": record["backbone"]["backbone"], "backbone_sha256": record["backbone"]["backbone_sha256"],
               **{k: record["judged"][k] for k in PROVENANCE if k in record["judged"]},
               "mlflow_run_id": record.get("mlflow_run_id")}
    typer.echo(json.dumps(summary, indent=2))


def audit_command(
    dataset: str = typer.Option(..., "--dataset", help=_h(AuditConfig, "dataset")),
    model: Optional[str] = typer.Option(None, "--model", help=_h(AuditConfig, "model")),
    images: Optional[str] = typer.Option(None, "--images", help=_h(AuditConfig, "images")),
    weights: Optional[str] = typer.Option(None, "--weights", help=_h(AuditConfig, "weights")),
    n: int = typer.Option(1000, "--n", help=_h(AuditConfig, "n")),
    space: str = typer.Option("pixels", "--space", help=_h(AuditConfig, "space")),
    metric: str = typer.Option("l2", "--metric", help=_h(AuditConfig, "metric")),
    heldout_split: Optional[str] = typer.Option(None, "--heldout-split", help=_h(AuditConfig, "heldout_split")),
    backbone_weights: Optional[str] = typer.Option(None, "--backbone-weights", help=_h(AuditConfig, "backbone_weights")),
    backbone_sha256: Optional[str] = typer.Option(None, "--backbone-sha256", help=_h(AuditConfig, "backbone_sha256")),
    n_pairs: int = typer.Option(16, "--n-pairs", help=_h(AuditConfig, "n_pairs")),
    alpha: Optional[float] = typer.Option(None, "--alpha", help=_h(AuditConfig, "alpha")),
    test_level: float = typer.Option(0.01, "--test-level", help=_h(AuditConfig, "test_level")),
    invariance: str = typer.Option("shift", "--invariance", help=_h(AuditConfig, "invariance")),
    max_shift: int = typer.Option(2, "--max-shift", help=_h(AuditConfig, "max_shift")),
    blur: float = typer.Option(1.0, "--blur", help=_h(AuditConfig, "blur")),
    batch_size: int = typer.Option(64, "--batch-size", help=_h(AuditConfig, "batch_size")),
    seed: int = typer.Option(0, "--seed", help=_h(AuditConfig, "seed")),
    device: str = typer.Option("auto", "--device", help=_h(AuditConfig, "device")),
    output: Optional[str] = typer.Option(None, "--output", help=_h(AuditConfig, "output")),
    experiment: str = typer.Option("ganforge", "--experiment", help=_h(AuditConfig, "experiment")),
    track: bool = typer.Option(True, "--track/--no-track", help=_h(AuditConfig, "track")),
) -> None:
    """Nearest-neighbour memorisation audit: are generated images copies of training images?"""
    from ganforge.cli import sigterm_exits
    from ganforge.evaluation import audit

    cfg = AuditConfig(dataset=dataset, model=model, images=images, weights=weights, n=n, space=space, metric=metric,
                      heldout_split=heldout_split, backbone_weights=backbone_weights, backbone_sha256=backbone_sha256, n_pairs=n_pairs,
                      alpha=alpha, test_level=test_level, invariance=invariance, max_shift=max_shift, blur=blur,
                      batch_size=batch_size, seed=seed, device=device, output=output, experiment=experiment,
                      track=track)
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
    from ganforge.cli import user_errors

    app.command("evaluate")(user_errors(evaluate_command))
    app.command("audit")(user_errors(audit_command))
