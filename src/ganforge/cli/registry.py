"""Registry commands: ``ganforge register``, ``promote``, ``rollback`` and ``runs compare``."""

from __future__ import annotations

import json

import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ganforge.cli.common import sigterm_exits, user_errors
from ganforge.cli.options import Options, command
from ganforge.registry.store import DEFAULT_NAME


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RegisterOptions(_Opts):
    """``ganforge register``: which run's generator becomes a model version."""

    run_id: str = Field(description="The MLflow run id `ganforge train` printed.")
    name: str = Field(DEFAULT_NAME, description="Registered model name.")
    force: bool = Field(False, description="Register anyway: a failed run, weights not both evaluated and "
                        "audited, or a failed audit (needs --reason).")
    reason: str | None = Field(None, description="Why --force (recorded as the tag forced_reason).")
    pipeline_run_id: str | None = Field(None, description="KFP run id, kept as a tag.")
    weights: str | None = Field(None, description="Generator weights the version carries: ema or raw. Default: "
                                "ema when the checkpoint has them, else raw.")


class PromoteOptions(_Opts):
    """``ganforge promote``: move an alias to a version that passes the gate."""

    name: str = Field(description="Registered model name.")
    version: int = Field(description="Version to promote.")
    alias: str = Field("champion", description="Alias to move.")
    max_fid: float | None = Field(None, description="FID ceiling, a finite number above 0 (default: none).")
    force: bool = Field(False, description="Promote even if worse than the current holder.")
    reason: str | None = Field(None, description="Why (required with --force; recorded).")
    stage: str | None = Field(None, description="Also set the deprecated stage: Staging or Production.")

    @field_validator("max_fid")
    @classmethod
    def _usable_limit(cls, v: float | None) -> float | None:
        from ganforge.registry.aliases import check_limit

        check_limit("--max-fid", v)  # the gate's own words, also when the flag is read (nan, inf, 0, -1)
        return v


class RollbackOptions(_Opts):
    """``ganforge rollback``: put an alias's previous holder back."""

    name: str = Field(description="Registered model name.")
    alias: str = Field("champion", description="Alias to move back.")


class CompareOptions(_Opts):
    """``ganforge runs compare``: which runs, in which order, printed how."""

    experiment: str = Field(description="MLflow experiment name.")
    sort_by: str = Field("fid", description="Column: fid, kid, precision, recall, a train/ metric or a param.")
    descending: bool = Field(False, description="Largest first.")
    max_runs: int = Field(100, description="Newest training runs considered.")
    as_json: bool = Field(False, alias="json", description="Print JSON instead of a table.")


class PermissionsShowOptions(_Opts):
    """``ganforge permissions show``: the acting MLflow user and what they may do with a model."""

    name: str = Field(DEFAULT_NAME, description="Registered model name.")
    as_json: bool = Field(False, alias="json", description="Print JSON instead of a sentence.")


class PermissionsGrantOptions(_Opts):
    """``ganforge permissions grant``: give a user a permission on a model (its owner or the admin runs it)."""

    user: str = Field(description="The MLflow user to grant to (created by the server's admin).")
    permission: str = Field(description="READ, USE, EDIT (may register) or MANAGE (may promote and roll back).")
    name: str = Field(DEFAULT_NAME, description="Registered model name.")


REGISTER = Options(RegisterOptions, "register")
PERMISSIONS_SHOW = Options(PermissionsShowOptions, "permissions show")
PERMISSIONS_GRANT = Options(PermissionsGrantOptions, "permissions grant")
PROMOTE = Options(PromoteOptions, "promote", arguments=("name", "version"))
ROLLBACK = Options(RollbackOptions, "rollback", arguments=("name",))
COMPARE = Options(CompareOptions, "runs compare")


def register_command(**flags) -> None:
    """Register a training run's evaluated and audited generator as a model version with the alias `candidate`."""
    from ganforge.registry import register

    opts = REGISTER.build(flags)
    with sigterm_exits():
        out = register(opts.run_id, name=opts.name, force=opts.force, pipeline_run_id=opts.pipeline_run_id,
                       weights=opts.weights, reason=opts.reason)
    verb = "registered" if out["created"] else "already registered as"
    typer.echo(f"{verb} models:/{out['name']}/{out['version']} ({out['tags'].get('weights', 'unknown')} weights; "
               f"aliases: {', '.join(out['aliases']) or 'none'})")


def promote_command(**flags) -> None:
    """Move an alias (default `champion`) to a version that passes the gate."""
    from ganforge.registry import promote

    o = PROMOTE.build(flags)
    with sigterm_exits():
        rec = promote(o.name, o.version, alias=o.alias, max_fid=o.max_fid, force=o.force, reason=o.reason,
                      stage=o.stage)
    if o.stage is not None:
        typer.echo(f"warning: stage set to {o.stage}, but MLflow deprecates stages: read the alias {o.alias!r}",
                   err=True)
    was = f" (was version {rec['previous']})" if rec["previous"] is not None else ""
    typer.echo(f"{o.name}@{o.alias} -> version {rec['version']}{was}" + "".join(f"; {n}" for n in rec["gate"]))


def rollback_command(**flags) -> None:
    """Put the previous holder of an alias (default `champion`) back."""
    from ganforge.registry import rollback

    o = ROLLBACK.build(flags)
    with sigterm_exits():
        rec = rollback(o.name, alias=o.alias)
    typer.echo(f"{o.name}@{o.alias} -> version {rec['version']} (was version {rec['previous']})")


def compare_command(**flags) -> None:
    """Table of an experiment's training runs: differing params, final metrics, FID, audit verdict."""
    from ganforge.registry import compare_runs, format_table

    o = COMPARE.build(flags)
    result = compare_runs(o.experiment, sort_by=o.sort_by, descending=o.descending, max_runs=o.max_runs)
    typer.echo(json.dumps(result, indent=2) if o.as_json else format_table(result))


def permissions_show_command(**flags) -> None:
    """Who MLflow takes you for (MLFLOW_TRACKING_USERNAME/PASSWORD or a token) and what you may do with a model."""
    from ganforge.registry import access, store

    o = PERMISSIONS_SHOW.build(flags)
    c = store.client(check_user=False)  # access asks who we are next
    with store.mlflow_errors("reading permissions"):
        found = access.access(c, o.name)
    rec = found.record()
    if o.as_json:
        typer.echo(json.dumps(rec, sort_keys=True))
        return
    if not found.auth:
        typer.echo(f"no users on this MLflow server (no basic-auth): {found.user} may register and promote {o.name}")
        return
    if not found.model_exists:
        typer.echo(f"user {found.user}: no model {o.name} yet; registering a version creates it, owned by "
                   f"{found.user} (MANAGE)")
        return
    may = [a for a in ("register", "promote") if found.may(a)]
    has = "admin" if found.is_admin else found.permission or "no permission"
    typer.echo(f"user {found.user} ({has}) may {' and '.join(may) or 'only read'} {o.name}")


def permissions_grant_command(**flags) -> None:
    """Give a user READ, USE, EDIT or MANAGE on a registered model (EDIT and MANAGE also open its registry lock)."""
    from ganforge.registry import access, store

    o = PERMISSIONS_GRANT.build(flags)
    c = store.client(check_user=False)  # access asks who we are next
    with store.mlflow_errors(f"granting {o.permission} on {o.name}"):
        out = access.grant(c, o.name, o.user, o.permission)
    lock = f" (and MANAGE on its registry lock {o.name}{store.LOCK_SUFFIX})" if out["lock"] else ""
    typer.echo(f"user {o.user} has {o.permission} on {o.name}{lock}")


def register(app: typer.Typer) -> None:
    """Add ``register``, ``promote``, ``rollback`` and the ``runs`` and ``permissions`` groups."""
    permissions_app = typer.Typer(help="Who may register and promote: MLflow's basic-auth permissions.",
                                  no_args_is_help=True)
    permissions_app.command("show")(user_errors(command(permissions_show_command, PERMISSIONS_SHOW)))
    permissions_app.command("grant")(user_errors(command(permissions_grant_command, PERMISSIONS_GRANT)))
    app.add_typer(permissions_app, name="permissions")
    runs_app = typer.Typer(help="Look at training runs.", no_args_is_help=True)
    app.command("register")(user_errors(command(register_command, REGISTER)))
    app.command("promote")(user_errors(command(promote_command, PROMOTE)))
    app.command("rollback")(user_errors(command(rollback_command, ROLLBACK)))
    runs_app.command("compare")(user_errors(command(compare_command, COMPARE)))
    app.add_typer(runs_app, name="runs")
