"""Issue 14: every planted copy flagged (exact, noisy, mirrored, shifted), honest sets pass, the baseline is cached,
leave-one-out for small sets, exact nearest images against scikit-learn, bad input as one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import ganforge.audit.memorization as memorization
from ganforge.audit.invariant import central, nearest_train, pixel_space, refine, shift_offsets, shifted
from ganforge.audit.memorization import run_audit
from ganforge.cli import app
from tests.conftest import assert_no_runs

runner = CliRunner()


@pytest.fixture(scope="module")
def digits():
    """Digits at 16 px: 1100 training images and 300 unseen 'honest' ones."""
    x = torch.from_numpy(load_digits().images).float()[:, None] * (255 / 16)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1100]], x[perm[1450:1750]]


def zero_shift(x, dy, dx):
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        x[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def noisy(x, sigma=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x.float() + torch.randn(x.shape, generator=g) * sigma * 255).round().clamp(0, 255).to(torch.uint8)


PLANTS = {
    "exact": lambda t: t,
    "noisy": noisy,
    "mirrored": lambda t: torch.flip(t, dims=[-1]),
    "shifted": lambda t: torch.cat([zero_shift(t[:5], 1, -2), zero_shift(t[5:], -2, 2)]),
    "rolled": lambda t: torch.roll(t, (2, 1), (2, 3)),
}


@pytest.mark.parametrize("kind", list(PLANTS))
def test_every_planted_copy_is_flagged_and_the_set_fails(digits, kind):
    train, honest = digits
    gen = torch.cat([honest[:290], PLANTS[kind](train[100:110])])
    r = run_audit(gen, train, None)
    flagged = {f.generated_index: f for f in r.flagged}
    assert set(range(290, 300)) <= set(flagged), (kind, sorted(flagged))
    assert all(flagged[290 + i].train_index == 100 + i for i in range(10))
    assert r.verdict == "fail" and any("flagged as copies" in why for why in r.reasons)
    if kind == "mirrored":
        assert all(flagged[j].flipped for j in range(290, 300))
    if kind == "shifted":
        assert flagged[290].shift == (1, -2) and flagged[299].shift == (-2, 2)


def test_honest_images_pass_with_the_stated_baseline(digits):
    train, honest = digits
    r = run_audit(honest, train, None)
    assert r.verdict == "pass", r.reasons
    assert r.baseline == "leave-one-out" and r.n_baseline == 1100 and r.alpha == 0.001
    assert r.n_flagged <= 2 and r.flag_test_p_value > 0.01
    assert r.expected_flagged == pytest.approx(300 * 1 / 1101)


def test_leave_one_out_never_matches_itself_or_its_mirror():
    g = torch.Generator().manual_seed(3)
    train = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8, generator=g)
    train[7] = torch.flip(train[3], dims=[-1])  # 7 is the mirror of 3: they may match each other, not themselves
    own = torch.arange(40)
    for invariance in ("none", "mirror", "shift"):
        m = nearest_train(train, train, invariance=invariance, own=own, max_shift=1, progress=None)
        assert not torch.any(m.index == own), invariance
        if invariance != "none":
            assert (int(m.index[3]), bool(m.flipped[3]), float(m.dist[3])) == (7, True, 0.0)


def brute_force(queries, train, max_shift, margin):
    """scikit-learn NearestNeighbors over every shifted window of every query, against train + mirror."""
    from sklearn.neighbors import NearestNeighbors

    offsets = shift_offsets(max_shift)
    refs = central(train, margin)
    refs = torch.cat([refs, torch.flip(refs, dims=[-1])]).flatten(1).double().numpy()
    aug = shifted(queries, offsets, margin).reshape(len(queries) * len(offsets), -1).double().numpy()
    d, i = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(refs).kneighbors(aug)
    d, i = d.reshape(len(queries), -1), i.reshape(len(queries), -1)
    best = d.argmin(1)
    return d[np.arange(len(queries)), best], i[np.arange(len(queries)), best]


@pytest.mark.parametrize("levels, sigma", [(0.0, 0.0), (0.0, 1.0), (0.05, 1.5)])
def test_nearest_images_agree_with_scikit_learn(digits, levels, sigma):
    train, honest = digits
    queries = torch.cat([honest[:40], zero_shift(train[:5], 1, 1), torch.flip(train[5:10], dims=[-1])])
    tb, qb = pixel_space(train, levels, sigma), pixel_space(queries, levels, sigma)
    pad = int(np.ceil(2 * sigma))
    m = nearest_train(qb, tb, invariance="shift", max_shift=2, pad=pad, progress=None)
    # the proven ones are exact as they stand; refine makes every one exact
    sk_d, sk_i = brute_force(qb, tb, 2, 2 + pad)
    ours = (m.index + len(train) * m.flipped.long()).numpy()
    assert np.array_equal(ours[m.exact.numpy()], sk_i[m.exact.numpy()])
    m = refine(m, torch.ones(len(queries), dtype=torch.bool), qb, tb, max_shift=2, pad=pad)
    assert np.allclose(m.dist.numpy(), sk_d, rtol=1e-9, atol=1e-3)  # scikit-learn rounds near-zero distances
    assert np.array_equal((m.index + len(train) * m.flipped.long()).numpy(), sk_i)


def test_second_audit_reads_the_cached_baseline(digits, tmp_path, monkeypatch):
    train, honest = digits
    cache = tmp_path / "audit" / "fp" / "key.npy"
    gen = torch.cat([honest[:95], train[:5]])
    first = run_audit(gen, train, None, baseline_cache=cache)
    assert cache.is_file() and not first.baseline_cached and sorted(p.name for p in cache.parent.iterdir()) == ["key.json", "key.npy"]
    calls = []
    real = memorization.nearest_train

    def only_generated(queries, *a, **k):
        calls.append(len(queries))
        if k.get("own") is not None:
            raise AssertionError("the cached baseline was recomputed")
        return real(queries, *a, **k)

    monkeypatch.setattr(memorization, "nearest_train", only_generated)
    second = run_audit(gen, train, None, baseline_cache=cache)
    assert calls == [100] and second.baseline_cached
    assert second.model_dump(exclude={"baseline_cached"}) == first.model_dump(exclude={"baseline_cached"})


def test_report_lists_flags_and_the_sheet_shows_them_first(digits, tmp_path):
    train, honest = digits
    gen = torch.cat([honest[:30], torch.flip(train[9:10], dims=[-1])])
    sheet = tmp_path / "s.png"
    r = run_audit(gen, train, None, n_pairs=4, sheet_path=sheet)
    assert r.flagged[0].generated_index == 30 and r.flagged[0].train_index == 9 and r.flagged[0].flipped
    assert r.flagged[0].p_value == pytest.approx(1 / 1101)
    img = np.asarray(Image.open(sheet))
    left, right = img[2:18, 2:18, 0], img[2:18, 20:36, 0]
    assert np.array_equal(left, gen[30, 0].numpy()) and np.array_equal(right, gen[30, 0].numpy())  # drawn mirrored


# --- CLI: bad input is one line, exit 2, before any work, and no MLflow run ---------------------------------


def pngs(folder, n, size=16, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        Image.fromarray(torch.randint(0, 256, (size, size), generator=g, dtype=torch.uint8).numpy()).save(folder / f"{i}.png")
    return str(folder)


@pytest.mark.parametrize("extra, n, size, match", [
    (["--alpha", "0"], 24, 16, "--alpha: Input should be greater than 0"),
    (["--alpha", "0.5"], 24, 16, "--alpha: Input should be less than 0.5"),
    (["--alpha", "0.0001"], 24, 16, "alpha=0.0001 needs at least 9999 baseline images"),
    (["--test-level", "0.7"], 24, 16, "--test-level: Input should be less than 0.5"),
    ([], 5, 16, "at least 20 generated images, got 5"),
    ([], 24, 8, "8x8 px but dataset"),
    (["--invariance", "rotate"], 24, 16, "--invariance: Input should be 'none', 'mirror' or 'shift'"),
    (["--space", "inception-tf"], 24, 16, "--invariance shift compares pixels"),
    (["--max-shift", "6", "--blur", "1"], 24, 16, "too small for --max-shift 6 with --blur 1"),
    (["--max-shift", "8"], 24, 16, "too small for --max-shift 8 with --blur 0"),  # auto gives up blurring first
    (["--blur", "9"], 24, 16, "blur 9 is outside [0, 8]"),
    (["--blur", "fuzzy"], 24, 16, "--blur: Value error, blur 'fuzzy' is neither a sigma in pixels nor auto"),
])
def test_bad_input_one_line_no_audit_run(digits16, tmp_path, monkeypatch, extra, n, size, match):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    def no_work(*a, **k):
        raise AssertionError("the audit started before refusing")

    monkeypatch.setattr(memorization, "run_audit", no_work)
    images = pngs(tmp_path / "imgs", n, size)
    res = runner.invoke(app, ["audit", "--dataset", digits16, "--images", images, "--experiment", "bad", *extra])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.stderr
    assert_no_runs(uri, "bad")
    assert not (tmp_path / "out").exists()


def test_small_dataset_audit_through_the_cli(digits16, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("GANFORGE_CACHE_DIR", str(tmp_path / "cache"))
    from ganforge.data import load

    train = load(digits16, "train").images
    folder = tmp_path / "copies"
    folder.mkdir()
    for i, im in enumerate(torch.cat([load(digits16, "val").images[:40], torch.flip(train[:3], dims=[-1])])):
        Image.fromarray(im[0].numpy()).save(folder / f"{i:03d}.png")
    args = ["audit", "--dataset", digits16, "--images", str(folder), "--no-track", "--output", str(tmp_path / "o")]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output  # fails: mirrored copies
    rec = json.loads((tmp_path / "o" / "audit.json").read_text())
    assert rec["baseline"] == "heldout" and rec["n_baseline"] == 128 and rec["alpha"] == pytest.approx(1 / 129)
    assert {f["generated_index"] for f in rec["flagged"]} >= {40, 41, 42} and "flagged: generated" in res.output
    assert not rec["baseline_cached"]
    assert rec["thresholds"]["blur"] == 1.0  # --blur auto at 16 px, as used
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert json.loads((tmp_path / "o" / "audit.json").read_text())["baseline_cached"]
    assert len(list((tmp_path / "cache" / "audit").rglob("*.npy"))) == 1
