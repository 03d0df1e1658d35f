"""DiffAugment (differentiable, shape-preserving, actually changing images) and the generator EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models import ModelSpec, build_discriminator, build_generator
from ganforge.training.augment import AUGMENTS, AugmentedDiscriminator, cutout, diff_augment, translation
from ganforge.training.ema import EMA, half_life


def images(n: int = 8, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 1.6 - 0.8  # no exact zeros, unlike cutout's holes


@pytest.mark.parametrize("policy", [*AUGMENTS, "color,translation,cutout"])
def test_every_augment_keeps_the_shape_changes_the_images_and_passes_gradients(policy):
    x = images().requires_grad_(True)
    y = diff_augment(x, policy, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_moves_content_by_at_most_an_eighth_and_pads_with_zeros():
    x = images(n=64, c=1, size=16)
    y = translation(x, torch.Generator().manual_seed(0))
    moved = [i for i in range(64) if not torch.equal(x[i], y[i])]
    assert len(moved) > 32  # shifts of 0 in both axes are possible, but rare
    for i in moved:
        # Some shift (dy, dx) with |d| <= 2 (16 / 8) maps the input onto the output.
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(y[i, :, max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)],
                           x[i, :, max(0, dy) : 16 - max(0, -dy), max(0, dx) : 16 - max(0, -dx)])
        ]  # fmt: skip
        assert matches, f"image {i} is not a shift of its input"
    assert (y == 0).any()


def test_cutout_zeroes_a_patch_of_at_most_half_the_side_and_keeps_the_rest():
    x = images(n=16, c=2, size=16)
    y = cutout(x, torch.Generator().manual_seed(0))
    holes = y == 0
    assert holes.any(dim=(1, 2, 3)).all()  # every image lost a patch
    assert torch.equal(holes[:, 0], holes[:, 1])  # the same patch in every channel
    assert holes[:, 0].sum(dim=(1, 2)).max() <= 8 * 8
    assert torch.equal(y[~holes], x[~holes])


def test_empty_policy_is_identity_and_unknown_names_are_refused():
    x = images()
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(GanforgeError, match="unknown augment 'flip'.*valid: color, translation, cutout"):
        diff_augment(x, "color,flip")
    with pytest.raises(GanforgeError):
        AugmentedDiscriminator(nn.Identity(), "rotate")


def test_augmentation_is_reproducible_with_a_seeded_generator():
    x = images()
    a = diff_augment(x, generator=torch.Generator().manual_seed(5))
    b = diff_augment(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_augmented_discriminator_keeps_the_signature_and_gradients_reach_both_players():
    spec = ModelSpec(
        model="dcgan", image_size=16, channels=1, width=4, latent_dim=8, conditional=True, num_classes=3
    )
    G, D = build_generator(spec), build_discriminator(spec)
    aug = AugmentedDiscriminator(D, "translation,cutout")
    labels = torch.tensor([0, 1, 2, 0])
    logits, feats = aug(G(torch.randn(4, 8), labels), labels, features=True)
    assert logits.shape == (4,) and feats.shape[0] == 4
    logits.sum().backward()
    assert all(p.grad is not None for p in G.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    assert set(aug.state_dict()) == {f"net.{k}" for k in D.state_dict()}


def small_generator(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_generator(ModelSpec(model="dcgan", image_size=8, channels=1, width=4, latent_dim=4))


def run_batch(g: nn.Module, seed: int = 0) -> None:
    """A train-mode forward pass: updates batch-norm running statistics."""
    g.train()(torch.randn(4, 4, generator=torch.Generator().manual_seed(seed)))


def test_ema_with_decay_zero_equals_the_models_weights():
    g = small_generator(0)
    ema = EMA(g, decay=0.0)
    g.load_state_dict(small_generator(1).state_dict())
    run_batch(g)
    ema.update(g, 10)
    for (name, a), b in zip(ema.module.named_parameters(), g.parameters()):
        assert torch.equal(a, b), name


def test_ema_with_decay_one_stays_put():
    g = small_generator(0)
    ema = EMA(g, decay=1.0)
    start = {k: v.clone() for k, v in ema.module.named_parameters()}
    g.load_state_dict(small_generator(1).state_dict())
    run_batch(g)
    ema.update(g, 10)
    assert all(torch.equal(p, start[k]) for k, p in ema.module.named_parameters())


def test_ema_mixes_by_decay_and_does_not_alias_the_model():
    g0, g1 = small_generator(0), small_generator(1)
    ema = EMA(g0, decay=0.75, rampup=None)
    assert all(not p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    with torch.no_grad():
        next(g0.parameters()).add_(1.0)  # editing the model in place must not touch the copy
    assert not torch.equal(next(ema.module.parameters()), next(g0.parameters()))
    before = {k: v.clone() for k, v in ema.module.named_parameters()}
    ema.update(g1, 1)
    for k, p in ema.module.named_parameters():
        expected = 0.75 * before[k] + 0.25 * dict(g1.named_parameters())[k]
        assert torch.allclose(p, expected, atol=1e-7), k


def test_ema_rampup_caps_the_half_life_at_a_fraction_of_the_steps_so_far():
    ema = EMA(small_generator(0), decay=0.999, rampup=0.05)
    assert half_life(0.999) == pytest.approx(692.8, abs=0.1)
    assert ema.beta(0) == 0.0  # the first update replaces the initial weights
    assert ema.beta(1000) == pytest.approx(0.5 ** (1 / 50))  # half-life 5% of 1000 steps
    assert ema.beta(100_000) == pytest.approx(0.999)  # ramped up: the configured decay
    betas = [ema.beta(s) for s in range(0, 20_000, 97)]
    assert betas == sorted(betas) and max(betas) == pytest.approx(0.999)
    assert EMA(small_generator(0), decay=0.999, rampup=None).beta(3) == 0.999


def test_ema_forgets_the_initial_weights_early_with_rampup():
    """After 200 updates towards a fixed target, 0.999 without ramp-up still holds ~82% of the start."""
    g0, target = small_generator(0), small_generator(1)
    plain, ramped = EMA(g0, 0.999, rampup=None), EMA(g0, 0.999, rampup=0.05)
    for step in range(1, 201):
        plain.update(target, step)
        ramped.update(target, step)
    name, t = next(iter(target.named_parameters()))
    t = t.detach()
    start = dict(g0.named_parameters())[name]
    share = lambda e: float((dict(e.module.named_parameters())[name] - t).norm() / (start - t).detach().norm())  # noqa: E731
    assert share(plain) == pytest.approx(0.999**200, rel=1e-3)
    assert share(ramped) < 1e-6


def test_standing_stats_are_measured_for_the_averaged_weights_not_copied():
    g = small_generator(0)
    ema = EMA(g, decay=0.5)
    g.load_state_dict(small_generator(1).state_dict())
    run_batch(g)
    ema.update(g, 100)
    assert ema.stale
    ema.refresh_stats(latent_dim=4, seed=3, batch_size=8, samples=64)
    assert not ema.stale and not ema.module.training
    bn = next(m for m in ema.module.modules() if isinstance(m, nn.BatchNorm2d))
    live = next(m for m in g.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(bn.running_mean, live.running_mean)
    assert bn.momentum == live.momentum  # restored after the cumulative pass
    # The statistics are those of the averaged weights on fresh latents: redo them by hand.
    ref = EMA(g, decay=0.0).module
    ref.load_state_dict(ema.state_dict())
    first = next(m for m in ref.modules() if isinstance(m, nn.BatchNorm2d))
    first.reset_running_stats()
    first.momentum = None
    feats = ref.body[:2](torch.randn(64, 4, generator=torch.Generator().manual_seed(3)))
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    # Deterministic: the same weights and seed give the same statistics.
    before = bn.running_var.clone()
    ema.refresh_stats(latent_dim=4, seed=3, batch_size=8, samples=64)
    assert torch.equal(bn.running_var, before)


def test_ema_copy_of_a_synchronised_generator_uses_local_batch_norm():
    from ganforge.training.distributed import GlobalBatchNorm

    g = small_generator(0)
    g.body[2] = GlobalBatchNorm(g.body[2].num_features)
    ema = EMA(g, decay=0.9)
    assert not any(isinstance(m, GlobalBatchNorm) for m in ema.module.modules())
    assert ema.module.state_dict().keys() == g.state_dict().keys()


def test_ema_state_dict_round_trips():
    ema = EMA(small_generator(0), decay=0.5)
    ema.update(small_generator(1))
    other = EMA(small_generator(2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    z = torch.randn(3, 4)
    assert torch.equal(other.module(z), ema.module(z))
    with pytest.raises(ValueError, match="decay"):
        EMA(small_generator(0), decay=1.5)
