"""What a seed preset's full run costs: seconds per training step on this machine, times the seed's steps.

For each seed preset (or those named), builds its networks and training step exactly as ``ganforge train``
would (its update scheme, batch, precision of the device), on scikit-learn's digits ingested at the preset's
size (offline; the step's cost does not depend on the pixels), times ``--steps`` steps after ``--warmup``,
and prints s/step and the projected length of the seed's run: ``steps`` when the preset fixes them, else
``epochs`` x the batches per epoch of the seed's own dataset (the image counts below, from each dataset's
publication). Run it on a GPU machine to price the 128 px presets; on a CPU it prices them too, slowly.

    python benchmarks/seed_step_cost.py [--device cuda] [--steps 5] [PRESET ...]

Prints a Markdown table and writes ``--json`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

# training images of each seed's dataset (what one epoch passes over)
SEED_IMAGES = {
    "seed000-galaxy10-cgan": 17_736, "seed000-galaxy10-dcgan": 17_736,  # Galaxy10 DECals
    "seed001-gan": 121_399,  # Quick, Draw! camel.npy
    "seed001-wgan": 5_000,  # CIFAR-10 horses, training batches
    "seed001-wgan-gp": 202_599, "seed001-ae": 60_000, "seed001-vae": 60_000,  # CelebA; MNIST
    "seed002-folder-dcgan-128": 1_000,  # the seed's woodblock prints: its folder's size is not given; per 1,000
    "seed003-mnist-mlp": 60_000, "seed004-kmnist-mlp": 60_000,
}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", help="seed presets to price (default: all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per preset")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ganforge.data import load
    from ganforge.data.ingest import ingest
    from ganforge.training.config import PRESETS, resolve_config
    from ganforge.training.distributed import setup
    from ganforge.training.state import build_trainer
    from ganforge.training.updates import UPDATES

    names = args.presets or [n for n, p in sorted(PRESETS.items()) if p.from_seed]
    rt = setup(args.device, args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            preset = PRESETS[name]
            side = preset.image_size or 28
            channels = 1 if side <= 28 else 3
            data_dir = Path(tmp) / f"digits-{side}-{channels}"
            if not data_dir.exists():
                ingest("digits", output=str(data_dir), image_size=side, channels=channels, val_fraction=0.0)
            config = resolve_config({"dataset": str(data_dir), "preset": name, "output": str(Path(tmp) / name),
                                     "track": False, "device": args.device})
            data = load(str(data_dir), split="train")
            batch = min(config.batch_size, len(data.images))
            t = build_trainer(config.model_copy(update={"batch_size": batch}), rt, data)
            step = UPDATES[config.update] if t.E is None else None
            if step is None:
                from ganforge.training.loop import _vae_step as step
            for _ in range(args.warmup):
                step(t, False)
                t.step += 1
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(t, False)
                t.step += 1
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - t0) / args.steps * config.batch_size / batch
            per_epoch = SEED_IMAGES[name] // (config.batch_size * t.n_critic)
            total = config.steps or config.epochs * per_epoch
            rows.append({"preset": name, "update": config.update if t.E is None else f"{config.model} step", "batch": config.batch_size, "n_critic": t.n_critic,
                         "s_per_step": per_step, "steps": total, "hours": per_step * total / 3600,
                         "device": str(rt.device), "timed_batch": batch})
            print(f"{name}: {per_step:.3f} s/step x {total:,} steps = {per_step * total / 3600:.1f} h", file=sys.stderr)
    print("| preset | update | batch x n_critic | s/step | steps | full run |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['preset']}` | {r['update']} | {r['batch']} x {r['n_critic']} | {r['s_per_step']:.3f} | "
              f"{r['steps']:,} | {r['hours']:.1f} h |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
