"""Per-image conformal flags and the set-level Beta-Binomial test (issue 14), by hand on small numbers."""

import math

import pytest
import torch
from scipy.stats import betabinom

from ganforge.audit.memorization import (
    AuditThresholds,
    calibration_rank,
    check_generated_count,
    conformal_p_values,
    flag_test,
    min_generated_for_test,
    plan_baseline,
)
from ganforge.errors import GanforgeError


def test_conformal_p_values_by_hand():
    baseline = torch.tensor([1.0, 2.0, 2.0, 5.0])  # n = 4: p = (1 + #{h <= s}) / 5
    p = conformal_p_values(torch.tensor([0.5, 1.0, 2.0, 3.0, 9.0]), baseline)
    assert p.tolist() == pytest.approx([1 / 5, 2 / 5, 4 / 5, 4 / 5, 5 / 5])


def test_flag_iff_below_the_kth_smallest_baseline_score():
    g = torch.Generator().manual_seed(0)
    base, scores = torch.rand(999, generator=g), torch.rand(5000, generator=g)
    for alpha in (0.001, 0.01, 0.05):
        k = calibration_rank(alpha, 999)
        assert k == math.floor(alpha * 1000 + 1e-9)
        flagged = conformal_p_values(scores, base) <= alpha
        assert torch.equal(flagged, scores < torch.sort(base).values[k - 1])


def test_flag_test_is_beta_binomial_by_hand():
    # n = 9 baseline images, alpha = 0.2: k = floor(0.2 * 10) = 2, X ~ BetaBinomial(N, 2, 8)
    expected, p = flag_test(3, 4, 9, 0.2)
    assert expected == pytest.approx(4 * 2 / 10)
    # P(X >= 3) = P(3) + P(4); P(x) = C(4, x) B(x + 2, 4 - x + 8) / B(2, 8)
    beta = lambda a, b: math.gamma(a) * math.gamma(b) / math.gamma(a + b)  # noqa: E731
    by_hand = sum(math.comb(4, x) * beta(x + 2, 12 - x) / beta(2, 8) for x in (3, 4))
    assert p == pytest.approx(by_hand, rel=1e-9)
    assert flag_test(0, 4, 9, 0.2)[1] == pytest.approx(1.0)


def test_beta_binomial_is_calibrated_where_the_binomial_is_not():
    # honest sets: the chance that the test fails them stays at or below its level
    n, alpha, big_n = 999, 0.01, 1000
    k = calibration_rank(alpha, n)
    x = torch.arange(big_n + 1)
    pmf = torch.tensor(betabinom.pmf(x.numpy(), big_n, k, n + 1 - k))
    fails = torch.tensor([flag_test(int(c), big_n, n, alpha)[1] < 0.01 for c in x])
    assert float(pmf[fails].sum()) <= 0.01
    from scipy.stats import binom

    # the plain binomial's 1% critical value fails honest sets far more often than 1%
    crit = int(binom.isf(0.01, big_n, alpha)) + 1
    assert float(pmf[crit:].sum()) > 0.03  # 4.3%: four times the stated level


def test_unreachable_alpha_and_too_few_generated_images():
    with pytest.raises(GanforgeError, match=r"alpha=0.001 needs at least 999 baseline images.*--alpha 0.0099"):
        flag_test(1, 10, 100, 0.001)
    need = min_generated_for_test(100, 0.2, 1e-6)
    k = calibration_rank(0.2, 100)
    assert betabinom.pmf(need, need, k, 101 - k) < 1e-6 <= betabinom.pmf(need - 1, need - 1, k, 101 - k)
    th = AuditThresholds(test_level=1e-6)
    with pytest.raises(GanforgeError, match=f"at least {max(20, need)} generated images, got 3"):
        check_generated_count(3, 100, 0.2, th)


def test_baseline_plan_states_its_rule():
    th = AuditThresholds()
    assert plan_baseline(60000, 10000, th) == ("heldout", 10000, 0.001)
    assert plan_baseline(60000, 500, th) == ("leave-one-out", 10000, 0.001)  # held-out too small: LOO, capped
    assert plan_baseline(60000, None, th) == ("leave-one-out", 10000, 0.001)
    assert plan_baseline(300, None, th) == ("leave-one-out", 300, 1 / 301)  # default alpha follows a small set
    assert plan_baseline(300, 400, th) == ("heldout", 400, 1 / 401)
    with pytest.raises(GanforgeError, match="alpha=0.001 needs at least 999 baseline images"):
        plan_baseline(300, None, AuditThresholds(alpha=0.001))
    assert plan_baseline(300, None, AuditThresholds(alpha=0.01)) == ("leave-one-out", 300, 0.01)
