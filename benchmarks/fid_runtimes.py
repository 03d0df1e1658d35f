"""inception-tf under each CPU runtime, one thread: images/s per core, feature and FID agreement, share of peak.

The runtimes (``ganforge.metrics.runtimes``, forced one at a time with ``$GANFORGE_INCEPTION_RUNTIME``):

- ``torch``: today's path and the reference, ``fast_inception_tf`` (PyTorch with oneDNN);
- ``onnxruntime`` and ``openvino``: the same TorchScript exported to ONNX by ganforge (cached), run by the
  package's CPU engine (OpenVINO forced to float32);
- ``torch.compile``: inductor with freezing, of the TorchScript converted to an ExportedProgram (torch
  refuses to compile a ScriptModule), calls of a fixed batch (the last one padded); benchmark only.

Each runtime extracts features of the same images through ``FeatureExtractor.extract`` (the 28 -> 299
resize included, as a user runs it): ``--n`` Fashion-MNIST test images and ``--n`` training images
(2,000 each by default). Speed is images per CPU-second of this process (one thread, so images/s per
core, robust to other jobs on a shared machine), over all 2n images, with the wall rate beside it.
Agreement: the largest feature difference from the ``torch`` row's features, and |FID(test, train) -
the torch row's FID|, which must stay within 0.01 (``--tolerance``); also the largest difference from
the TorchScript file as loaded (no rewrites) on the first 32 images.

Peak: the FLOP per image are counted (``torch.utils.flop_counter`` on the file: its convolutions, 2 per
multiply-add), and the CPU's peak float32 FLOP/s per core is measured two ways: a loop of independent
FMAs compiled with ``cc`` (when there is one), and a 4096^3 sgemm through torch at one thread. Share of
peak = images/s x FLOP per image / FMA peak (sgemm's when no compiler).

Prints a markdown table and writes JSON (``--json``). Runtimes that are not installed get a row that says so.

Usage: python benchmarks/fid_runtimes.py [--n 2000] [--runtimes torch,onnxruntime,openvino,torch.compile]
       [--json outputs/fid_runtimes.json] [--fashion DIR]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads: one core, every runtime (they follow torch's threads)

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist", "/work/seedruns/fm/FashionMNIST/raw")
RUNTIMES = ("torch", "onnxruntime", "openvino", "torch.compile")
PACKAGE = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino", "torch.compile": "torch"}

FMA_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
/* 12 independent chains of 256-bit FMAs (AVX2 + FMA; AVX-512 gives the same FLOP/cycle on cores with 256-bit
   FMA units): the float32 FLOP/s one core can reach, timed by the process's CPU clock. */
int main(void) {
  __m256 a[12], b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  long iters = 100000000L;
  struct timespec t0, t1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
  for (long k = 0; k < iters; k++) {
    #pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  float out[8], sum = 0;
  for (int i = 0; i < 12; i++) { _mm256_storeu_ps(out, a[i]); for (int j = 0; j < 8; j++) sum += out[j]; }
  printf("%f %f\n", iters * 12.0 * 8 * 2 / s, sum);
  return 0;
}
"""


def idx_images(folder: str, name: str, k: int) -> np.ndarray:
    """The first k images of an IDX file (plain or .gz) as uint8 (k, 1, H, W)."""
    path = Path(folder) / name
    opener = gzip.open if not path.exists() and Path(f"{path}.gz").exists() else open
    with opener(path if path.exists() else f"{path}.gz", "rb") as f:
        _, count, h, w = struct.unpack(">IIII", f.read(16))
        if k > count:
            raise SystemExit(f"{path} holds {count} images, fewer than --n {k}")
        return np.frombuffer(f.read(k * h * w), np.uint8).reshape(k, 1, h, w)


def fashion(n: int, folder: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n Fashion-MNIST test images and n training images (the first of each file)."""
    for d in [folder] if folder else FASHION_DIRS:
        if os.path.isdir(d):
            test, train = idx_images(d, "t10k-images-idx3-ubyte", n), idx_images(d, "train-images-idx3-ubyte", n)
            return torch.from_numpy(test.copy()), torch.from_numpy(train.copy()), d
    raise SystemExit(f"no Fashion-MNIST in {folder or ' or '.join(FASHION_DIRS)}: apt-get install "
                     "dataset-fashion-mnist, or pass --fashion DIR with the IDX files")


def cpu_name() -> str:
    """The CPU's model name and its widest vector extension, from /proc/cpuinfo (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({vector}{' + FMA' if 'fma' in flags else ''})"


def fma_peak() -> float | None:
    """Peak float32 FLOP/s of one core from an FMA loop compiled here, or None without a C compiler."""
    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d) / "fma.c", Path(d) / "fma"
        src.write_text(FMA_C)
        try:
            subprocess.run(["cc", "-O2", "-mavx2", "-mfma", "-o", str(exe), str(src)], check=True,
                           capture_output=True)
            runs = [float(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()[0])
                    for _ in range(3)]
        except (OSError, subprocess.CalledProcessError):
            return None
    return max(runs)


def sgemm_rate(n: int = 4096, repeat: int = 3) -> float:
    """float32 FLOP/s of an n x n x n matmul through torch at one thread (best of ``repeat``, CPU time)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best


def flop_per_image(path: Path) -> float:
    """FLOP of one 299x299 image through the file as loaded (its convolutions; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ganforge.metrics.features import _load_torchscript

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        _load_torchscript(path, "inception-tf")(torch.zeros(1, 3, 299, 299))
    return float(counter.get_total_flops())


def compiled_extractor(path: Path, batch: int):
    """An extractor whose module is ``torch.compile`` (inductor, freezing) of the file's ExportedProgram."""
    import torch._inductor.config as inductor_config
    from torch._export.converter import TS2EPConverter

    from ganforge.metrics.features import FeatureExtractor, _load_torchscript, get_extractor

    base = get_extractor("inception-tf", path)
    inductor_config.freezing = True  # constant weights: conv + BN folded, weights prepacked for oneDNN
    inductor_config.compile_threads = 1  # one core, for compiling too
    sample = torch.zeros(batch, 3, 299, 299).contiguous(memory_format=torch.channels_last)
    program = TS2EPConverter(_load_torchscript(path, "inception-tf"), (sample,)).convert()
    compiled = torch.compile(program.module(), dynamic=False)

    def module(x: torch.Tensor) -> torch.Tensor:  # one shape only: pad the last call, drop the padding
        n = len(x)
        if n < batch:
            x = torch.cat([x, x.new_zeros(batch - n, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
        return compiled(x)[:n]

    with torch.inference_mode():
        module(sample)
    return FeatureExtractor("inception-tf", module, base.contract, 2048, base.sha256, forward_batch=batch,
                            runtime="torch.compile")


def build(runtime: str, path: Path, batch: int):
    """The extractor of one runtime, or the reason there is none."""
    from ganforge.errors import GanforgeError
    from ganforge.metrics.features import get_extractor

    if runtime == "torch.compile":
        try:
            return compiled_extractor(path, batch), None
        except Exception as e:  # noqa: BLE001 - a row that says why
            return None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    os.environ["GANFORGE_INCEPTION_RUNTIME"] = runtime
    try:
        return get_extractor("inception-tf", path), None
    except GanforgeError as e:
        return None, str(e)
    finally:
        del os.environ["GANFORGE_INCEPTION_RUNTIME"]


def extract(ext, images: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(features, CPU s, wall s) of ``ext.extract`` over ``images`` in batches of 64, after a warm-up."""
    with torch.inference_mode():
        ext.extract(images[:2], 2)  # TorchScript's profiling executor optimises on early calls
        ext.extract(images[:2], 2)
    cpu, wall = time.process_time(), time.perf_counter()
    f = ext.extract(images, 64)
    return f, time.process_time() - cpu, time.perf_counter() - wall


def threads_of(ext) -> int:
    """The threads the extractor's runtime was set up with (checked to be 1 by main)."""
    module = ext.module
    if ext.runtime == "onnxruntime":
        return module.session.get_session_options().intra_op_num_threads
    if ext.runtime == "openvino":
        return int(module.compiled.get_property("INFERENCE_NUM_THREADS"))
    return torch.get_num_threads()


def version(runtime: str) -> str:
    try:
        return metadata.version(PACKAGE[runtime])
    except metadata.PackageNotFoundError:
        return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="test images and as many training images (FID of 2n)")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"comma-separated, from {', '.join(RUNTIMES)}")
    ap.add_argument("--tolerance", type=float, default=0.01, help="|FID difference| a runtime must stay within")
    ap.add_argument("--compile-batch", type=int, default=16, help="torch.compile's fixed call size")
    ap.add_argument("--fashion", default=None, help="folder of Fashion-MNIST's IDX files (.gz or plain)")
    ap.add_argument("--backbone-weights", default=None, help="inception-tf TorchScript (default: the packaged one)")
    ap.add_argument("--json", default="outputs/fid_runtimes.json", help="where the results go")
    args = ap.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    if bad := [r for r in runtimes if r not in RUNTIMES]:
        ap.error(f"unknown runtime(s) {', '.join(bad)}; use {', '.join(RUNTIMES)}")
    if runtimes[0] != "torch":
        runtimes.insert(0, "torch")  # the reference
    os.environ["GANFORGE_PROGRESS"] = "0"
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    from ganforge.metrics.features import _load_torchscript, packaged_inception_tf
    from ganforge.metrics.fid import fid_from_features

    path = Path(args.backbone_weights or packaged_inception_tf())
    test, train, where = fashion(args.n, args.fashion)
    images = torch.cat([test, train])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    flop = flop_per_image(path)
    fma, sgemm = fma_peak(), sgemm_rate()
    peak = fma or sgemm
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; one thread; {2 * args.n} images "
          f"({where}); {flop / 1e9:.2f} GFLOP/image; peak {peak / 1e9:.1f} GFLOP/s per core "
          f"({'FMA loop' if fma else 'sgemm, no C compiler'}), sgemm 4096 {sgemm / 1e9:.1f}", file=sys.stderr)

    with torch.inference_mode():
        as_loaded = _load_torchscript(path, "inception-tf").eval()
        probe = images[:32]
    rows, ref, ref_fid = [], None, None
    for runtime in runtimes:
        t0, c0 = time.perf_counter(), time.process_time()
        ext, why = build(runtime, path, args.compile_batch)
        row: dict = {"runtime": runtime, "version": version(runtime)}
        if ext is None:
            rows.append({**row, "note": why})
            print(f"{runtime}: {why}", file=sys.stderr, flush=True)
            continue
        row |= {"build_wall_s": round(time.perf_counter() - t0, 2), "build_cpu_s": round(time.process_time() - c0, 2),
                "forward_batch": ext.forward_batch, "threads": threads_of(ext)}
        f, cpu, wall = extract(ext, images)
        fid = fid_from_features(f[: args.n], f[args.n :])
        if ref is None:
            ref, ref_fid = f, fid
            with torch.inference_mode():
                file_f = torch.cat([as_loaded(ext.preprocess(probe[i : i + 8])) for i in range(0, len(probe), 8)])
        with torch.inference_mode():
            d_file = (f[: len(probe)] - file_f).abs().max().item()
        d = (f - ref).abs().max().item()
        row |= {"images": len(images), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                "img_per_s_per_core": round(len(images) / cpu, 3), "img_per_s_wall": round(len(images) / wall, 3),
                "max_abs_diff": d, "rel_diff": d / ref.abs().max().item(), "max_abs_diff_file": d_file,
                "fid": fid, "fid_diff": abs(fid - ref_fid), "agrees": abs(fid - ref_fid) <= args.tolerance,
                "gflop_per_s": len(images) / cpu * flop / 1e9, "share_of_peak": len(images) / cpu * flop / peak}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del ext

    timed = [r for r in rows if "img_per_s_per_core" in r]
    agree = [r for r in timed if r["agrees"] and r["runtime"] != "torch.compile"]
    fastest = max(agree, key=lambda r: r["img_per_s_per_core"])["runtime"] if agree else None
    lines = ["| runtime | version | images/s per core | wall images/s | max abs feature diff vs torch "
             f"| vs file as loaded | FID ({args.n} vs {args.n}) | FID diff | share of peak | build s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "img_per_s_per_core" not in r:
            lines.append(f"| {r['runtime']} | {r['version']} | not run: {r['note']} | | | | | | | |")
            continue
        lines.append(f"| {r['runtime']} | {r['version']} | {r['img_per_s_per_core']:.2f} | {r['img_per_s_wall']:.2f} "
                     f"| {r['max_abs_diff']:.1e} | {r['max_abs_diff_file']:.1e} | {r['fid']:.4f} "
                     f"| {r['fid_diff']:.1e} | {r['share_of_peak']:.0%} | {r['build_wall_s']:.1f} |")
    print("\n".join(lines))
    print(f"\n{flop / 1e9:.2f} GFLOP per image; peak {peak / 1e9:.1f} GFLOP/s per core "
          f"({'FMA loop compiled here' if fma else 'sgemm: no C compiler'}; sgemm 4096 at one thread "
          f"{sgemm / 1e9:.1f}). Fastest that agrees (FID within {args.tolerance}; torch.compile not a library "
          f"runtime): {fastest}. uptime before: {uptime}")
    out = {"cpu": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
           "images": 2 * args.n, "images_from": where, "flop_per_image": flop, "peak_flops_fma": fma,
           "sgemm_flops": sgemm, "peak_flops": peak, "tolerance": args.tolerance, "fastest_agreeing": fastest,
           "uptime_before": uptime,
           "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
