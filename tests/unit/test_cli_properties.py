"""Every option of every command, bad values included: one ``error:`` line and exit 2, or success; never a
traceback (issue 22, parts 4 and 5).

The suite walks the CLI's own click tree (``typer.main.get_command(app)``), so a command or a flag added
later is probed by construction; nothing here lists options. Each option is classified once (``kind``):

- numeric: its field holds a float (``float``, ``tuple[float, ...]``, ``float | Literal['auto']``) or its
  value is an int; tried with nan, inf, 0, a negative and a huge value. A float option must refuse nan and
  inf with a line naming the flag and "finite number".
- path: a text option whose name or help says it is a path; tried with a missing path, a read-only
  directory, a regular file, a path under a regular file and /proc/x.

Each case runs the command in-process with every other parameter at its base value (``BASE``: a small valid
invocation on a 16 px dataset and a one-step checkpoint, or one that stops right after the checks, e.g.
``train --dry-run``; a command not listed gets each required parameter filled by its kind). Long work is never
started: ``train``, ``pipeline run --local`` and ``pipeline submit`` end at a stub once their checks passed.
"""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ganforge.cli.app import app
from ganforge.cli.options import choices, holds_float

ROOT = typer.main.get_command(app)

FLOAT_VALUES = ("nan", "inf", "-inf", "0", "-1", "1e300")
INT_VALUES = ("nan", "inf", "0", "-1", str(10**18), str(2**70))
PATH_VALUES = ("missing", "read-only", "file", "under-file", "/proc/x")
NON_FINITE = {"nan", "inf", "-inf"}

# A path option: its name says so, or its help calls its value a file, a directory or a path.
PATH_NAMES = {"path", "dir", "file", "output", "out", "input", "dataset", "checkpoint", "config", "resume", "images",
              "uri", "grid", "credentials"}
PATH_HELP = re.compile(r"\b(files?|director(y|ies)|paths?)\b", re.IGNORECASE)
OUTPUT_NAMES = {"out", "output", "dir", "grid"}

# A small valid invocation of a command, or one that stops right after its checks (placeholders: see
# ``World``). A command not listed here gets each required parameter filled by its kind (``generic``).
BASE: dict[str, dict[str, object]] = {
    "ingest": {"source": "folder", "input": "{images}", "output": "{fresh}", "val_fraction": "0"},
    "train": {"preset": "digits-tiny", "dataset": "{dataset}", "output": "{fresh}", "track": False, "dry_run": True},
    "generate": {"checkpoint": "{checkpoint}", "n": "4", "out": "{fresh}/grid.png"},
    "encode": {"checkpoint": "{checkpoint}", "dataset": "{dataset}", "limit": "8", "out": "{fresh}/z.npz"},
    "reconstruct": {"checkpoint": "{checkpoint}", "dataset": "{dataset}", "n": "2", "attribute": "1",
                    "alphas": "-1,1", "out": "{fresh}/r.png"},
    "evaluate": {"checkpoint": "{checkpoint}", "dataset": "{dataset}", "n": "20", "metrics": "fid",
                 "backbone": "pixels", "track": False},
    "audit": {"checkpoint": "{checkpoint}", "dataset": "{dataset}", "n": "20", "track": False},
    "datasets show": {"uri": "{dataset}"},
    "register": {"run_id": "0" * 32},
    "pipeline run": {"local": True, "dir": "{fresh}"},
    "pipeline submit": {"host": "http://127.0.0.1:9", "gpus": "1"},
}
# Options that replace another one of the base: probing one drops the other.
INSTEAD = {("generate", "model_uri"): "checkpoint", ("evaluate", "images"): "checkpoint",
           ("audit", "images"): "checkpoint"}
# Where long work would start (training; the pipeline's DAG, after every check of ``pipeline run``, ``submit``
# and ``compile``): stubbed, so that a case whose values all pass ends there, in one line.
WORK = (("ganforge.training", "train"), ("ganforge.pipeline.runner", "load_pipeline"))


def commands(group=ROOT, path: tuple[str, ...] = ()):
    """Every leaf command of the app: (its words, the click command)."""
    for name in group.list_commands(None):  # the top-level group loads a command's module when asked
        cmd = group.get_command(None, name)
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def field_of(cmd, param):
    """(model, field name) of a parameter made by the option builder, else None."""
    return getattr(cmd.callback, "ganforge_fields", {}).get(param.name)


def value_type(param) -> type:
    descriptor = getattr(param, "type_descriptor", None)  # typer's own click
    if descriptor is not None:
        return descriptor.annotation
    return {"integer": int, "float": float, "boolean": bool}.get(getattr(param.type, "name", ""), str)


def spelled(param) -> str:
    """How the parameter is typed: its long flag, or its name for an argument."""
    if param.param_type_name == "argument":
        return param.name.upper()
    return next((o for o in param.opts if o.startswith("--")), param.opts[0])


def kind(cmd, param) -> str | None:
    """float, int, path or None (not probed): the one place options are classified."""
    t = value_type(param)
    if t is bool or getattr(param, "is_flag", False):
        return None
    field = field_of(cmd, param)
    annotation = field[0].model_fields[field[1]].annotation if field else t
    if t is float or holds_float(annotation):
        return "float"
    if t is int:
        return "int"
    if t is str and not (field and choices(annotation)):
        words = set(param.name.split("_"))
        if field:
            words |= set(field[1].split("_"))
        help_text = getattr(param, "help", "") or ""
        if words & PATH_NAMES or PATH_HELP.search(help_text):
            return "path"
    return None


def cases():
    out = []
    for path, cmd in commands():
        for param in cmd.params:
            k = kind(cmd, param)
            values = {"float": FLOAT_VALUES, "int": INT_VALUES, "path": PATH_VALUES}.get(k, ())
            out += [pytest.param(path, param.name, k, v, id=f"{' '.join(path)}:{spelled(param)}={v}") for v in values]
    return out


CASES = cases()


class World:
    """The dataset, checkpoint and images a case may use (made once), and fresh paths for each case (a case
    that succeeds may create or fill its paths)."""

    def __init__(self, root: Path, dataset: str, checkpoint: str, images: str):
        self.root, self.dataset, self.checkpoint, self.images, self.n = root, dataset, checkpoint, images, 0
        self.read_only: list[Path] = []

    def fresh(self, name: str = "fresh") -> Path:
        self.n += 1
        return self.root / f"{name}-{self.n}"

    def path(self, which: str) -> str:
        """A new path of the kind ``which`` (``PATH_VALUES``)."""
        if which == "missing":
            return str(self.fresh("missing") / "thing")
        if which == "read-only":
            p = self.fresh("read-only")
            p.mkdir()
            p.chmod(stat.S_IRUSR | stat.S_IXUSR)  # root may still write there: /proc/x is the unwritable case
            self.read_only.append(p)
            return str(p)
        if which in ("file", "under-file"):
            p = self.fresh("a-file")
            p.write_text("not a directory\n")
            return str(p if which == "file" else p / "x")
        return which

    def fill(self, value):
        if not isinstance(value, str):
            return value
        return value.format(dataset=self.dataset, checkpoint=self.checkpoint, images=self.images,
                            missing=self.path("missing"), fresh=str(self.fresh()))


def probe_path(path, name: str, which: str, world: World) -> str:
    """The bad path ``which``; for an option whose base is a file of some suffix, that file name inside it."""
    base = str(BASE.get(" ".join(path), {}).get(name, ""))
    bad = world.path(which)
    return f"{bad}/{Path(base).name}" if Path(base).suffix and which != "file" else bad


def generic(cmd, param, world: World):
    """A harmless value of a required parameter no ``BASE`` entry gives."""
    k = kind(cmd, param)
    if k == "path":
        return "{fresh}" if set(param.name.split("_")) & OUTPUT_NAMES else "{missing}"
    if k in ("int", "float"):
        return "1"
    field = field_of(cmd, param)
    options = choices(field[0].model_fields[field[1]].annotation) if field else None
    return str(options[0]) if options else "x"


def invocation(path, cmd, probed: str, value: str, world: World) -> list[str]:
    values = dict(BASE.get(" ".join(path), {}))
    same = field_of(cmd, next(p for p in cmd.params if p.name == probed))
    for param in cmd.params:  # the probed field's other spelling (a deprecated alias), or its alternative
        if param.name != probed and (field_of(cmd, param) == same or INSTEAD.get((" ".join(path), probed)) == param.name):
            values.pop(param.name, None)
    for param in cmd.params:
        if param.required and param.name not in values:
            values[param.name] = generic(cmd, param, world)
    values[probed] = value
    options, arguments = [], []
    for param in cmd.params:  # in the command's order, arguments after the options
        if param.name not in values:
            continue
        v = world.fill(values[param.name])
        if param.param_type_name == "argument":
            arguments.append(str(v))
        elif v is True or v is False:
            options.append(param.opts[0] if v else param.secondary_opts[0])
        else:
            options += [spelled(param), str(v)]
    return [*path, *options, *(["--", *arguments] if arguments else [])]


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits16):
    import importlib

    from PIL import Image

    from ganforge.errors import GanforgeError
    from ganforge.training import TrainConfig, train

    root = tmp_path_factory.mktemp("props")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        (root / "store").mkdir()  # an empty MLflow store: the registry commands find no database and stop
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/store/mlflow.db")
        mp.setenv("GANFORGE_CACHE_DIR", str(root / "cache"))
        # an autoencoder of one step: a generator for generate/evaluate/audit, an encoder for encode/reconstruct
        checkpoint = train(TrainConfig(dataset=digits16, model="ae", steps=1, batch_size=16, width=8, latent_dim=8,
                                       output=str(root / "ae"), track=False)).checkpoint
        images = root / "images" / "one"
        images.mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 60 * i).save(images / f"{i}.png")

        def stub(*_a, **_k):
            raise GanforgeError("(test) every check passed; the work itself is not run here")

        for module, name in WORK:
            mp.setattr(importlib.import_module(module), name, stub)
        (root / "w").mkdir()
        world = World(root / "w", digits16, checkpoint, str(images.parent))
        yield world
        for p in world.read_only:
            p.chmod(stat.S_IRWXU)


runner = CliRunner()


@pytest.mark.parametrize("path, name, k, value", CASES)
def test_every_option_refuses_cleanly_or_succeeds(world, path, name, k, value):
    cmd = dict(commands())[path]
    param = next(p for p in cmd.params if p.name == name)
    if k == "path":
        value = probe_path(path, name, value, world)
    args = invocation(path, cmd, name, value, world)
    res = runner.invoke(app, args, catch_exceptions=False)
    lines = res.stderr.strip().splitlines()
    shown = f"ganforge {' '.join(args)}\n-> exit {res.exit_code}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr}"
    assert "Traceback" not in res.output, shown
    assert res.exit_code == 0 or (res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")), shown
    if k == "float" and value in NON_FINITE:
        assert res.exit_code == 2 and spelled(param) in lines[0] and "finite number" in lines[0], shown


def test_the_walk_covers_every_command_and_option():
    """Nothing is listed by hand: every parameter of every command fills a model field (the option builder),
    every numeric option gets every numeric value, and ``BASE`` names only commands that exist."""
    walked = dict(commands())
    assert {" ".join(p) for p in walked} >= set(BASE), "BASE names a command that is gone"
    assert {c for c, _ in INSTEAD} <= {" ".join(p) for p in walked}
    for path, cmd in walked.items():
        for param in cmd.params:
            assert field_of(cmd, param) is not None, (path, param.name)
    numeric = {(p, q.name) for p, c in walked.items() for q in c.params if kind(c, q) in ("int", "float")}
    paths = {(p, q.name) for p, c in walked.items() for q in c.params if kind(c, q) == "path"}
    probed = [(c.values[0], c.values[1]) for c in CASES]
    assert all(probed.count(o) >= 5 for o in numeric) and all(probed.count(o) == len(PATH_VALUES) for o in paths)
    assert len(CASES) >= 5 * len(numeric) + len(PATH_VALUES) * len(paths)
    print(f"{len(CASES)} cases over {len(walked)} commands: {len(numeric)} numeric options x "
          f"{len(FLOAT_VALUES)} values, {len(paths)} path options x {len(PATH_VALUES)} paths")


FLOAT_OPTIONS = [(path, cmd, q) for path, cmd in commands() for q in cmd.params if kind(cmd, q) == "float"]


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_float_options_take_every_finite_number_and_refuse_the_rest_while_parsing(data):
    """The check click runs while it reads the command line (``Options``' callback): any finite float, of any
    size, passes to the model; nan or an infinity anywhere in the value is refused there, naming the flag."""
    from ganforge.cli.options import FlagError, is_list

    path, cmd, param = data.draw(st.sampled_from(FLOAT_OPTIONS), label="option")
    model, name = field_of(cmd, param)
    many = is_list(model.model_fields[name].annotation)
    xs = data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=4 if many else 1))
    value = ",".join(map(repr, xs)) if value_type(param) is str else xs[0]
    if all(math.isfinite(x) for x in xs):
        assert param.callback(None, param, value) == value
    else:
        with pytest.raises(FlagError) as refused:
            param.callback(None, param, value)
        said = refused.value.format_message()
        assert said.startswith(f"{spelled(param)} ") and "finite number" in said and "\n" not in said, said
