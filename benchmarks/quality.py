"""Quality protocol: presets trained on real Fashion-MNIST under a fixed compute budget, FID against the test split.

Anyone can rerun it (Debian's ``dataset-fashion-mnist`` package holds the real files; the inception-tf
weights ship with ganforge). Two phases, so that training time is measured on its own:

1. **Train.** Each preset trains for ``--minutes`` of CPU time (one thread: the compute a quiet core gives in
   that many minutes, so other jobs on the machine change the wall time, not the result), as ``--evals`` slices; each slice ends in a
   checkpoint and resumes exactly from the last (the step count of the next slice is set from the
   measured speed so that the slices end at equal shares of the budget). With ``--jobs 2`` two presets
   train side by side, one thread each (on an idle 2-core machine: one core per preset, and the budget in
   wall minutes).
2. **Measure.** For every slice's checkpoint, FID of ``--n-curve`` generated images against ``--n-curve``
   test images (EMA and raw weights side by side), and for the last checkpoint FID at ``--n`` (default
   10,000: the protocol of Lucic et al. 2018, generated vs test). Beside each, the real-vs-real floor:
   ``n`` training images against ``n`` test images at the same n, because FID is biased upwards at small
   n (FID_1k > FID_10k for the same model). "Floor-corrected" is FID minus that floor. Features of the
   test split and of the floor's training sample are extracted once and shared.

Outputs in ``--workdir``: ``quality.json`` (every row), ``quality.md`` (the README table),
``fid_curve.png`` (FID against training minutes) and ``samples-<preset>.png`` (EMA and raw grids).
Rows are also printed as JSON lines as they are measured, so a run cut short still reports.

Usage: python benchmarks/quality.py [--minutes 30] [--evals 5] [--n 10000] [--n-curve 1000]
       [--presets recommended-28,fashion-dcgan] [--jobs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

FASHION = "/usr/share/datasets/fashion-mnist"
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# Lucic et al. (2018), "Are GANs Created Equal?", Table 2: best FID_10k over a wide hyper-parameter search
# (many GPU runs), Fashion-MNIST, generated vs test features.
LUCIC_FASHION = {"NS GAN": 26.5, "MM GAN": 29.6, "LSGAN": 30.7, "WGAN": 21.5, "WGAN GP": 24.5, "DRAGAN": 27.6,
                 "BEGAN": 22.9, "VAE": 43.6}
SEED = 1  # latents of the generated samples (one seed for every preset and checkpoint)


def fashion_dataset(work: str) -> str:
    """Ingest the real Fashion-MNIST files (torchvision layout) into a ganforge dataset (once)."""
    from ganforge.data.ingest import ingest

    out = os.path.join(work, "fashion")
    if os.path.exists(os.path.join(out, "manifest.json")):
        return out
    if not os.path.isdir(FASHION):
        raise SystemExit(f"{FASHION} not found: apt-get install dataset-fashion-mnist")
    raw = os.path.join(work, "tv", "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for name in FILES:
        if not os.path.exists(os.path.join(raw, name)):
            with gzip.open(os.path.join(FASHION, name + ".gz")) as src, open(os.path.join(raw, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
    return ingest("fashion-mnist", out, input=os.path.join(work, "tv")).uri


# ---------------------------------------------------------------- phase 1: train under a time budget


def train_preset(preset: str, dataset: str, work: str, minutes: float, evals: int, threads: int) -> list[dict]:
    """Train ``preset`` for ``minutes`` of wall time in ``evals`` slices; one checkpoint per slice."""
    import torch

    from ganforge.data import load
    from ganforge.training import resolve_config, train

    torch.set_num_threads(threads)
    out = os.path.join(work, f"run-{preset}")
    shutil.rmtree(out, ignore_errors=True)
    data = load(dataset, "train")
    base = {"dataset": dataset, "preset": preset, "output": out, "track": False, "threads": threads,
            "checkpoint_every": 10**9, "sample_every": 10**9, "log_every": 100, "keep_checkpoints": 10**6}
    probe = resolve_config({**base, "steps": 1})
    steps_per_epoch = len(data.images) // probe.batch_size
    # The budget is this process's CPU time (one thread): what a quiet core gives in that many wall minutes,
    # whatever else shares the machine while it runs. Wall time is reported beside it.
    clock = time.process_time
    budget, spent, step, slices, wall0 = minutes * 60.0, 0.0, 0, [], time.perf_counter()
    result = None

    def advance(todo: int) -> float:
        """Train ``todo`` more steps (resuming); returns the CPU seconds per step they took."""
        nonlocal spent, step, result
        t = clock()
        result = train(resolve_config({**base, "steps": step + todo, "resume": "latest" if step else None}), data=data)
        spent += clock() - t
        step = result.step
        if result.interrupted:  # SIGTERM/SIGINT: train() checkpointed and returned; stop, don't start a slice
            raise SystemExit(f"{preset}: stopped by signal at step {step}")
        return (clock() - t) / todo

    sec_per_step = advance(20)  # calibration; the first slice continues from it
    for k in range(1, evals + 1):
        target = budget * k / evals
        if k > 1 or spent < target:
            sec_per_step = advance(max(1, int((target - spent) / sec_per_step)))
        row = {"preset": preset, "step": step, "epoch": round(step * (1 if probe.n_critic is None else probe.n_critic)
                                                          / steps_per_epoch, 2),
               "train_minutes": round(spent / 60, 2), "wall_minutes": round((time.perf_counter() - wall0) / 60, 2),
               "checkpoint": result.checkpoint,
               "images_per_second": round(step * probe.batch_size / spent, 1), "ema": probe.ema_decay is not None}
        print(json.dumps(row), flush=True)
        slices.append(row)
    return slices


# ---------------------------------------------------------------- phase 2: features and FID

_EXTRACTOR = None


def _init_worker(threads: int) -> None:
    global _EXTRACTOR
    import torch

    from ganforge.metrics.features import get_extractor

    torch.set_num_threads(threads)
    _EXTRACTOR = get_extractor("inception-tf")


def _features(task: tuple) -> str:
    """One unit of extraction work; saves (N, 2048) features to ``task[-1]`` and returns that path."""
    import numpy as np
    import torch

    kind, *args, path = task
    if os.path.exists(path):
        return path
    if kind == "real":
        from ganforge.data import load

        dataset, split, idx = args
        images = load(dataset, split).images[torch.as_tensor(idx)]
    else:
        from ganforge.inference import generate

        checkpoint, weights, n = args
        images = generate(checkpoint, n=n, seed=SEED, weights=weights)
        images = ((images + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    feats = _EXTRACTOR.extract(images, 50).numpy()
    np.save(path + ".tmp.npy", feats)
    os.replace(path + ".tmp.npy", path)
    return path


def _chunks(lo: int, hi: int, size: int):
    return [(s, min(s + size, hi)) for s in range(lo, hi, size)]


def measure(dataset: str, work: str, slices: list[dict], n: int, n_curve: int, jobs: int, threads: int,
            n_for: set[str]) -> dict:
    """FID of every slice (n_curve) and of the last checkpoint of the presets in ``n_for`` (n), with floors."""
    import numpy as np
    import torch

    from ganforge.data import read_manifest
    from ganforge.metrics.fid import fid_from_features

    feats = Path(work) / "features"
    feats.mkdir(exist_ok=True)
    counts = read_manifest(dataset)["counts"]["splits"]
    n = min(n, counts["test"])
    n_curve = min(n_curve, n)
    # Real images: a seeded sample of n training images (the floor) and the first n test images; a curve point
    # uses the first n_curve of each, so no image is extracted twice.
    train_idx = torch.randperm(counts["train"], generator=torch.Generator().manual_seed(0))[:n].tolist()
    tasks, real_parts = [], {"train": [], "test": []}
    for split, idx in (("test", list(range(n))), ("train", train_idx)):
        for a, b in _chunks(0, n, 1000):  # chunks keep both workers busy and make the cache resumable
            path = str(feats / f"real-{split}-{n}-{a}.npy")
            tasks.append(("real", dataset, split, idx[a:b], path))
            real_parts[split].append(path)
    last = {r["preset"]: r for r in slices}
    gen = {}
    for r in slices:
        for weights in (["ema", "raw"] if r["ema"] else ["raw"]):
            # The last checkpoint is measured at n; its curve point is the first n_curve of those images
            # (the same seed draws the same first latents).
            size = n if r is last[r["preset"]] and r["preset"] in n_for else n_curve
            path = str(feats / f"gen-{r['preset']}-{r['step']}-{weights}-{size}.npy")
            tasks.append(("gen", r["checkpoint"], weights, size, path))
            gen[(r["preset"], r["step"], weights)] = path
    t = time.perf_counter()
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(threads,)) as pool:
        list(pool.map(_features, tasks))
    extract_s = time.perf_counter() - t

    def load(paths):
        return torch.from_numpy(np.concatenate([np.load(p) for p in paths]))

    real_test, real_train = load(real_parts["test"]), load(real_parts["train"])
    floor = {m: fid_from_features(real_train[:m], real_test[:m]) for m in sorted({n, n_curve})}
    rows = []
    for r in slices:
        for weights in (["ema", "raw"] if r["ema"] else ["raw"]):
            fake = load([gen[(r["preset"], r["step"], weights)]])
            for m in sorted({n_curve, len(fake)}):
                value = fid_from_features(real_test[:m], fake[:m])
                rows.append({**{k: v for k, v in r.items() if k != "checkpoint"}, "weights": weights, "n": m,
                             "fid": round(value, 2), "floor": round(floor[m], 2),
                             "fid_minus_floor": round(value - floor[m], 2)})
                print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "floor": {str(k): round(v, 2) for k, v in floor.items()}, "extract_seconds": round(extract_s)}


# ---------------------------------------------------------------- report


def report(work: str, result: dict, args) -> None:
    """quality.md (table), fid_curve.png and samples-<preset>.png in ``work``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from torchvision.utils import make_grid, save_image

    from ganforge.inference import generate

    rows, floor = result["rows"], result["floor"]
    lines = [f"Fashion-MNIST, inception-tf FID against the test split; {args.minutes:g} training minutes (CPU time) per preset "
             f"({args.jobs} preset(s) at a time, {args.threads} thread(s) each) on {os.cpu_count()} CPU cores; "
             f"load average at the end {os.getloadavg()[0]:.1f}.", "",
             "| preset | weights | epoch | step | training minutes | n | FID | real-vs-real floor | FID - floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['weights']} | {r['epoch']} | {r['step']} | {r['train_minutes']} | {r['n']} "
                     f"| {r['fid']} | {r['floor']} | {r['fid_minus_floor']} |")
    lines += ["", "Lucic et al. (2018), best FID_10k on Fashion-MNIST over a large GPU search: "
              + ", ".join(f"{k} {v}" for k, v in LUCIC_FASHION.items()) + "."]
    Path(work, "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for preset in dict.fromkeys(r["preset"] for r in rows):
        for weights in ("ema", "raw"):
            pts = [(r["train_minutes"], r["fid"]) for r in rows if r["preset"] == preset and r["weights"] == weights
                   and r["n"] == args.n_curve]
            if pts:
                ax.plot(*zip(*pts), marker="o", linestyle="-" if weights == "ema" else "--", label=f"{preset} ({weights})")
    if str(args.n_curve) in floor:
        ax.axhline(floor[str(args.n_curve)], color="grey", linestyle=":", label=f"real vs real (n={args.n_curve})")
    ax.set_xlabel("training minutes (CPU time of one thread, this machine)")
    ax.set_ylabel(f"FID_{args.n_curve} vs test (inception-tf)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(work, "fid_curve.png"))
    for preset in dict.fromkeys(r["preset"] for r in rows):
        ckpt = os.path.join(work, f"run-{preset}")
        grids = []
        for weights in ("ema", "raw"):
            try:
                x = generate(ckpt, n=64, seed=SEED, weights=weights)
            except Exception:  # noqa: BLE001 - a preset without EMA has only raw weights
                continue
            grids.append(make_grid((x + 1) / 2, nrow=8, padding=1, pad_value=1.0))
        save_image(torch.cat(grids, dim=2) if len(grids) > 1 else grids[0], Path(work, f"samples-{preset}.png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/ganforge-quality")
    ap.add_argument("--minutes", type=float, default=30.0, help="training minutes per preset (CPU time of one thread)")
    ap.add_argument("--evals", type=int, default=3, help="checkpoints (curve points) per preset")
    ap.add_argument("--n", type=int, default=10000, help="generated and real images for the final FID (at most 10,000)")
    ap.add_argument("--n-curve", type=int, default=1000, help="generated and real images per curve point")
    ap.add_argument("--presets", default="recommended-28,fashion-dcgan")
    ap.add_argument("--n-for", default=None, help="presets whose last checkpoint is measured at --n (default: all)")
    ap.add_argument("--jobs", type=int, default=2, help="presets trained (and feature chunks extracted) at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--skip-train", action="store_true", help="measure the checkpoints of an earlier run")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: train one preset in this process
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    os.environ.setdefault("GANFORGE_CACHE_DIR", os.path.join(args.workdir, "cache"))
    os.environ.setdefault("GANFORGE_PROGRESS", "0")
    dataset = fashion_dataset(args.workdir)
    if args.one:
        rows = train_preset(args.one, dataset, args.workdir, args.minutes, args.evals, args.threads)
        Path(args.workdir, f"slices-{args.one}.json").write_text(json.dumps(rows))
        return
    presets = args.presets.split(",")
    if not args.skip_train:
        for preset in presets:  # parallel jobs, one process per preset (own threads, own RNG)
            Path(args.workdir, f"slices-{preset}.json").unlink(missing_ok=True)
        pending = list(presets)
        running: list[subprocess.Popen] = []
        while pending or running:
            while pending and len(running) < args.jobs:
                cmd = [sys.executable, __file__, "--one", pending.pop(0), "--workdir", args.workdir,
                       "--minutes", str(args.minutes), "--evals", str(args.evals), "--threads", str(args.threads)]
                running.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}))
            time.sleep(2)
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                if p.returncode:
                    raise SystemExit(f"training failed: {' '.join(p.args)} exited {p.returncode}")
    slices = [r for p in presets for r in json.loads(Path(args.workdir, f"slices-{p}.json").read_text())]
    n_for = set((args.n_for or args.presets).split(","))
    result = measure(dataset, args.workdir, slices, args.n, args.n_curve, args.jobs, args.threads, n_for)
    result |= {"minutes": args.minutes, "jobs": args.jobs, "threads": args.threads, "cpu_cores": os.cpu_count(),
               "lucic_2018_fashion_fid_10k": LUCIC_FASHION}
    Path(args.workdir, "quality.json").write_text(json.dumps(result, indent=2))
    report(args.workdir, result, args)
    if math.isfinite(result["rows"][-1]["fid"]):
        print(f"\nfiles: {args.workdir}/quality.md, fid_curve.png, samples-*.png")


if __name__ == "__main__":
    main()
