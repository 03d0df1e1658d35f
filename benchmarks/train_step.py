"""DCGAN 64x64 (batch 64) training throughput: ganforge's loop vs the PyTorch DCGAN example's loop.

Prints, for one run on the same data (scikit-learn's digits ingested at 64 px, RGB):
  - images/s of a plain reference loop written the way pytorch/examples' dcgan/main.py does it
    (DataLoader over a map-style dataset, fp32, BCELoss on a sigmoid D, no tricks);
  - images/s of ``ganforge.training.train`` with tracking off, and the ratio (target >= 0.95 on CPU);
  - images/s of ``ganforge.training.train`` logging to MLflow (sqlite store, metrics every step and a
    sample grid every 4 steps), and the overhead this costs (target < 3%).

The variants run in short alternating rounds so that load from other processes hits them alike;
ratios are taken within each round (paired) and their median over rounds is reported, together with
the median throughput after warm-up steps, both per wall-clock second
and per CPU second of this process (``time.process_time``: all its threads, including MLflow's
background logging, but not other processes competing for shared cores). The reference reads its
in-memory data through a DataLoader with ``num_workers=0``: on two shared cores, worker processes
would only compete with the training threads. Usage:

    python benchmarks/train_step.py [--steps 30] [--warmup 5] [--rounds 3] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

NZ, NGF, NDF, BATCH = 100, 64, 64, 64


class RefGenerator(nn.Module):
    """The example's generator (nz=100, ngf=64, 64x64 output)."""

    def __init__(self, nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
            nn.ConvTranspose2d(NGF, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        return self.main(z)


class RefDiscriminator(nn.Module):
    """The example's discriminator (ndf=64, sigmoid output)."""

    def __init__(self, nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


class UInt8Images(torch.utils.data.Dataset):
    """Map-style dataset: uint8 (C, H, W) -> float in [-1, 1] (ToTensor + Normalize(0.5, 0.5))."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i].float().div(255).sub(0.5).div(0.5), 0


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rates(images: int, start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """(images per wall second, images per CPU second)."""
    return images / (end[0] - start[0]), images / (end[1] - start[1])


def reference(images: torch.Tensor, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) images/s of the example's loop after ``warmup`` steps."""
    torch.manual_seed(0)
    netG, netD = RefGenerator(images.shape[1]).to(device), RefDiscriminator(images.shape[1]).to(device)
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(UInt8Images(images), batch_size=BATCH, shuffle=True, drop_last=True)
    done, t0 = 0, None
    while done < steps + warmup:
        for data, _ in loader:
            if done == warmup:
                _sync(device)
                t0 = _clocks()
            netD.zero_grad()
            real = data.to(device)
            b = real.size(0)
            label = torch.full((b,), 1.0, dtype=real.dtype, device=device)
            output = netD(real)
            errD_real = criterion(output, label)
            errD_real.backward()
            output.mean().item()  # D(x), printed by the example
            noise = torch.randn(b, NZ, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(0.0)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            output.mean().item()
            optD.step()
            netG.zero_grad()
            label.fill_(1.0)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            output.mean().item()
            optG.step()
            (errD_real + errD_fake).item(), errG.item()  # the example prints both every step
            done += 1
            if done == steps + warmup:
                break
    _sync(device)
    return _rates(steps * BATCH, t0, _clocks())


class TimingTracker:
    """Wraps a tracker: timestamps every metrics call (the loop logs after each ``log_every`` steps)
    and adds up the wall time the training thread spends inside tracker calls (``blocked``)."""

    def __init__(self, inner):
        self.inner, self.run_id, self.active, self.marks, self.blocked = inner, inner.run_id, inner.active, [], 0.0

    def log_metrics(self, metrics, step):
        self.marks.append((step, _clocks()))
        t0 = time.perf_counter()
        self.inner.log_metrics(metrics, step)
        self.blocked += time.perf_counter() - t0

    def log_image(self, image, key, step):
        t0 = time.perf_counter()
        self.inner.log_image(image, key, step)
        self.blocked += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _time_rendering():
    """Wrap the loop's sample-grid rendering (done only when a tracker records) to time it."""
    from ganforge.training import loop

    spent = {"s": 0.0}
    original = loop.sample

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["s"] += time.perf_counter() - t0

    loop.sample = timed
    return spent


def ganforge_run(data, steps: int, warmup: int, device: str, track: bool, workdir: str, log_every: int = 1,
                 sample_every: int = 4) -> tuple[float, float]:
    """(wall, CPU) images/s of ganforge's loop between the log at ``warmup`` and the last one."""
    from ganforge.tracking import open_tracker
    from ganforge.training import TrainConfig, train

    # default: metrics every step in both variants (the worst case for tracking; gradient norms cost alike)
    cfg = TrainConfig(
        dataset=data.uri, model="dcgan", steps=warmup + steps, batch_size=BATCH, latent_dim=NZ, width=NGF,
        device=device, output=os.path.join(workdir, "run"), overwrite=True, track=track, log_every=log_every,
        sample_every=sample_every, checkpoint_every=10**9, experiment="benchmark",
    )  # fmt: skip
    inner = open_tracker(track, cfg.experiment, None, cfg.model_dump(mode="json"), {})
    timing = TimingTracker(inner)
    rendering = _time_rendering()
    train(cfg, data=data, tracker=timing)
    (s0, t0), (s1, t1) = next(m for m in timing.marks if m[0] == warmup), timing.marks[-1]
    if track:  # the training thread's own logging cost, immune to other processes' load
        loop_s = timing.marks[-1][1][0] - timing.marks[0][1][0]
        BLOCKED.append((timing.blocked / max(loop_s, 1e-9), rendering["s"] / max(loop_s, 1e-9)))
    return _rates((s1 - s0) * BATCH, t0, t1)


BLOCKED: list[tuple[float, float]] = []  # per tracked run: shares of loop time in tracker calls, in rendering


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--log-every", type=int, default=1, help="metrics cadence (1: worst case; 10: train's default)")
    p.add_argument("--sample-every", type=int, default=4, help="grid cadence (4: worst case; 500: train's default)")
    args = p.parse_args()
    if args.warmup % args.log_every or args.steps % args.log_every:
        p.error("--warmup and --steps must be multiples of --log-every (timing marks sit on log calls)")
    from ganforge.data import load
    from ganforge.data.ingest import ingest
    from ganforge.devices import select_device

    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as work:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
        os.environ.setdefault("GANFORGE_CACHE_DIR", os.path.join(work, "cache"))
        ingest("digits", output=os.path.join(work, "digits64"), image_size=64, channels=3, val_fraction=0.0)
        data = load(os.path.join(work, "digits64"))
        print(f"data: {len(data)} digits at 64x64x3; device {device}; torch threads {torch.get_num_threads()}; "
              f"{args.rounds} rounds x {args.steps} steps (+{args.warmup} warm-up), batch {BATCH}", flush=True)  # fmt: skip
        figures: dict[str, list[tuple[float, float]]] = {"reference": [], "ganforge": [], "ganforge+mlflow": []}
        for r in range(args.rounds):
            figures["reference"].append(reference(data.images, args.steps, args.warmup, device))
            cadence = dict(log_every=args.log_every, sample_every=args.sample_every)
            figures["ganforge"].append(ganforge_run(data, args.steps, args.warmup, str(device), False, work, **cadence))
            figures["ganforge+mlflow"].append(ganforge_run(data, args.steps, args.warmup, str(device), True, work, **cadence))
            print(f"round {r + 1} (wall/cpu images/s): "
                  + ", ".join(f"{k} {v[-1][0]:.1f}/{v[-1][1]:.1f}" for k, v in figures.items()), flush=True)  # fmt: skip
    _report(figures)
    return 0


def _report(figures: dict[str, list[tuple[float, float]]]) -> None:
    """Median throughputs, and medians (min..max) of the per-round paired ratios."""
    for i, clock in enumerate(("wall-clock", "CPU-time")):
        med = {k: statistics.median(x[i] for x in v) for k, v in figures.items()}
        ref, gf, gfm = ([x[i] for x in figures[k]] for k in ("reference", "ganforge", "ganforge+mlflow"))
        ratio = [g / r for g, r in zip(gf, ref)]
        overhead = [100 * (1 - m / g) for m, g in zip(gfm, gf)]
        print(f"[{clock}] reference loop (PyTorch DCGAN example): {med['reference']:8.1f} images/s (median)")
        print(f"[{clock}] ganforge loop, tracking off:           {med['ganforge']:8.1f} images/s (median)")
        print(f"[{clock}] ganforge loop, MLflow tracking on:     {med['ganforge+mlflow']:8.1f} images/s (median)")
        print(f"[{clock}] ratio ganforge / reference, per round: median {statistics.median(ratio):.3f} "
              f"(min {min(ratio):.3f}, max {max(ratio):.3f}; target >= 0.95)")  # fmt: skip
        print(f"[{clock}] MLflow logging overhead, per round: median {statistics.median(overhead):.1f}% "
              f"(min {min(overhead):.1f}%, max {max(overhead):.1f}%; target < 3%)")  # fmt: skip
    calls, render = [b[0] for b in BLOCKED], [b[1] for b in BLOCKED]
    print(f"training thread inside MLflow tracker calls (metrics every step, a grid every 4 steps): median "
          f"{100 * statistics.median(calls):.2f}% of loop time (max {100 * max(calls):.2f}%)")
    print(f"rendering the 64-latent sample grid every 4 steps: median {100 * statistics.median(render):.2f}% of loop "
          f"time (max {100 * max(render):.2f}%); at the default --sample-every 500 that is "
          f"{100 * statistics.median(render) * 4 / 500:.3f}%")


if __name__ == "__main__":
    sys.exit(main())
