"""Each update scheme (``--update``) takes one step exactly as its seed's own loop does.

For every scheme, one ganforge step runs beside a short hand-written reference of the seed's loop in plain
PyTorch (the same networks' starting weights, the same real batch and latents, Adam with the same numbers),
and the weights after the step must be equal, and so must Adam's first moments (the gradients' scale). Each reference is also run against every *other* scheme and
must differ: a scheme swapped for another fails. The networks are a tiny DCGAN with batch norm in G and D,
so the things the schemes differ in all show: D stepped before or after G's gradient, one forward on the
concatenation or one per batch (D's batch statistics), ``predict`` fakes (G's moving statistics), one or two
D steps, reused or fresh noise, and Keras' frozen D (its batch norm on moving statistics).

The references are written from the seeds' code, not from ganforge's:

* alternating: the PyTorch DCGAN example (``netD.zero_grad(); errD_real.backward(); ...
  optimizerD.step(); output = netD(fake)`` for G).
* simultaneous: the TensorFlow DCGAN tutorial's ``train_step`` (two ``GradientTape``s over one forward,
  ``apply_gradients`` twice).
* keras-combined: seed 003 (``generator.predict``, ``discriminator.train_on_batch(concatenate(...))``,
  ``gan.train_on_batch(noise, ones)`` on fresh noise).
* keras-two-batch: the book's GAN ``train_discriminator`` (``train_on_batch`` on real, then on fake) and
  ``train_generator`` on fresh noise.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.training.config import TrainConfig
from ganforge.training.distributed import Runtime
from ganforge.training.state import build_trainer
from ganforge.training.streams import step_generator
from ganforge.training.updates import UPDATES

SCHEMES = tuple(UPDATES)


def config(dataset: str, output, update: str, **kw) -> TrainConfig:
    base = dict(dataset=dataset, output=str(output), model="dcgan", batch_size=16, width=4, latent_dim=8, steps=1,
                track=False, lr_g=5e-3, lr_d=5e-3, beta1=0.5, seed=3, update=update)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def set_frozen(D: nn.Module, frozen: bool) -> None:
    """Keras' ``discriminator.trainable = False``: no weight updates, batch norm in inference mode."""
    D.requires_grad_(not frozen)
    for m in D.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train(not frozen)


def predict(G: nn.Module, z: torch.Tensor) -> torch.Tensor:
    G.eval()
    with torch.no_grad():
        out = G(z, None)
    G.train()
    return out


def gan_train_on_batch(G, D, opt_g, z):
    """Keras' ``gan.train_on_batch(noise, ones)``: G through the frozen D, on fresh noise."""
    set_frozen(D, True)
    opt_g.zero_grad()
    bce(D(G(z, None), None), 1.0).backward()
    opt_g.step()
    set_frozen(D, False)


def ref_alternating(G, D, opt_g, opt_d, real, z1, z2, d_sum):
    fake = G(z1, None)
    opt_d.zero_grad()
    loss_d = bce(D(real, None), 1.0) + bce(D(fake.detach(), None), 0.0)
    (loss_d if d_sum else 0.5 * loss_d).backward()
    opt_d.step()
    opt_g.zero_grad()
    bce(D(fake, None), 1.0).backward()  # through the D just updated, on the same fakes
    opt_g.step()


def ref_simultaneous(G, D, opt_g, opt_d, real, z1, z2, d_sum):
    fake = G(z1, None)
    real_output, fake_output = D(real, None), D(fake, None)
    gen_loss = bce(fake_output, 1.0)
    disc_loss = bce(real_output, 1.0) + bce(fake_output, 0.0)
    disc_loss = disc_loss if d_sum else 0.5 * disc_loss
    gen_grads = torch.autograd.grad(gen_loss, list(G.parameters()), retain_graph=True)
    disc_grads = torch.autograd.grad(disc_loss, list(D.parameters()))
    for opt, params, grads in ((opt_g, G.parameters(), gen_grads), (opt_d, D.parameters(), disc_grads)):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()


def ref_keras_combined(G, D, opt_g, opt_d, real, z1, z2, d_sum):
    generated = predict(G, z1)
    X = torch.cat([real, generated])
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(generated))])
    opt_d.zero_grad()
    F.binary_cross_entropy_with_logits(D(X, None), y).backward()  # Keras: the mean over the 2N images
    opt_d.step()
    gan_train_on_batch(G, D, opt_g, z2)


def ref_keras_two_batch(G, D, opt_g, opt_d, real, z1, z2, d_sum):
    generated = predict(G, z1)
    for images, target in ((real, 1.0), (generated, 0.0)):
        opt_d.zero_grad()
        bce(D(images, None), target).backward()
        opt_d.step()
    gan_train_on_batch(G, D, opt_g, z2)


REFERENCES = {"alternating": ref_alternating, "simultaneous": ref_simultaneous,
              "keras-combined": ref_keras_combined, "keras-two-batch": ref_keras_two_batch}


def one_step(digits16, tmp_path, scheme: str, reference: str, reference_d_sum: bool | None = None, **kw) -> float:
    """The largest weight difference (G, D, and their batch-norm buffers) after ganforge's step with
    ``scheme`` and the ``reference`` loop's step, both from the same start."""
    c = config(digits16, tmp_path / f"{scheme}-{reference}", scheme, **kw)
    t = build_trainer(c, Runtime(torch.device("cpu"), 0, 1, 0))
    G, D = copy.deepcopy(t.G), copy.deepcopy(t.D)
    opt_g = torch.optim.Adam(G.parameters(), lr=c.lr_g, betas=(c.beta1, c.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=c.lr_d, betas=(c.beta1, c.beta2))
    real, _ = t.batch(0)
    gen = step_generator(c.seed, 0)  # the step's latents, in the order drawn: D's fakes, then G's fresh noise
    z1 = torch.randn(c.batch_size, c.latent_dim, generator=gen)
    z2 = torch.randn(c.batch_size, c.latent_dim, generator=gen)
    d_sum = c.d_loss_sum if reference_d_sum is None else reference_d_sum
    REFERENCES[reference](G, D, opt_g, opt_d, real, z1, z2, d_sum)
    UPDATES[scheme](t, False)
    diffs = [(a - b).abs().max().item() for ours, theirs in ((t.G, G), (t.D, D))
             for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
             if a.is_floating_point()]
    # Adam's first step moves each weight by about lr * sign(gradient), whatever the gradient's scale: its
    # first moment (0.5 x the gradient here) holds the scale, so a loss off by a factor (sum for mean) shows
    for ours, theirs, opt, ref in ((t.G, G, t.opt_g, opt_g), (t.D, D, t.opt_d, opt_d)):
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            m_ours, m_ref = opt.state[a]["exp_avg"], ref.state[b]["exp_avg"]
            diffs.append(((m_ours - m_ref).abs().max() / m_ref.abs().max().clamp_min(1e-12)).item())
    return max(diffs)


def test_the_networks_have_what_the_schemes_differ_in(digits16, tmp_path):
    t = build_trainer(config(digits16, tmp_path, "alternating"), Runtime(torch.device("cpu"), 0, 1, 0))
    assert any(isinstance(m, nn.BatchNorm2d) for m in t.G.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in t.D.modules())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_one_step_equals_the_seeds_loop(digits16, tmp_path, scheme):
    assert one_step(digits16, tmp_path, scheme, scheme) < 1e-4  # rounding: 3e-6 or less here (the concatenated forward); swapped: 1.5e-2 or more


@pytest.mark.parametrize("scheme", ["alternating", "simultaneous"])  # Keras' losses: means over each batch
def test_one_step_with_the_sum_of_ds_terms(digits16, tmp_path, scheme):
    """``--d-loss-sum`` (TensorFlow's and the Galaxy10 seed's real + fake) under the schemes that take it."""
    assert one_step(digits16, tmp_path, scheme, scheme, d_loss_sum=True) < 1e-4
    # the mean where the sum is asked: the same weights after Adam's first step, but not the same gradients
    assert one_step(digits16, tmp_path / "mean", scheme, scheme, reference_d_sum=False, d_loss_sum=True) > 1e-3


@pytest.mark.parametrize("scheme,reference", [(s, r) for s in SCHEMES for r in SCHEMES if s != r])
def test_a_swapped_scheme_fails_the_reference(digits16, tmp_path, scheme, reference):
    assert one_step(digits16, tmp_path, scheme, reference) > 1e-3


def test_the_keras_schemes_leave_d_trainable_and_g_in_train_mode(digits16, tmp_path):
    for scheme in ("keras-combined", "keras-two-batch"):
        t = build_trainer(config(digits16, tmp_path / scheme, scheme), Runtime(torch.device("cpu"), 0, 1, 0))
        UPDATES[scheme](t, True)
        assert t.G.training and t.D.training
        assert all(p.requires_grad for p in t.D.parameters())
        assert all(m.training for m in t.D.modules())


@pytest.mark.parametrize("update,extra,message", [
    ("simultaneous", {"n_critic": 2}, "--update simultaneous takes one D step per G step"),
    ("simultaneous", {"feature_matching": True}, "one forward of D"),
    ("keras-two-batch", {"model": "wgan-gp", "loss": "wgan-gp"}, "penalises between them"),
])  # fmt: skip
def test_a_scheme_refuses_what_it_cannot_run(digits16, tmp_path, update, extra, message):
    with pytest.raises(GanforgeError, match=message):
        build_trainer(config(digits16, tmp_path, update, **extra), Runtime(torch.device("cpu"), 0, 1, 0))


@pytest.mark.parametrize("update,loss", [(u, loss) for u in ("alternating", "keras-combined", "keras-two-batch")
                                         for loss in ("wgan-clip", "wgan-gp")
                                         if (u, loss) != ("keras-two-batch", "wgan-gp")])  # refused, above
def test_the_critic_loop_runs_under_each_scheme_that_fits(digits16, tmp_path, update, loss):
    """n_critic critic steps (clipping or the gradient penalty) then one G step, under every scheme that can."""
    c = config(digits16, tmp_path, update, model="wgan-gp", loss=loss, n_critic=3, clip=0.02)
    t = build_trainer(c, Runtime(torch.device("cpu"), 0, 1, 0))
    seen = []
    batch = t.batch
    t.batch = lambda b: seen.append(b) or batch(b)
    stats = UPDATES[update](t, True)
    assert seen == [0, 1, 2]  # three critic batches
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    if loss == "wgan-clip":
        assert max(p.abs().max().item() for p in t.D.parameters()) <= 0.02 + 1e-7
    else:
        assert "gp" in stats


def test_the_cli_takes_update_and_refuses_an_unknown_one(digits16, tmp_path):
    from typer.testing import CliRunner

    from ganforge.cli import app

    res = CliRunner().invoke(app, ["train", "--dataset", digits16, "--output", str(tmp_path / "r"), "--model", "mlp",
                                   "--steps", "2", "--batch-size", "16", "--width", "4", "--no-track",
                                   "--update", "keras-two-batch"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["train", "--dataset", digits16, "--output", str(tmp_path / "r2"), "--steps", "2",
                                   "--model", "mlp", "--update", "tf"])
    assert res.exit_code == 2 and "unknown update scheme 'tf'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# what each seed's own code does (issue 24's table): the presets that rebuild it must step the same way
SEED_SCHEMES = {
    "seed000-galaxy10-cgan": "simultaneous", "seed000-galaxy10-dcgan": "simultaneous",  # TF: two tapes
    "seed001-gan": "keras-two-batch", "seed001-wgan": "keras-two-batch",  # train_on_batch on real, then fake
    "seed001-wgan-gp": "keras-combined",  # one train_on_batch of the critic model on real, fake, interpolates
    "seed002-folder-dcgan-128": "alternating", "seed004-kmnist-mlp": "alternating",  # PyTorch loops
    "seed003-mnist-mlp": "keras-combined",  # train_on_batch on concatenate(real, predict(noise))
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(SEED_SCHEMES))
def test_each_gan_seed_preset_steps_as_its_seed(preset):
    from ganforge.training.config import PRESETS, resolve_config

    config = resolve_config({"dataset": "d", "preset": preset})
    assert config.update == SEED_SCHEMES[preset]
    assert PRESETS[preset].every_image  # and on every image, as the seeds' loops
    if preset.startswith(("seed001-gan", "seed001-wgan", "seed003")) and preset != "seed001-wgan-gp":
        assert config.sampling == "replacement"  # np.random.randint batches


def test_every_seed_preset_runs_in_fp32_as_its_seed():
    from ganforge.training.config import PRESETS, resolve_config

    for name in (n for n, p in PRESETS.items() if p.from_seed):
        assert resolve_config({"dataset": "d", "preset": name}).precision == "fp32", name


def test_every_seed_preset_is_listed():
    from ganforge.training.config import PRESETS

    gans = {n for n, p in PRESETS.items() if p.from_seed and p.overrides.get("model") not in ("vae", "ae")}
    assert gans == set(SEED_SCHEMES)


def test_a_held_out_split_under_an_every_image_preset_is_said(tmp_path):
    """seed003's preset trains on every image; a dataset ingested with a val split trains with one warning
    naming the fix, one ingested with --val-fraction 0 without it."""
    from typer.testing import CliRunner

    from ganforge.cli import app
    from ganforge.data.ingest import ingest

    runner = CliRunner()
    for fraction in (0.1, 0.0):
        data = tmp_path / f"d{fraction}"
        ingest("digits", output=str(data), image_size=28, limit=300, val_fraction=fraction)
        res = runner.invoke(app, ["train", "--dataset", str(data), "--preset", "seed003-mnist-mlp", "--dry-run",
                                  "--output", str(tmp_path / f"run{fraction}"), "--no-track"])
        assert res.exit_code == 0, res.output
        warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        if fraction:
            assert len(warnings) == 1 and "trains on every image, as seed 003 did" in warnings[0]
            assert "re-ingest with --val-fraction 0" in warnings[0] and "leave-one-out" in warnings[0]
        else:
            assert warnings == []
    data = tmp_path / "audit-split"  # an audit split is held out too
    ingest("digits", output=str(data), image_size=28, limit=300, val_fraction=0.0, audit_fraction=0.2)
    res = runner.invoke(app, ["train", "--dataset", str(data), "--preset", "seed003-mnist-mlp", "--dry-run",
                              "--output", str(tmp_path / "run-audit"), "--no-track"])
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert res.exit_code == 0 and len(warnings) == 1, res.output
    assert "as the audit split (--audit-fraction 0.2)" in warnings[0] and "re-ingest with --audit-fraction 0" in warnings[0]


def test_every_scheme_reports_ds_numbers_under_the_same_names(digits16, tmp_path):
    """D's loss, scores and accuracy come from one place (Objective._d_from_logits) whatever the scheme."""
    keys = {}
    for scheme in ("alternating", "simultaneous", "keras-combined"):
        t = build_trainer(config(digits16, tmp_path / scheme, scheme), Runtime(torch.device("cpu"), 0, 1, 0))
        keys[scheme] = set(UPDATES[scheme](t, False))
    assert keys["simultaneous"] == keys["alternating"] == keys["keras-combined"]
    assert {"loss_d", "d_real", "d_fake", "d_acc", "loss_g"} <= keys["simultaneous"]
