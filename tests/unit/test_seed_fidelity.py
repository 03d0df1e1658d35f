"""Issue 16's seed-fidelity flags: each changes what is built, drawn or drawn with, and bad values are refused.

--init, --bn-eps, --g-norm-after, --output-activation (networks and the ae/vae loss), --sampling (the real
batches, with an exact resume) and --interpolation / --interpolation-steps (the strip). Tiny networks on
16 px digits, CPU, a few steps.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch import nn
from typer.testing import CliRunner

from ganforge.checkpoints import list_checkpoints, load_checkpoint
from ganforge.cli import app
from ganforge.errors import GanforgeError
from ganforge.inference import generate, interpolation_latents
from ganforge.models import ModelSpec, build_discriminator, build_encoder, build_generator, count_params
from ganforge.models.layers import Projection, SignedSigmoid
from ganforge.training import TrainConfig, train
from ganforge.training.distributed import Runtime
from ganforge.training.losses import ae_loss, vae_loss
from ganforge.training.state import build_trainer

runner = CliRunner()


def cfg(dataset="d", output="o", **kw) -> TrainConfig:
    base = dict(dataset=dataset, model="dcgan", batch_size=16, width=8, latent_dim=8, track=False, log_every=1,
                checkpoint_every=100, steps=4, output=str(output))  # fmt: skip
    return TrainConfig(**{**base, **kw})


def spec(**kw) -> ModelSpec:
    return ModelSpec(**{"model": "dcgan", "image_size": 16, "channels": 1, "width": 8, "latent_dim": 8, **kw})


def of(net: nn.Module, *kinds: type) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, kinds)]


def cli_error(digits16, tmp_path, *args) -> str:
    """The one ``error:`` line of a refused ``train``; nothing may have been created."""
    res = runner.invoke(app, ["train", "--dataset", digits16, "--steps", "2", "--no-track", "--output",
                              str(tmp_path / "o"), *args])  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert not (tmp_path / "o").exists()
    return lines[0]


# --- --init -------------------------------------------------------------------------------------------------


def test_default_init_is_the_familys_dcgan_for_convs_and_pytorchs_for_the_mlp():
    torch.manual_seed(0)
    g = build_generator(spec())
    bn = of(g, nn.BatchNorm2d)[0]
    assert not torch.all(bn.weight == 1)  # DCGAN: scales N(1, 0.02)
    assert 0.015 < of(g, nn.ConvTranspose2d)[0].weight.std() < 0.025
    torch.manual_seed(0)
    mlp = build_generator(spec(model="mlp"))
    first = of(mlp, nn.Linear)[0]  # PyTorch's kaiming-uniform: bound 1/sqrt(fan_in), biases non-zero
    assert first.weight.abs().max() <= 8**-0.5 and first.weight.abs().max() > 0.9 * 8**-0.5
    assert first.bias.abs().max() > 0


def test_glorot_init_is_keras_defaults_everywhere_embeddings_included():
    torch.manual_seed(0)
    s = spec(init="glorot", conditional=True, num_classes=3)
    for net in (build_generator(s), build_discriminator(s)):
        for m in of(net, nn.Linear, nn.Conv2d, nn.ConvTranspose2d):
            fan = m.weight[0].numel() + m.weight.shape[0] * m.weight[0][0].numel()  # fan_in + fan_out
            limit = (6 / fan) ** 0.5
            assert m.weight.abs().max() <= limit
            assert m.bias is None or torch.all(m.bias == 0)
        for m in of(net, nn.BatchNorm2d, nn.BatchNorm1d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        for m in of(net, nn.Embedding):
            assert m.weight.abs().max() <= 0.05  # Keras' Embedding: uniform(-0.05, 0.05)


def test_normal_init_draws_kernels_at_0_02_and_keeps_keras_batch_norm():
    torch.manual_seed(0)
    g = build_generator(spec(init="normal", width=16))
    assert all(torch.all(m.weight == 1) for m in of(g, nn.BatchNorm2d))
    big = of(g, nn.ConvTranspose2d)[0].weight
    assert 0.018 < big.std() < 0.022


def test_torch_init_draws_the_projection_as_the_transposed_conv_it_stands_for():
    torch.manual_seed(0)
    g = build_generator(spec(init="torch", width=32))  # projection: latent 8 -> (64, 4, 4)
    proj = of(g, Projection)[0]
    assert proj.out_features == 64 * 4 * 4
    bound = (64 * 4 * 4) ** -0.5  # ConvTranspose2d(8, 64, 4) counts its 64 * 16 outputs as fan-in, not the 8 inputs
    assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.9 * bound


def test_init_changes_nothing_but_the_values():
    a, b = build_generator(spec()), build_generator(spec(init="glorot"))
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    assert count_params(a) == count_params(b)


# --- --bn-eps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dcgan", "mlp", "vae"])
def test_bn_eps_reaches_every_batch_norm(model):
    s = spec(model=model, bn_eps=1e-3, g_norm_layers=(1, 2, 3) if model == "mlp" else None)
    nets = [build_generator(s), build_encoder(s) if model == "vae" else build_discriminator(s)]
    norms = [m for net in nets for m in of(net, nn.BatchNorm1d, nn.BatchNorm2d)]
    assert norms and {m.eps for m in norms} == {1e-3}
    assert {m.eps for m in of(build_generator(spec(model=model)), nn.BatchNorm1d, nn.BatchNorm2d)} == {1e-5}


@pytest.mark.parametrize("value", [0.0, -1e-3, 2.0, float("nan")])
def test_bad_bn_eps_is_refused(value):
    with pytest.raises(ValidationError, match=r"must be in \(0, 1\]"):
        cfg(bn_eps=value)


# --- --g-norm-after ------------------------------------------------------------------------------------------


def test_norm_after_activation_reorders_the_layer_and_keeps_the_parameters():
    before = build_generator(spec(model="mlp", g_norm_layers=(1, 2, 3)))
    after = build_generator(spec(model="mlp", g_norm_layers=(1, 2, 3), g_norm_after=(1,)))
    kinds = [type(m) for m in after.body][:6]
    assert kinds == [nn.Linear, nn.LeakyReLU, nn.BatchNorm1d, nn.Linear, nn.BatchNorm1d, nn.LeakyReLU]
    assert [type(m) for m in before.body][:3] == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU]
    assert count_params(before) == count_params(after)
    assert after(torch.randn(4, 8)).shape == (4, 1, 16, 16)


def test_norm_after_refuses_other_families_and_layers_without_batch_norm(digits16, tmp_path):
    with pytest.raises(ValidationError, match="--g-norm-after orders the mlp generator's batch norms"):
        cfg(g_norm_after="1")
    line = cli_error(digits16, tmp_path, "--model", "mlp", "--g-norm-after", "1")  # layer 1: no norm by default
    assert "g_norm_after names layer 1, which has no batch norm (batch-normed layers: 2,3)" in line
    assert "comma-separated positive integers" in cli_error(digits16, tmp_path, "--model", "mlp", "--g-norm-after", "0")


# --- --output-activation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_sigmoid_decoder_hands_on_minus_one_to_one_and_its_encoder_sees_zero_to_one(model):
    s = spec(model=model, output_activation="sigmoid", latent_dim=2)
    g, e = build_generator(s), build_encoder(s)
    assert isinstance(list(g.body)[-1], SignedSigmoid) and e.unit_input
    assert count_params(g) == count_params(build_generator(spec(model=model, latent_dim=2)))
    with torch.no_grad():
        x = g(torch.randn(8, 2) * 100)
    assert x.min() >= -1 and x.max() <= 1 and x.shape == (8, 1, 16, 16)


def test_reconstruction_loss_on_zero_to_one_is_the_books():
    """ae: K.mean(K.square(y - y_hat)) on [0, 1]; vae: the squared error summed over pixels on [0, 1]."""
    torch.manual_seed(0)
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    recon = torch.rand(4, 1, 16, 16) * 2 - 1
    dec = lambda z, labels=None: recon  # noqa: E731  a fixed reconstruction
    enc = lambda x, labels=None: torch.zeros(4, 2)  # noqa: E731
    book = (((recon + 1) / 2 - (real + 1) / 2) ** 2).mean()
    assert torch.allclose(ae_loss(dec, enc, real, None, unit=True)[0], book)
    assert torch.allclose(ae_loss(dec, enc, real, None)[0], 4 * book)  # [-1, 1]: four times it
    venc = lambda x, labels=None: (torch.zeros(4, 2), torch.zeros(4, 2))  # noqa: E731  KL 0
    assert torch.allclose(vae_loss(dec, venc, real, None, unit=True)[0], book * 256)


def test_sigmoid_output_is_refused_for_gans(digits16, tmp_path):
    with pytest.raises(ValidationError, match="--output-activation sigmoid is for --model vae or ae"):
        cfg(output_activation="sigmoid")
    assert "output-activation" in cli_error(digits16, tmp_path, "--model", "dcgan", "--output-activation", "relu")


def test_sigmoid_vae_trains(digits16, tmp_path):
    r = train(cfg(digits16, tmp_path, model="vae", output_activation="sigmoid", latent_dim=2, init="glorot"))
    assert r.step == 4 and np.isfinite(r.metrics["train/loss_recon"])


# --- --sampling ----------------------------------------------------------------------------------------------


def _trainer(digits16, tmp_path, **kw):
    return build_trainer(cfg(digits16, tmp_path, **kw), Runtime(torch.device("cpu"), 0, 1, 0))


def test_replacement_batches_can_repeat_images_and_epochs_do_not(digits16, tmp_path):
    t = _trainer(digits16, tmp_path, sampling="replacement", batch_size=64)
    batches = [t.batch(b)[0] for b in range(4)]
    assert any(len(torch.unique(x.flatten(1), dim=0)) < len(x) for x in batches)  # 64 of 128: repeats, surely
    assert all(torch.equal(x, t.batch(b)[0]) for b, x in enumerate(batches))  # a pure function of (seed, b)
    e = _trainer(digits16, tmp_path / "e", batch_size=64)
    epoch = torch.cat([e.batch(0)[0], e.batch(1)[0]]).flatten(1)
    assert len(torch.unique(epoch, dim=0)) == len(torch.unique(e.images.flatten(1), dim=0))  # every image once


def test_replacement_honours_the_steps_and_resumes_exactly(digits16, tmp_path):
    kw = dict(sampling="replacement", checkpoint_every=3, keep_checkpoints=2, model="mlp")
    whole = train(cfg(digits16, tmp_path / "a", steps=7, **kw))
    assert whole.step == 7
    train(cfg(digits16, tmp_path / "b", steps=3, **kw))
    resumed = train(cfg(digits16, tmp_path / "b", steps=7, resume="latest", **kw))
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["ckpt-000006", "ckpt-000007"]
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    for name in a.weights:
        for key, tensor in a.weights[name].items():
            assert torch.allclose(tensor.float(), b.weights[name][key].float(), atol=1e-6, rtol=0), (name, key)
    epoch = train(cfg(digits16, tmp_path / "c", steps=7, model="mlp"))
    g = lambda r: load_checkpoint(r.checkpoint).weights["generator"]  # noqa: E731
    assert any(not torch.equal(v, g(epoch)[k]) for k, v in g(whole).items())  # other batches, other weights


def test_resume_refuses_another_sampling(digits16, tmp_path):
    train(cfg(digits16, tmp_path, steps=2, checkpoint_every=2))
    with pytest.raises(GanforgeError, match=r"different settings \(sampling 'epoch' -> 'replacement'\)"):
        train(cfg(digits16, tmp_path, steps=4, resume="latest", sampling="replacement"))


# --- --interpolation / --interpolation-steps -----------------------------------------------------------------


def test_linear_interpolation_is_the_seeds_straight_line():
    z = torch.randn(2, 8)
    path = interpolation_latents(z, 8, "linear")
    want = torch.stack([(1 - r) * z[0] + r * z[1] for r in np.linspace(0, 1, num=8)])
    assert torch.allclose(path, want.float(), atol=1e-6)
    slerped = interpolation_latents(z, 8)
    assert torch.allclose(slerped[[0, -1]], z, atol=1e-5) and not torch.allclose(slerped, path, atol=1e-3)
    assert (slerped.norm(dim=1)[1:-1] > path.norm(dim=1)[1:-1]).all()  # the chord cuts inside the sphere


def test_the_run_draws_its_strip_with_the_chosen_path_and_generate_follows_it(digits16, tmp_path):
    r = train(cfg(digits16, tmp_path, interpolation="linear", interpolation_steps=8))
    strip = Image.open(tmp_path / "samples" / "interpolation.png")
    assert strip.size == (8 * (16 + 2) + 2, 16 + 4)  # 8 images of 16 px in a row, padding 2
    walk = generate(r.checkpoint, n=5, interpolate=True, seed=3)
    from ganforge.inference import latents, load_generator, sample

    g, _, _ = load_generator(r.checkpoint, None, torch.device("cpu"))
    assert torch.allclose(walk, sample(g, interpolation_latents(latents(3, 5, 8), 5, "linear"), None), atol=1e-6)


@pytest.mark.parametrize("flag,value,pattern", [("--interpolation-steps", "1", "must be from 2 to 1024"),
                                                 ("--interpolation", "cubic", "interpolation"),
                                                 ("--sampling", "bootstrap", "sampling"),
                                                 ("--init", "he", "init"), ("--bn-eps", "0", r"\(0, 1\]")])  # fmt: skip
def test_cli_refuses_bad_values_in_one_line(digits16, tmp_path, flag, value, pattern):
    assert re.search(pattern, cli_error(digits16, tmp_path, "--model", "dcgan", flag, value))


def test_the_new_fields_are_flags_and_reach_the_resolved_config(digits16, tmp_path):
    res = runner.invoke(app, ["train", "--dataset", digits16, "--model", "mlp", "--steps", "2", "--no-track",
                              "--output", str(tmp_path / "o"), "--dry-run", "--init", "glorot", "--bn-eps", "0.001",
                              "--g-norm-after", "2", "--sampling", "replacement", "--interpolation", "linear",
                              "--interpolation-steps", "8"])  # fmt: skip
    assert res.exit_code == 0, res.output
    for text in ('"init": "glorot"', '"bn_eps": 0.001', '"g_norm_after": "2"', '"sampling": "replacement"',
                 '"interpolation": "linear"', '"interpolation_steps": 8'):  # fmt: skip
        assert text in res.stdout, text
