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
    for key, value in PRESETS[name].overrides.items():
        assert getattr(cfg, key) == value


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
    for name, field in TrainConfig.model_fields.items():
        assert field.description and len(field.description) > 10, name
