"""The EMA generator on a real short run: not worse than the raw one (same n, backbone, seed).

Issue 12's defect: an average started at step 0 with no ramp-up, and batch-norm statistics copied from
the live generator, drew grey blobs for the first few thousand steps (FID 3x the raw one's). Here a
short run on scikit-learn's real digits (28 px, the 28 px DCGAN, decay 0.999 as the issue used) is judged
through ``ganforge.evaluate.evaluate`` with ``weights`` ema and raw. The pixels backbone keeps it fast;
``tests/slow/test_quality.py`` repeats the check with inception-tf on Fashion-MNIST.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

STEPS = 400


@pytest.fixture(scope="module")
def digits28(tmp_path_factory):
    from ganforge.data.ingest import ingest

    out = tmp_path_factory.mktemp("digits28")
    ingest("digits", output=str(out), image_size=28)
    return str(out)


def _train(dataset: str, out, **overrides) -> str:
    from ganforge.training import resolve_config, train

    flags = {"dataset": dataset, "preset": "digits-tiny", "steps": STEPS, "ema_decay": 0.999, "output": str(out),
             "track": False, **overrides}
    return train(resolve_config(flags)).checkpoint


def _fid(dataset: str, checkpoint: str, weights: str, seed: int = 0) -> float:
    from ganforge.evaluate import EvalConfig, evaluate

    record = evaluate(EvalConfig(dataset=dataset, model=checkpoint, weights=weights, n=1000, seed=seed,
                                 metrics=("fid",), backbone="pixels", track=False))
    assert record["judged"]["weights"] == weights
    return next(iter(record["metrics"].values()))


def test_ema_generator_is_not_worse_than_the_raw_one(digits28, tmp_path):
    checkpoint = _train(digits28, tmp_path / "ramped")
    # Two latent seeds each: FID at n=1000 moves ~1-2% between seeds for the same weights.
    ema = sum(_fid(digits28, checkpoint, "ema", seed) for seed in (0, 1)) / 2
    raw = sum(_fid(digits28, checkpoint, "raw", seed) for seed in (0, 1)) / 2
    # Measured here (400-1000 steps): EMA within -2%..+3% of raw; the defect made it 60% worse at 200
    # steps and 3x worse on Fashion-MNIST at 1,032 (issue 12). 5% separates the two without flaking.
    assert ema <= 1.05 * raw, (ema, raw)


def test_without_rampup_the_early_average_is_far_worse(digits28, tmp_path):
    """The control: the same run with a plain average from step 0 still carries the initial weights."""
    checkpoint = _train(digits28, tmp_path / "plain", ema_rampup=0.0, steps=200)
    ema, raw = _fid(digits28, checkpoint, "ema"), _fid(digits28, checkpoint, "raw")
    assert ema > 1.3 * raw, (ema, raw)
