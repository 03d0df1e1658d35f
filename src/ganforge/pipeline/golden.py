"""Regenerate the golden compiled pipeline on purpose: ``python -m ganforge.pipeline.golden`` (``make golden``).

The golden file is the pipeline compiled for the default ``ClusterConfig`` with the default image; the
test ``tests/unit/test_pipeline_compile.py`` compiles again and compares, so any change to the DAG,
its parameters or its cluster wiring shows up as a reviewed diff of this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ganforge.pipeline.params import DEFAULT_IMAGE, ClusterConfig
from ganforge.pipeline.runner import ROOT, compile_pipeline

GOLDEN = ROOT / "tests" / "golden" / "gan_pipeline.yaml"


def golden_cluster() -> ClusterConfig:
    """The cluster the golden file is compiled for (independent of ``$GANFORGE_IMAGE``)."""
    return ClusterConfig(image=DEFAULT_IMAGE)


def write(path: Path = GOLDEN) -> Path:
    """Compile the golden pipeline to ``path``."""
    compile_pipeline(path, golden_cluster())
    return path


if __name__ == "__main__":  # pragma: no cover
    print(f"wrote {write(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)}")
