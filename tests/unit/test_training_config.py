"""TrainConfig and presets: precedence file < preset < flags, validation, resume-relevant fields."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ganforge.errors import GanforgeError
from ganforge.training.config import MODEL_NAMES, PRESETS, RESUME_FREE, TrainConfig, resolve_config


def test_model_names_are_the_registry():
    from ganforge.models import MODELS

    assert set(MODEL_NAMES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_says_why(name):
    cfg = resolve_config({"dataset": "d", "preset": name})
    assert cfg.preset == name
    assert cfg.model in MODEL_NAMES
    assert len(PRESETS[name].why) > 30
    flat = cfg.model_dump()  # as config files carry values: layer tables as comma text
    for key, value in PRESETS[name].overrides.items():
        assert flat[key] == value


def test_classic_presets_keep_their_optimiser_settings():
    for name in ("kmnist-mlp", "galaxy10-dcgan-128", "galaxy10-cgan-128"):
        cfg = resolve_config({"dataset": "d", "preset": name})
        assert (cfg.lr_g, cfg.lr_d, cfg.beta1) == (2e-4, 2e-4, 0.5)
    assert resolve_config({"dataset": "d", "preset": "galaxy10-cgan-128"}).label_smoothing
    wgan = resolve_config({"dataset": "d", "preset": "mnist-wgan-gp"})
    assert (wgan.objective, wgan.n_critic, wgan.beta1, wgan.beta2) == ("wgan-gp", 5, 0.0, 0.9)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_precedence_file_then_preset_then_flags(tmp_path, suffix):
    data = {"dataset": "from-file", "preset": "mnist-mlp", "lr-g": 0.5, "seed": 7, "width": 3}
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    cfg = resolve_config({"width": 5, "seed": None}, path)
    assert cfg.dataset == "from-file" and cfg.seed == 7  # file values survive; None flags are "not given"
    assert cfg.lr_g == 2e-4  # the preset (named in the file) overrides the file
    assert cfg.width == 5  # flags override both
    assert cfg.model == "mlp"


def test_steps_flag_replaces_preset_epochs():
    cfg = resolve_config({"dataset": "d", "preset": "fashion-dcgan", "steps": 10})
    assert (cfg.steps, cfg.epochs) == (10, None)


def test_unknown_names_are_one_clear_error():
    with pytest.raises(GanforgeError, match="unknown preset 'nope'; choose one of .*digits-tiny"):
        resolve_config({"dataset": "d", "preset": "nope"})
    with pytest.raises(ValidationError, match="unknown model 'gan'"):
        resolve_config({"dataset": "d", "model": "gan", "steps": 1})
    with pytest.raises(GanforgeError, match="no model given"):
        resolve_config({"dataset": "d", "steps": 1})
    with pytest.raises(ValidationError, match="exactly one of --epochs or --steps"):
        TrainConfig(dataset="d", model="mlp")
    with pytest.raises(ValidationError, match="divisible by --nproc"):
        TrainConfig(dataset="d", model="mlp", steps=1, batch_size=5, nproc=2)
    with pytest.raises(ValidationError, match="Extra inputs"):
        TrainConfig(dataset="d", model="mlp", steps=1, learning_rate=1)


def test_bad_config_file(tmp_path):
    with pytest.raises(GanforgeError, match="does not exist"):
        resolve_config({}, tmp_path / "missing.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(GanforgeError, match="must hold a mapping"):
        resolve_config({}, tmp_path / "list.json")


def test_resume_mismatches_ignore_where_and_how_long():
    a = TrainConfig(dataset="d", model="dcgan", steps=10)
    b = a.model_copy(update={"steps": 99, "output": "elsewhere", "log_every": 3, "nproc": 2})
    assert a.mismatches(b) == []
    c = a.model_copy(update={"lr_g": 1e-3, "width": 32})
    assert a.mismatches(c) == ["lr_g", "width"]
    assert "lr_g" not in RESUME_FREE and "output" in RESUME_FREE


def test_every_field_has_a_description():
    for name, field in TrainConfig.flat_fields().items():
        assert field.description and len(field.description) > 10, name


def test_augment_names_are_the_registry():
    from ganforge.training.augment import AUGMENTS
    from ganforge.training.config import AUGMENT_NAMES

    assert set(AUGMENT_NAMES) == set(AUGMENTS)


NAN, INF = float("nan"), float("inf")
# Issue 13: each of these reached torch (a traceback at step 0) or trained silently on nonsense.
BAD_VALUES = {
    "lr_g": [NAN, INF, 0.0, -1.0], "lr_d": [NAN, -1.0, 0.0], "beta1": [1.5, 1.0, -0.1, NAN],
    "beta2": [INF, 1.0, NAN], "gp_weight": [NAN, INF, -1.0], "clip": [0.0, -1.0, NAN], "kl_weight": [NAN, -0.5, INF],
    "ema_decay": [NAN, 0.0, 1.0], "ema_rampup": [NAN, -0.1, 1.5], "seed": [-1, 2**64],
    "device": ["gpu", "cuda:x", ""], "diffaugment": ["colour", "color,flip"], "experiment": ["", " "],
    "output": [""], "dataset": [""], "resume": [""], "fid_backbone": [""],
    "steps": [0, -3, 2**31], "epochs": [0], "batch_size": [0, 2**63], "threads": [0, 4096], "width": [4097, 2**63],
    "latent_dim": [65537], "n_critic": [1001],
}  # fmt: skip


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_VALUES.items() for v in vs])
def test_out_of_range_values_are_refused_at_parse_time(field, value):
    length = {"steps": None} if field == "epochs" else {}
    with pytest.raises(ValidationError) as info:
        TrainConfig(**{"dataset": "d", "model": "mlp", "steps": 1, **length, field: value})
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_edge_values_that_are_fine():
    cfg = TrainConfig(dataset="d", model="wgan-gp", steps=1, beta1=0.0, gp_weight=0.0, kl_weight=0.0, ema_rampup=0.0,
                      seed=0, device="cuda:1", diffaugment="", lr_g=5.0)  # fmt: skip
    assert (cfg.beta1, cfg.diffaugment, cfg.device) == (0.0, "", "cuda:1")
    assert TrainConfig(dataset="d", model="mlp", steps=1, seed=2**63 - 2).seed == 2**63 - 2


def test_epochs_and_steps_in_one_layer_are_refused(tmp_path):
    """Issue 13: `--steps 3 --epochs 2` silently dropped --epochs."""
    with pytest.raises(GanforgeError, match="the flags give both --epochs and --steps; keep one"):
        resolve_config({"dataset": "d", "model": "mlp", "epochs": 2, "steps": 3})
    path = tmp_path / "c.yaml"
    path.write_text("model: mlp\nepochs: 2\nsteps: 3\n")
    with pytest.raises(GanforgeError, match="config file .*c.yaml gives both --epochs and --steps"):
        resolve_config({"dataset": "d"}, path)
    path.write_text("model: mlp\nepochs: 2\n")  # another layer: the flag replaces the file's choice
    assert (resolve_config({"dataset": "d", "steps": 3}, path).steps, resolve_config({"dataset": "d"}, path).epochs) == (
        3, 2)
