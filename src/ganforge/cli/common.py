"""What every command shares: one-line usage errors, one-line user errors, SIGTERM as an unwind."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    # the same classes from click itself; the checker sees typer's copy
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment]

from ganforge.cli.options import PENDING_WARNINGS, one_line_validation_error
from ganforge.errors import GanforgeError


class OneLineErrors(TyperGroup):
    """Usage errors (unknown flag, bad value, missing option) as one ``error:`` line, like every other error.

    Click would draw a multi-line panel; a script or a CI log wants the line that names the flag and the
    help to read.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
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


def user_errors(fn):
    """Turn ``GanforgeError`` (and config validation errors) into one line on stderr, exit 2.

    Deprecated-flag warnings are printed when the command ends any other way: a failing command's
    stderr stays the single ``error:`` line scripts read.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pydantic import ValidationError

        PENDING_WARNINGS.clear()
        failed = False
        try:
            return fn(*args, **kwargs)
        except GanforgeError as exc:
            failed = True
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            failed = True
            typer.echo(f"error: {one_line_validation_error(exc)}", err=True)
            raise typer.Exit(2) from None
        finally:
            if not failed:
                for line in PENDING_WARNINGS:
                    typer.echo(line, err=True)
            PENDING_WARNINGS.clear()

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
