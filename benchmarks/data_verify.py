"""What verified identity (issue 22) costs ``ganforge.data.load`` on the 70k Fashion-MNIST dataset.

Prints, for the whole dataset (train 60k + test 10k):

* cold load (an empty pixel cache: decode Parquet, write the cache) of train then test, with
  verification (``load``: shard digests, fingerprint and label names for the first split, every
  image's pixel hash) against ganforge's cold load before it (the same reads and decode,
  ``loader._load_verified(..., verify=False)``, then the two .npy files written as ``load`` did),
  interleaved round by round, wall and process CPU seconds; plus ``load(..., use_cache=False)``, where
  each split checks the identity again (no record to vouch for it), and the unverified load once more as
  an A/A control: its "overhead" is the noise floor of the machine (a shared one can swing by 10%);
* the verification steps timed alone, on one thread, as a share of the unverified cold load;
* warm load (from the pixel cache) after (``load``: manifest bytes hashed, the location record and the
  entry's meta read, one stat per shard, sizes and .npy headers checked) against before (what ``load``
  did then: manifest read and parsed, two ``exists``, the two .npy files mapped/read), median per call.

The real Fashion-MNIST IDX files come from Debian's ``dataset-fashion-mnist`` package
(``apt-get install dataset-fashion-mnist``); without it the set is synthetic IDX of the same shape.
Run with one BLAS/OpenMP thread (the decode pool still uses every core, as ``load`` does):

    OMP_NUM_THREADS=1 python benchmarks/data_verify.py [--workdir DIR] [--repeat N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import hashlib  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import fashion_root  # noqa: E402  (benchmarks/ingest.py: the IDX files, real when installed)

from ganforge.data import load, loader  # noqa: E402
from ganforge.data.ingest import ingest  # noqa: E402
from ganforge.data.parquet import read_manifest, read_shard, table_fingerprint  # noqa: E402
from ganforge.outputs import save_npy_atomic  # noqa: E402
from ganforge.storage import parse  # noqa: E402

SPLITS = ("train", "test")


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def dataset(work: str) -> tuple[str, str]:
    root, what = fashion_root(work, 60000, 10000)
    uri = os.path.join(work, "ds-fashion")
    res = ingest("fashion-mnist", uri, input=root)
    if not all("sha256" in s for s in res.manifest["shards"]):  # written before shard digests: write it again
        res = ingest("fashion-mnist", uri, input=root, overwrite=True)
    return uri, what


VARIANTS = {"without": "before (no verification)", "with": "with verification",
            "uncached": "with verification, use_cache=False",
            "again": "before, run again (the noise floor)"}


def cold(uri: str, work: str, repeat: int) -> dict:
    loc = parse(uri)
    manifest = read_manifest(loc)
    runs = {name: [] for name in VARIANTS}
    cache = os.path.join(work, "cache-cold")

    def without():  # load()'s cold path before issue 22: read, decode, write the two .npy files
        n = 0
        for s in SPLITS:
            images, labels, _, _, _ = loader._load_verified(loc, manifest, s, verify=False)
            d = os.path.join(cache, "datasets", manifest["fingerprint"])
            save_npy_atomic(os.path.join(d, f"{s}-labels.npy"), labels)
            save_npy_atomic(os.path.join(d, f"{s}-images.npy"), images)
            n += len(images)
        return n

    def with_():
        return sum(len(load(uri, s, cache_dir=cache)) for s in SPLITS)

    def uncached():
        return sum(len(load(uri, s, use_cache=False)) for s in SPLITS)

    fns = {"without": without, "with": with_, "uncached": uncached, "again": without}
    without()  # page cache warm for all
    for r in range(repeat):
        names = list(VARIANTS)[r % 4:] + list(VARIANTS)[:r % 4]  # rotate the order round by round
        for name in names:
            shutil.rmtree(cache, ignore_errors=True)  # every cold load starts from an empty cache
            wall, cpu, n = clock(fns[name])
            assert n == 70000, n
            runs[name].append((wall, cpu))
    return runs


def best(fn, n: int = 5) -> float:
    """The least disturbed of ``n`` runs (this machine may be shared): min wall seconds."""
    return min(clock(fn)[0] for _ in range(n))


def parts(uri: str) -> dict:
    """Each verification step alone, on this thread (min of 5 runs)."""
    loc = parse(uri)
    manifest = read_manifest(loc)
    paths = [loc.join(s["path"]) for s in manifest["shards"]]
    out = {}
    blobs = [open(p, "rb").read() for p in paths]
    out["shard digests (SHA-256 of the files)"] = best(lambda: [hashlib.sha256(b).hexdigest() for b in blobs])
    plain, more = ["id", "label", "image", "split"], ["id", "label", "image", "split", "sha256", "label_name"]
    t_plain, t_more = [], []
    for _ in range(7):  # interleaved: the difference is small
        t_plain.append(clock(lambda: [read_shard(loc, s, plain, check_digest=False) for s in manifest["shards"]])[0])
        t_more.append(clock(lambda: [read_shard(loc, s, more, check_digest=False) for s in manifest["shards"]])[0])
    out["reading the sha256 and label_name columns too"] = max(0.0, min(t_more) - min(t_plain))
    ident = pa.concat_tables([read_shard(loc, s, loader.IDENTITY_COLUMNS, check_digest=False)
                              for s in manifest["shards"]])
    out["fingerprint from 70k rows (Arrow sort)"] = best(lambda: table_fingerprint(ident))
    out["label names against the manifest"] = best(
        lambda: ident.select(["label", "label_name"]).group_by(["label", "label_name"]).aggregate([]))
    images = [load(uri, s, use_cache=False).images.permute(0, 2, 3, 1).contiguous().numpy() for s in SPLITS]
    shas = ident.column("sha256").to_pylist()  # the comparison's cost, not its outcome, is measured here
    prefix = hashlib.sha256(b"28x28x1:")

    def pixel_hashes():
        k = 0
        for arr in images:
            for im in arr:
                d = prefix.copy()
                d.update(im)
                _ = d.hexdigest() != shas[k]
                k += 1

    out["pixel hash of every decoded image"] = best(pixel_hashes)
    return out


def warm_before(uri: str, split: str, cache_dir: str, entry: tuple[str, str]):
    """``load``'s warm path before issue 22 (its code, pointed at the same .npy files)."""
    loc = parse(uri)
    manifest = read_manifest(loc)
    if all(os.path.exists(p) for p in entry):
        images_np, labels_np = np.load(entry[0], mmap_mode="c"), np.load(entry[1])
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    return loader.ImageData(images, labels, list(manifest["class_names"]), manifest["fingerprint"], loc.uri, split,
                            manifest)


def warm(uri: str, work: str, n: int = 300) -> dict:
    cache_dir = os.path.join(work, "cache-verify")
    shutil.rmtree(cache_dir, ignore_errors=True)
    entries = {}
    for s in SPLITS:
        fp = load(uri, s, cache_dir=cache_dir).fingerprint
        (images,) = glob.glob(os.path.join(cache_dir, "datasets", fp, f"{s}-*-images.npy"))
        entries[s] = (images, images.replace("-images.npy", "-labels.npy"))
    times = {"before": [], "after": []}
    for block in range(n // 50):
        for name in (("before", "after") if block % 2 == 0 else ("after", "before")):
            for _ in range(50):
                t0 = time.perf_counter()
                for s in SPLITS:
                    if name == "after":
                        load(uri, s, cache_dir=cache_dir)
                    else:
                        warm_before(uri, s, cache_dir, entries[s])
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/ganforge-bench-verify")
    ap.add_argument("--repeat", type=int, default=5, help="cold-load rounds (each: both variants, interleaved)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    uri, what = dataset(args.workdir)
    print(f"machine: {os.cpu_count()} CPU cores (decode pool: {os.cpu_count()} threads), "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch {torch.__version__}; data: {what}, "
          f"{len(read_manifest(parse(uri))['shards'])} shard(s)")
    runs = cold(uri, args.workdir, args.repeat)
    print(f"\ncold load, train then test = 70,000 images, {args.repeat} rounds, order rotated (seconds)")
    cols = (10, 13, 10, 12, 16)
    print(f"{'':<38}{'wall min':>10}{'wall median':>13}{'CPU min':>10}{'CPU median':>12}{'paired median':>16}")
    stats = {}
    for name, label in VARIANTS.items():
        walls, cpus = [w for w, _ in runs[name]], [c for _, c in runs[name]]
        stats[name] = (min(walls), statistics.median(walls), min(cpus), statistics.median(cpus))
        print(f"{label:<38}" + "".join(f"{v:>{w}.3f}" for v, w in zip(stats[name], cols)))
        if name != "without":
            over = [100 * (stats[name][i] / stats["without"][i] - 1) for i in range(4)]
            # each round's two runs ran back to back: their ratio sees the same machine load
            over.append(100 * (statistics.median(a[0] / b[0] for a, b in zip(runs[name], runs["without"])) - 1))
            print(f"{'  overhead':<38}" + "".join(f"{v:>+{w - 1}.1f}%" for v, w in zip(over, cols)))

    base = stats["without"][0]
    print(f"\nverification steps alone, one thread, once each (share of the cold load before, best wall {base:.3f} s)")
    total = 0.0
    for name, wall in parts(uri).items():
        total += wall
        print(f"  {name:<48}{wall * 1000:>8.1f} ms {100 * wall / base:>6.2f}%")
    print(f"  {'sum':<48}{total * 1000:>8.1f} ms {100 * total / base:>6.2f}%")

    times = warm(uri, args.workdir)
    b, a = statistics.median(times["before"]) * 1000, statistics.median(times["after"]) * 1000
    print("\nwarm load from the pixel cache, train+test, median of 300 (ms)")
    print(f"  before (claimed fingerprint, no checks) {b:8.3f}")
    print(f"  after  (verified location and entry)    {a:8.3f}   (+{a - b:.3f} ms)")


if __name__ == "__main__":
    main()
