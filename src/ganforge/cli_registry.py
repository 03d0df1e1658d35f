"""Registry commands: ``ganforge register``, ``promote``, ``rollback``, ``runs compare``, and
``generate --model models:/...``.

``generate`` itself lives in ``cli_train``; this module re-registers it with one more flag,
``--model`` (a ``models:/`` or ``runs:/`` URI resolved to a cached checkpoint), and delegates
everything else to the original command, whose flags it copies.
"""

from __future__ import annotations

import inspect
import json
from typing import Optional

import typer

from ganforge.registry.store import DEFAULT_NAME

runs_app = typer.Typer(help="Look at training runs.", no_args_is_help=True)


def register_command(
    run_id: str = typer.Option(..., "--run-id", help="The MLflow run id `ganforge train` printed."),
    name: str = typer.Option(DEFAULT_NAME, "--name", help="Registered model name."),
    force: bool = typer.Option(False, "--force", help="Register anyway: a failed run, weights not both evaluated "
                               "and audited, or a failed audit (needs --reason)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why --force (recorded as the tag forced_reason)."),
    pipeline_run_id: Optional[str] = typer.Option(None, "--pipeline-run-id", help="KFP run id, kept as a tag."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Generator weights the version carries: ema "
                                          "or raw. Default: ema when the checkpoint has them, else raw."),
) -> None:
    """Register a training run's evaluated and audited generator as a model version with the alias `candidate`."""
    from ganforge.cli import sigterm_exits
    from ganforge.registry import register

    with sigterm_exits():
        out = register(run_id, name=name, force=force, pipeline_run_id=pipeline_run_id, weights=weights,
                       reason=reason)
    verb = "registered" if out["created"] else "already registered as"
    typer.echo(f"{verb} models:/{out['name']}/{out['version']} ({out['tags'].get('weights', 'unknown')} weights; "
               f"aliases: {', '.join(out['aliases']) or 'none'})")


def promote_command(
    name: str = typer.Argument(..., help="Registered model name."),
    version: int = typer.Argument(..., help="Version to promote."),
    alias: str = typer.Option("champion", "--alias", help="Alias to move."),
    max_fid: Optional[float] = typer.Option(None, "--max-fid", help="FID ceiling, a finite number above 0 "
                                            "(default: none)."),
    force: bool = typer.Option(False, "--force", help="Promote even if worse than the current holder."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (required with --force; recorded)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Also set the deprecated stage: Staging or "
                                        "Production."),
) -> None:
    """Move an alias (default `champion`) to a version that passes the gate."""
    from ganforge.cli import sigterm_exits
    from ganforge.registry import promote

    with sigterm_exits():
        rec = promote(name, version, alias=alias, max_fid=max_fid, force=force, reason=reason, stage=stage)
    if stage is not None:
        typer.echo(f"warning: stage set to {stage}, but MLflow deprecates stages: read the alias {alias!r}",
                   err=True)
    was = f" (was version {rec['previous']})" if rec["previous"] is not None else ""
    typer.echo(f"{name}@{alias} -> version {rec['version']}{was}" + "".join(f"; {n}" for n in rec["gate"]))


def rollback_command(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("champion", "--alias", help="Alias to move back."),
) -> None:
    """Put the previous holder of an alias (default `champion`) back."""
    from ganforge.cli import sigterm_exits
    from ganforge.registry import rollback

    with sigterm_exits():
        rec = rollback(name, alias=alias)
    typer.echo(f"{name}@{alias} -> version {rec['version']} (was version {rec['previous']})")


def compare_command(
    experiment: str = typer.Option(..., "--experiment", help="MLflow experiment name."),
    sort_by: str = typer.Option("fid", "--sort-by", help="Column: fid, kid, precision, recall, a train/ "
                                "metric or a param."),
    descending: bool = typer.Option(False, "--descending", help="Largest first."),
    max_runs: int = typer.Option(100, "--max-runs", help="Newest training runs considered."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Table of an experiment's training runs: differing params, final metrics, FID, audit verdict."""
    from ganforge.registry import compare_runs, format_table

    result = compare_runs(experiment, sort_by=sort_by, descending=descending, max_runs=max_runs)
    typer.echo(json.dumps(result, indent=2) if as_json else format_table(result))


def _generate_with_model():
    """``cli_train.generate_command`` plus ``--model URI``; ``--checkpoint`` becomes optional."""
    from ganforge import cli_train
    from ganforge.errors import GanforgeError

    original = cli_train.generate_command

    def generate_command(**flags) -> None:
        model, checkpoint = flags.pop("model"), flags.get("checkpoint")
        if (model is None) == (checkpoint is None):
            raise GanforgeError("give exactly one of --checkpoint DIR or --model models:/NAME@ALIAS")
        if model is not None:
            from ganforge.registry import resolve_model_uri
            from ganforge.training.visuals import check_generate_flags

            check_generate_flags(flags["n"], flags["seed"], flags["out"])  # before a download, not after

            flags["checkpoint"] = str(resolve_model_uri(model))
        original(**flags)

    params = []
    for p in inspect.signature(original).parameters.values():
        if p.name == "checkpoint":
            p = p.replace(annotation=Optional[str], default=typer.Option(
                None, "--checkpoint", help="A ckpt-<step> directory or a run's --output (or use --model)."))
        params.append(p)
    params.insert(1, inspect.Parameter(
        "model", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
        default=typer.Option(None, "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID."),
    ))  # fmt: skip
    generate_command.__signature__ = inspect.Signature(
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])
    generate_command.__doc__ = original.__doc__.rstrip(".") + ", or from the model registry (--model)."
    return generate_command


def register(app: typer.Typer) -> None:
    """Add the registry commands to the ganforge app (and ``--model`` to ``generate``)."""
    from ganforge.cli import user_errors

    app.command("register")(user_errors(register_command))
    app.command("promote")(user_errors(promote_command))
    app.command("rollback")(user_errors(rollback_command))
    runs_app.command("compare")(user_errors(compare_command))
    app.add_typer(runs_app, name="runs")
    # registered after cli_train's: typer keeps the last command of a name
    app.command("generate")(user_errors(_generate_with_model()))
