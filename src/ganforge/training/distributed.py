"""Devices and data parallelism: one process per GPU (or CPU rank), launched through ``torchrun``.

Every rank builds identical networks from the same seed, draws the same global batch indices and
latents, and keeps only its slice (``rank::world`` would reorder images, so contiguous slices are
used). Gradients are averaged with one all-reduce per update and batch-norm statistics are computed
over the global batch, so N ranks train the same weights as one process with the same global batch.

Why not wrap the networks in ``DistributedDataParallel``: a GAN update calls D several times before
one backward (real, fake, gradient-penalty interpolates, with a double backward) and runs D's
backward in the generator step where D's gradients are thrown away; DDP's reducer assumes one
forward per backward and does not support double backward. Averaging gradients explicitly after
each backward (as StyleGAN2-ADA does) is exact for all of these. ``torch.nn.SyncBatchNorm`` is used
on CUDA; it refuses CPU tensors, so gloo runs use ``GlobalBatchNorm`` below (same maths).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ganforge.devices import select_device
from ganforge.errors import GanforgeError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs.

    Attributes:
        device: the torch device for networks and batches.
        rank: this process's index in the job (0 when not distributed).
        world: number of processes (1 when not distributed).
        local_rank: index on this machine (picks the GPU).
    """

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when gradients and statistics must be exchanged."""
        return self.world > 1


def setup(requested_device: str, threads: int | None = None) -> Runtime:
    """Join the torchrun job if there is one, pick the device and share CPU threads between ranks.

    Under torchrun (``WORLD_SIZE`` > 1) the process group uses NCCL on CUDA and gloo on CPU.
    ``threads`` (``--threads``) fixes the CPU threads of this process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = select_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    elif device.type == "cpu" and local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        # ranks on one machine share its cores; oversubscribing them makes every rank slower.
        # One process keeps torch's default (the physical cores, or OMP_NUM_THREADS).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device=device, rank=rank, world=world, local_rank=local_rank)


def teardown(rt: Runtime) -> None:
    """Leave the process group (no-op when not distributed)."""
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too (each rank's statistics
    depend on every rank's activations)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        g = grad.clone()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the global batch of all ranks (CPU/gloo).

    Two differentiable all-reduces (sum, then centred sum of squares) give the exact global mean
    and biased variance; their backward sums gradients across ranks like ``SyncBatchNorm``.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            assert self.num_batches_tracked is not None and self.running_mean is not None  # kept when tracked
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked += 1
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * n / max(n - 1, 1), alpha=f)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(module: nn.Module, rt: Runtime) -> nn.Module:
    """Replace batch norms so that statistics span all ranks (no-op for one process)."""
    if not rt.distributed:
        return module
    if rt.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return replace_batch_norm(module, GlobalBatchNorm, keep=(GlobalBatchNorm,))


def replace_batch_norm(module: nn.Module, make: type, keep: tuple[type, ...] = ()) -> nn.Module:
    """Swap every batch norm of ``module`` not of a ``keep`` type for ``make``'s, in place, with its
    parameters and running statistics (state-dict keys stay the same)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, keep):
            new = make(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(next(child.buffers(), torch.empty(0)).device))
        else:
            replace_batch_norm(child, make, keep)
    return module


def average_gradients(params: list[nn.Parameter], rt: Runtime) -> None:
    """Average ``.grad`` of ``params`` over ranks with one flat all-reduce (no-op for one process)."""
    if not rt.distributed:
        return
    grads = []
    for p in params:
        if p.grad is None:  # every rank must contribute the same layout
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= rt.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_values(values: dict[str, float], rt: Runtime) -> dict[str, float]:
    """Mean of per-rank numbers (losses, D outputs, flags) so that every rank decides alike."""
    if not rt.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / rt.world for k, v in zip(keys, t.tolist())}


def launch(config, nproc: int, context=None) -> dict:
    """Run ``train(config)`` on ``nproc`` local processes through torchrun; return rank 0's result.

    Each rank runs ``ganforge.training.rank`` (named, not imported: the ranks import the loop, and the
    loop imports this module); the result comes back as the ``TrainResult`` fields.

    The resolved config (and the ``RunContext``, when nested in a pipeline run) travels as JSON in the
    output directory; rank 0 writes the result (or the user error) next to it. SIGTERM/SIGINT are
    forwarded so that ranks checkpoint before exiting.

    Raises:
        GanforgeError: a rank reported a user error, or the job failed.
    """
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path, res_path, err_path = out / ".launch-config.json", out / ".launch-result.json", out / ".launch-error"
    for p in (res_path, err_path):
        p.unlink(missing_ok=True)
    context = {"parent_run_id": context.parent_run_id, "pipeline_run_id": context.pipeline_run_id} if context else {}
    cfg_path.write_text(json.dumps({"config": config.model_dump(mode="json"), "context": context}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "ganforge.training.rank", str(cfg_path)]  # fmt: skip
    env = dict(os.environ)
    if not torch.cuda.is_available():  # CPU ranks share the cores (torchrun would default to 1 each)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(cmd, env=env)
    forward = lambda signum, _frame: proc.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if err_path.is_file():
        raise GanforgeError(err_path.read_text().strip())
    if not res_path.is_file():
        raise GanforgeError(f"distributed training failed (torchrun exit {rc}); see the rank logs above")
    return json.loads(res_path.read_text())
