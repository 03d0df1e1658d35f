"""Issue 16's training capabilities: each flag changes what is built or optimised, and bad values are refused.

Networks are checked by their modules (types, rates, momenta, shapes); optimisation by the optimiser the
trainer holds and the learning rates it logs; the on-disk outputs by a --no-track run's directory.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.models import ModelSpec, build_discriminator, build_generator
from ganforge.models.layers import ACTIVATIONS
from ganforge.training import TrainConfig, train
from ganforge.training.config import ACTIVATION_NAMES, resolve_config
from ganforge.training.losses import build_objective
from ganforge.training.state import lr_factor, model_spec

runner = CliRunner()
TINY = dict(batch_size=16, width=8, latent_dim=8, track=False, log_every=1, checkpoint_every=100, steps=4)


def cfg(dataset="d", **kw) -> TrainConfig:
    return TrainConfig(**{"dataset": dataset, "model": "dcgan", "output": "o", **TINY, **kw})


def spec_of(config: TrainConfig, size: int = 16, channels: int = 1, classes: int = 3) -> ModelSpec:
    return model_spec(config, (channels, size, size), classes)


def modules(net: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, kind)]


def test_activation_names_mirror_the_models():
    assert ACTIVATION_NAMES == ACTIVATIONS


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("optimizer", "sgd", "unknown optimizer 'sgd'; choose one of adam, rmsprop"),
        ("lr_schedule", "linear", "unknown lr-schedule 'linear'; choose one of none, step, cosine"),
        ("g_activation", "gelu", "unknown g-activation 'gelu'"),
        ("d_dropout", 1.0, r"must be in \[0, 1\)"),
        ("g_dropout", -0.1, r"must be in \[0, 1\)"),
        ("d_dropout", math.nan, r"must be in \[0, 1\)"),
        ("bn_momentum", 1.5, "Keras 0.8 is 0.2 here"),
        ("lr_gamma", 0.0, r"must be in \(0, 1\]"),
        ("g_channels", "256,x", "comma-separated positive integers"),
        ("embed_dim", 0, "must be from 1 to 65536"),
    ],
)
def test_bad_values_are_refused(field, value, pattern):
    with pytest.raises(ValidationError, match=pattern):
        cfg(**{field: value})


@pytest.mark.parametrize(
    "flag,value,pattern",
    [("--optimizer", "sgd", "unknown optimizer"), ("--lr-schedule", "exp", "unknown lr-schedule"),
     ("--d-dropout", "1", r"\[0, 1\)"), ("--g-dropout", "1.5", r"\[0, 1\)")],
)  # fmt: skip
def test_cli_refuses_bad_capability_values_in_one_line(digits16, tmp_path, flag, value, pattern):
    res = runner.invoke(app, ["train", "--dataset", digits16, "--model", "dcgan", "--steps", "2", "--no-track",
                              "--output", str(tmp_path / "o"), flag, value])  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()


def test_embed_dim_is_accepted_by_flags_and_config_files_and_sizes_the_embedding(digits16, tmp_path):
    (tmp_path / "c.yaml").write_text("embed_dim: 64\nconditional: true\n")
    config = resolve_config({"dataset": digits16, "model": "dcgan", "steps": 1}, tmp_path / "c.yaml")
    assert config.embed_dim == 64
    G = build_generator(spec_of(config, classes=10))
    assert G.embed.weight.shape == (10, 64)
    assert G.body[0].in_features == 100 + 64  # latent + embedding, as the Galaxy10 CGAN's 128 + 64 = 192
    res = runner.invoke(app, ["train", "--dataset", digits16, "--model", "dcgan", "--steps", "1", "--conditional",
                              "--embed-dim", "7", "--no-track", "--output", str(tmp_path / "o"), "--dry-run"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["embed_dim"] == 7


def test_dropout_momentum_and_activations_reach_the_layers():
    c = cfg(g_dropout=0.25, d_dropout=0.5, bn_momentum=0.2, g_activation="leaky_relu", d_activation="relu",
            leaky_slope=0.3)  # fmt: skip
    G, D = build_generator(spec_of(c)), build_discriminator(spec_of(c))
    assert {m.p for m in modules(G, nn.Dropout)} == {0.25} and len(modules(G, nn.Dropout)) == 2  # base + 1 block
    assert {m.p for m in modules(D, nn.Dropout)} == {0.5} and len(modules(D, nn.Dropout)) == 2
    assert {m.momentum for m in modules(G, nn.BatchNorm2d) + modules(D, nn.BatchNorm2d)} == {0.2}
    assert {m.negative_slope for m in modules(G, nn.LeakyReLU)} == {0.3} and not modules(G, nn.ReLU)
    assert modules(D, nn.ReLU) and not modules(D, nn.LeakyReLU)
    head = cfg(d_dropout=0.5, d_dropout_at="head")
    D = build_discriminator(spec_of(head))
    assert isinstance(D.body[-1], nn.Dropout) and isinstance(D.body[-2], nn.Flatten)
    assert len(modules(D, nn.Dropout)) == 1
    mlp = cfg(model="mlp", d_dropout=0.0)  # mlp's own 0.3 can be switched off
    assert not modules(build_discriminator(spec_of(mlp)), nn.Dropout)
    assert len(modules(build_discriminator(spec_of(cfg(model="mlp"))), nn.Dropout)) == 2


def test_channel_cap_lets_the_widest_layer_grow():
    assert build_generator(spec_of(cfg(width=4), size=128, channels=3)).body[0].out_features == 32 * 16
    G = build_generator(spec_of(cfg(width=4, channel_cap=16), size=128, channels=3))
    assert G.body[0].out_features == 64 * 16  # 16 x width on the 4x4 base map, as the woodblock seed's 1024
    D = build_discriminator(spec_of(cfg(width=4, channel_cap=16), size=128, channels=3))
    assert [m.out_channels for m in modules(D, nn.Conv2d)] == [4, 8, 16, 32, 64]


def test_rmsprop_uses_beta2_as_alpha_and_adam_keeps_its_betas(digits16, tmp_path):
    from ganforge.data import load
    from ganforge.training.distributed import setup, teardown
    from ganforge.training.state import build_trainer

    rt = setup("cpu", None)
    try:
        t = build_trainer(cfg(digits16, optimizer="rmsprop", beta2=0.9, lr_d=8e-4, lr_g=4e-4), rt, load(digits16))
        assert isinstance(t.opt_g, torch.optim.RMSprop) and isinstance(t.opt_d, torch.optim.RMSprop)
        assert t.opt_d.defaults["alpha"] == 0.9 and t.opt_d.defaults["lr"] == 8e-4 and t.opt_g.defaults["lr"] == 4e-4
        t = build_trainer(cfg(digits16, beta1=0.05), rt, load(digits16))
        assert isinstance(t.opt_g, torch.optim.Adam) and t.opt_g.defaults["betas"] == (0.05, 0.999)
    finally:
        teardown(rt)


def test_schedules_by_hand():
    step = cfg(lr_schedule="step", lr_step=2, lr_gamma=0.5)
    # 10 batches per epoch: epochs 0-1 full rate, 2-3 half, 4-5 a quarter (the book's step_decay_schedule)
    assert [lr_factor(step, s, 100, 10, 1) for s in (0, 19, 20, 39, 40)] == [1, 1, 0.5, 0.5, 0.25]
    assert lr_factor(step, 10, 100, 10, 5) == 0.25  # 5 critic batches per update: step 10 is epoch 5
    cos = cfg(lr_schedule="cosine")
    assert [round(lr_factor(cos, s, 100, 10, 1), 6) for s in (0, 50, 100)] == [1, 0.5, 0]
    assert lr_factor(cfg(), 77, 100, 10, 1) == 1


def test_step_schedule_reaches_the_optimiser(digits16, tmp_path):
    from tests.unit.test_training_loop import RecordingTracker

    rec = RecordingTracker()
    # digits16 has 128 train images: 8 batches of 16 per epoch; 20 steps cover epochs 0, 1, 2
    train(cfg(digits16, steps=20, lr_schedule="step", lr_step=1, lr_gamma=0.5, output=str(tmp_path / "o")), tracker=rec)
    lrs = dict(zip((s for s, _ in rec.metrics), rec.series("train/lr_g")))
    assert lrs[1] == pytest.approx(2e-4) and lrs[8] == pytest.approx(2e-4)
    assert lrs[9] == pytest.approx(1e-4) and lrs[17] == pytest.approx(5e-5)


def _fixed_d(real_logits: torch.Tensor, fake_logits: torch.Tensor):
    """A 'discriminator' that returns given logits: real images are ones, fakes zeros."""

    def D(x, labels=None, **_):
        return real_logits if bool(x.flatten()[0] == 1) else fake_logits

    return D


def test_loss_d_is_the_mean_of_real_and_fake_and_the_sum_is_named_apart():
    real_l, fake_l = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 1.0, 0.2])
    real, fake = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    bce_real = -torch.log(torch.sigmoid(real_l)).mean().item()
    bce_fake = -torch.log(1 - torch.sigmoid(fake_l)).mean().item()
    loss, stats = build_objective("bce", label_smoothing=False, noisy_labels=False,
                                  feature_matching=False).d_loss(_fixed_d(real_l, fake_l), real, fake, None)  # fmt: skip
    assert stats["loss_d"] == pytest.approx((bce_real + bce_fake) / 2, rel=1e-5)
    assert loss.item() == pytest.approx((bce_real + bce_fake) / 2, rel=1e-5) and "loss_d_sum" not in stats
    # accuracy: real logits > 0 (2 of 3), fake logits <= 0 (1 of 3) -> 3 of 6
    assert stats["d_acc"] == pytest.approx(0.5)
    loss, stats = build_objective("bce", label_smoothing=False, noisy_labels=False, feature_matching=False,
                                  d_loss_sum=True).d_loss(_fixed_d(real_l, fake_l), real, fake, None)  # fmt: skip
    assert stats["loss_d_sum"] == pytest.approx(bce_real + bce_fake, rel=1e-5) == loss.item()
    assert stats["loss_d"] == pytest.approx((bce_real + bce_fake) / 2, rel=1e-5)
    from ganforge.errors import GanforgeError

    with pytest.raises(GanforgeError, match="d_loss_sum applies to losses with a real and a fake term"):
        build_objective("wgan-gp", label_smoothing=False, noisy_labels=False, feature_matching=False, d_loss_sum=True)


def test_aux_classifier_predicts_the_class_and_trains_it():
    c = cfg(conditional=True, aux_classifier=True)
    G, D = build_generator(spec_of(c)), build_discriminator(spec_of(c))
    assert D.label_plane is None and D.classifier.out_features == 3  # the label is never D's input
    assert modules(D, nn.Conv2d)[0].in_channels == 1
    obj = build_objective("bce", label_smoothing=False, noisy_labels=False, feature_matching=False,
                          aux_classifier=True)  # fmt: skip
    labels = torch.tensor([0, 1, 2, 0])
    fake = G(torch.randn(4, 8), labels)
    loss, stats = obj.d_loss(D, torch.rand(4, 1, 16, 16) * 2 - 1, fake, labels)
    assert {"loss_aux", "d_class_acc", "d_acc"} <= set(stats) and stats["loss_aux"] > 0
    loss.backward()
    assert D.classifier.weight.grad.abs().sum() > 0
    g_loss, g_stats = obj.g_loss(D, fake, labels)
    assert g_loss.item() == pytest.approx(g_stats["loss_g"] + g_stats["loss_aux_g"], rel=1e-5)
    from ganforge.errors import GanforgeError

    with pytest.raises(GanforgeError, match="aux_classifier=True needs conditional=True"):
        build_discriminator(spec_of(cfg(aux_classifier=True)))


def test_projection_flag_builds_the_projection_head():
    D = build_discriminator(spec_of(cfg(conditional=True, projection=True)))
    assert D.projection.weight.shape[0] == 3 and D.label_plane is None


def test_no_track_run_writes_grids_metrics_csv_and_loss_plot(digits16, tmp_path):
    out = tmp_path / "o"
    train(cfg(digits16, steps=6, sample_every=3, output=str(out)))
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["final.png", "interpolation.png"]
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["step-0000003.png", "step-0000006.png"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"train/loss_d", "train/loss_g", "train/d_acc", "train/lr_g"} <= set(rows[0])
    assert (out / "loss_curve.png").stat().st_size > 1000


def test_sample_every_epochs_and_resume_keeps_the_csv_rows(digits16, tmp_path):
    from PIL import Image

    out = tmp_path / "o"
    # 8 batches per epoch: 20 steps end epochs 1 and 2 at steps 8 and 16
    train(cfg(digits16, steps=12, sample_every_epochs=1, n_samples=24, checkpoint_every=4, output=str(out)))
    assert sorted(p.name for p in (out / "grids").glob("epoch-*")) == ["epoch-0001.png"]
    assert Image.open(out / "grids" / "epoch-0001.png").size == (6 * 18 + 2, 4 * 18 + 2)  # 24 in 6 x 4
    train(cfg(digits16, steps=20, sample_every_epochs=1, n_samples=24, checkpoint_every=4, output=str(out),
              resume="latest"))  # fmt: skip
    assert sorted(p.name for p in (out / "grids").glob("epoch-*")) == ["epoch-0001.png", "epoch-0002.png"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))


@pytest.mark.parametrize(
    "every,n_critic,want",
    [
        (1000, 1, [1, 9, 17]),  # seed 002's `if i % 1000 == 0`: once, after the first batch of every epoch
        (3, 1, [1, 4, 7, 9, 12, 15, 17, 20, 23]),  # batches 0, 3 and 6 of each 8-batch epoch
        (1000, 2, [1, 5, 9]),  # two batches per update: batches 0, 8 and 16 are consumed by updates 1, 5, 9
    ],
)
def test_sample_counter_epoch_restarts_the_count_every_epoch(digits16, tmp_path, every, n_critic, want):
    """--sample-counter epoch counts --sample-every in batches within each epoch, as the PyTorch DCGAN example
    (seed 002) snapshots inside its epoch loop; 3 epochs of 8 batches of 16 here."""
    from tests.unit.test_training_loop import RecordingTracker

    out = tmp_path / "o"
    extra = {"model": "wgan-gp", "loss": "wgan-clip", "n_critic": 2} if n_critic == 2 else {}
    rec = RecordingTracker()
    result = train(cfg(digits16, steps=None, epochs=3, sample_every=every, sample_counter="epoch",
                       output=str(out), **extra), tracker=rec)  # fmt: skip
    assert result.step == 24 // n_critic
    assert [s for key, s, _ in rec.images if key == "samples"] == want
    assert sorted(p.name for p in (out / "grids").iterdir()) == [f"step-{s:07d}.png" for s in want]
    plain = train(cfg(digits16, steps=None, epochs=3, sample_every=8, output=str(tmp_path / "run")))  # the default
    assert plain.step == 24 and sorted(p.name for p in (tmp_path / "run" / "grids").iterdir()) == [
        "step-0000008.png", "step-0000016.png", "step-0000024.png"]


def test_sample_counter_epoch_and_sample_every_epochs_are_one_choice():
    with pytest.raises(ValidationError, match="give one of them"):
        cfg(sample_counter="epoch", sample_every_epochs=1)
    with pytest.raises(ValidationError, match="Input should be 'run' or 'epoch'"):
        cfg(sample_counter="batch")


def test_fid_curve_beside_the_loss_curve_in_the_folder_and_the_run(digits16, tmp_path):
    """Seed 004's chart of FID per epoch: fid_curve.png, redrawn at each probe, logged at the run's end; none
    without the probe."""
    from PIL import Image

    from tests.unit.test_training_loop import RecordingTracker

    out = tmp_path / "o"
    rec = RecordingTracker()
    train(cfg(digits16, steps=None, epochs=2, fid_every=1, fid_n=24, fid_backbone="pixels", output=str(out)),
          tracker=rec)  # fmt: skip
    assert [s for s, m in rec.metrics if "train/fid_24_train" in m] == [8, 16]
    assert (out / "loss_curve.png").is_file() and Image.open(out / "fid_curve.png").size == (700, 400)
    assert (str(out / "fid_curve.png"), None) in rec.artifacts  # at the artifacts' root, as loss_curve.png
    plain = RecordingTracker()
    train(cfg(digits16, steps=4, output=str(tmp_path / "plain")), tracker=plain)
    assert not (tmp_path / "plain" / "fid_curve.png").exists()
    assert not any(path.endswith("fid_curve.png") for path, _ in plain.artifacts)


def test_fid_curve_plots_each_measurement_at_its_epoch(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from ganforge.training import fid_probe

    drawn = {}
    monkeypatch.setattr(fid_probe, "write_fid_plot", lambda output, series: drawn.update(series) or output)
    rows = [{"step": 8, "train/fid_24_train": 90.0}, {"step": 10, "train/loss_g": 1.0},
            {"step": 16, "train/fid_24_train": 70.0}]  # fmt: skip
    t = SimpleNamespace(metric_rows=rows, config=SimpleNamespace(output=str(tmp_path)),
                        epochs_done=lambda step: step // 8)  # fmt: skip
    fid_probe.draw_curve(t)
    assert drawn == {"train/fid_24_train": [(1, 90.0), (2, 70.0)]}
    assert fid_probe.draw_curve(SimpleNamespace(metric_rows=rows[1:2], config=t.config, epochs_done=t.epochs_done)) is None


def test_per_epoch_fid_with_torchvision_inception_from_a_weights_file(digits16, tmp_path, monkeypatch):
    """Seed 004 measures FID every epoch with torchvision's InceptionV3: --fid-backbone-weights takes the
    file as evaluate's --backbone-weights does, and without it the file is found where torchvision caches
    its download (random weights here, so the hash must be declared: --fid-backbone-sha256)."""
    from torchvision.models import inception_v3

    from ganforge.errors import GanforgeError
    from ganforge.metrics.features import INCEPTION_TORCHVISION_FILE, file_sha256
    from tests.unit.test_training_loop import RecordingTracker

    monkeypatch.setenv("GANFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    path = tmp_path / "inception_v3.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    base = dict(steps=9, fid_every=1, fid_n=8, fid_backbone="inception-torchvision")
    with pytest.raises(GanforgeError, match="declare --fid-backbone-sha256"):  # train's flag, not evaluate's
        train(cfg(digits16, output=str(tmp_path / "refused"), fid_backbone_weights=str(path), **base))
    assert not (tmp_path / "refused").exists()
    cached = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_TORCHVISION_FILE  # torch.hub's checkpoint dir
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    rec = RecordingTracker()
    train(cfg(digits16, output=str(tmp_path / "o"), fid_backbone_sha256=file_sha256(cached), **base), tracker=rec)
    fid = [(s, m["train/fid_8_train"]) for s, m in rec.metrics if "train/fid_8_train" in m]
    assert [s for s, _ in fid] == [8]  # 8 batches of 16 per epoch: a value at the end of epoch 1, none at step 9
    assert all(math.isfinite(v) and v > 0 for _, v in fid)
    rows = list(csv.DictReader((tmp_path / "o" / "metrics.csv").open()))
    assert [float(r["train/fid_8_train"]) for r in rows if r["train/fid_8_train"]] == pytest.approx([fid[0][1]])


def test_fid_probe_without_torchvision_weights_names_train_flag_and_the_cache(digits16, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    res = runner.invoke(app, ["train", "--dataset", digits16, "--model", "dcgan", "--steps", "1", "--no-track",
                              "--output", str(tmp_path / "o"), "--fid-every", "1", "--fid-backbone",
                              "inception-torchvision", "--dry-run"])  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert lines[0] == (
        f"error: inception-torchvision's weights are not in torchvision's cache: put inception_v3_google-0cc3c7bd.pth "
        f"in {cache} (torchvision's inception_v3(weights='IMAGENET1K_V1') downloads it there on a machine online; "
        "$TORCH_HOME moves the cache), or pass --fid-backbone-weights PATH")
    assert not (tmp_path / "o").exists()
