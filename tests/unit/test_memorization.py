"""Memorisation audit on real structure (scikit-learn digits): copiers fail, unseen images pass."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import mannwhitneyu
from sklearn.datasets import load_digits

from ganforge.audit.memorization import (
    AuditThresholds,
    cell_z_u,
    count_exact_duplicates,
    fraction_below_baseline,
    mann_whitney_z,
    nearest_pairs_sheet,
    run_audit,
    summarize,
)
from ganforge.errors import GanforgeError
from ganforge.metrics.features import FeatureExtractor, InputContract


@pytest.fixture(scope="module")
def splits():
    """Digits upscaled to 16x16 uint8, split into train / baseline held-out / unseen 'generator' images."""
    x = torch.from_numpy(load_digits().images).float()[:, None] * (255 / 16)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1100]], x[perm[1100:1450]], x[perm[1450:1750]]


def noisy(x, amplitude, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x.int() + torch.randint(-amplitude, amplitude + 1, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def test_unseen_images_pass(splits):
    train, heldout, unseen = splits
    r = run_audit(unseen, train, heldout)
    assert r.verdict == "pass", r.reasons
    assert r.exact_duplicates == 0 and r.fraction_below_baseline < 0.05 and abs(r.z_u) < 3


@pytest.mark.parametrize("make_copies", [
    lambda t: t[:300],                                   # exact copies
    lambda t: noisy(t[:300], 6),                         # copies with small noise (no exact duplicate)
    lambda t: torch.flip(t[:300], dims=[3]),             # mirrored copies
    lambda t: torch.flip(noisy(t[:300], 6), dims=[3]),   # mirrored noisy copies
], ids=["exact", "noise", "flip", "flip+noise"])
def test_copies_fail(splits, make_copies):
    train, heldout, _ = splits
    r = run_audit(make_copies(train), train, heldout)
    assert r.verdict == "fail"
    assert r.fraction_below_baseline > 0.9 and r.z_u < -10


def test_flips_are_only_caught_when_flipped_training_images_are_references(splits):
    train, heldout, _ = splits
    flipped = torch.flip(train[:300], dims=[3])
    r = run_audit(flipped, train, heldout)
    assert r.exact_duplicates == 300 and all(p.flipped for p in r.nearest_pairs)
    blind = run_audit(flipped, train, heldout, thresholds=AuditThresholds(invariance="none"))
    assert blind.exact_duplicates == 0  # a mirror image is far in pixel space: why check_flips exists


def test_partial_copier_fails_on_the_fraction(splits):
    train, heldout, unseen = splits
    r = run_audit(torch.cat([noisy(train[:30], 4), unseen[:270]]), train, heldout)
    assert r.verdict == "fail" and r.exact_duplicates == 0
    assert any("nearer to a training image" in why for why in r.reasons)


def test_report_json_pairs_and_sheet(splits, tmp_path):
    train, heldout, unseen = splits
    gen = torch.cat([train[5:6], unseen[:40]])  # one exact copy, of training image 5
    sheet = tmp_path / "pairs.png"
    r = run_audit(gen, train, heldout, n_pairs=4, sheet_path=sheet)
    first = r.nearest_pairs[0]
    assert (first.generated_index, first.train_index, first.distance) == (0, 5, 0.0)
    assert [p.distance for p in r.nearest_pairs] == sorted(p.distance for p in r.nearest_pairs)
    data = json.loads(r.to_json())
    assert data["verdict"] == "fail" and data["space"] == "pixels" and data["exact_duplicates"] == 1
    img = np.asarray(Image.open(sheet))
    assert img.shape == (2 + 18, 2 + 8 * 18, 3)  # one row of 4 pairs, 16px tiles, 2px padding
    left, right = img[2:18, 2:18, 0], img[2:18, 20:36, 0]
    assert np.array_equal(left, gen[0, 0].numpy()) and np.array_equal(right, train[5, 0].numpy())


def test_feature_space_audit(splits):
    train, heldout, unseen = splits
    proj = torch.randn(256, 32, generator=torch.Generator().manual_seed(3))
    ext = FeatureExtractor("random-projection", lambda x: x.flatten(1) @ proj,
                           InputContract(size=None, channels=1, value_range=(0.0, 1.0)), 32, "0" * 64)
    th = AuditThresholds(invariance="mirror")
    assert run_audit(noisy(train[:200], 4), train, heldout, space=ext, thresholds=th).verdict == "fail"
    r = run_audit(unseen, train, heldout, space=ext, metric="l1", thresholds=th)
    assert r.verdict == "pass" and r.space == "random-projection"


def test_statistics_against_hand_values_and_scipy():
    g, h = torch.tensor([1.0, 2.0, 2.0, 5.0]), torch.tensor([2.0, 3.0, 4.0])
    # U = #{g_i > h_j} + ties/2 = (0) + (0.5) + (0.5) + (3) = 4; scipy agrees.
    assert mannwhitneyu(g.numpy(), h.numpy()).statistic == 4.0
    z = mann_whitney_z(g, h)
    var = 4 * 3 / 12 * (8 - (3**3 - 3) / (7 * 6))  # pooled sample has one tie group (2, 2, 2): t = 3
    assert z == pytest.approx((4 - 6) / var**0.5)
    assert mann_whitney_z(torch.zeros(5), torch.zeros(5)) == 0.0
    threshold, frac = fraction_below_baseline(torch.tensor([0.0, 1.0, 10.0, 10.0]), torch.arange(101.0), 0.01)
    assert (threshold, frac) == (1.0, 0.25)
    s = summarize(torch.arange(101.0))
    assert (s.min, s.p1, s.p5, s.p50, s.mean) == (0.0, 1.0, 5.0, 50.0, 50.0)
    a = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    a[1, 0, 0, 0] = 7
    assert count_exact_duplicates(a, a[1:2]) == 1


def test_cell_statistic_c_t(splits):
    # Hand case: two cells; cell 0 copies (generated distances all below held-out), cell 1 equal.
    gen_d, held_d = torch.tensor([0.0] * 10 + [5.0] * 12), torch.tensor([3.0] * 10 + [5.0] * 30)
    gen_c, held_c = torch.tensor([0] * 10 + [1] * 12), torch.tensor([0] * 10 + [1] * 30)
    c_t, used = cell_z_u(gen_d, held_d, gen_c, held_c, min_cell_samples=10)
    z0 = mann_whitney_z(gen_d[:10], held_d[:10])
    assert used == 2 and c_t == pytest.approx(0.25 * z0 + 0.75 * 0.0)
    assert cell_z_u(gen_d, held_d, gen_c, held_c, min_cell_samples=11) == (pytest.approx(0.0), 1)
    train, heldout, unseen = splits
    th = AuditThresholds(cells=5)
    fresh = run_audit(unseen, train, heldout, thresholds=th)
    assert fresh.verdict == "pass" and fresh.cells_used >= 3 and abs(fresh.c_t) < 3
    copies = run_audit(noisy(train[:300], 6), train, heldout, thresholds=th)
    assert copies.verdict == "fail" and copies.c_t < -5


def test_too_few_images_say_how_many(splits):
    train, heldout, unseen = splits
    with pytest.raises(GanforgeError, match="at least 20 generated images, got 5"):
        run_audit(unseen[:5], train, heldout)
    with pytest.raises(GanforgeError, match="alpha=0.0001 needs at least 9999 baseline images"):
        run_audit(unseen, train, heldout, thresholds=AuditThresholds(alpha=0.0001))
    with pytest.raises(GanforgeError, match="uint8"):
        run_audit(unseen.float(), train, heldout)


def test_sheet_direct(tmp_path):
    gen = torch.full((3, 1, 4, 4), 9, dtype=torch.uint8)
    train = torch.arange(2 * 16, dtype=torch.uint8).reshape(2, 1, 4, 4)
    p = nearest_pairs_sheet(gen, train, torch.tensor([1, 0, 1]), torch.tensor([3.0, 1.0, 2.0]), 2, tmp_path / "s.png")
    img = np.asarray(Image.open(p))
    assert img.shape == (8, 2 + 4 * 6, 3)  # 2 pairs: one row of 4 tiles
    assert np.array_equal(img[2:6, 8:12, 0], train[0, 0].numpy())  # closest pair (distance 1) first
