"""Model families: shapes, ranges, conditioning, normalisation and spec errors."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.utils import parametrize

from ganforge.errors import GanforgeError
from ganforge.models import (
    MODELS,
    ModelSpec,
    build_discriminator,
    build_encoder,
    build_generator,
    check_buildable,
    count_params,
)
from ganforge.models.dcgan import SIZES

N = 2



FAMILY_SIZES = {"mlp": (8, 28, 64), "dcgan": SIZES, "wgan-gp": SIZES, "vae": SIZES}
CASES = [(m, s) for m, sizes in FAMILY_SIZES.items() for s in sizes]


def spec(
    model: str = "dcgan", image_size: int = 16, channels: int = 1, conditional: bool = False, **kw
) -> ModelSpec:
    """A small spec: width 4 keeps even 256 px builds fast on CPU."""
    kw.setdefault("width", 4)
    kw.setdefault("latent_dim", 8)
    kw.setdefault("embed_dim", 5)
    return ModelSpec(
        model=model,
        image_size=image_size,
        channels=channels,
        conditional=conditional,
        num_classes=3 if conditional else 0,
        **kw,
    )


def batch(s: ModelSpec, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, s.latent_dim, generator=g)
    return z, (torch.tensor([0, 2]) if s.conditional else None)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("model", "size"), CASES)
def test_every_family_builds_the_documented_shapes(model, size, channels, conditional):
    s = spec(model, size, channels, conditional)
    nets = MODELS[model](s)
    z, labels = batch(s)
    x = nets.generator(z, labels)
    assert x.shape == (N, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    if nets.discriminator is not None:
        logits, feats = nets.discriminator(x, labels, features=True)
        assert logits.shape == (N,) and feats.ndim == 2 and feats.shape[0] == N
        assert torch.equal(
            nets.discriminator.eval()(x, labels), nets.discriminator(x, labels, features=True)[0]
        )
    else:
        mu, logvar = nets.encoder(x, labels)
        assert mu.shape == logvar.shape == (N, s.latent_dim)


@pytest.mark.parametrize("size", [28, 32])
def test_both_upsampling_modes_build_and_differ_in_layers(size):
    for mode, present, absent in (
        ("transposed", nn.ConvTranspose2d, nn.Upsample),
        ("resize-conv", nn.Upsample, nn.ConvTranspose2d),
    ):
        g = build_generator(spec(image_size=size, channels=3, upsample=mode))
        kinds = {type(m) for m in g.modules()}
        assert present in kinds and absent not in kinds
        assert g(torch.randn(N, 8)).shape == (N, 3, size, size)


@pytest.mark.parametrize("model", ["mlp", "dcgan", "wgan-gp", "vae"])
def test_labels_change_the_generated_image_for_the_same_latent(model):
    g = build_generator(spec(model, conditional=True)).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    x = g(z, torch.tensor([0, 1]))
    assert not torch.allclose(x[0], x[1])


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("model", ["mlp", "dcgan", "wgan-gp"])
def test_labels_change_the_discriminator_score(model, projection):
    d = build_discriminator(spec(model, conditional=True, projection=projection)).eval()
    x = torch.rand(1, 1, 16, 16).repeat(2, 1, 1, 1)
    logits = d(x, torch.tensor([0, 1]))
    assert logits[0] != logits[1]
    # A label plane adds an input channel; projection leaves the body unconditional.
    assert (d.label_plane is None) == projection and (d.projection is None) != projection


def test_conditional_networks_refuse_missing_labels_and_unconditional_ones_ignore_them():
    g = build_generator(spec(conditional=True))
    with pytest.raises(ValueError, match="labels"):
        g(torch.randn(N, 8))
    plain = build_generator(spec()).eval()
    z = torch.randn(N, 8)
    assert torch.equal(plain(z), plain(z, torch.tensor([0, 1])))


def has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_wgan_gp_critic_has_no_batch_norm_but_dcgan_discriminator_does():
    assert not has_batch_norm(build_discriminator(spec("wgan-gp", 64)))
    assert has_batch_norm(build_discriminator(spec("dcgan", 64)))
    assert not has_batch_norm(build_discriminator(spec("mlp", 28)))  # usable as a critic too


@pytest.mark.parametrize("model", ["mlp", "dcgan", "wgan-gp"])
def test_spectral_norm_on_every_discriminator_layer_only_when_asked(model):
    def weighted(net):
        return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    with_sn = build_discriminator(spec(model, conditional=True, projection=True, spectral_norm=True))
    assert weighted(with_sn) and all(parametrize.is_parametrized(m, "weight") for m in weighted(with_sn))
    without = build_discriminator(spec(model))
    assert not any(parametrize.is_parametrized(m) for m in weighted(without))
    x = torch.rand(N, 1, 16, 16)
    assert with_sn(x, torch.tensor([0, 1])).shape == (N,)


def test_dcgan_weights_start_at_std_002():
    g = build_generator(spec(image_size=64, width=16))
    convs = [m.weight for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert abs(torch.cat([w.flatten() for w in convs]).std().item() - 0.02) < 0.002


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "dcgan", "image_size": 48}, r"8, 16, 28, 32, 64, 128 or 256, got 48"),
        ({"model": "vae", "image_size": 100}, r"image_size 8, 16.*or 256, got 100"),
        ({"model": "mlp", "image_size": 128}, r"image_size 8 to 64, got 128"),
        ({"model": "dcgan", "channels": 2}, r"channels must be 1 or 3, got 2"),
        ({"model": "dcgan", "conditional": True, "num_classes": 1}, r"num_classes >= 2"),
        ({"model": "dcgan", "projection": True}, r"projection=True needs conditional=True"),
    ],
)
def test_unbuildable_specs_raise_one_line_naming_the_choices(kwargs, message):
    s = ModelSpec(**{"image_size": 16, "channels": 1, **kwargs})
    with pytest.raises(GanforgeError, match=message) as err:
        check_buildable(s)
    assert "\n" not in str(err.value)
    for build in (build_generator, build_discriminator, build_encoder):
        with pytest.raises(GanforgeError):
            build(s)


@pytest.mark.parametrize(("kwargs", "message"), [({"latent_dim": 0}, "latent_dim"), ({"width": 0}, "width"),
                                               ({"bn_eps": 0.0}, "bn_eps"), ({"g_channels": (64, 0)}, "g_channels")])
def test_out_of_range_settings_are_refused_when_the_spec_is_made(kwargs, message):
    """The spec holds each network setting's range (models/spec.py), so no spec holds a value out of it."""
    with pytest.raises(ValidationError, match=message):
        ModelSpec(**{"model": "dcgan", "image_size": 16, "channels": 1, **kwargs})


def test_unknown_names_raise_and_list_the_valid_ones():
    with pytest.raises(
        GanforgeError, match="unknown model 'stylegan'; valid models: mlp, dcgan, wgan-gp, vae"
    ):
        ModelSpec(model="stylegan", image_size=16, channels=1)
    with pytest.raises(GanforgeError, match="valid: transposed, resize-conv"):
        ModelSpec(model="dcgan", image_size=16, channels=1, upsample="bilinear")


def test_roles_a_family_lacks_raise():
    with pytest.raises(GanforgeError, match="'vae' has no discriminator"):
        build_discriminator(spec("vae"))
    with pytest.raises(GanforgeError, match="no encoder; models with one: vae"):
        build_encoder(spec("dcgan"))


def test_spec_round_trips_through_a_dict_and_rebuilds_the_same_shapes():
    s = spec("dcgan", 32, 3, True, upsample="resize-conv", spectral_norm=True)
    again = ModelSpec(**s.model_dump())
    assert again == s
    assert count_params(build_generator(again)) == count_params(build_generator(s))


def test_count_params_counts_scalars_and_can_skip_frozen_ones():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))  # (3*2 + 2) + (2*1 + 1) = 11
    assert count_params(net) == 11
    net[0].requires_grad_(False)
    assert count_params(net, trainable_only=True) == 3
