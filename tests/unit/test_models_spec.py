"""Issue 23: each network setting is declared once, in ``NetworkSpec``; ``TrainConfig`` holds it as a part and stays
flat outside (constructor, dump, refusals, flags), and the ``ModelSpec`` a run builds is that part plus the images."""

from __future__ import annotations

import pytest
import typer
from pydantic import ValidationError

from ganforge.cli.app import app
from ganforge.models import ModelSpec, NetworkSpec
from ganforge.training.config import PARTS, PRESETS, TrainConfig, resolve_config
from ganforge.training.state import model_spec

IMAGE_FIELDS = {"image_size", "channels", "num_classes"}  # what the dataset decides, not the user


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"dataset": "d", "model": "dcgan", "steps": 1, **kw})


def test_the_model_spec_is_the_network_part_plus_the_images():
    assert set(ModelSpec.model_fields) == set(NetworkSpec.model_fields) | IMAGE_FIELDS
    assert PARTS["network"] is NetworkSpec
    for name in NetworkSpec.model_fields:  # the spec's own declaration, not a copy with other types or help
        assert TrainConfig.flat_fields()[name] is NetworkSpec.model_fields[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_runs_spec_carries_every_network_setting_of_its_config(name):
    cfg = resolve_config({"dataset": "d", "preset": name})
    side = PRESETS[name].image_size or 32
    spec = model_spec(cfg, (3, side, side), 10)
    assert {k: getattr(spec, k) for k in NetworkSpec.model_fields} == dict(cfg.network)
    assert (spec.image_size, spec.channels, spec.num_classes) == (side, 3, 10)


def test_layer_tables_are_parsed_once_and_written_as_text():
    cfg = config(g_channels="64, 32", d_channels=[16, 32], g_strides=(2, 2), model="dcgan")
    assert (cfg.network.g_channels, cfg.network.d_channels, cfg.network.g_strides) == ((64, 32), (16, 32), (2, 2))
    flat = cfg.model_dump(mode="json")
    assert (flat["g_channels"], flat["d_channels"], flat["g_strides"]) == ("64,32", "16,32", "2,2")
    assert TrainConfig.model_validate(flat) == cfg  # a config file, a checkpoint's meta, a rank's launch file
    assert config(model="mlp", g_norm_layers=3).network.g_norm_layers == (3,)  # a YAML file's lone number
    spec = model_spec(cfg, (1, 16, 16), 0)
    assert spec.model_dump(mode="json")["g_channels"] == [64, 32]  # a checkpoint's spec keeps lists


@pytest.mark.parametrize("value", ["0,5", "", "64,x", "1," * 64 + "1"])
def test_a_bad_table_is_refused_at_its_field(value):
    with pytest.raises(ValidationError, match="must be comma-separated positive integers") as info:
        config(g_channels=value)
    assert [e["loc"] for e in info.value.errors()] == [("g_channels",)]


def test_the_config_is_flat_outside():
    cfg = config(lr_g=1e-3, width=32, ema_decay=0.9)
    flat = cfg.model_dump()
    assert list(flat) == list(TrainConfig.flat_fields())  # every field once, by its own name
    assert (flat["lr_g"], flat["width"], flat["ema_decay"]) == (1e-3, 32, 0.9)
    assert (cfg.lr_g, cfg.width, cfg.optim.lr_g, cfg.network.width) == (1e-3, 32, 1e-3, 32)
    moved = cfg.model_copy(update={"lr_g": 2e-3, "output": "elsewhere"})
    assert (moved.lr_g, moved.output, cfg.lr_g) == (2e-3, "elsewhere", 1e-3)
    with pytest.raises(AttributeError):
        cfg.no_such_field  # noqa: B018
    with pytest.raises(ValidationError) as info:  # a rule across fields of one part is the config's
        TrainConfig(dataset="d", model="mlp")
    assert [e["loc"] for e in info.value.errors()] == [()]


def test_train_lists_each_part_in_its_own_help_panel():
    cmd = typer.main.get_command(app).get_command(None, "train")
    panels = {p.name: p.rich_help_panel for p in cmd.params}
    for part, model in PARTS.items():
        title = TrainConfig.model_fields[part].title
        assert {panels[name] for name in model.model_fields} == {title}, part
    assert {panels["preset"], panels["config"], panels["dry_run"]} == {"Run"}
    assert len(set(panels.values())) == len(PARTS) + 1
