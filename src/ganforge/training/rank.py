"""Entry point of one torchrun rank (``python -m ganforge.training.rank CONFIG.json``), started by
``ganforge.training.distributed.launch``: train, then hand rank 0's result or user error back beside the config."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.tracking import RunContext
from ganforge.training.config import TrainConfig
from ganforge.training.loop import run_training


def main(cfg_path: str) -> int:
    """Train with the config at ``cfg_path``; rank 0 writes ``.launch-result.json`` or ``.launch-error``."""
    launched = json.loads(Path(cfg_path).read_text())
    config = TrainConfig.model_validate(launched["config"])
    out = Path(cfg_path).parent
    try:
        result = run_training(config, context=RunContext(**launched["context"]))
    except GanforgeError as exc:
        if os.environ.get("RANK", "0") == "0":
            (out / ".launch-error").write_text(str(exc))
        return 2
    if os.environ.get("RANK", "0") == "0":
        (out / ".launch-result.json").write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
