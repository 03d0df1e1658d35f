"""Usage errors are one ``error:`` line naming the flag and the help to read, exit 2 (issue 13)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ganforge.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args, match", [
    (["trian"], "No such command 'trian'. Did you mean 'train'?; see `ganforge --help`"),
    (["evaluate"], "Missing option '--dataset'; see `ganforge evaluate --help`"),
    (["ingest", "digits", "-o", "x", "--bogus"], "No such option: --bogus; see `ganforge ingest --help`"),
    (["pipeline", "compile", "--train-retries="], "Invalid value for '--train-retries'"),
    (["ingest", "digits", "-o", "x", "--limit", "ten"], "Invalid value for '--limit'"),
])  # fmt: skip
def test_usage_errors_are_one_line(args, match, tmp_path):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.stderr


def test_no_arguments_still_prints_the_help():
    res = runner.invoke(app, ["pipeline"])
    assert "compile" in res.output and "error:" not in res.output


def test_exit_codes_through_the_console_entry(tmp_path, monkeypatch, capsys):
    """The console entry's call, ``app(prog_name="ganforge")`` on sys.argv: success 0, usage error 2, --help 0
    (sys.exit is ours, not click's); the usage error once more as a real process (``python -m ganforge``: the
    exit status and stderr a shell sees). One process, not three: each start imports torch and the CLI."""
    def code(*a):
        monkeypatch.setattr(sys, "argv", ["ganforge", *a])
        with pytest.raises(SystemExit) as exited:
            app(prog_name="ganforge")
        return exited.value.code, capsys.readouterr().err

    (ok, _), (bad, err), (helped, _) = code("datasets", "--help"), code("datasets", "show"), code("--help")
    assert (ok, bad, helped) == (0, 2, 0)
    assert err.strip().startswith("error: Missing argument") and len(err.strip().splitlines()) == 1
    real = subprocess.run([sys.executable, "-m", "ganforge", "datasets", "show"], capture_output=True, text=True,
                          timeout=300)
    assert real.returncode == 2 and real.stderr.strip().startswith("error: Missing argument")
    assert len(real.stderr.strip().splitlines()) == 1, real.stderr


def test_generate_from_the_registry_checks_its_flags_before_any_download(monkeypatch):
    import ganforge.registry

    def no_download(uri):
        raise AssertionError("resolved the model before checking --n")

    monkeypatch.setattr(ganforge.registry, "resolve_model_uri", no_download)
    res = runner.invoke(app, ["generate", "--model", "models:/gan@champion", "--n", "0", "--out", "grid.png"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --n must be from 1"), (res.stderr, res.exception)
