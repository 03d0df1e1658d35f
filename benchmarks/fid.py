"""FID feature extraction (inception-tf) run every way this machine offers, side by side on the same images.

One run, the same ``--n`` images for every configuration (half Fashion-MNIST train, half test; synthetic
28x28 images when Debian's dataset-fashion-mnist is missing), each configuration warmed up first
(TorchScript's profiling executor optimises on early calls) and timed over all n images, ``--repeat``
rounds interleaved (each row reports its best round: the machine may be shared):

- torcheval's ``FrechetInceptionDistance(model=...).update`` used the plain way: [0, 1] NCHW batches of
  64, the model wrapper resizes and maps to the TF range (its default loop, float32 sums);
- ganforge before this change: the TorchScript as loaded, channels_last input, batches of 64;
- ganforge now (``get_extractor("inception-tf")``): ``fast_inception_tf``'s frozen graph (conv + batch
  norm folded, channels_last kept through the mixed blocks, conv + ReLU fused), module calls of 16;
- candidates: stock ``torch.jit.freeze`` and ``+ optimize_for_inference`` (MKLDNN), the fast graph
  without the ReLU fusion (and with MKLDNN instead), with NCHW input, batch sizes 8/32/64/128, 2 threads
  (``--threads``), bf16 autocast, and with ``--compile`` ``torch.compile`` (inductor, freezing) of the
  TorchScript converted to an ExportedProgram (compiling the ScriptModule itself is refused by torch;
  the note says so);
- the 28->299 resize (+ range map + channels_last) as before, as now (NHWC resize) and grey-first
  (resize one channel, then repeat it), timed apart, with their differences from before.

Per row: images/s (wall), CPU seconds per image (robust to other jobs on a shared machine for 1-thread
rows), speed-up over torcheval's loop with the same threads, the largest feature difference from the
first row's (torcheval's) features, absolute and relative to the largest feature, and |FID difference|
of FID(first half, second half) from that row's features. ``uptime`` is printed before and after.

Usage: python benchmarks/fid.py [--n 128] [--threads 1,2] [--repeat 1] [--rows now,inductor] [--compile]
       [--backbone-weights PATH]
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FASHION = "/usr/share/datasets/fashion-mnist"


def images(n: int) -> tuple[torch.Tensor, str]:
    """uint8 (n, 1, 28, 28): n // 2 Fashion-MNIST train images, then n - n // 2 test images."""
    def idx(name: str, k: int) -> np.ndarray:
        with gzip.open(os.path.join(FASHION, name)) as f:
            _, count, h, w = struct.unpack(">IIII", f.read(16))
            return np.frombuffer(f.read(k * h * w), np.uint8).reshape(k, 1, h, w)

    if os.path.isdir(FASHION):
        x = np.concatenate([idx("train-images-idx3-ubyte.gz", n // 2),
                            idx("t10k-images-idx3-ubyte.gz", n - n // 2)])
        what = "Fashion-MNIST, half train, half test"
    else:
        x = np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
        what = "synthetic noise (dataset-fashion-mnist not installed)"
    return torch.from_numpy(x.copy()), what


class TorchevalInput(torch.nn.Module):
    """What torcheval's plain use needs: [0, 1] RGB in, backbone features out; keeps what it returned."""

    def __init__(self, module, contract):
        super().__init__()
        self.module, self.contract, self.seen = module, contract, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x * 255.0, size=self.contract.size, mode="bilinear", align_corners=False)
        lo, hi = self.contract.value_range
        f = self.module(x * ((hi - lo) / 255.0) + lo)
        self.seen.append(f)
        return f


@dataclass
class Config:
    label: str
    run: Callable[[torch.Tensor], torch.Tensor]  # uint8 (n, 1, 28, 28) -> float32 (n, 2048)
    threads: int
    batch: int
    warm: int = 2  # images per warm-up call; a compiled graph is specialised to whole batches
    subset: int | None = None  # images timed, half from each half, for rows too slow for all n


def torcheval_run(module, contract, batch: int) -> Callable:
    from torcheval.metrics import FrechetInceptionDistance

    def run(x: torch.Tensor) -> torch.Tensor:
        model = TorchevalInput(module, contract).eval()
        metric = FrechetInceptionDistance(model=model, feature_dim=2048)
        for s in range(0, len(x), batch):  # real/fake alternate as a user's loop over two sets would
            images = x[s : s + batch].float().div(255).expand(-1, 3, -1, -1)
            metric.update(images, is_real=(s // batch) % 2 == 0)
        return torch.cat(model.seen)
    return run


def loop_run(ext, module, batch: int, channels_last: bool, autocast: bool = False) -> Callable:
    """ganforge's extract loop with the module, memory format and precision of a candidate."""
    def run(x: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(x), batch):
            y = ext.preprocess(x[s : s + batch])
            y = y.contiguous(memory_format=torch.channels_last) if channels_last else y.contiguous()
            with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                out.append(module(y).float())
        return torch.cat(out)
    return run


def compiled_run(raw, ext, batch: int) -> tuple[Callable | None, str]:
    """torch.compile of the ScriptModule (refused), else of its ExportedProgram with inductor freezing."""
    try:
        torch.compile(raw)(torch.zeros(1, 3, 299, 299))
        note = "compiling the ScriptModule itself ran"
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        note = f"torch.compile(ScriptModule): {type(e).__name__}: {str(e).splitlines()[0][:90]}"
    import torch._inductor.config as inductor_config
    from torch._export.converter import TS2EPConverter

    inductor_config.freezing = True  # constant weights: conv+BN folding and MKLDNN weight prepacking
    t0 = time.perf_counter()
    try:
        sample = ext.preprocess(torch.zeros(batch, 1, 28, 28, dtype=torch.uint8))
        program = TS2EPConverter(raw, (sample,)).convert()  # shapes specialised to `batch`
        compiled = torch.compile(program.module(), dynamic=False)
        with torch.inference_mode():
            compiled(sample.contiguous(memory_format=torch.channels_last))
    except Exception as e:  # noqa: BLE001
        return None, f"{note}; ExportedProgram + inductor failed: {type(e).__name__}: {str(e)[:120]}"
    return loop_run(ext, compiled, batch, True), f"{note}; inductor compile {time.perf_counter() - t0:.0f}s"


def rows_of(cfg: Config, n: int) -> torch.Tensor:
    """Indices of the images a configuration is timed on: all, or its subset (half from each half)."""
    if cfg.subset is None:
        return torch.arange(n)
    k, h = min(cfg.subset, n) // 2, n // 2
    return torch.cat([torch.arange(k), torch.arange(h, h + k)])


def measure(cfg: Config, x: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(wall s, CPU s, features) of one configuration over its images, after a 2-call warm-up."""
    torch.set_num_threads(cfg.threads)
    x = x[rows_of(cfg, len(x))]
    with torch.inference_mode():
        for _ in range(2):
            cfg.run(x[: cfg.warm])
        wall, cpu = time.perf_counter(), time.process_time()
        f = cfg.run(x)
        return time.perf_counter() - wall, time.process_time() - cpu, f.float()


def preprocess_row(ext, x: torch.Tensor, batch: int) -> str:
    """The 28->299 resize + range map + channels_last three ways: ms per image and difference from before."""
    c = ext.contract
    lo, hi = c.value_range

    def resize(b: torch.Tensor) -> torch.Tensor:
        return F.interpolate(b, size=c.size, mode=c.resize, align_corners=False, antialias=c.antialias)

    ways = {  # before: NCHW resize of the expanded grey, then a channels_last copy for the backbone
        "before": lambda b: (resize(b.float().expand(-1, 3, -1, -1)) * ((hi - lo) / 255.0) + lo)
        .contiguous(memory_format=torch.channels_last),
        "now (NHWC resize)": lambda b: ext.preprocess(b).contiguous(memory_format=torch.channels_last),
        "grey-first": lambda b: (resize(b.float()) * ((hi - lo) / 255.0) + lo).expand(-1, 3, -1, -1)
        .contiguous(memory_format=torch.channels_last),
    }
    parts = []
    for name, fn in ways.items():
        t0, diff = time.perf_counter(), 0.0
        for s in range(0, len(x), batch):
            fn(x[s : s + batch])
        ms = (time.perf_counter() - t0) / len(x) * 1e3
        for s in range(0, len(x), batch):
            diff = max(diff, (fn(x[s : s + batch]) - ways["before"](x[s : s + batch])).abs().max().item())
        parts.append(f"{name} {ms:.2f} ms (max diff {diff:.1e})")
    return "resize 28->299 + range map + channels_last, per image: " + ", ".join(parts)


def configs(raw, ext_new, ext_before, threads: list[int], compile_: bool) -> tuple[list[Config], list[str]]:
    """The rows: baselines at each thread count, then the candidates at the first."""
    from ganforge.metrics.features import fast_inception_tf

    c, t1, notes, fb = ext_new.contract, threads[0], [], ext_new.forward_batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.freeze/optimize_for_inference deprecation
        frozen = torch.jit.freeze(raw)
        stock = torch.jit.optimize_for_inference(torch.jit.freeze(raw))
        unfused = fast_inception_tf(raw, fuse_relu=False)
        mkldnn = torch.jit.optimize_for_inference(fast_inception_tf(raw, fuse_relu=False))
    rows = []
    for t in threads:
        rows += [Config("torcheval FrechetInceptionDistance loop (NCHW)", torcheval_run(raw, c, 64), t, 64),
                 Config("ganforge before (as loaded, channels_last)",
                        lambda x: ext_before.extract(x, 64), t, 64),
                 Config(f"ganforge now (fast_inception_tf, forward batch {fb})",
                        lambda x: ext_new.extract(x, 64), t, fb)]
    rows += [Config("as loaded, NCHW", loop_run(ext_new, raw, 64, False), t1, 64),
             Config("torch.jit.freeze, channels_last", loop_run(ext_new, frozen, 64, True), t1, 64),
             Config("freeze + optimize_for_inference (stock)", loop_run(ext_new, stock, 64, True), t1, 64),
             Config("fast without conv+ReLU fusion", loop_run(ext_new, unfused, 64, True), t1, 64),
             Config("fast without fusion + optimize_for_inference",
                    loop_run(ext_new, mkldnn, 64, True), t1, 64),
             Config("fast, NCHW input", loop_run(ext_new, ext_new.module, fb, False), t1, fb)]
    rows += [Config(f"fast, batch {b}", loop_run(ext_new, ext_new.module, b, True), t1, b)
             for b in (8, 32, 64, 128)]
    # ~13x slower than float32 without AVX-512 BF16 (oneDNN emulates it): timed on 8 images
    rows += [Config("as loaded, bf16 autocast, channels_last", loop_run(ext_new, raw, 64, True, True), t1, 64,
                    subset=8)]
    if compile_:
        run, note = compiled_run(raw, ext_new, fb)
        notes.append(note)
        if run is not None:
            rows.append(Config("torch.compile (inductor, freezing)", run, t1, fb, warm=fb))
    return rows, notes


def table(rows: list[Config], x: torch.Tensor, repeat: int) -> tuple[list[str], float]:
    """One line per row (best of ``repeat`` interleaved timings; differences from the first row's features)
    and the first row's FID(first half, second half)."""
    from ganforge.metrics.fid import fid_from_features

    best: dict[int, tuple[float, float, torch.Tensor]] = {}
    for r in range(repeat):
        for i, cfg in enumerate(rows):
            wall, cpu, f = measure(cfg, x)
            old = best.get(i)
            best[i] = (min(wall, old[0]), min(cpu, old[1]), old[2]) if old else (wall, cpu, f)
            print(f"  round {r + 1}: {cfg.label}, {len(f) / wall:.2f} img/s", file=sys.stderr, flush=True)
    ref, base, lines, ref_fid = best[0][2], {}, [], {}
    for i, cfg in enumerate(rows):
        wall, cpu, f = best[i]
        r, k = ref[rows_of(cfg, len(x))], len(f) // 2
        base.setdefault(cfg.threads, wall / len(f))
        d = (f - r).abs().max().item()
        if len(f) not in ref_fid:  # a 2048-d FID costs seconds: once per image set
            ref_fid[len(f)] = fid_from_features(r[:k], r[k:])
        dfid = abs(fid_from_features(f[:k], f[k:]) - ref_fid[len(f)])
        lines.append(f"{cfg.label:<50} {cfg.threads:>3} {cfg.batch:>5} {len(f) / wall:>6.2f} "
                     f"{cpu / len(f):>9.3f} "
                     f"{base[cfg.threads] * len(f) / wall:>7.2f}x {d:>8.1e} {d / r.abs().max().item():>8.1e} "
                     f"{dfid:>8.1e}{'' if cfg.subset is None else f'  ({len(f)} images)'}")
    return lines, ref_fid[len(x)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="images per configuration (a multiple of 128)")
    ap.add_argument("--threads", default="1,2", help="torch threads: candidates run at the first")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over all rows; each row reports its best")
    ap.add_argument("--rows", default="", help="comma-separated label fragments: only those (and torcheval)")
    ap.add_argument("--compile", action="store_true", help="add torch.compile (a C++ compiler; minutes)")
    ap.add_argument("--backbone-weights", default=None)
    args = ap.parse_args()
    if args.n < 4 or args.n % 2:
        ap.error(f"--n {args.n}: FID of half vs half needs an even n >= 4 (128 or more to time batch 128)")
    os.environ["GANFORGE_PROGRESS"] = "0"  # the table is the output

    from ganforge.metrics.features import (
        FeatureExtractor,
        _load_torchscript,
        get_extractor,
        packaged_inception_tf,
    )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    x, what = images(args.n)
    threads = [int(t) for t in args.threads.split(",")]
    ext_new = get_extractor("inception-tf", args.backbone_weights)
    raw = _load_torchscript(args.backbone_weights or packaged_inception_tf(), "inception-tf").eval()
    ext_before = FeatureExtractor("inception-tf", raw, ext_new.contract, 2048, ext_new.sha256)
    rows, notes = configs(raw, ext_new, ext_before, threads, args.compile)
    wanted = [w for w in args.rows.split(",") if w]
    rows = [r for r in rows
            if not wanted or r.label.startswith("torcheval") or any(w in r.label for w in wanted)]

    lines, fid = table(rows, x, args.repeat)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, images: {what}, n={args.n}, "
          f"best of {args.repeat}, backbone inception-tf {ext_new.sha256[:12]}\nuptime before: {uptime}")
    print(f"{'config':<50} {'thr':>3} {'batch':>5} {'img/s':>6} {'CPU s/img':>9} {'speed-up':>8} "
          f"{'max|df|':>8} {'rel':>8} {'|dFID|':>8}")
    print("\n".join(lines))
    torch.set_num_threads(threads[0])
    print(preprocess_row(ext_new, x, 64))
    for note in notes:
        print(note)
    print(f"FID(first half, second half) from the first row's features: {fid:.4f}")
    print("uptime after: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
