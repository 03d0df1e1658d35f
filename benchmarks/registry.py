"""Registry round trip: ganforge's pyfunc vs a plain ``mlflow.pytorch`` model of the same generator.

Starts an ``mlflow server`` (sqlite, local artifacts) on 127.0.0.1, ingests scikit-learn's digits at
32 px, trains a small dcgan for a few steps with tracking, evaluates and audits it (pixels backbone),
then times, in the same process and on the same server, with the median over ``--repeats``:

  - register: ``ganforge.registry.register`` (evidence lookup, checkpoint download, pyfunc save and
    upload, version + alias) vs ``mlflow.pytorch.log_model`` + ``mlflow.register_model`` + alias, in
    both of its formats: ``pt2`` (its default, a torch.export program) and ``pickle`` (torch.save);
  - load + generate 64 images from ``models:/NAME@alias`` (cold: nothing cached):
    ``mlflow.pyfunc.load_model(...).predict`` (returns base64 PNGs), ganforge's
    ``resolve_model_uri`` + ``generate`` (tensors), and ``mlflow.pytorch.load_model`` + a forward pass
    (tensors; the pickle format unpickles the module).

Usage: python benchmarks/registry.py [--repeats 3] [--width 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def start_server(root: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", f"{root}/artifacts", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("mlflow server did not start")


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def prepare(root: str, width: int) -> str:
    from ganforge.audit.run import AuditConfig, audit
    from ganforge.data.ingest import ingest
    from ganforge.evaluate import EvalConfig, evaluate
    from ganforge.training import resolve_config, train

    ingest("digits", output=f"{root}/digits", image_size=32, limit=256)
    cfg = resolve_config({"dataset": f"{root}/digits", "model": "dcgan", "steps": 4, "batch_size": 32,
                          "width": width, "ema_decay": 0.99, "output": f"{root}/run", "experiment": "bench"})
    run_id = train(cfg).run_id
    evaluate(EvalConfig(dataset=f"{root}/digits", model=f"runs:/{run_id}", n=64, backbone="pixels", experiment="bench"))
    audit(AuditConfig(dataset=f"{root}/digits", model=f"runs:/{run_id}", n=64, experiment="bench"))
    return run_id


def bench_ganforge(run_id: str, k: int) -> dict[str, float]:
    import mlflow.pyfunc
    import pandas as pd

    from ganforge.inference import generate
    from ganforge.registry import register, resolve_model_uri
    from ganforge.registry.store import cache_root

    shutil.rmtree(cache_root(), ignore_errors=True)  # register downloads the run's checkpoint: cold
    t_reg, out = timed(lambda: register(run_id, name=f"gf-{k}"))
    uri = f"models:/gf-{k}@candidate"
    rows = pd.DataFrame({"seed": [0], "label": [-1], "n": [64]})
    t_pyfunc, pred = timed(lambda: mlflow.pyfunc.load_model(uri).predict(rows))
    assert len(pred) == 64
    shutil.rmtree(cache_root(), ignore_errors=True)
    t_resolve, images = timed(lambda: generate(str(resolve_model_uri(uri)), n=64, seed=0))
    assert images.shape[0] == 64 and out["version"] == 1
    return {"register": t_reg, "pyfunc load+predict": t_pyfunc, "resolve+generate": t_resolve}


def bench_plain(run_id: str, k: int, fmt: str) -> dict[str, float]:
    """``mlflow.pytorch`` round trip; ``fmt`` pt2 (its default: torch.export) or pickle (torch.save)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch

    from ganforge.inference import load_generator
    from ganforge.registry import resolve_model_uri

    generator, spec, _ = load_generator(resolve_model_uri(f"runs:/{run_id}"))
    client = mlflow.MlflowClient()
    name = f"plain-{fmt}-{k}"

    def log_and_register():
        example = np.zeros((2, spec.latent_dim), np.float32)  # pt2 traces forward(z) on it
        with mlflow.start_run(experiment_id=client.get_experiment_by_name("bench").experiment_id):
            info = mlflow.pytorch.log_model(generator, name="generator", input_example=example,
                                            serialization_format=fmt)
        mv = mlflow.register_model(info.model_uri, name)
        client.set_registered_model_alias(name, "candidate", mv.version)

    t_reg, _ = timed(log_and_register)

    def load_and_generate():
        g = mlflow.pytorch.load_model(f"models:/{name}@candidate")
        with torch.no_grad():
            return g(torch.randn(64, spec.latent_dim, generator=torch.Generator().manual_seed(0)))

    t_load, images = timed(load_and_generate)
    assert images.shape[0] == 64
    return {"register": t_reg, "load+generate": t_load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args()
    import logging

    logging.disable(logging.INFO)
    root = tempfile.mkdtemp(prefix="ganforge-bench-registry-")
    os.environ["GANFORGE_CACHE_DIR"] = f"{root}/cache"
    proc, url = start_server(root)
    os.environ["MLFLOW_TRACKING_URI"] = url
    try:
        run_id = prepare(root, args.width)
        gf, pt2, pickled = [], [], []
        for k in range(args.repeats):  # alternate, so load from other processes hits all alike
            gf.append(bench_ganforge(run_id, k))
            pt2.append(bench_plain(run_id, k, "pt2"))
            pickled.append(bench_plain(run_id, k, "pickle"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        shutil.rmtree(root, ignore_errors=True)
    med = {f"ganforge {k}": statistics.median(r[k] for r in gf) for k in gf[0]}
    for fmt, rows in (("pt2", pt2), ("pickle", pickled)):
        med |= {f"mlflow.pytorch[{fmt}] {k}": statistics.median(r[k] for r in rows) for k in rows[0]}
    import torch

    print(f"registry round trip, dcgan width {args.width} at 32 px, 64 images, median of {args.repeats} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads, server on 127.0.0.1)")
    for name, seconds in med.items():
        print(f"  {name:<40} {seconds:7.3f} s")
    for fmt in ("pt2", "pickle"):
        print(f"  vs mlflow.pytorch[{fmt}]: register {med['ganforge register'] / med[f'mlflow.pytorch[{fmt}] register']:.2f}x, "
              f"load+generate {med['ganforge pyfunc load+predict'] / med[f'mlflow.pytorch[{fmt}] load+generate']:.2f}x "
              "(ganforge pyfunc / plain)")


if __name__ == "__main__":
    main()
