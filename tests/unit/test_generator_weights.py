"""``weights`` (ema | raw | None = ema when present): which generator a checkpoint gives, and ``generate --weights``."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ganforge.checkpoints import save_checkpoint
from ganforge.cli import app
from ganforge.errors import GanforgeError
from ganforge.inference import generator_weights, load_generator
from ganforge.models import ModelSpec, build_generator

runner = CliRunner()
SPEC = ModelSpec(model="dcgan", image_size=16, channels=1, latent_dim=8, width=8)


def write_checkpoint(root, ema: bool):
    """A ``ckpt-000007`` whose raw and EMA generators are different random networks (no training)."""
    torch.manual_seed(0)
    weights = {"generator": build_generator(SPEC).state_dict()}
    if ema:
        weights["generator_ema"] = build_generator(SPEC).state_dict()
    meta = {"spec": SPEC.model_dump(mode="json"), "config": {}, "step": 7}
    return save_checkpoint(root, 7, weights, {"step": 7}, meta, keep=1)


@pytest.fixture
def with_ema(tmp_path):
    return write_checkpoint(tmp_path / "ema-run", ema=True)


@pytest.fixture
def without_ema(tmp_path):
    return write_checkpoint(tmp_path / "raw-run", ema=False)


def same_tensors(module: torch.nn.Module, file) -> bool:
    want = load_file(file)
    got = module.state_dict()
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("weights, file", [(None, "generator_ema"), ("ema", "generator_ema"), ("raw", "generator")])
def test_load_generator_picks_the_asked_for_file(with_ema, weights, file):
    generator, spec, meta = load_generator(with_ema.parent, weights)  # the run's output dir: newest ckpt
    assert same_tensors(generator, with_ema / f"{file}.safetensors") and spec == SPEC and meta["step"] == 7
    other = "generator" if file == "generator_ema" else "generator_ema"
    assert not same_tensors(generator, with_ema / f"{other}.safetensors")


def test_auto_is_raw_without_ema_and_ema_is_refused(without_ema):
    generator, _, _ = load_generator(without_ema)
    assert same_tensors(generator, without_ema / "generator.safetensors")
    assert generator_weights(without_ema).weights == "raw"
    with pytest.raises(GanforgeError, match=rf"--weights ema: checkpoint {re.escape(str(without_ema))} has no "
                                            "EMA weights .*pass --weights raw or train with --ema-decay"):
        load_generator(without_ema, "ema")
    with pytest.raises(GanforgeError, match="--weights 'best': use ema or raw"):
        load_generator(without_ema, "best")


def test_provenance_names_the_exact_file(with_ema):
    for weights, file in (("ema", "generator_ema"), ("raw", "generator")):
        source = generator_weights(with_ema, weights)
        digest = hashlib.sha256((with_ema / f"{file}.safetensors").read_bytes()).hexdigest()
        assert source.record() == {"weights": weights, "checkpoint_step": 7, "generator_sha256": digest}
    assert generator_weights(with_ema).record() == generator_weights(with_ema, "ema").record()


def one_error_line(result, match: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines


def test_generate_weights_raw_differs_from_ema(with_ema, tmp_path):
    grids = {}
    for weights in ("ema", "raw", None):
        out = tmp_path / f"{weights}.png"
        res = runner.invoke(app, ["generate", "--checkpoint", str(with_ema), "--n", "4", "--out", str(out),
                                  *(["--weights", weights] if weights else [])])  # fmt: skip
        assert res.exit_code == 0, res.output
        grids[weights] = out.read_bytes()
    assert grids["raw"] != grids["ema"] and grids[None] == grids["ema"]


def test_generate_bad_weights_is_one_line(with_ema, without_ema, tmp_path):
    out = tmp_path / "g.png"
    one_error_line(runner.invoke(app, ["generate", "--checkpoint", str(with_ema), "--weights", "best",
                                       "--out", str(out)]), "--weights 'best': use ema or raw")  # fmt: skip
    one_error_line(runner.invoke(app, ["generate", "--checkpoint", str(without_ema), "--weights", "ema",
                                       "--out", str(out)]),
                   f"checkpoint {without_ema} has no EMA weights")  # fmt: skip
    assert not out.exists()
