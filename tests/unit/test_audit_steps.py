"""The memorisation audit's steps one at a time (issue 23, item 5): plan, space, baseline, scoring, decision
and report, each on small hand-made inputs; and ``run_audit`` is exactly their composition."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ganforge.audit.invariant import Match, pixel_space
from ganforge.audit.memorization import (
    AuditThresholds,
    Baseline,
    BaselinePlan,
    NearDuplicates,
    NearestSearch,
    audit_report,
    audit_space,
    baseline_distances,
    calibration_rank,
    decide,
    flag_test,
    mann_whitney_z,
    nearest_pairs_sheet,
    plan_audit,
    run_audit,
    score,
    score_generated,
)
from ganforge.errors import GanforgeError
from ganforge.metrics.features import FeatureExtractor, InputContract

# no shift, blur or levels: distances are plain L2 between the images' bytes, checkable by hand
PLAIN = AuditThresholds(invariance="none", blur=0, levels=0, alpha=0.1, min_generated=2)


def images(n: int, seed: int, size: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def search(th: AuditThresholds = PLAIN, pad: int = 0, train_mirror=None) -> NearestSearch:
    return NearestSearch(th, "l2", pad, train_mirror, 1024, 8192, "cpu")


def brute_nearest(queries: torch.Tensor, train: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
    d = torch.cdist(queries.flatten(1).double(), train.flatten(1).double())
    if own is not None:
        d[torch.arange(len(queries)), own] = float("inf")  # never itself
    return d.min(dim=1).values


class CountingExtractor:
    """A feature space that counts what it extracts: features are the mean of each image row."""

    def __init__(self):
        self.calls: list[str] = []
        self.inner = FeatureExtractor("row-means", lambda x: x.mean(dim=-1).flatten(1),
                                      InputContract(size=None, channels=1, value_range=(0.0, 1.0)), 6, "1" * 64)
        self.name, self.sha256 = self.inner.name, self.inner.sha256

    def extract(self, x, batch_size, progress=None):
        self.calls.append(progress)
        return self.inner.extract(x, batch_size, progress=None)


# ---- plan --------------------------------------------------------------------------------------------


def test_plan_takes_the_heldout_split_when_it_can_reach_alpha():
    train, held = images(30, 0), images(12, 1)
    plan = plan_audit(images(20, 2), train, held, "pixels", PLAIN)
    assert (plan.kind, plan.n, plan.alpha, plan.own) == ("heldout", 12, 0.1, None)
    assert plan.images(train, held) is held


def test_plan_leaves_out_a_seeded_sorted_sample_of_train():
    train = images(30, 0)
    th = PLAIN.model_copy(update={"max_baseline": 10})
    plan = plan_audit(images(20, 2), train, None, "pixels", th)
    assert (plan.kind, plan.n) == ("leave-one-out", 10)
    assert plan.own.tolist() == sorted(set(plan.own.tolist())) and len(plan.own) == 10
    assert torch.equal(plan.own, plan_audit(images(20, 3), train, None, "pixels", th).own)  # the same every run
    assert torch.equal(plan.images(train, None), train[plan.own])


@pytest.mark.parametrize("space, th, match", [
    ("bogus", PLAIN, "unknown audit space 'bogus'"),
    (CountingExtractor(), AuditThresholds(invariance="shift", alpha=0.1), "--invariance shift compares pixels"),
    ("pixels", PLAIN.model_copy(update={"min_generated": 50}), "needs at least 50 generated images, got 20"),
])  # fmt: skip
def test_plan_refuses_before_any_work(space, th, match):
    with pytest.raises(GanforgeError, match=match):
        plan_audit(images(20, 2), images(30, 0), images(12, 1), space, th)
    if isinstance(space, CountingExtractor):
        assert space.calls == []


# ---- space -------------------------------------------------------------------------------------------


def test_pixel_space_is_levels_then_blur_and_embeds_the_baseline_when_first_needed():
    train, held, gen = images(30, 0, 12), images(12, 1, 12), images(20, 2, 12)
    th = AuditThresholds(invariance="shift", blur=1.0, levels=0.05, alpha=0.1)
    space = audit_space("pixels", th, gen, train, BaselinePlan("heldout", 12, 0.1), held, 64)
    assert space.name == "pixels" and space.pad == 2 and space.train_mirror is None
    assert torch.equal(space.generated, pixel_space(gen, 0.05, 1.0))
    assert torch.equal(space.train, pixel_space(train, 0.05, 1.0))
    assert space._baseline is None  # not embedded until a step needs it
    assert torch.equal(space.baseline("held-out"), pixel_space(held, 0.05, 1.0))


def test_feature_space_extracts_each_set_once_and_reuses_train_for_leave_one_out():
    train, held, gen = images(30, 0), images(12, 1), images(20, 2)
    ext = CountingExtractor()
    th = PLAIN.model_copy(update={"invariance": "mirror"})
    space = audit_space(ext, th, gen, train, BaselinePlan("heldout", 12, 0.1), held, 64)
    assert ext.calls == ["extract row-means generated", "extract row-means train",
                         "extract row-means mirrored train"]
    assert space.pad == 0 and torch.allclose(space.train_mirror, ext.inner.extract(torch.flip(train, dims=[-1]), 64))
    first = space.baseline("held-out")
    assert space.baseline("baseline") is first and ext.calls[-1] == "extract row-means held-out"
    assert len(ext.calls) == 4  # held-out images extracted once, on first use

    ext.calls.clear()
    own = torch.tensor([1, 4, 7])
    loo = audit_space(ext, PLAIN, gen, train, BaselinePlan("leave-one-out", 3, 0.25, own), train[own], 64)
    assert torch.equal(loo.baseline("held-out"), loo.train[own]) and len(ext.calls) == 2  # no extraction


# ---- baseline ----------------------------------------------------------------------------------------


def test_baseline_distances_are_each_baseline_image_nearest_training_distance(tmp_path):
    train, held = images(40, 0), images(12, 1)
    plan = BaselinePlan("heldout", 12, 0.1)
    space = audit_space("pixels", PLAIN, images(20, 2), train, plan, held, 64)
    base = baseline_distances(plan, space, search(), train, "l2")
    assert not base.cached and base.brute_force == 0
    assert torch.allclose(base.raw, brute_nearest(held, train))


def test_leave_one_out_never_matches_an_image_with_itself():
    train = torch.cat([images(20, 0), images(20, 0)[:5]])  # images 20..24 repeat 0..4
    own = torch.tensor([0, 3, 10, 12, 21])
    plan = BaselinePlan("leave-one-out", 5, 0.2, own)
    space = audit_space("pixels", PLAIN, images(20, 2), train, plan, train[own], 64)
    with pytest.raises(GanforgeError, match="3 of the 5 are near-duplicates of training images, leaving 2"):
        baseline_distances(plan, space, search(), train, "l2")  # alpha 0.1 asked: two images cannot reach it
    th = PLAIN.model_copy(update={"alpha": None})
    base = baseline_distances(plan, space, search(th), train, "l2")
    assert torch.allclose(base.raw, brute_nearest(train[own], train, own))
    assert base.raw[0] == 0 and base.raw[1] == 0 and base.raw[4] == 0 and base.raw[2] > 0  # its twin, not itself
    # the twins are the same pictures as training images, not unseen ones: left out, counted, the alpha follows
    assert base.near.baseline == 3 and base.near.train_near == 3 and base.near.train_exact == 10
    assert torch.equal(base.distances, base.raw[2:4]) and base.alpha == pytest.approx(1 / 3)


def test_baseline_cache_is_written_then_read_and_a_wrong_one_refused(tmp_path):
    train, held = images(40, 0), images(12, 1)
    plan = BaselinePlan("heldout", 12, 0.1)
    cache = tmp_path / "cache" / "base.npy"
    fresh = baseline_distances(plan, audit_space("pixels", PLAIN, images(20, 2), train, plan, held, 64), search(),
                               train, "l2", cache)
    assert np.array_equal(np.load(cache), fresh.raw.numpy())
    space = audit_space("pixels", PLAIN, images(20, 2), train, plan, held, 64)
    again = baseline_distances(plan, space, search(), train, "l2", cache)
    assert again.cached and torch.equal(again.distances, fresh.distances) and again.near == fresh.near
    assert space._baseline is None  # read from the cache: the baseline images were never embedded
    with pytest.raises(GanforgeError, match="holds 12 distances, expected 13; delete it"):
        baseline_distances(BaselinePlan("heldout", 13, 0.1), space, search(), train, "l2", cache)


# ---- scoring -----------------------------------------------------------------------------------------


def hand_baseline(alpha: float = 0.1) -> Baseline:
    return Baseline(BaselinePlan("heldout", 19, alpha), torch.arange(1.0, 20.0, dtype=torch.float64),
                    NearDuplicates(0.0), alpha)


def hand_match(dist: list[float]) -> Match:
    n = len(dist)
    return Match(torch.tensor(dist, dtype=torch.float64), torch.arange(n) * 2, torch.tensor([False, True] * (n // 2)
                 + [False] * (n % 2)), torch.zeros(n, 2, dtype=torch.long))


def test_score_by_hand():
    # baseline 1..19 (n = 19), alpha 0.1: k = floor(0.1 * 20) = 2, so the flag threshold is 2.0;
    # p = (1 + #{h <= s}) / 20: 0.5 -> 1/20, 1.5 -> 2/20, 2.0 -> 3/20, 3.0 -> 4/20, 10.0 -> 11/20
    th = AuditThresholds(baseline_quantile=0.1)
    s = score(hand_match([10.0, 1.5, 2.0, 0.5, 3.0]), hand_baseline(), th)
    assert s.p_values.tolist() == pytest.approx([11 / 20, 2 / 20, 3 / 20, 1 / 20, 4 / 20])
    assert s.flagged == [3, 1]  # p <= 0.1, smallest first
    assert s.flag_threshold == 2.0 and calibration_rank(0.1, 19) == 2
    assert (s.expected_flagged, s.flag_test_p_value) == pytest.approx(flag_test(2, 5, 19, 0.1))
    # the baseline's 10% quantile: 1 + 0.1 * 18 = 2.8; below it: 1.5, 2.0, 0.5
    assert s.baseline_threshold == pytest.approx(2.8) and s.fraction_below_baseline == pytest.approx(3 / 5)
    assert s.z_u == pytest.approx(mann_whitney_z(torch.tensor([10.0, 1.5, 2.0, 0.5, 3.0]), torch.arange(1.0, 20.0)))
    assert (s.exact_duplicates, s.c_t, s.cells_used, s.alpha) == (0, None, 0, 0.1)


def test_score_generated_counts_exact_and_mirrored_duplicates():
    train, held = images(40, 0), images(12, 1)
    gen = torch.cat([train[5:6], torch.flip(train[7:8], dims=[-1]), images(18, 2)])
    for invariance, dups in (("mirror", 2), ("none", 1)):
        th = PLAIN.model_copy(update={"invariance": invariance})
        plan = BaselinePlan("heldout", 12, 0.1)
        space = audit_space("pixels", th, gen, train, plan, held, 64)
        base = baseline_distances(plan, space, search(th), train, "l2")
        s = score_generated(gen, train, space, base, search(th))
        assert s.exact_duplicates == dups
        assert s.nearest.dist[0] == 0 and s.nearest.index[0] == 5
        assert 0 in s.flagged and (invariance == "none") != (1 in s.flagged)
        ref = score(s.nearest, base, th)  # the rest is ``score`` of the nearest distances
        assert s.flagged == ref.flagged and torch.equal(s.p_values, ref.p_values)
        assert (s.z_u, s.fraction_below_baseline, s.flag_test_p_value) == (ref.z_u, ref.fraction_below_baseline,
                                                                           ref.flag_test_p_value)


# ---- decision ----------------------------------------------------------------------------------------


@pytest.fixture
def clean():
    s = score(hand_match([5.0 + i for i in range(10)]), hand_baseline(), AuditThresholds())
    return replace(s, z_u=0.0)


def test_a_clean_score_passes(clean):
    assert decide(clean, AuditThresholds()) == []


@pytest.mark.parametrize("change, said", [
    ({"exact_duplicates": 1}, "1 generated images are exact copies of training images (max 0)"),
    ({"flag_test_p_value": 0.001, "flagged": [1, 2, 3]}, "3 generated images are flagged as copies where 1 are "
                                                         "expected at alpha=0.1 (Beta-Binomial p = 0.001 < 0.01)"),
    ({"fraction_below_baseline": 0.25}, "25.0% of generated images are nearer to a training image than the "
                                        "baseline's 1% quantile (max 5.0%)"),
    ({"z_u": -3.5}, "data-copying Z_U = -3.50 < -3.0"),
    ({"c_t": -4.0, "cells_used": 3}, "cell-averaged data-copying C_T = -4.00 < -3.0 over 3 cells"),
])  # fmt: skip
def test_each_threshold_crossed_is_one_reason(clean, change, said):
    reasons = decide(replace(clean, **change), AuditThresholds())
    assert len(reasons) == 1 and reasons[0].startswith(said), reasons


def test_thresholds_move_the_decision(clean):
    th = AuditThresholds(max_exact_duplicates=2, min_z_u=-5.0)
    assert decide(replace(clean, exact_duplicates=2, z_u=-4.0, c_t=-4.5, cells_used=2), th) == []
    assert len(decide(replace(clean, exact_duplicates=3, z_u=-6.0), th)) == 2


# ---- report ------------------------------------------------------------------------------------------


def test_report_holds_the_numbers_and_the_closest_pairs(clean):
    space = audit_space("pixels", PLAIN, images(20, 2), images(30, 0), BaselinePlan("heldout", 19, 0.1),
                        images(19, 1), 64)
    s = score(hand_match([10.0, 1.5, 2.0, 0.5, 3.0]), replace(hand_baseline(), brute_force=3),
              AuditThresholds(baseline_quantile=0.1))
    r = audit_report(s, replace(hand_baseline(), brute_force=3), ["a reason"], space, PLAIN, "l1", 30, 19, 3)
    assert (r.verdict, r.reasons, r.space, r.metric, r.invariance) == ("fail", ["a reason"], "pixels", "l1", "none")
    assert (r.n_generated, r.n_train, r.n_heldout, r.baseline, r.n_baseline) == (5, 30, 19, "heldout", 19)
    assert [p.generated_index for p in r.nearest_pairs] == [3, 1, 2]  # closest first, n_pairs of them
    assert [p.p_value is not None for p in r.nearest_pairs] == [True, True, False]  # p only when flagged
    assert [(p.generated_index, p.train_index, p.flipped) for p in r.flagged] == [(3, 6, True), (1, 2, True)]
    assert r.n_flagged == 2 and r.flag_threshold == 2.0 and r.brute_force_queries == 3
    assert (r.generated_to_train.min, r.heldout_to_train.n) == (0.5, 19)
    assert audit_report(clean, hand_baseline(), [], space, PLAIN, "l2", 30, 19, 3).verdict == "pass"


# ---- together ----------------------------------------------------------------------------------------


def test_run_audit_is_the_steps_in_order(tmp_path):
    train, held = images(60, 0), images(15, 1)
    gen = torch.cat([train[:3], images(27, 2)])
    th = PLAIN.model_copy(update={"cells": 2, "min_cell_samples": 2})
    plan = plan_audit(gen, train, held, "pixels", th)
    space = audit_space("pixels", th, gen, train, plan, plan.images(train, held), 64)
    base = baseline_distances(plan, space, search(th), train, "l2")
    s = score_generated(gen, train, space, base, search(th))
    steps = audit_report(s, base, decide(s, th), space, th, "l2", len(train), len(held), 4)
    nearest_pairs_sheet(gen, train, s.nearest.index, s.nearest.dist, 4, tmp_path / "steps.png",
                        flipped=s.nearest.flipped, first=s.flagged)
    whole = run_audit(gen, train, held, thresholds=th, n_pairs=4, sheet_path=tmp_path / "whole.png")
    assert json.loads(whole.to_json()) == json.loads(steps.to_json())
    assert whole.verdict == "fail" and whole.exact_duplicates == 3 and whole.cells_used >= 1
    assert (tmp_path / "whole.png").read_bytes() == (tmp_path / "steps.png").read_bytes()
