"""``train --dry-run`` runs the checks the trainer runs, and a real run records its resolved config
(``<output>/resolved_config.json`` and the MLflow run's artifact) before its first step."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.errors import GanforgeError
from ganforge.training import TrainConfig, train
from ganforge.training import updates as updates_module
from ganforge.training.preflight import RESOLVED_CONFIG, preflight

runner = CliRunner()
TINY = dict(batch_size=16, width=8, latent_dim=8, track=False, log_every=1, checkpoint_every=100, sample_every=5,
            steps=2)


def tiny(dataset: str, output, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "dataset": dataset, "model": "dcgan", "output": str(output), **kw})


# settings that TrainConfig accepts and only building the trainer refused before --dry-run built it too
REFUSED_BY_THE_TRAINER = {
    "d-loss-sum with a critic": dict(model="wgan-gp", d_loss_sum=True),
    "d-loss-sum with weight clipping": dict(loss="wgan-clip", d_loss_sum=True),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_THE_TRAINER))
def test_dry_run_refuses_what_the_trainer_refuses_with_the_same_words(digits16, tmp_path, case):
    from ganforge.data import load
    from ganforge.devices import select_device
    from ganforge.training.distributed import Runtime
    from ganforge.training.state import build_trainer

    cfg = tiny(digits16, tmp_path / "out", **REFUSED_BY_THE_TRAINER[case])
    with pytest.raises(GanforgeError) as trainer:
        build_trainer(cfg, Runtime(select_device("cpu")), load(digits16, "train"))
    with pytest.raises(GanforgeError) as dry:
        preflight(cfg)
    assert str(dry.value) == str(trainer.value)
    flags = [f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}"
             for k, v in {"model": "dcgan", **REFUSED_BY_THE_TRAINER[case]}.items()]
    res = runner.invoke(app, ["train", "--dataset", digits16, "--output", str(tmp_path / "cli"), "--steps", "2",
                              "--no-track", "--batch-size", "16", "--dry-run", *flags])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {trainer.value}"
    assert not (tmp_path / "cli").exists()


def test_dry_run_checks_optimisers_and_augmentation_on_the_meta_device(digits16, tmp_path):
    cfg = tiny(digits16, tmp_path / "out", optimizer="rmsprop", diffaugment="color,cutout", ema_decay=0.99)
    preflight(cfg)  # builds G and D on the meta device, the objective, both optimisers, the augmented D
    assert not (tmp_path / "out").exists()  # a dry run creates nothing


def test_the_resolved_config_is_on_disk_and_in_mlflow_before_the_first_step(digits16, tmp_path, monkeypatch,
                                                                           sqlite_store):
    from mlflow.tracking import MlflowClient

    uri = sqlite_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "run"
    cfg = tiny(digits16, out, track=True, experiment="resolved", preset=None)
    seen = []
    first_step = updates_module.UPDATES["alternating"]

    def step(t, want_norms):
        if not seen:  # the first generator update: the record must already exist in both places
            on_disk = json.loads((out / RESOLVED_CONFIG).read_text())
            logged = [a.path for a in MlflowClient(uri).list_artifacts(t.run_id)]
            seen.append((on_disk, logged))
        return first_step(t, want_norms)

    monkeypatch.setitem(updates_module.UPDATES, "alternating", step)
    result = train(cfg)
    on_disk, logged = seen[0]
    assert on_disk == cfg.model_dump(mode="json") and RESOLVED_CONFIG in logged
    local = MlflowClient(uri).download_artifacts(result.run_id, RESOLVED_CONFIG, str(tmp_path / "dl"))
    assert json.loads(open(local).read()) == on_disk


def test_the_resolved_config_is_written_without_tracking_too(digits16, tmp_path):
    cfg = tiny(digits16, tmp_path / "run", ema_decay=0.9)
    train(cfg)
    assert TrainConfig.model_validate(json.loads((tmp_path / "run" / RESOLVED_CONFIG).read_text())) == cfg
