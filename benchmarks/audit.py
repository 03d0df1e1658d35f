"""Memorisation audit on planted copies: detection per kind, honest pass rate, cache speed-up, memory, exactness.

Data: Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist; `apt-get install
-y dataset-fashion-mnist`) and scikit-learn's digits (offline). Not part of the tests.

Fashion-MNIST: training set = the first 40,000 training images, baseline = the 10,000 test images, honest
"generated" images = the other 20,000 training images (never in the training set of the audit). Each
planted set has 1,000 images: honest ones + 1% copies of random training images of one kind (exact,
noisy sigma = 0.05 of the range, mirrored, shifted by 1-2 px with zero fill). Then 20 disjoint honest sets
of 1,000. Per image: flagged or not; per set: the verdict. Timing and memory: 1,000 generated vs all
60,000 training images, first audit (baseline computed) and second (baseline cached), each in its own
subprocess with its peak RSS (VmHWM). Exactness: for up to ``--check`` queries, the nearest index and
distance against scikit-learn ``NearestNeighbors`` (brute force) over the explicitly shifted/mirrored,
blurred windows.

Calibration (issue 25): pen strokes whose official test split is drawn apart (thicker, fainter), and the same
with 3% of the source's images twice: honest sets pass against the audit split (and leave-one-out), not
against the shifted test split; 1% copies of each kind fail. ``--skip-fashion`` runs only that.

    .venv/bin/python benchmarks/audit.py [--sets 20] [--threads 1] [--check 60] [--skip-memory]
        [--calibration-pool 20000] [--runs 100] [--skip-fashion]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ganforge.audit.calibration import KINDS, plant

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        b = f.read()
    n = int.from_bytes(b[4:8], "big")
    return np.frombuffer(b, np.uint8, offset=16).reshape(n, 1, 28, 28).copy()


def fashion():
    """(train (60000, 1, 28, 28), test (10000, 1, 28, 28)) uint8 tensors."""
    import torch

    if not FASHION.is_dir():
        sys.exit(f"{FASHION} is missing: apt-get install -y dataset-fashion-mnist")
    return (torch.from_numpy(_idx(FASHION / "train-images-idx3-ubyte.gz")),
            torch.from_numpy(_idx(FASHION / "t10k-images-idx3-ubyte.gz")))


def digits16():
    """scikit-learn digits at 16x16 uint8."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images).float()[:, None] * (255 / 16)
    return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)




def detection(name, train, heldout, pool, sets, set_size, th, cache, log, rate=0):
    """Planted-copy sets and disjoint honest sets against one training set; prints and returns rows."""
    import torch

    from ganforge.audit.memorization import run_audit

    g = torch.Generator().manual_seed(1)
    n_plant = max(1, set_size // 100)
    rows = {"blur": th.resolved(*train.shape[-2:]).blur}
    log(f"{name}: {tuple(train.shape)} train images, blur {rows['blur']:g}")
    t0 = time.perf_counter()
    first = None
    for kind in KINDS:
        pick = torch.randperm(len(train), generator=g)[:n_plant]
        gen = torch.cat([pool[: set_size - n_plant], plant(kind, train[pick], g)])
        t = time.perf_counter()
        r = run_audit(gen, train, heldout, thresholds=th, baseline_cache=cache)
        first = first or time.perf_counter() - t
        hit = {f.generated_index for f in r.flagged} >= set(range(set_size - n_plant, set_size))
        caught = sum(f.generated_index >= set_size - n_plant for f in r.flagged)
        rows[kind] = dict(flagged_planted=f"{caught}/{n_plant}", all=hit, verdict=r.verdict, n_flagged=r.n_flagged,
                          expected=round(r.expected_flagged, 2), p=float(f"{r.flag_test_p_value:.3g}"),
                          brute_force=r.brute_force_queries)
        log(f"{name} planted {kind}: {rows[kind]}")
    for kind in KINDS if rate else ():  # a larger sample of each kind: the per-image detection rate
        pick = torch.randperm(len(train), generator=g)[:rate]
        gen = torch.cat([pool[: set_size - rate], plant(kind, train[pick], g)])
        r = run_audit(gen, train, heldout, thresholds=th, baseline_cache=cache)
        caught = sum(f.generated_index >= set_size - rate for f in r.flagged)
        rows[f"{kind}_rate"] = dict(flagged_planted=f"{caught}/{rate}", rate=caught / rate)
        log(f"{name} {rate} planted {kind}: {caught}/{rate} flagged")
    passes, flags = 0, 0
    for s in range(sets):
        gen = pool[s * set_size : (s + 1) * set_size]
        if len(gen) < set_size:
            break
        r = run_audit(gen, train, heldout, thresholds=th, baseline_cache=cache)
        passes += r.verdict == "pass"
        flags += r.n_flagged
        log(f"{name} honest set {s}: {r.verdict}, {r.n_flagged} flagged (expected {r.expected_flagged:.2f})")
    done = min(sets, len(pool) // set_size)
    rows["honest"] = dict(sets=done, passed=passes, flag_rate=flags / max(1, done * set_size), alpha=r.alpha,
                          baseline=r.baseline, n_baseline=r.n_baseline)
    log(f"{name} honest: {rows['honest']}  (first audit incl. baseline {first:.1f} s, total "
        f"{time.perf_counter() - t0:.0f} s)")
    return rows


def exactness(train, queries, th, log):
    """ganforge's nearest (train + mirror) index and distance vs scikit-learn brute force over all shifts."""
    import torch
    from sklearn.neighbors import NearestNeighbors

    from ganforge.audit.invariant import (
        blur_radius,
        central,
        nearest_train,
        pixel_space,
        refine,
        shift_offsets,
        shifted,
    )

    th = th.resolved(*train.shape[-2:])
    margin = th.max_shift + blur_radius(th.blur)
    tb, qb = pixel_space(train, th.levels, th.blur), pixel_space(queries, th.levels, th.blur)
    kw = dict(metric="l2", max_shift=th.max_shift, pad=margin - th.max_shift)
    m = nearest_train(qb, tb, invariance="shift", candidates=th.candidates, dims=th.projection_dims, progress=None, **kw)
    proven = m.exact.clone()
    full = refine(m, torch.ones(len(queries), dtype=torch.bool), qb, tb, **kw)
    offsets = shift_offsets(th.max_shift)
    refs = central(tb, margin)
    refs = torch.cat([refs, torch.flip(refs, dims=[-1])]).flatten(1).double().numpy()
    aug = shifted(qb, offsets, margin).reshape(len(queries) * len(offsets), -1).double().numpy()
    t = time.perf_counter()
    d, i = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(refs).kneighbors(aug)
    d, i = d.reshape(len(queries), -1), i.reshape(len(queries), -1)
    best = d.argmin(1)
    sk_d, sk_i = d[np.arange(len(queries)), best], i[np.arange(len(queries)), best]
    ours_i = (full.index + len(train) * full.flipped.long()).numpy()
    same = ours_i == sk_i
    close = np.abs(full.dist.numpy() - sk_d) <= 1e-6 * np.maximum(1, sk_d)
    pre_same = (m.index + len(train) * m.flipped.long()).numpy() == sk_i
    log(f"exactness vs scikit-learn ({len(queries)} queries, brute force {time.perf_counter() - t:.0f} s): "
        f"same nearest index {same.mean():.1%}, same distance {close.mean():.1%} (after refine); before refine: "
        f"same index {pre_same[proven.numpy()].mean() if proven.any() else float('nan'):.1%} of the "
        f"{int(proven.sum())} proven exact, {pre_same.mean():.1%} of all")
    return dict(queries=len(queries), same_index=float(same.mean()), same_distance=float(close.mean()),
                proven=int(proven.sum()), same_index_before_refine=float(pre_same.mean()))


def memory_worker(out: str, cache: str, threads: int, settings: str) -> None:
    """1,000 generated vs 60,000 training images, one audit in this process; peak RSS from the start of it.

    ``rss_before_mb`` is torch (~500 MB resident on its own here), the imports and the data.
    """
    import torch

    torch.set_num_threads(threads)
    from ganforge.audit.memorization import AuditThresholds, run_audit
    from ganforge.metrics.features import get_extractor

    th = AuditThresholds.model_validate_json(settings)
    get_extractor("pixels")  # its imports (torchvision, ~170 MB of code) are not the audit's working memory
    train, test = fashion()
    gen = test[:1000]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status_mb("VmRSS")
    t = time.perf_counter()
    r = run_audit(gen, train, test, thresholds=th, baseline_cache=cache)
    wall = time.perf_counter() - t
    Path(out).write_text(json.dumps({"wall_s": wall, "peak_rss_mb": _status_mb("VmHWM"), "rss_before_mb": rss0,
                                     "cached": r.baseline_cached, "brute_force": r.brute_force_queries}))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def calibration(pool_size: int, runs: int, log) -> dict:
    """Issue 25: honest sets against a baseline exchangeable with the training images, on a dataset whose
    official test split is drawn apart (pen strokes: the test split thicker, in fainter ink), and on one
    whose source holds near-duplicates (3% of its images twice). Sets of 1,000 drawn from scored pools of
    ``pool_size`` honest images and 300 copies of each kind (``ganforge.audit.calibration``)."""
    import numpy as np
    import torch

    from ganforge.audit.calibration import failures, score_pools, strokes
    from ganforge.data.config import IngestConfig
    from ganforge.data.ingest import carve_audit

    def carve(n, seed):
        cfg = IngestConfig(source="digits", output="unused", audit_fraction=1 / 6, split_seed=seed)
        return carve_audit(np.full(n, "train"), np.ones(n, dtype=bool), cfg)

    def copies(train, g):
        return {k: plant(k, train[torch.randperm(len(train), generator=g)[:300]], g) for k in KINDS}

    def rates(name, pools):
        t = time.perf_counter()
        honest = failures(pools, "honest", runs)
        row = {"honest_passed": sum(not r for r in honest), "runs": runs,
               "n_baseline": len(pools.baseline.distances), "near_duplicates": vars(pools.baseline.near)}
        if "exact" in pools.nearest:
            for k in KINDS:
                row[f"{k}_failed"] = sum(bool(r) for r in failures(pools, "honest", runs, planted=k, n_planted=10,
                                                                   seed=1))
        log(f"calibration {name}: {row} ({time.perf_counter() - t:.1f} s to decide)")
        return row

    out = {}
    t = time.perf_counter()
    source = strokes(6000, 0)
    splits = carve(len(source), 0)
    train, audit = source[splits == "train"], source[splits == "audit"]
    g = torch.Generator().manual_seed(5)
    pools = {"honest": strokes(pool_size, 2)} | copies(train, g)
    out["shifted_audit_split"] = rates("shifted, --baseline auto (audit split)", score_pools(train, audit, pools))
    test = strokes(1000, 1, thick=(2.0, 3.0), ink=200.0)
    out["shifted_test_split"] = rates("shifted, --baseline test", score_pools(train, test, pools))
    base = strokes(5820, 10)
    twins = torch.cat([plant(k, base[i * 45 : (i + 1) * 45], g) for i, k in enumerate(KINDS)])
    light = (base[180:225].float() + torch.randn(45, 1, 28, 28, generator=g) * 0.02 * 255).round().clamp(0, 255)
    source = torch.cat([base, twins, light.to(torch.uint8)])
    source = source[torch.randperm(len(source), generator=g)]
    splits = carve(len(source), 3)
    train, audit = source[splits == "train"], source[splits == "audit"]
    pools = {"honest": strokes(pool_size, 12)} | copies(train, g)
    out["duplicates_audit_split"] = rates("3% twins, audit split", score_pools(train, audit, pools))
    out["duplicates_leave_one_out"] = rates("3% twins, leave-one-out", score_pools(train, None, pools))
    log(f"calibration total {time.perf_counter() - t:.0f} s")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", type=int, default=20, help="disjoint honest sets of 1,000 (Fashion-MNIST)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    p.add_argument("--check", type=int, default=60, help="queries checked against scikit-learn brute force")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--skip-fashion", action="store_true", help="only the calibration (and digits)")
    p.add_argument("--calibration-pool", type=int, default=20_000, help="honest images scored per calibration "
                   "dataset (sets of 1,000 are drawn from them); 0 skips the calibration")
    p.add_argument("--runs", type=int, default=100, help="audits per calibration row")
    p.add_argument("--rate", type=int, default=100, help="planted copies of each kind in one more set of 1,000 "
                   "(Fashion-MNIST): the per-image detection rate on a larger sample; 0 skips")
    p.add_argument("--blur", default=None, help="audit --blur: a sigma or auto (default: the audit's)")
    p.add_argument("--levels", type=float, default=None, help="audit --levels (default: the audit's)")
    p.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help="folder for the cached baselines (reused between runs of the same "
                   "settings; default: a new temporary folder)")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_worker:
        memory_worker(a.memory_worker, a.cache, a.threads, a.settings)
        return
    import torch

    from ganforge.audit.memorization import AuditThresholds

    os.environ.setdefault("GANFORGE_PROGRESS", "0")
    torch.set_num_threads(a.threads)

    def log(msg):
        print(msg, flush=True)

    log(f"torch threads: {a.threads} (set deliberately: the machine is shared)")
    th = AuditThresholds(**{k: v for k, v in (("blur", a.blur), ("levels", a.levels)) if v is not None})
    log(f"settings: {th.model_dump()}")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="ganforge-bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}

    # digits: small, so a leave-one-out baseline (fewer than 999 held-out images)
    x = digits16()
    if a.skip_digits:
        x = x[:0]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, pool = x[perm[:1400]], x[perm[1400:]]
    if len(x):
        results["digits"] = detection("digits", train, None, pool, 1, 300, th, work / "digits.npy", log)

    if a.calibration_pool:
        results["calibration"] = calibration(a.calibration_pool, a.runs, log)
    if a.skip_fashion:
        print(json.dumps(results, indent=2, default=str))
        return
    train60, test = fashion()
    train, pool = train60[:40000], train60[40000:]
    results["fashion"] = detection("fashion", train, test, pool, a.sets, 1000, th, work / "fashion.npy", log,
                                  rate=a.rate)

    g = torch.Generator().manual_seed(2)
    pick = torch.randperm(len(train), generator=g)[: a.check // 4]
    queries = torch.cat([pool[: a.check - len(pick)], plant("shifted", train[pick], g)])
    if a.check:
        results["exactness"] = exactness(train, queries, th, log)

    if not a.skip_memory:
        cache = work / "memory.npy"
        for run in ("first", "second"):
            out = work / f"{run}.json"
            env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
            subprocess.run([sys.executable, __file__, "--memory-worker", str(out), "--cache", str(cache),
                            "--threads", str(a.threads), "--settings", th.model_dump_json()], env=env, check=True)
            results[f"{run}_audit_60k"] = json.loads(out.read_text())
            log(f"{run} audit, 1,000 generated vs 60,000 training images: {results[f'{run}_audit_60k']}")
        f, s = results["first_audit_60k"], results["second_audit_60k"]
        log(f"speed-up of the second audit: {f['wall_s'] / s['wall_s']:.1f}x; peak RSS {f['peak_rss_mb']:.0f} / "
            f"{s['peak_rss_mb']:.0f} MB, of which the audit's own (peak minus RSS before it) "
            f"{f['peak_rss_mb'] - f['rss_before_mb']:.0f} / {s['peak_rss_mb'] - s['rss_before_mb']:.0f} MB")
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
