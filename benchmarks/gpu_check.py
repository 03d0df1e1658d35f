"""GPU check: ganforge's training speed against the plain PyTorch DCGAN example loop, and quality after a budget.

For the 28 px (Fashion-MNIST, grey) and 64 px (Fashion-MNIST resized, RGB) recommended presets, on one GPU:

1. **Plain loop**: the PyTorch DCGAN example's way of training the *same* networks: a ``DataLoader`` over
   CPU tensors (shuffle, pinned memory, a batch copied to the GPU per step), fp32, NCHW, BCE, D on real then
   fake, then G. Images/s after a warm-up.
2. **ganforge**: ``ganforge.training.train`` with the preset on CUDA: bf16 autocast, channels_last, the
   uint8 dataset resident on the GPU (what ganforge does on CUDA by default). Images/s after a warm-up;
   the ratio to (1) is the speed-up (target >= 1.5x).
3. **Budget**: the preset trains for ``--budget`` seconds; its checkpoint goes to ``--out``. FID_10k against
   the test split is measured here when the inception-tf weights are importable, else later on any
   machine with ``python benchmarks/gpu_check.py --fid-only OUT`` (the weights file, 87 MB, is larger than
   what travels to a lent GPU machine, so the checkpoints come back and FID runs beside the weights).

4. **Precision** (``--precision-check``, its own run): the 28 px preset trained for ``--precision-seconds``
   in each ``--precision`` (fp32, bf16, fp16: the same seed, data and steps), after a 20-step warm-up;
   images/s, the mean ``loss_d``/``loss_g`` of the timed steps' logged values (fp16 and bf16 should stay
   near fp32's) and fp16's skipped steps and final loss scale. On the CPU (``--device cpu``) it is a
   smoke test of the same code.

``benchmarks/gpu_check.sh`` wraps it with the time limits. Usage:
    python benchmarks/gpu_check.py [--budget 120] [--out DIR] [--device cuda] [--presets recommended-28,recommended-64]
    python benchmarks/gpu_check.py --fid-only DIR   # FID_10k of the checkpoints in DIR (CPU is fine)
    python benchmarks/gpu_check.py --precision-check [--precision-seconds 15] [--out DIR] [--device cuda]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FASHION_DIRS = [os.environ.get("FASHION_DIR", ""), ".gpu/fashion-mnist", "/usr/share/datasets/fashion-mnist"]
SIZES = {"recommended-28": (28, 1), "recommended-64": (64, 3)}


def _idx(folder: str, name: str) -> np.ndarray:
    with gzip.open(os.path.join(folder, name + ".gz")) as f:
        magic = struct.unpack(">I", f.read(4))[0]
        dims = struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
        return np.frombuffer(f.read(), np.uint8).reshape(dims)


def fashion(split: str, size: int, channels: int):
    """Fashion-MNIST ``split`` as a ganforge ``ImageData`` at ``size`` px with ``channels`` (no Parquet needed)."""
    from ganforge.data.loader import ImageData

    folder = next((d for d in FASHION_DIRS if d and os.path.isdir(d)), None)
    if folder is None:
        raise SystemExit("Fashion-MNIST .gz files not found: set FASHION_DIR, or copy /usr/share/datasets/"
                         "fashion-mnist (Debian's dataset-fashion-mnist) to .gpu/fashion-mnist and carry it")
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(_idx(folder, f"{prefix}-images-idx3-ubyte").copy()).unsqueeze(1)
    y = torch.from_numpy(_idx(folder, f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    if size != 28:  # antialiased resize, as ganforge ingest does (Lanczos there; bilinear+antialias here)
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return ImageData(images=x, labels=y, class_names=names, fingerprint=f"fashion-{split}-{size}-{channels}",
                     uri=f"fashion-mnist:{split}:{size}px:{channels}ch", split=split, manifest={})


def plain_loop(cfg, data, device: str, seconds: float) -> float:
    """The PyTorch DCGAN example's loop on ganforge's networks; returns images/s after a warm-up."""
    from ganforge.models import MODELS, ModelSpec

    n, c, h, _ = data.images.shape
    spec = ModelSpec(model=cfg.model, image_size=h, channels=c, latent_dim=cfg.latent_dim, width=cfg.width,
                     upsample=cfg.upsample, spectral_norm=cfg.spectral_norm)
    G, D, _ = (m.to(device) if m is not None else None for m in MODELS[cfg.model](spec))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.images), batch_size=cfg.batch_size,
                                         shuffle=True, drop_last=True, pin_memory=True, num_workers=2,
                                         persistent_workers=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    bce = torch.nn.BCEWithLogitsLoss()
    done, t0, warm = 0, None, 20
    start = time.perf_counter()
    while True:
        for step, (x,) in enumerate(loader):
            real = x.to(device, non_blocking=True).float().div_(127.5).sub_(1)
            b = real.shape[0]
            ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
            D.zero_grad()
            loss_d = bce(D(real), ones)
            fake = G(torch.randn(b, cfg.latent_dim, device=device))
            loss_d = loss_d + bce(D(fake.detach()), zeros)
            loss_d.backward()
            opt_d.step()
            G.zero_grad()
            bce(D(fake), ones).backward()
            opt_g.step()
            if t0 is None and done + step + 1 >= warm:
                torch.cuda.synchronize() if device.startswith("cuda") else None
                t0, base = time.perf_counter(), done + step + 1
            if t0 is not None and time.perf_counter() - t0 > seconds:
                torch.cuda.synchronize() if device.startswith("cuda") else None
                return (done + step + 1 - base) * cfg.batch_size / (time.perf_counter() - t0)
            if time.perf_counter() - start > 4 * seconds + 60:
                raise SystemExit("plain loop too slow to measure")
        done += len(loader)


def _flags(preset: str, data, device: str, out: str) -> dict:
    """Training flags shared by the speed test and the budget run: no tracking, no periodic work."""
    return {"dataset": data.uri, "preset": preset, "output": out, "track": False, "device": device,
            "checkpoint_every": 10**9, "sample_every": 10**9, "log_every": 10**6, "overwrite": True}


def ganforge_speed(preset: str, data, device: str, out: str, steps: int) -> float:
    """ganforge's images/s over ``steps`` steps after a 20-step warm-up (same process, same data)."""
    from ganforge.training import resolve_config, train

    base = _flags(preset, data, device, out)
    train(resolve_config({**base, "steps": 20}), data=data)
    r = train(resolve_config({**base, "steps": 20 + steps, "resume": "latest"}), data=data)
    return r.images_per_second


def budget_run(preset: str, data, device: str, out: str, seconds: float) -> dict:
    """Train ``preset`` for about ``seconds`` (step count from a measured speed); returns its record."""
    from ganforge.training import resolve_config, train

    base = _flags(preset, data, device, out)
    t = time.perf_counter()
    r = train(resolve_config({**base, "steps": 50}), data=data)
    per_step = (time.perf_counter() - t) / 50
    r = train(resolve_config({**base, "steps": max(51, int(seconds / per_step)), "resume": "latest"}), data=data)
    cfg = resolve_config({**base, "steps": 1})
    return {"preset": preset, "step": r.step, "epoch": round(r.step * cfg.batch_size / len(data.images), 2),
            "seconds": round(time.perf_counter() - t, 1), "checkpoint": slim_copy(r.checkpoint, out)}


def slim_copy(checkpoint: str, out: str) -> str:
    """The generator part of a checkpoint (weights, meta, step), small enough to come back from a GPU machine."""
    import shutil

    src = Path(checkpoint)
    dst = Path(out).parent / f"final-{Path(out).name}" / src.name
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", "generator.safetensors", "generator_ema.safetensors"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    step = torch.load(src / "state.pt", map_location="cpu", weights_only=True)["step"]
    torch.save({"step": step}, dst / "state.pt")
    return str(dst)


def fid_10k(checkpoint: str, size: int, channels: int, device: str, n: int = 10000) -> float:
    """FID of ``n`` (10,000) generated images against as many test images (inception-tf)."""
    from ganforge.inference import generate
    from ganforge.metrics.features import get_extractor
    from ganforge.metrics.fid import fid_from_features

    ext = get_extractor("inception-tf", device=device)
    real = ext.extract(fashion("test", size, channels).images[:n], 200)
    fake = ((generate(checkpoint, n=n, seed=1, device=device) + 1) * 127.5).round_().clamp_(0, 255)
    return fid_from_features(real, ext.extract(fake.to(torch.uint8).cpu(), 200))


PRECISIONS = ("fp32", "bf16", "fp16")


def precision_run(preset: str, data, device: str, out: str, precision: str, seconds: float) -> dict:
    """``preset`` trained in ``precision`` for about ``seconds`` after a 20-step warm-up: images/s of the timed
    steps, the mean of their logged losses, and fp16's skipped steps and loss scale."""
    from ganforge.training import resolve_config, train
    from ganforge.training.run_files import read_metrics_csv

    base = {**_flags(preset, data, device, out), "precision": precision, "log_every": 10}
    t = time.perf_counter()
    train(resolve_config({**base, "steps": 20}), data=data)
    per_step = (time.perf_counter() - t) / 20  # the first steps carry start-up: an overestimate, so a short run
    steps = 20 + max(50, int(seconds / per_step))
    r = train(resolve_config({**base, "steps": steps, "resume": "latest"}), data=data)
    rows = [row for row in read_metrics_csv(out) if row["step"] > 20]
    mean = {k: round(sum(row[k] for row in rows if k in row) / max(1, sum(k in row for row in rows)), 4)
            for k in ("train/loss_d", "train/loss_g")}  # fmt: skip
    rec = {"preset": preset, "precision": precision, "steps": steps - 20, "images_per_second": round(r.images_per_second),
           "mean_loss_d": mean["train/loss_d"], "mean_loss_g": mean["train/loss_g"]}
    if precision == "fp16":
        rec |= {k.removeprefix("train/"): r.metrics[k] for k in ("train/skipped_steps", "train/loss_scale_g",
                                                                  "train/loss_scale_d") if k in r.metrics}
    return rec


def precision_check(args) -> None:
    """Each --precision on the 28 px preset: speed and losses, printed and written to gpu_precision.json."""
    preset = "recommended-28"
    size, ch = SIZES[preset]
    data = fashion("train", size, ch)
    runs = []
    for precision in args.precisions.split(","):
        rec = precision_run(preset, data, args.device, os.path.join(args.out, f"precision-{precision}"), precision,
                            args.precision_seconds)
        print(json.dumps(rec), flush=True)
        runs.append(rec)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = json.dumps({"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                         "runs": runs}, indent=2)  # fmt: skip
    Path(args.out, "gpu_precision.json").write_text(report)
    if os.environ.get("OUT"):  # a lent GPU machine returns only files directly under $OUT
        Path(os.environ["OUT"], "gpu_precision.json").write_text(report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--presets", default="recommended-28,recommended-64")
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per preset after the speed test")
    ap.add_argument("--speed-seconds", type=float, default=20.0, help="seconds of each speed measurement")
    ap.add_argument("--out", default="/tmp/ganforge-gpu-check")
    ap.add_argument("--fid-only", help="measure FID_10k of the checkpoints of an earlier run in this folder")
    ap.add_argument("--fid-n", type=int, default=10000, help="images per FID (0: skip FID, e.g. a CPU smoke test)")
    ap.add_argument("--precision-check", action="store_true", help="only train the 28 px preset in each --precisions")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="the --precision values of --precision-check")
    ap.add_argument("--precision-seconds", type=float, default=15.0, help="timed training seconds per precision")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from ganforge.training import resolve_config

    if args.fid_only:
        for rec in json.loads(Path(args.fid_only, "gpu_check.json").read_text())["runs"]:
            size, ch = SIZES[rec["preset"]]
            ckpt = Path(args.fid_only) / Path(rec["checkpoint"]).relative_to(rec["out"])  # moved with the tar
            fid = fid_10k(str(ckpt), size, ch, args.device, args.fid_n)
            print(json.dumps({**rec, f"fid_{args.fid_n}": round(fid, 2)}), flush=True)
        return
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a machine with an NVIDIA GPU (or pass --device cpu to smoke-test)")
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}), flush=True)
    if args.precision_check:
        precision_check(args)
        return
    runs = []
    for preset in args.presets.split(","):
        size, ch = SIZES[preset]
        data = fashion("train", size, ch)
        out = os.path.join(args.out, preset)
        cfg = resolve_config({"dataset": data.uri, "preset": preset, "steps": 1})
        plain = plain_loop(cfg, data, args.device, args.speed_seconds)
        steps = max(20, int(args.speed_seconds * plain / cfg.batch_size))
        ours = ganforge_speed(preset, data, args.device, out, steps)
        rec = {"preset": preset, "plain_images_per_second": round(plain), "ganforge_images_per_second": round(ours),
               "speedup": round(ours / plain, 2), "target_speedup": 1.5}
        rec |= budget_run(preset, data, args.device, out, args.budget)
        rec["out"] = args.out
        try:
            if args.fid_n:
                rec[f"fid_{args.fid_n}"] = round(fid_10k(rec["checkpoint"], size, ch, args.device, args.fid_n), 2)
        except Exception as e:  # noqa: BLE001 - weights absent on the GPU machine: measured later with --fid-only
            rec[f"fid_{args.fid_n}"] = f"not measured here ({type(e).__name__}); run --fid-only {args.out}"
        print(json.dumps(rec), flush=True)
        runs.append(rec)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "gpu_check.json").write_text(json.dumps({"device": name, "runs": runs}, indent=2))
    if os.environ.get("OUT"):  # a lent GPU machine returns only files directly under $OUT
        import tarfile

        with tarfile.open(Path(os.environ["OUT"], "gpu_check.tar"), "w") as tar:
            tar.add(Path(args.out, "gpu_check.json"), "gpu_check.json")
            for d in Path(args.out).glob("final-*"):
                tar.add(d, d.name)


if __name__ == "__main__":
    main()
