"""The ``ganforge`` command line: thin typer commands over library calls.

Each command parses its flags, calls one library function and turns a ``GanforgeError`` into one
line on stderr and exit code 2. Heavy imports (torch, pyarrow, mlflow) happen inside commands so
that ``ganforge --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from ganforge.errors import GanforgeError


class OneLineErrors(TyperGroup):
    """Usage errors (unknown flag, bad value, missing option) as one ``error:`` line, like every other error.

    Click would draw a multi-line panel; a script or a CI log wants the line that names the flag and the
    help to read.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # `ganforge` or `ganforge pipeline` alone: the help, not an error
            exc.show()
            sys.exit(exc.exit_code)
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "ganforge"
            typer.echo(f"error: {' '.join(exc.format_message().split()).rstrip('.')}; see `{where} --help`", err=True)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="ganforge",
    help="Train, evaluate, audit and ship GAN image generators: ingest -> train -> evaluate/audit -> register.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def user_errors(fn):
    """Turn ``GanforgeError`` (and config validation errors) into one line on stderr, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pydantic import ValidationError

        try:
            return fn(*args, **kwargs)
        except GanforgeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            typer.echo(f"error: {one_line_validation_error(exc)}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@contextlib.contextmanager
def sigterm_exits():
    """SIGTERM unwinds like Ctrl-C (exit 143): ``finally`` blocks remove temp files and mark MLflow runs
    FAILED on the way out, instead of the process vanishing mid-write."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line_validation_error(exc) -> str:
    """Pydantic's multi-line report as one line: ``--flag-name: problem; ...``."""
    parts = []
    for err in exc.errors():
        loc = "--" + "-".join(str(x) for x in err["loc"]).replace("_", "-") if err["loc"] else "config"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# Command groups, one module each; each module's ``register(app)`` adds its commands.
from ganforge import cli_data, cli_eval, cli_pipeline, cli_registry, cli_train  # noqa: E402

for _group in (cli_data, cli_train, cli_eval, cli_registry, cli_pipeline):
    _group.register(app)


def main() -> None:  # pragma: no cover - console entry for `python -m ganforge`
    sys.exit(app())
