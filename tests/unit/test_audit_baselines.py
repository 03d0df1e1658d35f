"""Issue 25: the audit's baseline is exchangeable with the training images.

An ``audit`` split carved at ingest from the training images, else leave-one-out; an official test split
only when asked. On a dataset whose test split is drawn differently (thicker strokes, another ink), honest
sets from the training source pass at least 95 of 100 audits and sets with 1% planted copies of each kind
fail all 100, also with near-duplicates inside the training source; the old default (the test split)
fails most honest sets. Sets are drawn from scored pools (``ganforge.audit.calibration``): the verdicts
are ``run_audit``'s, checked below on one set.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganforge.audit.calibration import KINDS, decide_set, failures, plant, score_pools, strokes
from ganforge.audit.memorization import run_audit
from ganforge.audit.run import choose_baseline
from ganforge.data.config import IngestConfig
from ganforge.data.ingest import carve_audit, ingest
from ganforge.errors import GanforgeError

RUNS, SET, PLANTED = 100, 1000, 10  # 1% copies


def carve(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    cfg = IngestConfig(source="digits", output="unused", audit_fraction=fraction, split_seed=seed)
    return carve_audit(np.full(n, "train"), np.ones(n, dtype=bool), cfg)


@pytest.fixture(scope="module")
def shifted():
    """Pen strokes: a training source (5,000 train + 1,000 audit carved at random), an official test split
    with thicker strokes in fainter ink, honest images from the training source, copies of training images."""
    source = strokes(6000, 0)
    splits = carve(len(source), 1 / 6)
    train, audit = source[splits == "train"], source[splits == "audit"]
    test = strokes(1000, 1, thick=(2.0, 3.0), ink=200.0)
    g = torch.Generator().manual_seed(5)
    pools = {"honest": strokes(2000, 2)}
    pools |= {k: plant(k, train[torch.randperm(len(train), generator=g)[:100]], g) for k in KINDS}
    return train, audit, test, pools


@pytest.fixture(scope="module")
def duplicated():
    """The same source with 3% of its images drawn twice (exact, mirrored, shifted or lightly noisy second
    copies) before the audit split is carved: twins on both sides of it, and inside train."""
    base = strokes(5820, 10)
    g = torch.Generator().manual_seed(11)
    twins = torch.cat([plant(k, base[i * 45 : (i + 1) * 45], g) for i, k in enumerate(KINDS)])
    light = (base[180:225].float() + torch.randn(45, 1, 28, 28, generator=g) * 0.02 * 255).round().clamp(0, 255)
    source = torch.cat([base, twins, light.to(torch.uint8)])  # 6,045 images, 225 of them a second copy
    source = source[torch.randperm(len(source), generator=g)]
    splits = carve(len(source), 1 / 6, seed=3)
    train, audit = source[splits == "train"], source[splits == "audit"]
    pools = {"honest": strokes(2000, 12)}
    pools |= {k: plant(k, train[torch.randperm(len(train), generator=g)[:100]], g) for k in KINDS}
    return train, audit, pools


def passed(reasons: list[list[str]]) -> int:
    return sum(not r for r in reasons)


# ---- ingest: the audit split -----------------------------------------------------------------------------


def test_the_audit_split_is_a_seeded_random_share_of_the_training_images():
    a, b, c = carve(1000, 0.1), carve(1000, 0.1), carve(1000, 0.1, seed=1)
    assert (a == "audit").sum() == 100 and np.array_equal(a, b) and not np.array_equal(a, c)
    spread = np.flatnonzero(a == "audit")
    assert spread.min() < 100 and spread.max() > 900  # drawn from the whole set, not its head
    official = np.array(["train"] * 800 + ["test"] * 200)  # a source with its own splits: only train is carved
    out = carve_audit(official, np.ones(1000, dtype=bool),
                      IngestConfig(source="mnist", output="unused", audit_fraction=0.25))
    assert (out[800:] == "test").all() and (out == "audit").sum() == 200


@pytest.mark.parametrize("fraction, fix", [(0.0001, "leaves the audit split empty"),
                                           (0.9999, "leaves the train split empty")])
def test_an_audit_fraction_leaving_a_split_empty_is_refused(fraction, fix):
    with pytest.raises(GanforgeError, match=fix):
        carve(100, fraction)


def test_ingest_records_the_audit_split_in_manifest_and_fingerprint(tmp_path):
    plain = ingest("digits", str(tmp_path / "plain"))
    carved = ingest("digits", str(tmp_path / "carved"), audit_fraction=0.2)
    m = json.loads((tmp_path / "carved" / "manifest.json").read_text())
    assert m["counts"]["splits"]["audit"] == round(0.2 * plain.manifest["counts"]["splits"]["train"])
    assert m["counts"]["splits"]["val"] == plain.manifest["counts"]["splits"]["val"]  # the val split is unchanged
    assert m["carved_splits"] == ["audit", "val"] and m["options"]["audit_fraction"] == 0.2
    assert carved.fingerprint != plain.fingerprint
    # an ingest without it keeps the inputs key it always had: existing datasets are reused, not refused
    assert "audit_fraction" not in plain.manifest["options"]
    assert ingest("digits", str(tmp_path / "plain")).reused


def test_training_never_sees_the_audit_split(tmp_path):
    from ganforge.data import load

    uri = ingest("digits", str(tmp_path / "d"), audit_fraction=0.2).uri
    train, audit = load(uri, "train"), load(uri, "audit")
    assert len(train.images) + len(audit.images) == 1617  # digits minus the val split
    from ganforge.audit.memorization import image_hashes

    assert not set(image_hashes(train.images)) & set(image_hashes(audit.images))  # (digits repeats no image)


# ---- which baseline --------------------------------------------------------------------------------------


def manifest(splits: dict, carved: list[str]) -> dict:
    return {"counts": {"splits": splits}, "carved_splits": carved}


def test_auto_takes_the_audit_split_then_a_carved_val_split_then_leave_one_out():
    assert choose_baseline("auto", manifest({"train": 9, "audit": 3, "test": 3}, ["audit"]), "d")[0] == "audit"
    assert choose_baseline("auto", manifest({"train": 9, "val": 3}, ["val"]), "d")[0] == "val"
    split, why = choose_baseline("auto", manifest({"train": 9, "test": 3}, []), "d")
    assert split is None and "--audit-fraction" in why and "--baseline test" in why
    assert choose_baseline("auto", manifest({"train": 9, "val": 3}, []), "d")[0] is None  # the source's own val


def test_an_asked_official_split_is_used_and_said_to_be_drawn_apart():
    split, why = choose_baseline("test", manifest({"train": 9, "test": 3}, []), "d")
    assert split == "test" and "asked for (--baseline test)" in why and "shift" in why
    assert "shift" not in choose_baseline("audit", manifest({"train": 9, "audit": 3}, ["audit"]), "d")[1]
    assert choose_baseline("leave-one-out", manifest({"train": 9, "audit": 3}, ["audit"]), "d")[0] is None
    with pytest.raises(GanforgeError, match="has no split 'audit'"):
        choose_baseline("audit", manifest({"train": 9}, []), "d")


# ---- calibration on a shifted official split ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted_scores(shifted):
    train, audit, test, pools = shifted
    return score_pools(train, audit, pools), score_pools(train, test, {"honest": pools["honest"]})


def test_honest_sets_pass_against_the_audit_split(shifted_scores):
    audit_split, _ = shifted_scores
    assert passed(failures(audit_split, "honest", RUNS, SET)) >= 95


def test_the_shifted_test_split_would_have_failed_them(shifted_scores):
    _, test_split = shifted_scores
    reasons = failures(test_split, "honest", RUNS, SET)
    assert passed(reasons) <= 50 and any("Z_U" in why for r in reasons for why in r)


@pytest.mark.parametrize("kind", KINDS)
def test_one_percent_copies_fail_every_set(shifted_scores, kind):
    audit_split, _ = shifted_scores
    assert passed(failures(audit_split, "honest", RUNS, SET, planted=kind, n_planted=PLANTED, seed=1)) == 0


def test_a_drawn_set_gets_the_reasons_run_audit_gives_it(shifted, shifted_scores, tmp_path):
    train, audit, _, pools = shifted
    g = torch.Generator().manual_seed(0)
    for kind, n in (("noisy", PLANTED), (None, 0)):
        idx = torch.randperm(len(pools["honest"]), generator=g)[: SET - n]
        parts = [("honest", idx)] + ([(kind, torch.arange(n))] if kind else [])
        report = run_audit(torch.cat([pools[name][i] for name, i in parts]), train, audit,
                           baseline_cache=tmp_path / "baseline.npy")
        assert report.reasons == decide_set(shifted_scores[0], parts), kind
        assert report.n_baseline == len(shifted_scores[0].baseline.distances)
        assert (report.verdict == "fail") == (kind is not None)


# ---- near-duplicates inside the training source ----------------------------------------------------------


@pytest.fixture(scope="module")
def duplicated_scores(duplicated):
    train, audit, pools = duplicated
    return score_pools(train, audit, pools), score_pools(train, None, pools)


@pytest.mark.parametrize("which", ["audit", "leave-one-out"])
def test_near_duplicates_inside_train_are_counted_and_left_out_of_the_baseline(duplicated_scores, which):
    pool = duplicated_scores[0 if which == "audit" else 1]
    near = pool.baseline.near
    assert near.baseline > 0 and near.train_near > 0 and near.train_exact > 0
    assert len(pool.baseline.distances) == len(pool.baseline.raw) - near.baseline
    assert pool.baseline.flag_threshold() > near.radius  # not dragged to zero by the twins
    assert passed(failures(pool, "honest", RUNS, SET)) >= 95
    for kind in KINDS:
        assert passed(failures(pool, "honest", RUNS, SET, planted=kind, n_planted=PLANTED, seed=2)) == 0, kind
