"""The one option builder (``ganforge.cli.options``) and the renamed flags (issue 15): every command's
options come from a pydantic model; flags that meant different things have different names, and the old
names still work for one release with a one-line warning."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
import typer
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.cli.common import OneLineErrors, user_errors
from ganforge.cli.options import Options, base_type, command

runner = CliRunner()


class Toy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="A required text.")
    count: int | None = Field(None, ge=1, description="An optional count.")
    mode: Literal["fast", "slow"] = Field("fast", description="A choice.")
    tags: tuple[str, ...] = Field(("a", "b"), description="Some tags.")
    loud: bool = Field(False, description="A switch.")
    new_name: str | None = Field(None, description="The new spelling.")


TOY = Options(Toy, "toy", aliases={"new_name": "--old-name"})


def _toy_app():
    seen = {}

    def toy(**flags):
        seen["cfg"] = TOY.build(flags)
        typer.echo("ran")

    toy_app = typer.Typer(cls=OneLineErrors)
    toy_app.command("toy")(user_errors(command(toy, TOY)))
    toy_app.command("other")(lambda: None)  # two commands: typer keeps the subcommand name
    return toy_app, seen


def test_options_come_from_the_model():
    toy_app, seen = _toy_app()
    help_text = " ".join(runner.invoke(toy_app, ["toy", "--help"], env={"COLUMNS": "300"}).output.split())
    for text in ("--name", "A required text.", "[required]", "--count", "[fast|slow]", "Some tags. Comma-separated.",
                 "--loud", "--no-loud", "--new-name"):
        assert text in help_text, text
    assert "--old-name" not in help_text  # deprecated names are hidden
    assert "[default: (fast)]" in help_text and "[default: (a,b)]" in help_text

    res = runner.invoke(toy_app, ["toy", "--name", "x", "--tags", "p, q,", "--loud", "--mode", "slow"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"] == Toy(name="x", tags=("p", "q"), loud=True, mode="slow")
    assert runner.invoke(toy_app, ["toy", "--name", "x"]).exit_code == 0
    assert seen["cfg"] == Toy(name="x")  # nothing given: the model's defaults, not copies of them


def test_validation_is_the_models_and_one_line():
    toy_app, _ = _toy_app()
    res = runner.invoke(toy_app, ["toy", "--name", "x", "--mode", "medium"])
    assert res.exit_code == 2 and res.stderr.strip() == "error: --mode: Input should be 'fast' or 'slow'"
    res = runner.invoke(toy_app, ["toy", "--name", "x", "--count", "0"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --count: Input should be greater than or equal to 1")
    assert "Missing option '--name'" in runner.invoke(toy_app, ["toy"]).stderr


def test_deprecated_name_fills_the_new_field_and_warns_once_on_stderr():
    toy_app, seen = _toy_app()
    res = runner.invoke(toy_app, ["toy", "--name", "x", "--old-name", "v"])
    assert res.exit_code == 0 and res.stdout == "ran\n"
    assert res.stderr == "warning: --old-name is deprecated for toy; use --new-name\n"
    assert seen["cfg"].new_name == "v"
    assert runner.invoke(toy_app, ["toy", "--name", "x", "--new-name", "v"]).stderr == ""
    both = runner.invoke(toy_app, ["toy", "--name", "x", "--new-name", "v", "--old-name", "w"])
    assert both.exit_code == 2 and both.stderr == "error: give --new-name only (--old-name is its deprecated name)\n"
    # a failing command keeps its single error line: the warning is left out
    bad = runner.invoke(toy_app, ["toy", "--name", "x", "--old-name", "v", "--count", "0"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error:")


def test_builder_refuses_unknown_fields():
    with pytest.raises(ValueError, match="no field"):
        Options(Toy, "toy", aliases={"nmae": "--x"})
    assert base_type(int | None) is int and base_type(Literal[1, 3]) is int and base_type(tuple[str, ...]) is str


def _help(*cmd: str) -> str:
    return " ".join(runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "300"}).output.split())


@pytest.mark.parametrize("cmd, new, old", [
    (("evaluate",), "--checkpoint", "--model"),
    (("audit",), "--checkpoint", "--model"),
    (("audit",), "--backbone", "--space"),
    (("generate",), "--model-uri", "--model"),
])  # fmt: skip
def test_renamed_flags_show_the_new_name_only(cmd, new, old):
    text = _help(*cmd)
    assert f"{new} " in text and f"{old} " not in text


def test_train_model_is_still_the_family():
    assert "Model family: one of" in _help("train")


def test_evaluate_old_and_new_name_reach_the_same_field(tmp_path):
    missing = str(tmp_path / "nowhere")
    for flag in ("--checkpoint", "--model"):
        res = runner.invoke(app, ["evaluate", "--dataset", missing, flag, missing, "--no-track"])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = runner.invoke(app, ["evaluate", "--dataset", missing, "--no-track"])
    assert res.stderr == "error: config: Value error, give exactly one of --checkpoint or --images\n"
    both = runner.invoke(app, ["audit", "--dataset", missing, "--checkpoint", "a", "--model", "b"])
    assert both.exit_code == 2 and "give --checkpoint only (--model is its deprecated name)" in both.stderr


def test_generate_model_uri_checks_its_flags_before_any_download(monkeypatch):
    import ganforge.registry

    def no_download(uri):
        raise AssertionError("resolved the model before checking --n")

    monkeypatch.setattr(ganforge.registry, "resolve_model_uri", no_download)
    res = runner.invoke(app, ["generate", "--model-uri", "models:/gan@champion", "--n", "0", "--out", "grid.png"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --n must be from 1"), (res.stderr, res.exception)
    res = runner.invoke(app, ["generate", "--out", "grid.png"])
    assert "give exactly one of --checkpoint DIR or --model-uri" in res.stderr


def test_audit_space_still_works_with_a_warning(digits16, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(24):
        Image.fromarray(torch.randint(0, 256, (16, 16), generator=g, dtype=torch.uint8).numpy()).save(folder / f"{i}.png")
    args = ["audit", "--dataset", digits16, "--images", str(folder), "--no-track"]
    old = runner.invoke(app, [*args, "--space", "pixels"])
    new = runner.invoke(app, [*args, "--backbone", "pixels"])
    assert old.exit_code == new.exit_code and old.exit_code in (0, 1), old.output
    assert old.stdout == new.stdout and new.stderr == ""
    assert old.stderr == "warning: --space is deprecated for audit; use --backbone\n"


def test_adding_a_command_group_is_one_module_and_its_commands_names():
    """``COMMANDS`` names exactly what each module's ``register`` adds: nothing listed that no module adds,
    nothing added that ``ganforge --help`` would not list."""
    from ganforge.cli.app import COMMANDS, GROUPS, load_group

    added = {name: module for module in GROUPS for name in load_group(module)}
    assert added == COMMANDS
    assert {"ingest", "train", "generate", "evaluate", "audit", "register", "promote", "rollback", "datasets",
            "runs", "pipeline"} <= set(COMMANDS)


def test_a_light_command_starts_without_torch():
    """``ganforge promote`` (and ingest, pipeline compile, ...) import only their own command module."""
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom ganforge.cli import app\n"
            "for args in (['promote', '--help'], ['ingest', '--help'], ['pipeline', 'compile', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'torcheval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# --- issue 22: finite means finite, and errors name the flag as typed --------------------------------------------


class Rates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float | None = Field(None, gt=0, lt=0.5, description="A level.")
    weights: tuple[float, ...] = Field((1.0,), description="Some weights.")
    scale: float = Field(1.0, description="Any number.")
    blur: float | Literal["auto"] = Field("auto", description="A sigma or auto.")
    level: float | None = Field(None, ge=0, le=1, description="The new spelling.")
    name: str = Field("x", description="Not a number.")


RATES = Options(Rates, "rates", aliases={"level": "--old-level"})


def _rates_app():
    seen = {}

    def rates(**flags):
        seen["cfg"] = RATES.build(flags)

    rates_app = typer.Typer(cls=OneLineErrors)
    rates_app.command("rates")(user_errors(command(rates, RATES)))
    rates_app.command("other")(lambda: None)
    return rates_app, seen


@pytest.mark.parametrize("args, line", [
    (["--alpha", "nan"], "error: --alpha must be a finite number in (0, 0.5), got nan"),
    (["--alpha", "-inf"], "error: --alpha must be a finite number in (0, 0.5), got -inf"),
    (["--alpha", "1e400"], "error: --alpha must be a finite number in (0, 0.5), got inf"),  # beyond a double
    (["--weights", "1,nan"], "error: --weights must be finite numbers, got 1,nan"),
    (["--scale", "inf"], "error: --scale must be a finite number, got inf"),
    (["--blur", "NaN"], "error: --blur must be a finite number, got NaN"),
    (["--old-level", "nan"], "error: --old-level must be a finite number in [0, 1], got nan"),  # the flag typed, not --level
])  # fmt: skip
def test_every_float_option_refuses_nan_and_inf_as_it_is_read(args, line):
    rates_app, seen = _rates_app()
    res = runner.invoke(rates_app, ["rates", *args, "--name", "x"])
    assert res.exit_code == 2 and res.stderr == line + "\n" and "cfg" not in seen, res.output


def test_finite_values_and_other_refusals_are_the_models():
    rates_app, seen = _rates_app()
    res = runner.invoke(rates_app, ["rates", "--alpha", "0.1", "--weights", "1e300,-2", "--blur", "auto", "--scale",
                                    "-1e308"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen["cfg"] == Rates(alpha=0.1, weights=(1e300, -2.0), blur="auto", scale=-1e308)
    res = runner.invoke(rates_app, ["rates", "--alpha", "0.5"])
    assert res.stderr == "error: --alpha: Input should be less than 0.5\n"
    res = runner.invoke(rates_app, ["rates", "--weights", "1,x"])
    assert res.stderr.startswith("error: --weights (item 2): Input should be a valid number")
    res = runner.invoke(rates_app, ["rates", "--old-level", "2"])  # a deprecated name, named as typed
    assert res.exit_code == 2 and res.stderr == "error: --old-level: Input should be less than or equal to 1\n"


def test_the_reported_cases(tmp_path):
    """Issue 22's defects: each is one line naming the flag and its rule, exit 2, before any work."""
    out = tmp_path / "r.png"
    res = runner.invoke(app, ["reconstruct", "--checkpoint", "x", "--dataset", "y", "--alphas", "nan,inf", "--out",
                              str(out)])  # fmt: skip
    assert res.exit_code == 2 and res.stderr == "error: --alphas must be finite numbers in [-100, 100], got nan,inf\n"
    assert not out.exists()
    res = runner.invoke(app, ["audit", "--alpha", "nan", "--dataset", "y", "--images", "z"])
    assert res.exit_code == 2 and res.stderr == "error: --alpha must be a finite number in (0, 0.5), got nan\n"
    res = runner.invoke(app, ["ingest", "digits", "--output", "/proc/ganforge-x"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --output /proc/ganforge-x cannot be written"), res.stderr
    assert len(res.stderr.splitlines()) == 1
    res = runner.invoke(app, ["train", "--model", "dcgan", "--steps", "1", "--dataset", "y", "--lr-g", "nan"])
    assert res.stderr == "error: --lr-g must be a finite number above 0, e.g. 0.0002, got nan\n"
