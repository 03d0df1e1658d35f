"""The audit's pixel space (levels, blur, uint8) and its invariances, over random settings (issue 14)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganforge.audit.invariant import nearest_train, pixel_space, refine
from ganforge.audit.memorization import AuditThresholds, conformal_p_values, run_audit
from tests.unit.test_audit_copies import brute_force, zero_shift

EXAMPLES = 25


def test_levels_send_the_ends_of_the_range_to_black_and_white():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = pixel_space(x, levels=0.1, sigma=0).flatten().long()
    assert y.dtype == torch.long and torch.all(y[:26] == 0) and torch.all(y[230:] == 255)
    mid = torch.arange(26, 230)
    assert torch.equal(y[26:230], ((mid - 25.5) / 0.8).round().clamp(0, 255).long())  # linear in between
    assert torch.all(y[1:] >= y[:-1])
    assert pixel_space(x, 0, 0) is x  # nothing asked, nothing copied


def test_noise_clipped_at_black_leaves_a_veil_the_levels_remove():
    """Noise on a black background is clipped to its positive half: a mean no blur removes."""
    g = torch.Generator().manual_seed(0)
    src = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    src[:, :, 8:20, 8:20] = 200
    copy = (src.float() + torch.randn(src.shape, generator=g) * 0.05 * 255).round().clamp(0, 255).to(torch.uint8)

    def dist(levels):
        a, b = pixel_space(src, levels, 1.5).double(), pixel_space(copy, levels, 1.5).double()
        return (a - b).flatten(1).norm(dim=1).mean().item()

    assert dist(0.05) < 0.6 * dist(0.0)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), max_shift=st.integers(0, 2), sigma=st.sampled_from([0.0, 0.5, 1.0]),
       levels=st.sampled_from([0.0, 0.05, 0.2]), dy=st.integers(-2, 2), dx=st.integers(-2, 2), flip=st.booleans())
def test_a_moved_or_mirrored_copy_is_at_distance_zero_from_its_source(seed, max_shift, sigma, levels, dy, dx, flip):
    dy, dx = max(-max_shift, min(max_shift, dy)), max(-max_shift, min(max_shift, dx))
    g = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (30, 1, 14, 14), dtype=torch.uint8, generator=g)
    src = int(torch.randint(0, 30, (1,), generator=g))
    copy = zero_shift(train[src : src + 1], dy, dx)
    copy = torch.flip(copy, dims=[-1]) if flip else copy
    pad = math.ceil(2 * sigma) if sigma > 0 else 0
    tq, tt = pixel_space(copy, levels, sigma), pixel_space(train, levels, sigma)
    m = nearest_train(tq, tt, invariance="shift", max_shift=max_shift, pad=pad, progress=None)
    m = refine(m, torch.ones(1, dtype=torch.bool), tq, tt, max_shift=max_shift, pad=pad)
    assert float(m.dist[0]) == 0.0
    assert int(m.index[0]) == src or float(m.dist[0]) == 0.0  # another training image may tie (random pixels: rare)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), sigma=st.sampled_from([0.0, 1.0]), levels=st.sampled_from([0.0, 0.05]),
       metric=st.sampled_from(["l2", "l1"]), max_shift=st.integers(0, 2))
def test_nearest_and_distance_match_scikit_learn_for_any_setting(seed, sigma, levels, metric, max_shift):
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (60, 1, 12, 12), dtype=torch.uint8, generator=g)
    queries = torch.cat([torch.randint(0, 256, (6, 1, 12, 12), dtype=torch.uint8, generator=g),
                         torch.flip(train[:2], dims=[-1])])
    pad = math.ceil(2 * sigma) if sigma > 0 else 0
    tq, tt = pixel_space(queries, levels, sigma), pixel_space(train, levels, sigma)
    m = nearest_train(tq, tt, invariance="shift", metric=metric, max_shift=max_shift, pad=pad, progress=None)
    m = refine(m, torch.ones(len(queries), dtype=torch.bool), tq, tt, metric=metric, max_shift=max_shift, pad=pad)
    if metric == "l2":
        sk_d, sk_i = brute_force(tq, tt, max_shift, max_shift + pad)
        ours = (m.index + len(train) * m.flipped.long()).numpy()
        # the same neighbour, or another one exactly as near: a blurred random image can tie (seed
        # 1_000_000_001, sigma 1, max_shift 2: training images 23 and 32 both at 34.49637662132068)
        ties = ours != sk_i
        assert np.array_equal(m.dist.numpy()[ties], sk_d[ties]), (ours, sk_i, m.dist, sk_d)
        if ties.any():  # and our pick really is at that distance
            from ganforge.audit.invariant import central, shift_offsets, shifted

            margin = max_shift + pad
            for q in np.flatnonzero(ties):
                ref = central(tt[[int(m.index[q])]], margin)
                ref = torch.flip(ref, dims=[-1]) if bool(m.flipped[q]) else ref
                aug = shifted(tq[q : q + 1], shift_offsets(max_shift), margin).reshape((2 * max_shift + 1) ** 2, -1).double()
                assert (aug - ref.flatten(1).double()).norm(dim=1).min().item() == pytest.approx(sk_d[q], abs=1e-9)
    else:  # scikit-learn's manhattan brute force, same windows
        from ganforge.audit.invariant import central, shift_offsets, shifted

        margin = max_shift + pad
        refs = central(tt, margin)
        refs = torch.cat([refs, torch.flip(refs, dims=[-1])]).flatten(1).double().numpy()
        aug = shifted(tq, shift_offsets(max_shift), margin).reshape(len(queries) * (2 * max_shift + 1) ** 2, -1)
        d, _ = NearestNeighbors(n_neighbors=1, algorithm="brute", metric="manhattan").fit(refs).kneighbors(
            aug.double().numpy())
        sk_d = d.reshape(len(queries), -1).min(1)
    assert np.allclose(m.dist.numpy(), sk_d, rtol=1e-9, atol=1e-6)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), alpha=st.sampled_from([None, 0.01, 0.05, 0.2]),
       invariance=st.sampled_from(["none", "mirror", "shift"]), levels=st.sampled_from([0.0, 0.05]),
       blur=st.sampled_from([0.0, 1.0]), n_copies=st.integers(0, 4))
def test_flags_are_exactly_the_images_with_p_at_most_alpha(seed, alpha, invariance, levels, blur, n_copies):
    """Whatever the settings: a flag iff p <= alpha; exact copies always flagged; counts add up."""
    g = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (120, 1, 12, 12), dtype=torch.uint8, generator=g)
    held = torch.randint(0, 256, (100, 1, 12, 12), dtype=torch.uint8, generator=g)
    gen = torch.cat([torch.randint(0, 256, (40 - n_copies, 1, 12, 12), dtype=torch.uint8, generator=g),
                     train[:n_copies]])
    th = AuditThresholds(alpha=alpha, invariance=invariance, levels=levels, blur=blur, max_shift=1)
    r = run_audit(gen, train, held, thresholds=th, n_pairs=4)
    flagged = {f.generated_index for f in r.flagged}
    assert r.n_flagged == len(flagged)
    assert set(range(40 - n_copies, 40)) <= flagged  # distance 0: below every random held-out image
    assert all(f.p_value <= r.alpha + 1e-12 for f in r.flagged)
    n = r.n_baseline
    assert r.expected_flagged == pytest.approx(40 * math.floor(r.alpha * (n + 1) + 1e-9) / (n + 1))
    if n_copies:
        assert r.verdict == "fail"
    assert float(conformal_p_values(torch.tensor([0.0]), torch.ones(n))[0]) == pytest.approx(1 / (n + 1))


def test_the_command_and_the_library_share_their_defaults():
    from ganforge.audit.run import AuditConfig

    shared = set(AuditConfig.model_fields) & set(AuditThresholds.model_fields)
    assert {"levels", "blur", "max_shift", "invariance", "alpha", "test_level"} <= shared
    for name in shared:
        assert AuditConfig.model_fields[name].default == AuditThresholds.model_fields[name].default, name


@pytest.mark.parametrize("size, max_shift, invariance, expected", [
    (28, 2, "shift", 1.5),  # Fashion-MNIST, MNIST: an 18 px window
    (16, 2, "shift", 1.0),  # 1.5 would leave 6 px of 16
    (64, 2, "shift", 1.5),  # wider blurs were not measured
    (8, 2, "shift", 0.0),
    (8, 0, "shift", 1.0),
    (7, 0, "shift", 0.5),
    (16, 2, "mirror", 1.5),  # no shift border without shifts
])
def test_blur_auto_keeps_half_the_image_compared(size, max_shift, invariance, expected):
    from ganforge.audit.memorization import resolved_blur

    th = AuditThresholds(blur="auto", max_shift=max_shift, invariance=invariance).resolved(size, size)
    assert th.blur == expected
    margin = (max_shift if invariance == "shift" else 0) + math.ceil(2 * th.blur)
    assert size - 2 * margin >= size / 2
    assert AuditThresholds(blur=0.7).resolved(size, size).blur == 0.7  # a number is kept as given
    assert resolved_blur(size, size, max_shift if invariance == "shift" else 0) == expected


def test_the_report_records_the_blur_it_used():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8, generator=g)
    gen = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=g)
    r = run_audit(gen, train, None)
    assert r.thresholds.blur == 1.0
