"""Issue 12's EMA scenario on the real data: Fashion-MNIST, the fashion-dcgan preset with --ema-decay 0.999,
~1,000 steps, FID (inception-tf) of EMA and raw weights against the test split at the same n and seed.

Before the ramp-up and standing statistics, this scored EMA 234 vs raw 78 (FID_500). Slow (about 15
minutes on 2 CPU cores): ``make test-slow``. Needs Debian's ``dataset-fashion-mnist``; skips with the
reason when it is missing.
"""

from __future__ import annotations

import gzip
import os
import shutil

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

FASHION = "/usr/share/datasets/fashion-mnist"
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not os.path.isdir(FASHION):
        pytest.skip(f"{FASHION} missing: apt-get install dataset-fashion-mnist")
    from ganforge.data.ingest import ingest

    root = tmp_path_factory.mktemp("fashion")
    raw = root / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        with gzip.open(os.path.join(FASHION, name + ".gz")) as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return ingest("fashion-mnist", str(root / "ds"), input=str(root / "tv")).uri


def test_ema_is_not_worse_than_raw_after_a_thousand_steps(fashion, tmp_path):
    import torch

    from ganforge.evaluate import EvalConfig, evaluate
    from ganforge.training import resolve_config, train

    torch.set_num_threads(2)
    result = train(resolve_config({"dataset": fashion, "preset": "fashion-dcgan", "ema_decay": 0.999,
                                   "steps": 1000, "output": str(tmp_path / "run"), "track": False}))
    fid = {}
    for weights in ("ema", "raw"):
        record = evaluate(EvalConfig(dataset=fashion, model=result.checkpoint, weights=weights, n=1000,
                                     n_real=1000, split="test", metrics=("fid",), track=False))
        fid[weights] = next(iter(record["metrics"].values()))
    # Measured here: EMA 125.7 vs raw 119.4 (+5%) at 1,000 steps; issue 12 measured +4% at ~6 CPU-minutes and
    # -2%..-6% from 20 minutes on: while FID still falls fast the average lags its last ~70 steps. The
    # defect this guards against (no ramp-up, copied batch-norm statistics) scored 3x raw.
    assert fid["ema"] <= 1.10 * fid["raw"], fid
