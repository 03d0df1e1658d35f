"""The seed presets against tables transcribed from the five seeds (../shared/seeds), number by number.

Each table holds what the seed states: its training numbers, and each network's layers in the seed's own
terms (Keras Dense/Conv2D/Conv2DTranspose/BatchNormalization/Embedding, or their PyTorch twins).
Parameter counts are computed here from those layers by the textbook formulas, not by torch, and
compared with the networks the presets build; the layer lists are compared entry by entry.

Two rewrites map the seeds' layers onto ganforge's building blocks, each exact in shape and count:
a transposed conv on a 1x1 input (seed 002's first layer) is a Linear to C*k*k outputs, and a final
k x k conv over a k x k map (seed 002's D) is a Linear over the flattened map; a stride-1
Conv2DTranspose with 'same' padding (seed 001) is a Conv2D with the kernel flipped.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models import MODELS
from ganforge.training.config import PRESETS, SEED_PRESETS, resolve_config
from ganforge.training.state import model_spec

T, F = True, False


def dense(i, o, bias=T):
    return ("dense", i, o, bias)


def conv(ci, co, k, s, bias=T):
    return ("conv", ci, co, k, s, bias)


def convt(ci, co, k, s, bias=T):
    """Conv2DTranspose / ConvTranspose2d; stride 1 with 'same' padding is a conv with a flipped kernel."""
    return ("convT", ci, co, k, s, bias) if s > 1 else conv(ci, co, k, 1, bias)


def bn(c):
    return ("bn", c)


def embed(n, d):
    return ("embed", n, d)


def n_params(layer) -> int:
    kind = layer[0]
    if kind == "dense":
        _, i, o, b = layer
        return i * o + o * b
    if kind in ("conv", "convT"):
        _, ci, co, k, _, b = layer
        return ci * co * k * k + co * b
    if kind == "bn":
        return 2 * layer[1]  # gamma and beta (Keras also counts its two moving statistics, not trained)
    return layer[1] * layer[2]  # embedding


def layers_of(net: nn.Module) -> list[tuple]:
    """The parametrised layers of a built network, in order, in the notation of the tables."""
    out = []
    for m in net.modules():
        b = getattr(m, "bias", None) is not None
        if isinstance(m, nn.Linear):
            out.append(dense(m.in_features, m.out_features, b))
        elif isinstance(m, nn.ConvTranspose2d):
            out.append(("convT", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], b))
        elif isinstance(m, nn.Conv2d):
            out.append(conv(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], b))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(bn(m.num_features))
        elif isinstance(m, nn.Embedding):
            out.append(embed(m.num_embeddings, m.embedding_dim))
        elif isinstance(m, nn.GroupNorm):
            out.append(("groupnorm", m.num_channels))
    return out


# --- seed 000 (Galaxy10 DECals, Keras): Dense(4*4*256) + BN, Conv2DTranspose 256-128-64-32-3 (k4, s2,
# use_bias='False' = truthy), D Conv2D 32-64-128-256 (k4, s2; use_bias=False after the first), Dense(1).
G000 = [dense(128, 4 * 4 * 256), bn(4096), convt(256, 256, 4, 2), bn(256), convt(256, 128, 4, 2), bn(128),
        convt(128, 64, 4, 2), bn(64), convt(64, 32, 4, 2), bn(32), convt(32, 3, 4, 2)]  # fmt: skip
D000 = [conv(3, 32, 4, 2), conv(32, 64, 4, 2, F), bn(64), conv(64, 128, 4, 2, F), bn(128), conv(128, 256, 4, 2, F),
        bn(256), dense(8 * 8 * 256, 1)]  # fmt: skip
# the CGAN: Embedding(10, 64) concatenated to z (192 in), Embedding(10, 128*128) as a 4th image channel
G000C = [embed(10, 64), dense(192, 4096), *G000[1:]]
D000C = [embed(10, 128 * 128), conv(4, 32, 4, 2), *D000[1:]]
GALAXY = dict(latent_dim=128, batch_size=256, epochs=300, optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.05,
              beta2=0.999, noisy_labels=True, label_smoothing=False, d_loss_sum=True, sample_every_epochs=1,
              n_samples=24, loss=None, init="glorot", bn_eps=1e-3)  # fmt: skip
KERAS_AE = dict(init="glorot", bn_eps=1e-3, output_activation="sigmoid")  # the book's decoders: sigmoid on [0, 1]
KERAS_GAN = dict(init="normal", bn_eps=1e-3)  # the book's GAN class: RandomNormal(mean=0., stddev=0.02) kernels

# --- seed 001 (Generative Deep Learning ch. 3-4, Keras): the AE/VAE as printed; GAN/WGAN/WGAN-GP with the
# book notebook's arguments to the printed classes (the seed prints the classes, not the call).
ENC = [conv(1, 32, 3, 1), conv(32, 64, 3, 2), conv(64, 64, 3, 2), conv(64, 64, 3, 1)]
DEC = [dense(2, 7 * 7 * 64), convt(64, 64, 3, 1), convt(64, 64, 3, 2), convt(64, 32, 3, 2), convt(32, 1, 3, 1)]
G001 = [dense(100, 3136), bn(3136), conv(64, 128, 5, 1), bn(128), conv(128, 64, 5, 1), bn(64), convt(64, 64, 5, 1),
        bn(64), convt(64, 1, 5, 1)]  # UpSampling2D + Conv2D for the first two  # fmt: skip
D001 = [conv(1, 64, 5, 2), conv(64, 64, 5, 2), conv(64, 128, 5, 2), conv(128, 128, 5, 1), dense(4 * 4 * 128, 1)]
G001W = [dense(100, 2048), bn(2048), conv(128, 128, 5, 1), bn(128), conv(128, 64, 5, 1), bn(64), conv(64, 32, 5, 1),
         bn(32), convt(32, 3, 5, 1)]  # fmt: skip
D001W = [conv(3, 32, 5, 2), conv(32, 64, 5, 2), conv(64, 128, 5, 2), conv(128, 128, 5, 1), dense(4 * 4 * 128, 1)]
G001GP = [dense(100, 8192), bn(8192), convt(512, 256, 5, 2), bn(256), convt(256, 128, 5, 2), bn(128),
          convt(128, 64, 5, 2), bn(64), convt(64, 3, 5, 2)]  # fmt: skip
D001GP = [conv(3, 64, 5, 2), conv(64, 128, 5, 2), conv(128, 256, 5, 2), conv(256, 512, 5, 2), dense(4 * 4 * 512, 1)]

# --- seed 002 (woodblock prints, PyTorch): ConvTranspose2d(128, 1024, 4, 1, 0) on 1x1 == Linear(128, 16*1024),
# then 1024-512-256-128-64-3 (4, 2, 1), bias=False everywhere; D 64-128-256-512-1024, Conv2d(1024, 1, 4, 1, 0).
G002 = [dense(128, 1024 * 4 * 4, F), bn(1024), convt(1024, 512, 4, 2, F), bn(512), convt(512, 256, 4, 2, F), bn(256),
        convt(256, 128, 4, 2, F), bn(128), convt(128, 64, 4, 2, F), bn(64), convt(64, 3, 4, 2, F)]  # fmt: skip
D002 = [conv(3, 64, 4, 2, F), conv(64, 128, 4, 2, F), bn(128), conv(128, 256, 4, 2, F), bn(256),
        conv(256, 512, 4, 2, F), bn(512), conv(512, 1024, 4, 2, F), bn(1024), dense(1024 * 4 * 4, 1, F)]  # fmt: skip

# --- seed 003 (MNIST, Keras): Dense 256-512-1024, BatchNormalization(momentum=0.8) on 1024, Dense(784) tanh
G003 = [dense(128, 256), dense(256, 512), dense(512, 1024), bn(1024), dense(1024, 784)]
D003 = [dense(784, 512), dense(512, 256), dense(256, 1)]
# --- seed 004 (KMNIST, PyTorch): Linear 128-256-512 each with BatchNorm1d, Linear(784) tanh
G004 = [dense(100, 128), bn(128), dense(128, 256), bn(256), dense(256, 512), bn(512), dense(512, 784)]
D004 = [dense(784, 512), dense(512, 256), dense(256, 1)]

# preset -> (image (C, S), classes, config numbers, {role: layers}, Keras/PyTorch BN momentum, dropout of D,
#            LeakyReLU slope, (G activation, D activation))
SEEDS = {
    "seed000-galaxy10-dcgan": ((3, 128), 0, GALAXY, {"g": G000, "d": D000}, ("keras", 0.99), 0.5, 0.3,
                               (nn.LeakyReLU, nn.LeakyReLU)),
    "seed000-galaxy10-cgan": ((3, 128), 10, {**GALAXY, "conditional": True, "embed_dim": 64},
                              {"g": G000C, "d": D000C}, ("keras", 0.99), 0.5, 0.3, (nn.LeakyReLU, nn.LeakyReLU)),
    "seed001-ae": ((1, 28), 0, dict(latent_dim=2, batch_size=32, epochs=200, lr_g=5e-4, beta1=0.9, beta2=0.999,
                                                   **KERAS_AE),
                   {"e": [*ENC, dense(3136, 2)], "g": DEC}, None, None, 0.3, (nn.LeakyReLU, nn.LeakyReLU)),
    "seed001-vae": ((1, 28), 0, dict(latent_dim=2, batch_size=32, epochs=200, lr_g=5e-4, kl_weight=0.784,
                                                    **KERAS_AE),
                    {"e": [*ENC, dense(3136, 2), dense(3136, 2)], "g": DEC}, None, None, 0.3,
                    (nn.LeakyReLU, nn.LeakyReLU)),
    "seed001-gan": ((1, 28), 0, dict(latent_dim=100, optimizer="rmsprop", lr_d=8e-4, lr_g=4e-4, beta2=0.9,
                                     batch_size=64, steps=6000, d_loss_sum=False, loss=None, **KERAS_GAN),
                    {"g": G001, "d": D001}, ("keras", 0.9), 0.4, None, (nn.ReLU, nn.ReLU)),
    "seed001-wgan": ((3, 32), 0, dict(latent_dim=100, loss="wgan-clip", clip=0.01, n_critic=5, optimizer="rmsprop",
                                      lr_d=5e-5, lr_g=5e-5, beta2=0.9, batch_size=128, steps=6000, **KERAS_GAN),
                     {"g": G001W, "d": D001W}, ("keras", 0.8), None, 0.2, (nn.LeakyReLU, nn.LeakyReLU)),
    "seed001-wgan-gp": ((3, 64), 0, dict(latent_dim=100, loss="wgan-gp", gp_weight=10.0, n_critic=5, optimizer="adam",
                                         lr_d=2e-4, lr_g=2e-4, beta1=0.5, batch_size=64, steps=6000,
                                         **KERAS_GAN),
                        {"g": G001GP, "d": D001GP}, ("keras", 0.9), None, 0.2, (nn.LeakyReLU, nn.LeakyReLU)),
    "seed002-folder-dcgan-128": ((3, 128), 0, dict(latent_dim=128, batch_size=128, epochs=25, lr_g=2e-4, lr_d=2e-4,
                                                   beta1=0.5, beta2=0.999, d_loss_sum=True, label_smoothing=False,
                                                   noisy_labels=False, sample_every=1000, n_samples=64,
                                                   init="torch", interpolation="linear", interpolation_steps=8),
                                 {"g": G002, "d": D002}, ("torch", 0.1), None, 0.2, (nn.ReLU, nn.LeakyReLU)),
    "seed003-mnist-mlp": ((1, 28), 0, dict(latent_dim=128, batch_size=128, steps=20000, lr_g=2e-4, lr_d=2e-4,
                                           beta1=0.5, d_loss_sum=False, sample_every=100, n_samples=25, log_every=25,
                                           g_norm_after="3", sampling="replacement", init="glorot", bn_eps=1e-3),
                          {"g": G003, "d": D003}, ("keras", 0.8), None, 0.2, (nn.LeakyReLU, nn.LeakyReLU)),
    "seed004-kmnist-mlp": ((1, 28), 0, dict(latent_dim=100, batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.5,
                                            beta2=0.999, d_loss_sum=False, fid_every=1,
                                            fid_backbone="inception-torchvision", g_norm_after="1", init="torch"),
                           {"g": G004, "d": D004}, ("torch", 0.1), None, 0.2, (nn.LeakyReLU, nn.LeakyReLU)),
}  # fmt: skip


def test_every_seed_experiment_has_a_preset_and_the_old_presets_stay():
    assert set(SEEDS) == set(SEED_PRESETS)
    assert all(PRESETS[name].from_seed == name[4:7] for name in SEEDS)  # each file names the write-up it rebuilds
    assert {"mnist-mlp", "kmnist-mlp", "galaxy10-dcgan-128", "folder-dcgan-128", "digits-tiny"} <= set(PRESETS)


def build(name):
    (channels, size), classes, numbers, _, _, _, _, _ = SEEDS[name]
    config = resolve_config({"dataset": "unused", "preset": name})
    spec = model_spec(config, (channels, size, size), classes)
    g, d, e = MODELS[config.model](spec)
    return config, {"g": g, "d": d, "e": e}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_preset_config_matches_the_seed(name):
    config, _ = build(name)
    numbers = SEEDS[name][2]
    flat = config.model_dump()  # as the seed's numbers are written here: layer tables as comma text
    got = {k: flat[k] for k in numbers}
    assert got == numbers


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_preset_networks_match_the_seed_layer_by_layer(name):
    (channels, size), classes, _, tables, momentum, dropout, slope, (g_act, d_act) = SEEDS[name]
    config, nets = build(name)
    for role, table in tables.items():
        net = nets[role]
        assert layers_of(net) == table, role
        assert sum(p.numel() for p in net.parameters()) == sum(n_params(layer) for layer in table), role
    roles = {r: nets[r] for r in tables}
    for net in roles.values():  # batch-norm momentum, translated from Keras (m) to PyTorch (1 - m)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                want = 1 - momentum[1] if momentum[0] == "keras" else momentum[1]
                assert m.momentum == pytest.approx(want)
    first = roles.get("d", roles.get("e"))
    rates = [m.p for m in first.modules() if isinstance(m, nn.Dropout)]
    assert rates == ([] if dropout is None else rates[:1] * len(rates)) and (dropout is None or rates[0] == dropout)
    slopes = {m.negative_slope for net in roles.values() for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == ({slope} if slope is not None else set())
    g_kinds = {type(m) for m in roles["g"].body.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))}
    assert g_kinds == {g_act}
    d_kinds = {type(m) for m in first.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))}
    assert d_kinds == {d_act}
    # and the networks run at the seed's size
    g = roles["g"].eval()
    labels = torch.arange(2) % classes if classes else None
    with torch.no_grad():
        x = g(torch.randn(2, config.latent_dim), labels)
        assert x.shape == (2, channels, size, size)
        if "d" in roles:
            assert roles["d"].eval()(x, labels).shape == (2,)


def test_seed000_dropout_sits_once_before_the_head_and_seed001_gan_after_every_conv():
    _, nets = build("seed000-galaxy10-dcgan")
    body = list(nets["d"].body)
    assert [type(m) for m in body[-2:]] == [nn.Flatten, nn.Dropout]
    _, nets = build("seed001-gan")
    assert [m.p for m in nets["d"].modules() if isinstance(m, nn.Dropout)] == [0.4] * 4


@pytest.mark.parametrize("name,size", [("seed000-galaxy10-dcgan", 28), ("seed002-folder-dcgan-128", 28),
                                       ("seed001-gan", 64), ("seed003-mnist-mlp", 16)])  # fmt: skip
def test_a_seed_preset_refuses_a_dataset_of_another_size(name, size):
    config = resolve_config({"dataset": "unused", "preset": name})
    with pytest.raises(GanforgeError, match=rf"preset {name} builds the seed's \d+ px networks; the dataset has "
                       rf"{size} px images: re-ingest it with --image-size"):  # fmt: skip
        model_spec(config, (1, size, size), 0)
    # the user's own tables lift the refusal: then the networks are theirs, not the seed's
    own = resolve_config({"dataset": "unused", "preset": name, "g_channels": "64,32", "d_channels": "32,64"})
    model_spec(own, (1, size, size), 0)


# The generator bodies' module order where it is the seed's point: seed 003 puts BatchNormalization after the
# 1024 layer's LeakyReLU (Dense(activation=...) then BatchNormalization); seed 004's first layer is Linear,
# LeakyReLU, BatchNorm1d and its others Linear, BatchNorm1d, LeakyReLU.
L, A, B, OUT = nn.Linear, nn.LeakyReLU, nn.BatchNorm1d, (nn.Tanh, nn.Unflatten)
ORDER = {"seed003-mnist-mlp": [L, A, L, A, L, A, B, L, *OUT], "seed004-kmnist-mlp": [L, A, B, L, B, A, L, B, A, L, *OUT]}


@pytest.mark.parametrize("name", sorted(ORDER))
def test_batch_norm_sits_where_the_seed_puts_it(name):
    _, nets = build(name)
    assert [type(m) for m in nets["g"].body] == ORDER[name]


def _fans(m: nn.Module) -> tuple[int, int]:
    w = m.weight
    k = w[0][0].numel() if w.dim() > 2 else 1
    if isinstance(m, nn.ConvTranspose2d):  # (in, out, k, k)
        return w.shape[0] * k, w.shape[1] * k
    return w.shape[1] * k, w.shape[0] * k


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_preset_networks_are_initialised_and_normalised_as_the_seed(name):
    """Keras seeds: glorot-uniform (or RandomNormal(0, 0.02) kernels), zero biases, batch norm 1/0, epsilon 1e-3;
    PyTorch seeds without a weights_init: PyTorch's own bounds, epsilon 1e-5."""
    numbers = SEEDS[name][2]
    init, eps = numbers.get("init", "dcgan"), numbers.get("bn_eps", 1e-5)
    _, nets = build(name)
    for role in SEEDS[name][3]:
        for m in nets[role].modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                assert m.eps == eps
                if init != "dcgan":
                    assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            elif isinstance(m, nn.Embedding):
                assert init != "glorot" or m.weight.abs().max() <= 0.05  # Keras' uniform(-0.05, 0.05)
            elif isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                fan_in, fan_out = _fans(m)
                w = m.weight.detach()
                if init == "glorot":
                    limit = (6 / (fan_in + fan_out)) ** 0.5
                    assert w.abs().max() <= limit and (w.numel() < 1000 or w.std() > 0.8 * limit / 3**0.5)
                elif init == "normal" and w.numel() >= 1000:
                    assert 0.018 < w.std() < 0.022
                elif init == "torch":  # kaiming_uniform(a=sqrt(5)): 1/sqrt(fan-in), PyTorch's own (a transposed
                    # conv's counts its output maps), the first transposed conv's for the Projection standing for it
                    bound = getattr(m, "conv_fan_in", nn.init._calculate_fan_in_and_fan_out(w)[0]) ** -0.5
                    assert w.abs().max() <= bound and (w.numel() < 1000 or w.abs().max() > 0.9 * bound)
                if m.bias is not None and init in ("glorot", "normal"):
                    assert torch.all(m.bias == 0)


@pytest.mark.parametrize("name", ["seed001-ae", "seed001-vae"])
def test_the_books_decoders_end_in_a_sigmoid_handed_on_as_minus_one_to_one(name):
    from ganforge.models.layers import SignedSigmoid

    _, nets = build(name)
    assert isinstance(list(nets["g"].body)[-1], SignedSigmoid)
    assert nets["e"].unit_input  # the encoder sees [0, 1] images, as the book's
    with torch.no_grad():
        x = nets["g"].eval()(torch.randn(4, 2) * 50, None)
    assert x.min() >= -1 and x.max() <= 1
