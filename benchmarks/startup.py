"""How long a ganforge process takes to start: CLI commands' help and the pipeline steps' import.

Each case runs in a fresh ``python`` process (the best of ``--repeat`` runs, wall seconds), with ``src`` of
``--tree`` first on the path (default: this checkout), so two trees compare on the same machine and load:

    python benchmarks/startup.py                       # this checkout
    git worktree add /tmp/old REV && python benchmarks/startup.py --tree /tmp/old

A pipeline task pays the steps' import before its work; every CLI call pays its command's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "ganforge --help": ["-m", "ganforge", "--help"],
    "ganforge promote --help": ["-m", "ganforge", "promote", "--help"],
    "ganforge ingest --help": ["-m", "ganforge", "ingest", "--help"],
    "ganforge pipeline compile --help": ["-m", "ganforge", "pipeline", "compile", "--help"],
    "ganforge train --help": ["-m", "ganforge", "train", "--help"],
    "import ganforge.pipeline.steps": ["-c", "import ganforge.pipeline.steps"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.tree / "src"), "OMP_NUM_THREADS": "1"}
    print(f"| case ({args.tree}) | best of {args.repeat}, s |")
    print("|---|---|")
    for name, argv in CASES.items():
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
            best = min(best, time.perf_counter() - t0)
        print(f"| `{name}` | {best:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
