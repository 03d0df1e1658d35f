"""Objectives and the VAE loss: direction of optimisation, hand-computed values, option checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models import MODELS, ModelSpec, build_discriminator, build_generator
from ganforge.training.losses import (
    OBJECTIVES,
    SOFT_FAKE,
    SOFT_REAL,
    build_objective,
    draw_targets,
    feature_matching_loss,
    gradient_penalty,
    vae_loss,
)

SIZE = 8



def objective(name: str, **kw):
    opts = {"label_smoothing": False, "noisy_labels": False, "feature_matching": False, **kw}
    return build_objective(name, **opts)


def tiny(model: str = "wgan-gp") -> ModelSpec:
    return ModelSpec(model=model, image_size=SIZE, channels=1, width=4, latent_dim=8)


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalty is (||w|| - 1)^2."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, labels=None, features=False):
        out = (x * self.w).flatten(1).sum(1)
        return (out, x.flatten(1)) if features else out


def fixed_batches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(8, 1, SIZE, SIZE, generator=g) * 2 - 1
    fake = torch.rand(8, 1, SIZE, SIZE, generator=g) * 0.2  # a different distribution
    return real, fake


def seeded_d_loss(obj, D, real, fake) -> float:
    torch.manual_seed(1)  # the same interpolates for wgan-gp before and after training
    return obj.d_loss(D, real, fake, None)[0].item()


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_discriminator_steps_lower_the_discriminator_loss(name):
    torch.manual_seed(0)
    obj, D = objective(name), build_discriminator(tiny())
    real, fake = fixed_batches()
    opt = torch.optim.Adam(D.parameters(), 5e-3)
    before = seeded_d_loss(obj, D, real, fake)
    for _ in range(30):
        loss, _ = obj.d_loss(D, real, fake, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_d_step(D)
    assert seeded_d_loss(obj, D, real, fake) < before - 1e-4
    _, stats = obj.d_loss(D, real, fake, None)
    # D learnt which batch is real, not just some minimum; bce and hinge also put them either side of
    # their decision boundary (probability 0.5, score 0). Wasserstein scores are shift-invariant.
    assert stats["d_real"] > stats["d_fake"]
    boundary = {"bce": 0.5, "hinge": 0.0}.get(name)
    if boundary is not None:
        assert stats["d_real"] > boundary > stats["d_fake"]


@pytest.mark.parametrize("feature_matching", [False, True])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_generator_steps_lower_the_generator_loss(name, feature_matching):
    torch.manual_seed(0)
    obj = objective(name, feature_matching=feature_matching)
    G, D = build_generator(tiny()), build_discriminator(tiny()).requires_grad_(False)
    real, _ = fixed_batches()
    z = torch.randn(8, 8)
    opt = torch.optim.Adam(G.parameters(), 1e-2)
    before = obj.g_loss(D, G(z), None, real)[0].item()
    score_before = D(G(z)).mean().item()
    for _ in range(20):
        loss, stats = obj.g_loss(D, G(z), None, real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(stats) == {"loss_g"}
    assert obj.g_loss(D, G(z), None, real)[0].item() < before
    if not feature_matching:  # fooling D means raising its score of the fakes
        assert D(G(z)).mean().item() > score_before


def test_d_loss_detaches_the_fakes_and_reports_the_documented_stats():
    G, D = build_generator(tiny()), build_discriminator(tiny())
    fake = G(torch.randn(4, 8))
    loss, stats = objective("bce").d_loss(D, fake.detach() * 0.5, fake, None)
    loss.backward()
    assert all(p.grad is None for p in G.parameters())
    assert set(stats) == {"loss_d", "d_real", "d_fake", "d_acc"}
    assert 0 < stats["d_real"] < 1  # bce reports probabilities
    _, gp_stats = objective("wgan-gp").d_loss(D, fake.detach(), fake, None)
    assert set(gp_stats) == {"loss_d", "d_real", "d_fake", "gp"}


def test_gradient_penalty_equals_hand_computation_on_a_linear_critic():
    w = torch.full((1, 2, 2), 1.5)  # ||w|| = sqrt(4 * 2.25) = 3, so the penalty is (3 - 1)^2 = 4
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    D = LinearCritic(w)
    assert gradient_penalty(D, real, fake).item() == pytest.approx(4.0)
    D.w.data = torch.full((1, 2, 2), 0.5)  # ||w|| = 1: no penalty
    assert gradient_penalty(D, real, fake).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_penalty_uses_the_interpolates():
    class Square(nn.Module):
        def forward(self, x, labels=None):
            return x.pow(2).flatten(1).sum(1)  # grad 2 * x_hat

    real, fake = torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    eps = torch.tensor([0.25, 1.0]).view(2, 1, 1, 1)  # x_hat = 0.25 and 1: grads 0.5 and 2
    expected = ((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2
    assert gradient_penalty(Square(), real, fake, eps=eps).item() == pytest.approx(expected)


def test_wgan_gp_d_loss_is_the_wasserstein_estimate_plus_ten_times_the_penalty():
    D = LinearCritic(torch.full((1, 2, 2), 1.5))
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    loss, stats = objective("wgan-gp").d_loss(D, real, fake, None)
    wasserstein = D(fake).mean() - D(real).mean()
    assert loss.item() == pytest.approx(wasserstein.item() + 10 * 4.0, rel=1e-5)
    assert stats["gp"] == pytest.approx(4.0)


@pytest.mark.parametrize(("real", "low", "high"), [(True, 0.9, 1.0), (False, 0.0, 0.1)])
def test_soft_targets_fill_their_stated_range(real, low, high):
    assert (low, high) == (SOFT_REAL if real else SOFT_FAKE)
    t = draw_targets(20000, real=real, soft=True)
    assert t.min() >= low and t.max() <= high
    assert t.min() < low + 0.001 and t.max() > high - 0.001  # drawn across the range, not a constant
    assert torch.equal(draw_targets(5, real=real, soft=False), torch.full((5,), float(real)))


def test_label_smoothing_and_noisy_labels_reach_the_loss():
    confident = torch.full((20000,), 20.0)  # sigmoid = 1: BCE(20, t) = 20 * (1 - t) + tiny
    plain = objective("bce").d_terms(confident, -confident).item()
    smooth = objective("bce", label_smoothing=True).d_terms(confident, -confident).item()
    noisy = objective("bce", noisy_labels=True).d_terms(confident, -confident).item()
    both = objective("bce", label_smoothing=True, noisy_labels=True).d_terms(confident, -confident).item()
    assert plain == pytest.approx(0.0, abs=1e-6)
    # E[1 - t] = 0.05 for t ~ U(0.9, 1), E[t] = 0.05 for t ~ U(0, 0.1): 20 * 0.05 = 1 per side.
    assert smooth == pytest.approx(1.0, abs=0.05)  # one-sided: real targets only
    assert noisy == pytest.approx(2.0, abs=0.1) and both == pytest.approx(2.0, abs=0.1)


def test_feature_matching_is_zero_for_identical_batches_and_positive_otherwise():
    D = build_discriminator(tiny("dcgan")).eval()
    real, fake = fixed_batches()
    assert feature_matching_loss(D, real, real.clone(), None).item() == 0.0
    assert feature_matching_loss(D, real, fake, None).item() > 0
    with pytest.raises(ValueError, match="real"):
        objective("bce", feature_matching=True).g_loss(D, fake, None)


def test_weight_clipping_clips_every_parameter():
    D = build_discriminator(tiny("dcgan"))
    assert max(p.abs().max().item() for p in D.parameters()) > 0.01
    objective("wgan-clip").after_d_step(D)
    assert max(p.abs().max().item() for p in D.parameters()) <= 0.01
    fresh = build_discriminator(tiny("dcgan"))
    before = [p.clone() for p in fresh.parameters()]
    for name in ("bce", "hinge", "wgan-gp"):  # the others leave the weights alone
        objective(name).after_d_step(fresh)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))


def test_build_objective_defaults_and_errors():
    assert objective("wgan-gp").n_critic == objective("wgan-clip").n_critic == 5
    assert objective("bce").n_critic == objective("hinge").n_critic == 1
    assert objective("hinge", n_critic=2).n_critic == 2
    with pytest.raises(GanforgeError, match="valid losses: bce, hinge, wgan-gp, wgan-clip"):
        objective("lsgan")
    with pytest.raises(GanforgeError, match="only to loss 'bce'"):
        objective("hinge", label_smoothing=True)
    with pytest.raises(GanforgeError, match="n_critic"):
        objective("bce", n_critic=0)


def test_vae_loss_terms_match_hand_computation():
    latent = 3

    class Encoder(nn.Module):
        def forward(self, x, labels=None):
            return torch.ones(x.shape[0], latent), torch.zeros(x.shape[0], latent)  # mu = 1, sigma = 1

    real = torch.rand(4, 1, 2, 2)

    def perfect(z, labels=None):
        return real

    loss, stats = vae_loss(perfect, Encoder(), real, None)
    # KL(N(1, 1) || N(0, 1)) = 0.5 * mu^2 = 0.5 per dimension; reconstruction is exact.
    assert stats["loss_kl"] == pytest.approx(0.5 * latent)
    assert stats["loss_recon"] == 0.0 and loss.item() == pytest.approx(1.5)
    _, half = vae_loss(lambda z, labels=None: real + 0.5, Encoder(), real, None, kl_weight=0.0)
    assert half["loss_recon"] == pytest.approx(0.25 * 4) and half["loss_vae"] == pytest.approx(1.0)


def nearest_distance(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Mean distance from each sample to its nearest data image."""
    return torch.cdist(samples.flatten(1), data.flatten(1)).min(dim=1).values.mean().item()


def four_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(4, 1, SIZE, SIZE, generator=g) > 0.5).float() * 2 - 1  # far from the initial ~0


def test_mlp_gan_overfits_four_images():
    torch.manual_seed(0)
    data = four_images()
    G, D, _ = MODELS["mlp"](ModelSpec(model="mlp", image_size=SIZE, channels=1, width=16, latent_dim=16))
    obj = objective("bce")
    opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.5, 0.999))
    z_fixed = torch.randn(64, 16)
    start = nearest_distance(G.eval()(z_fixed).detach(), data)
    G.train()
    for _ in range(300):
        real = data[torch.randint(0, 4, (16,))]
        loss_d, _ = obj.d_loss(D, real, G(torch.randn(16, 16)), None)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g, _ = obj.g_loss(D, G(torch.randn(16, 16)), None)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    end = nearest_distance(G.eval()(z_fixed).detach(), data)
    assert end < 0.4 * start, (start, end)


def test_vae_overfits_four_images():
    torch.manual_seed(0)
    data = four_images()
    G, _, E = MODELS["vae"](ModelSpec(model="vae", image_size=SIZE, channels=1, width=8, latent_dim=4))
    opt = torch.optim.Adam([*G.parameters(), *E.parameters()], 3e-3)
    z_fixed = torch.randn(64, 4)
    start = nearest_distance(G.eval()(z_fixed).detach(), data)
    G.train()
    _, first = vae_loss(G, E, data, None)
    for _ in range(300):
        loss, stats = vae_loss(G, E, data, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["loss_recon"] < 0.1 * first["loss_recon"]
    assert nearest_distance(G.eval()(z_fixed).detach(), data) < 0.8 * start
