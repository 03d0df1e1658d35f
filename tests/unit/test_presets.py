"""Issue 23: presets are data, one YAML file each under ``ganforge/presets``, checked by the preset schema and by
``TrainConfig``'s; ``ganforge presets`` lists and shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ganforge.cli.app import app
from ganforge.errors import GanforgeError
from ganforge.training.config import PRESET_DIR, PRESETS, load_presets, preset_file

runner = CliRunner()


def test_every_file_is_a_preset_and_every_preset_a_file():
    files = {p.name.removesuffix(".yaml") for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml")}
    assert files == set(PRESETS)
    for name, preset in PRESETS.items():
        raw = yaml.safe_load(preset_file(name).read_text())
        assert raw["overrides"] == preset.overrides, name  # the files are written as config files write values
        assert (preset.from_seed is not None) == name.startswith("seed"), name
        assert preset.from_seed is None or name.startswith(f"seed{preset.from_seed}-"), name


def _write(where: Path, name: str, text: str) -> Path:
    where.mkdir(exist_ok=True)
    (where / f"{name}.yaml").write_text(text)
    return where


GOOD = "why: A preset written for this test, long enough to say why.\noverrides: {model: dcgan, steps: 5}\n"


@pytest.mark.parametrize("text,said", [
    ("why: short\noverrides: {model: dcgan, steps: 5}\n", "why"),
    (GOOD.replace("steps: 5", "steps: 5, lr_g: nan"), "lr_g"),
    (GOOD.replace("steps: 5", "steps: 5, g_channels: '64,0'"), "g_channels"),
    (GOOD.replace("steps: 5", "steps: 5, learning_rate: 1"), "learning_rate"),
    (GOOD.replace("steps: 5", "steps: 5, dataset: x"), "dataset cannot be preset"),
    (GOOD.replace("steps: 5", "epochs: 1, steps: 5"), "exactly one of --epochs or --steps"),
    (GOOD + "from_seed: 7\n", "from_seed"),
    ("why: [unclosed\n", "tiny.yaml"),
])  # fmt: skip
def test_a_broken_preset_file_is_refused_in_one_line_naming_it(tmp_path, text, said):
    with pytest.raises(GanforgeError) as info:
        load_presets(_write(tmp_path / "presets", "tiny", text))
    message = str(info.value)
    assert message.startswith("preset file tiny.yaml: ") and said in message and "\n" not in message


def test_a_preset_file_is_read_as_a_config_file_writes_values(tmp_path):
    where = _write(tmp_path / "presets", "tiny", GOOD.replace("dcgan, steps: 5", "mlp, steps: 5, g_norm_layers: 3"))
    assert load_presets(where)["tiny"].overrides == {"model": "mlp", "steps": 5, "g_norm_layers": "3"}


def test_presets_lists_every_preset_with_its_model_length_and_sides():
    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == list(PRESETS)
    by_name = {line.split()[0]: line for line in lines[:-1]}
    assert by_name["digits-tiny"].split()[1:] == ["dcgan", "600", "steps", "32", "px"]
    assert by_name["seed001-wgan"].split()[1:] == ["dcgan", "6000", "steps", "32", "px,", "seed", "001"]
    assert by_name["mnist-vae"].split()[1:] == ["vae", "20", "epochs", "any", "size"]


def test_presets_name_shows_its_file_and_an_unknown_name_is_one_error_line():
    res = runner.invoke(app, ["presets", "seed003-mnist-mlp"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split("\n", 1)[1].rstrip() == preset_file("seed003-mnist-mlp").read_text().rstrip()
    res = runner.invoke(app, ["presets", "nope"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "unknown preset 'nope'; choose one of digits-tiny" in lines[0]
