"""``--device``: which torch device a command runs on; the one place that reads the flag's values.

Training (each rank's GPU), sampling, evaluation, the audit and ``ganforge latent`` resolve it here.
"""

from __future__ import annotations

import torch

from ganforge.errors import GanforgeError


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """Resolve ``--device``: ``auto`` picks CUDA (this rank's GPU) when present, else CPU.

    Raises:
        GanforgeError: CUDA requested but not available.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GanforgeError(f"--device {requested}: no CUDA device is visible; use --device cpu or auto")
        device = torch.device("cuda", local_rank) if requested == "cuda" else torch.device(requested)
        if device.index >= (n := torch.cuda.device_count()):
            raise GanforgeError(f"--device {requested}: only {n} CUDA device(s) are visible; use cuda:0 to "
                                f"cuda:{n - 1}, or auto")
        return device
    if requested != "cpu":
        raise GanforgeError(f"--device {requested}: use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def pick_device(device: str) -> str:
    """``--device`` resolved as ``select_device`` does, as text (what evaluate and audit pass on).

    Raises:
        GanforgeError: an unknown device, or CUDA asked for where there is none.
    """
    return str(select_device(device))
