"""The golden compiled pipeline, ``gan_pipeline.yaml`` beside this file; ``python -m tests.golden`` (``make
golden``) regenerates it after a deliberate change.

It is the pipeline compiled for the default ``ClusterConfig`` with the default image;
``tests/unit/test_pipeline_compile.py`` compiles again and compares, so any change to the DAG, its
parameters or its cluster wiring shows up as a reviewed diff of this file.
"""

from __future__ import annotations

from pathlib import Path

from ganforge.pipeline.params import DEFAULT_IMAGE, ClusterConfig
from ganforge.pipeline.runner import compile_pipeline
from pipelines.gan_pipeline import build

GOLDEN = Path(__file__).resolve().with_name("gan_pipeline.yaml")


def golden_cluster() -> ClusterConfig:
    """The cluster the golden file is compiled for (independent of ``$GANFORGE_IMAGE``)."""
    return ClusterConfig(image=DEFAULT_IMAGE)


def write(path: Path = GOLDEN) -> Path:
    """Compile the golden pipeline to ``path``."""
    compile_pipeline(path, golden_cluster(), build=build)
    return path
