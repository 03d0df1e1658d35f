"""Issue 23: what the training config does, held equal to what it did before the config was split into parts.

``data/config_compat/`` was written by the code before the split (``python tests/unit/test_config_compat.py
DIR`` with that code on ``PYTHONPATH``): for every preset its resolved config, the MLflow params a run logs, the
networks' spec and parameter counts, and the preset itself; ``train --help``'s option names; a checkpoint and
config files of a two-step run. Each test recomputes the same with today's code and wants it identical, and
the old files must still load and resume. Changes made on purpose since are listed here, not re-recorded:
``ADDED`` (a new setting and the value that does what the code did before it) and ``CHANGED`` (a preset's
settings changed on purpose, each with its reason in the preset's file).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

DATA = Path(__file__).parent / "data" / "config_compat"
# the two-step run whose checkpoint and config files are kept: comma-list tables and an EMA, as a user may write
RUN_FLAGS = ["--model", "dcgan", "--steps", "2", "--batch-size", "16", "--width", "4", "--latent-dim", "4",
             "--g-channels", "8,4", "--d-channels", "4,8", "--ema-decay", "0.9", "--checkpoint-every", "2",
             "--sample-every", "100", "--no-track"]  # fmt: skip


def shape_of(preset) -> tuple[int, int, int]:
    """(channels, side, classes) the preset's networks are built for here: its seed's size, else the one it
    was tuned for, else 28 px; grey up to 28 px."""
    side = preset.image_size or (preset.tuned_for or (28,))[0]
    return (1 if side <= 28 else 3), side, (10 if preset.overrides.get("conditional") else 0)


def logged_params(config) -> dict[str, str]:
    """The params the training loop hands to MLflow for ``config`` (caught where it opens the tracker)."""
    import ganforge.tracking as tracking
    from ganforge.training import loop

    seen = {}

    def record(enabled, experiment, run_name, params, tags, **_kw):
        seen.update({k: str(v) for k, v in params.items()})  # MLflow stores every param as text
        return tracking.NullTracker()

    before = tracking.open_tracker
    tracking.open_tracker = record
    try:
        trainer = SimpleNamespace(config=config, data_uri="d", fingerprint="f", run_id=None, precision="fp32")
        loop._open_tracker(trainer, None, None)
    finally:
        tracking.open_tracker = before
    return seen


def preset_behaviour(name: str, shape: tuple[int, int, int]) -> dict:
    """Everything a preset decides: its data, resolved config, logged params, spec and parameter counts."""
    from ganforge.models import MODELS, count_params
    from ganforge.training.config import PRESETS, resolve_config
    from ganforge.training.state import model_spec

    preset = PRESETS[name]
    config = resolve_config({"dataset": "d", "preset": name})
    channels, side, classes = shape
    spec = model_spec(config, (channels, side, side), classes)
    nets = MODELS[config.model](spec)
    return {
        "preset": {"why": preset.why, "overrides": preset.overrides, "image_size": preset.image_size,
                   "tuned_for": list(preset.tuned_for)},
        "config": config.model_dump(), "params": logged_params(config), "shape": list(shape),
        "spec": spec.model_dump(mode="json"),
        "parameters": {role: count_params(net) for role, net in zip(nets._fields, nets) if net is not None},
    }  # fmt: skip


def train_options() -> list[str]:
    """Every spelling of every ``train`` option."""
    import typer

    from ganforge.cli.app import app

    cmd = typer.main.get_command(app).get_command(None, "train")
    return sorted(o for p in cmd.params for o in (*p.opts, *p.secondary_opts))


def as_json(x):
    return json.loads(json.dumps(x))


# issue 24: the update scheme became a setting; "alternating" is the step every run took before it. --precision
# auto is bf16 on CUDA and fp32 on the CPU, as every run computed before it; --sample-counter run counts
# --sample-every in steps of the run, as before.
ADDED = {"update": "alternating", "precision": "auto", "sample_counter": "run"}
ADDED_OPTIONS = ["--update", "--precision", "--sample-counter"]
# issue 24: the seed presets run their seed's own training step (and draw batches as it did)
_STEPS = {  # the step each seed's code takes, and its batches
    "seed000-galaxy10-cgan": {"update": "simultaneous"},
    "seed000-galaxy10-dcgan": {"update": "simultaneous"},
    "seed001-gan": {"update": "keras-two-batch", "sampling": "replacement"},
    "seed001-wgan": {"update": "keras-two-batch", "sampling": "replacement"},
    "seed001-wgan-gp": {"update": "keras-combined"},
    "seed003-mnist-mlp": {"update": "keras-combined"},
    "seed002-folder-dcgan-128": {"update": "alternating", "sample_counter": "epoch"},  # and its per-epoch grids
    "seed004-kmnist-mlp": {"update": "alternating"},
}
SEED_PRESETS = [*_STEPS, "seed001-ae", "seed001-vae"]
CHANGED: dict[str, dict] = {name: {**_STEPS.get(name, {}), "precision": "fp32"} for name in SEED_PRESETS}  # fp32: seeds'


def expected_config(before: dict, name: str | None = None) -> dict:
    """A recorded config (or the params a run logs, as text) with the deliberate changes applied."""
    text = all(isinstance(v, str) for v in before.values())
    changes = {**ADDED, **CHANGED.get(name or "", {})}
    return {**before, **{k: (str(v) if text else v) for k, v in changes.items()}}


BEFORE = json.loads((DATA / "behaviour.json").read_text()) if (DATA / "behaviour.json").exists() else {}


def test_every_preset_is_kept():
    from ganforge.training.config import PRESETS

    assert sorted(PRESETS) == sorted(BEFORE["presets"])


@pytest.mark.parametrize("name", sorted(BEFORE.get("presets", {})))
def test_a_preset_resolves_logs_and_builds_as_before(name):
    before = BEFORE["presets"][name]
    now = as_json(preset_behaviour(name, tuple(before["shape"])))
    changed = CHANGED.get(name, {})
    assert now["config"] == expected_config(before["config"], name)
    assert now["params"] == expected_config(before["params"], name)
    assert {k: v for k, v in now["preset"].pop("overrides").items() if k not in changed} == {
        k: v for k, v in before["preset"]["overrides"].items() if k not in changed}
    for key in ("image_size", "tuned_for") if changed else ("image_size", "tuned_for", "why"):  # a change says why
        assert now["preset"][key] == before["preset"][key], key
    for part in ("spec", "parameters"):
        assert now[part] == before[part], part


def test_train_has_the_same_options():
    assert train_options() == sorted(BEFORE["train_options"] + ADDED_OPTIONS)


def test_old_config_files_resolve_to_the_same_config():
    from ganforge.training.config import resolve_config

    run = json.loads((DATA / "resolved_config.json").read_text())
    assert as_json(resolve_config({}, DATA / "resolved_config.json").model_dump(mode="json")) == expected_config(run)
    seed = BEFORE["presets"]["seed001-gan"]["config"]  # the file names the preset, whose new settings apply
    assert as_json(resolve_config({}, DATA / "seed001-gan.yaml").model_dump()) == expected_config(seed, "seed001-gan")


def _old_run(tmp_path: Path, digits16: str) -> Path:
    """The kept run, copied, pointed at this session's digits16 (its fingerprint, as the ingest made it now)."""
    from ganforge.data import load

    out = tmp_path / "run"
    shutil.copytree(DATA / "run", out)
    meta_path = out / "ckpt-000002" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(dataset_fingerprint=load(digits16, split="train").fingerprint, dataset_uri=digits16)
    meta["config"].update(dataset=digits16, output=str(out))
    meta_path.write_text(json.dumps(meta))
    return out


def test_an_old_checkpoint_loads_and_generates(tmp_path, digits16):
    from ganforge.checkpoints import load_checkpoint
    from ganforge.inference import generate

    out = _old_run(tmp_path, digits16)
    ck = load_checkpoint(out / "ckpt-000002")
    images = generate(str(ck.path), n=4, seed=1)
    assert tuple(images.shape) == (4, 1, 16, 16)


def test_an_old_checkpoint_resumes(tmp_path, digits16):
    from ganforge.training import TrainConfig, train

    out = _old_run(tmp_path, digits16)
    saved = json.loads((out / "ckpt-000002" / "meta.json").read_text())["config"]
    config = TrainConfig.model_validate({**saved, "steps": 4, "resume": "latest"})
    assert train(config).step == 4


def write(where: Path) -> None:
    """Record today's behaviour under ``where`` (run with the code to record on ``PYTHONPATH``)."""
    import tempfile

    import yaml
    from typer.testing import CliRunner

    from ganforge.cli.app import app
    from ganforge.data.ingest import ingest
    from ganforge.training.config import PRESETS, resolve_config

    where.mkdir(parents=True, exist_ok=True)
    presets = {name: preset_behaviour(name, shape_of(PRESETS[name])) for name in sorted(PRESETS)}
    (where / "behaviour.json").write_text(json.dumps({"presets": presets, "train_options": train_options()},
                                                     sort_keys=True, separators=(",", ":")) + "\n")
    seed = resolve_config({"dataset": "d", "preset": "seed001-gan"}).model_dump()
    (where / "seed001-gan.yaml").write_text(yaml.safe_dump(seed, sort_keys=False))
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "digits16")
        ingest("digits", output=data, image_size=16, limit=128)
        run = where / "run"
        shutil.rmtree(run, ignore_errors=True)
        res = CliRunner().invoke(app, ["train", "--dataset", data, "--output", str(run), *RUN_FLAGS])
        assert res.exit_code == 0, res.output
    for extra in [p for p in run.iterdir() if not p.name.startswith("ckpt-") and p.name != "resolved_config.json"]:
        shutil.rmtree(extra) if extra.is_dir() else extra.unlink()  # samples and plots: not what is tested
    shutil.move(str(run / "resolved_config.json"), where / "resolved_config.json")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
