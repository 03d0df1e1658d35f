"""A wheel built with ``pip wheel .`` compiles the pipeline without the source checkout.

The wheel is built from a copy of the repository (a build in place would leave ``build/`` and
``*.egg-info`` in the shared checkout), installed with ``pip install --target`` into an empty folder, and
run with ``python -S`` from another directory: no ``site`` means the editable install's ``.pth`` finder is
never loaded, so only the wheel's ``ganforge``, ``pipelines`` and ``components`` can be imported (the
dependencies come from this interpreter's site-packages, put on ``PYTHONPATH`` after the wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from ganforge.pipeline.params import DEFAULT_IMAGE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "gan_pipeline.yaml"
# Build outputs, caches and local state: never part of what `pip wheel .` reads from a clean checkout.
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "outputs", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".hypothesis", "artifacts", "mlruns", "mlflow.db", ".ganforge",
                              ".whl", ".gpu")


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(args, capture_output=True, text=True, timeout=240, **kw)
    assert res.returncode == 0, f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, tmp / "src", ignore=SKIP)
    _run([sys.executable, "-m", "pip", "wheel", str(tmp / "src"), "-w", str(tmp / "wh"), "--no-deps",
          "--no-build-isolation", "-q"])  # offline: the venv's setuptools builds it
    (wheel,) = (tmp / "wh").glob("ganforge-*.whl")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp / "site"), str(wheel)])
    return wheel, tmp / "site"


def _wheel_python(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *deps])}
    env.pop("GANFORGE_IMAGE", None)
    return _run([sys.executable, "-S", *args], cwd=cwd, env=env)


def test_wheel_ships_pipelines_and_components(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("pipelines", "components"):
        shipped = {n for n in names if n.startswith(f"{folder}/")}
        in_repo = {p.relative_to(REPO).as_posix() for p in (REPO / folder).glob("*.py")}
        assert shipped == in_repo, folder
    assert not any(n.startswith(("tests/", "benchmarks/", "docker/", "src/")) for n in names)
    presets = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "ganforge" / "presets").glob("*.yaml")}
    assert presets and presets <= names, "the preset files are package data"


def test_installed_wheel_compiles_the_golden_pipeline(installed, tmp_path):
    _, site = installed
    where = _wheel_python(site, "-c", "import ganforge, pipelines, components; "
                          "print(ganforge.__file__, pipelines.__file__, components.__file__)", cwd=tmp_path)
    for module_file in where.stdout.split():
        assert Path(module_file).is_relative_to(site), f"{module_file} is not the wheel's"
    out = tmp_path / "x.yaml"
    res = _wheel_python(site, "-m", "ganforge", "pipeline", "compile", "--output", str(out), "--image",
                        DEFAULT_IMAGE, cwd=tmp_path)
    assert f"wrote {out}" in res.stdout
    # the same package the checkout compiles: the golden file is compiled for the default cluster and image
    assert out.read_text() == GOLDEN.read_text()
