"""Each list of names (models, sources, metrics, backbones, objectives, presets, augmentations,
activations) is declared once, in its registry; everything else reads it from there.

The scan looks at every module of ``src/ganforge`` for a literal collection of strings (a tuple, list,
set or ``Literal[...]``, or a dict's keys) made mostly (more than half, and at least two) of a
registry's names: only the registry's own module may hold one. A hand-copied list of choices drifts: the pipeline's model help
said "mlp, dcgan, wgan-gp, vae" after ``ae`` was added. The one exception is ``ganforge/names.py``, the
torch-free copy of the model and backbone names that light modules read: their registries refuse to import
when it differs (tested below), so it cannot drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ganforge.data.sources import SOURCES
from ganforge.metrics import METRICS
from ganforge.metrics.features import EXTRACTORS
from ganforge.models import MODELS
from ganforge.models.layers import ACTIVATIONS
from ganforge.training.augment import AUGMENTS
from ganforge.training.config import PRESETS
from ganforge.training.losses import OBJECTIVES
from ganforge.training.updates import UPDATES

SRC = Path(__file__).resolve().parents[2] / "src" / "ganforge"

REGISTRIES = {  # what -> (its names, the one file that declares them)
    "model": (MODELS, "models/registry.py"),
    "source": (SOURCES, "data/sources/__init__.py"),
    "metric": (METRICS, "metrics/__init__.py"),
    "backbone": (EXTRACTORS, "metrics/features.py"),
    "objective": (OBJECTIVES, "training/losses.py"),
    "preset": (PRESETS, "training/config.py"),
    "augmentation": (AUGMENTS, "training/augment.py"),
    "activation": (ACTIVATIONS, "models/layers.py"),
    "update": (UPDATES, "training/updates.py"),
}


def string_collections(tree: ast.AST):
    """(line, strings) of every literal collection of string constants in ``tree`` (a ``Literal[...]``'s
    arguments are a tuple node too)."""
    for node in ast.walk(tree):
        items = None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        if items and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
            yield node.lineno, [e.value for e in items]


CHECKED_COPY = {"model": "names.py", "backbone": "names.py"}  # see ganforge.names.check_registry


def copies(names, home: str, allowed: str | None = None) -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in (home, allowed):
            continue
        for line, strings in string_collections(ast.parse(path.read_text())):
            hits = len(set(strings) & set(names))
            if hits >= 2 and hits > len(set(strings)) / 2:
                found.append(f"{rel}:{line} {strings}")
    return found


@pytest.mark.parametrize("what", sorted(REGISTRIES))
def test_names_are_declared_only_in_their_registry(what):
    names, home = REGISTRIES[what]
    assert copies(names, home, CHECKED_COPY.get(what)) == [], f"{what} names copied outside {home}"


def test_the_torch_free_copies_are_the_registries_names():
    from ganforge import names

    assert names.MODEL_NAMES == tuple(MODELS) and names.BACKBONE_NAMES == tuple(EXTRACTORS)
    with pytest.raises(RuntimeError, match="model registry .* differs from ganforge.names"):
        names.check_registry("model", [*MODELS, "dcgan-copy"], names.MODEL_NAMES)


def test_the_scan_finds_a_copied_list():
    tree = ast.parse('X = ("dcgan", "vae")\nY: Literal["mlp", "ae"]\nZ = {"fid": 1, "kid": 2}\nW = (1, "a")\n')
    assert sorted(s for _, s in string_collections(tree)) == [["dcgan", "vae"], ["fid", "kid"], ["mlp", "ae"]]


def test_a_model_family_is_one_registry_line(monkeypatch):
    """A family added to MODELS is accepted by the spec, the training config and the pipeline at once."""
    from ganforge.models import ModelSpec, build_generator
    from ganforge.pipeline.params import PipelineParams
    from ganforge.training.config import TrainConfig

    monkeypatch.setitem(MODELS, "dcgan-copy", MODELS["dcgan"])
    spec = ModelSpec(model="dcgan-copy", image_size=16, channels=1)
    assert build_generator(spec) is not None
    assert TrainConfig(model="dcgan-copy", dataset="d", output="o", steps=1).model == "dcgan-copy"
    assert PipelineParams(model="dcgan-copy").model == "dcgan-copy"
