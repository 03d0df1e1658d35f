"""Pipeline figures: compile time, and the overhead of a step run as a kfp.local component.

The step is ``ingest`` of digits into an existing dataset (the library call finds it up to date), so the
figure is the cost of the machinery around a step: the same ``ganforge.pipeline.steps.ingest_step`` is
timed (1) called in this process, (2) in a fresh Python process (the import cost every task pays), and
(3) as the KFP component through ``kfp.local``'s SubprocessRunner (executor input/output files, the
component source written to disk, artifact metadata). ``make demo``'s wall time is measured with
``time make demo``. Prints medians of ``--repeat`` runs; never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from ganforge.pipeline.params import ClusterConfig
    from ganforge.pipeline.runner import compile_pipeline
    from ganforge.pipeline.steps import ingest_step
    from pipelines.gan_pipeline import build

    tmp = Path(tempfile.mkdtemp(prefix="ganforge-bench-pipeline-"))
    t0 = time.perf_counter()
    compile_pipeline(tmp / "first.yaml", ClusterConfig(), build=build)  # includes importing kfp and the components
    first = time.perf_counter() - t0
    compile_s = timed(lambda: compile_pipeline(tmp / "gp.yaml", ClusterConfig(), build=build), args.repeat)
    print(f"compile: first {first:.2f}s (imports included), then median {compile_s:.3f}s")

    dataset = str(tmp / "digits")
    ingest_step("digits", dataset, "", 32, 0)  # the dataset exists from here on: each call reuses it
    direct = timed(lambda: ingest_step("digits", dataset, "", 32, 0), args.repeat)
    code = f"from ganforge.pipeline.steps import ingest_step; ingest_step('digits', {dataset!r}, '', 32, 0)"
    fresh = timed(lambda: subprocess.run([sys.executable, "-c", code], check=True), args.repeat)

    import kfp.local

    import components

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp / "kfp"))
    devnull = open("/dev/null", "w")

    def as_component():
        import contextlib

        with warnings.catch_warnings(), contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            components.ingest(source="digits", dataset=dataset, image_size=32, input="", limit=0)

    local = timed(as_component, args.repeat)
    print(f"ingest step (dataset up to date), median of {args.repeat}:")
    print(f"  library call in this process   {direct:7.3f}s")
    print(f"  library call in a new process  {fresh:7.3f}s  (+{fresh - direct:.2f}s Python start and imports)")
    print(f"  kfp.local component            {local:7.3f}s  (+{local - fresh:.2f}s over a new process, "
          f"+{local - direct:.2f}s over the call)")


if __name__ == "__main__":
    main()
