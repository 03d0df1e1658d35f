"""``--precision`` (ganforge/training/precision.py): the setting, what a run records, the CPU's behaviour, and fp16's
loss scaling through every update scheme and the VAE step.

Everything runs on the CPU, where torch has autocast in bf16 and fp16 and a ``GradScaler``: the fp16 path here
is the real one (scaled losses, unscaled gradients, skipped steps, the scale in checkpoints), not a mock. What
only a GPU can show (the speed of each precision, and that the losses stay those of fp32) is
``bash benchmarks/gpu_check.sh precision``'s to measure.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.data import load
from ganforge.errors import GanforgeError
from ganforge.training import TrainConfig, precision, train
from ganforge.training.distributed import Runtime
from ganforge.training.loop import _vae_step
from ganforge.training.state import build_trainer
from ganforge.training.updates import UPDATES
from tests.unit.test_training_loop import RecordingTracker

runner = CliRunner()
CPU = Runtime(torch.device("cpu"), 0, 1, 0)


def cfg(dataset: str, output, **kw) -> TrainConfig:
    base = dict(dataset=dataset, model="dcgan", batch_size=16, width=8, latent_dim=8, track=False, log_every=1,
                checkpoint_every=100, sample_every=100, steps=3, output=str(output))  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_precision_is_a_setting_with_auto_as_before():
    assert precision.PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert TrainConfig(dataset="d", model="dcgan", steps=1).precision == "auto"
    assert TrainConfig(dataset="d", model="dcgan", steps=1, precision="fp16").model_dump()["precision"] == "fp16"
    with pytest.raises(ValidationError, match="'auto', 'fp32', 'bf16' or 'fp16'"):
        TrainConfig(dataset="d", model="dcgan", steps=1, precision="fp8")
    # auto is what every run did before the flag: bf16 autocast on CUDA, fp32 on the CPU
    assert precision.resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    assert precision.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert [precision.resolve_precision(p, torch.device("cpu")) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16",
                                                                                                       "fp16"]


def test_cli_refuses_an_unknown_precision_in_one_line(digits16):
    res = runner.invoke(app, ["train", "--dataset", digits16, "--model", "dcgan", "--steps", "1", "--no-track",
                              "--precision", "fp8", "--dry-run"])  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "--precision" in lines[0], res.output


def test_the_setting_is_a_param_and_the_precision_run_a_tag(digits16, tmp_path, sqlite_store, monkeypatch):
    """MLflow gets ``precision`` as asked (a param, like every setting) and what it ran as (a tag)."""
    import ganforge.tracking as tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    seen = []

    def record(enabled, experiment, run_name, params, tags, **_kw):
        seen.append((params, tags))
        return tracking.NullTracker()

    monkeypatch.setattr(tracking, "open_tracker", record)
    for asked, ran in (("auto", "fp32"), ("fp16", "fp16")):
        train(cfg(digits16, tmp_path / asked, steps=1, track=True, precision=asked))
        params, tags = seen[-1]
        assert params["precision"] == asked and tags["ganforge.precision"] == ran
    import json

    assert json.loads((tmp_path / "fp16" / "ckpt-000001" / "meta.json").read_text())["precision"] == "fp16"


def test_on_the_cpu_half_precisions_run_as_asked_and_say_so_once(digits16, tmp_path):
    data = load(digits16)
    for name, dtype in (("auto", None), ("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        t = build_trainer(cfg(digits16, tmp_path, precision=name), CPU, data)
        assert t.precision == ("fp32" if name == "auto" else name) and t.autocast_dtype == dtype
        assert (t.scaling is not None) == (name == "fp16")
        from ganforge.training.updates import autocast

        with autocast(t):  # the generator's convolutions compute in the asked type
            out = t.g_fwd(torch.randn(2, 8), None)
        assert out.dtype == (dtype or torch.float32)
    for name in ("bf16", "fp16"):
        res = runner.invoke(app, ["train", "--dataset", digits16, "--model", "dcgan", "--steps", "2",
                                  "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--no-track",
                                  "--precision", name, "--output", str(tmp_path / f"cli-{name}")])  # fmt: skip
        assert res.exit_code == 0, res.output
        notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
        assert len(notes) == 1 and f"--precision {name} runs on the CPU" in notes[0], res.stderr


def test_fp16_refuses_the_gradient_penalty_before_any_work(digits16, tmp_path):
    with pytest.raises(GanforgeError, match="--precision fp16 .* gradient penalty.*use --precision bf16"):
        train(cfg(digits16, tmp_path / "gp", model="wgan-gp", precision="fp16"))
    assert not (tmp_path / "gp").exists()
    train(cfg(digits16, tmp_path / "gp-bf16", model="wgan-gp", precision="bf16", steps=1))  # bf16 needs no scaling


class Spy:
    """Which player's loss was scaled, and which optimiser's steps went through the unscaling hook, in order."""

    def __init__(self, t, monkeypatch):
        self.calls: list[str] = []
        scaling = t.scaling
        real_scale = scaling.scale

        def scale(player, loss):
            self.calls.append(f"scale {player}")
            return real_scale(player, loss)

        monkeypatch.setattr(scaling, "scale", scale)
        for player, opt in (("g", t.opt_g), ("d", t.opt_d)):
            if opt is not None:
                opt.register_step_pre_hook(lambda *_a, p=player: self.calls.append(f"step {p}"))


SCHEMES = {  # the order of scaled losses and optimiser steps in one step of each scheme
    "alternating": ["scale d", "step d", "scale g", "step g"],
    "simultaneous": ["scale d", "scale g", "step d", "step g"],  # both losses from one forward, then both steps
    "keras-combined": ["scale d", "step d", "scale g", "step g"],
    "keras-two-batch": ["scale d", "step d", "scale d", "step d", "scale g", "step g"],
}


@pytest.mark.parametrize("scheme", [*SCHEMES, "vae"])
def test_fp16_scales_every_loss_and_steps_on_the_unscaled_gradients(digits16, tmp_path, monkeypatch, scheme):
    """One fp16 step of each scheme (and the VAE's) against the same step in fp32: every loss is scaled and every
    optimiser step sees the unscaled gradients (Adam's first moment and the logged norms equal fp32's, not
    65,536 times them), though what the backward differentiated was the scaled loss."""
    scale = 2.0**4 if scheme == "vae" else 2.0**10  # none overflows in its first step: nothing is skipped
    monkeypatch.setattr(precision, "INIT_SCALE", scale)  # (the VAE's loss is summed over pixels: ~160)
    data = load(digits16)
    kw = {"model": "vae"} if scheme == "vae" else {"update": scheme}
    ref = build_trainer(cfg(digits16, tmp_path, precision="fp32", **kw), CPU, data)
    t = build_trainer(cfg(digits16, tmp_path, precision="fp16", **kw), CPU, data)
    step = _vae_step if scheme == "vae" else UPDATES[scheme]
    spy = Spy(t, monkeypatch)
    torch.manual_seed(1)  # the VAE's epsilon comes from the global generator: the same for both
    got = t.scaling.settle(step(t, True), True)
    torch.manual_seed(1)
    want = step(ref, True)
    assert spy.calls == (["scale g", "step g"] if scheme == "vae" else SCHEMES[scheme])
    assert got["skipped_steps"] == 0 and got["loss_scale_g"] == scale
    for key in [k for k in want if k.startswith("grad_norm")]:
        assert got[key] == pytest.approx(want[key], rel=0.02), key  # unscaled: fp16 rounding, not x scale
    for opt, opt_ref in ((t.opt_g, ref.opt_g), (t.opt_d, ref.opt_d)):
        if opt is None:
            continue
        m, m_ref = (torch.cat([o.state[p]["exp_avg"].flatten() for p in o.param_groups[0]["params"]])
                    for o in (opt, opt_ref))  # (1 - beta1) x the gradient the step used
        assert torch.linalg.vector_norm(m - m_ref) < 0.05 * torch.linalg.vector_norm(m_ref)


def test_overflowing_steps_are_skipped_not_taken_and_not_a_divergence(digits16, tmp_path, monkeypatch):
    """A scale so large that every gradient overflows fp16: each step is skipped (weights and optimiser state
    untouched), the scale halves each time, the run finishes without calling it a divergence, and the
    norms of skipped steps are not logged; the checkpoint keeps the scale and a resume continues from it."""
    from ganforge.checkpoints import load_checkpoint

    monkeypatch.setattr(precision, "INIT_SCALE", 2.0**40)
    data = load(digits16)
    start = build_trainer(cfg(digits16, tmp_path, precision="fp16"), CPU, data)
    rec = RecordingTracker()
    result = train(cfg(digits16, tmp_path / "run", precision="fp16", checkpoint_every=3), data=data, tracker=rec)
    assert result.step == 3 and rec.status == "FINISHED"
    last = rec.metrics[-1][1]
    assert last["train/skipped_steps"] == 6  # 3 of D's, 3 of G's
    assert last["train/loss_scale_d"] == last["train/loss_scale_g"] == 2.0**37
    assert not any(k.startswith("train/grad_norm") for _, m in rec.metrics for k in m)
    assert all(math.isfinite(v) for _, m in rec.metrics for v in m.values())
    ck = load_checkpoint(tmp_path / "run" / "ckpt-000003")
    for name, net in (("generator", start.G), ("discriminator", start.D)):  # (batch-norm statistics still move)
        assert all(torch.equal(ck.weights[name][k], v) for k, v in net.named_parameters()), name
    assert ck.state["opt_g"]["state"] == {} and ck.state["opt_d"]["state"] == {}  # Adam never stepped
    assert ck.state["loss_scaling"]["scalers"]["g"]["scale"] == 2.0**37
    resumed = build_trainer(cfg(digits16, tmp_path / "run", precision="fp16"), CPU, data)
    from ganforge.training.state import restore

    restore(resumed, ck, check_config=True)
    assert resumed.scaling.scalers["d"].get_scale() == 2.0**37 and resumed.scaling.skipped_steps == 6


def test_an_optimiser_that_never_stops_skipping_is_a_divergence(digits16, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "INIT_SCALE", 2.0**40)
    monkeypatch.setattr(precision, "MAX_SKIPS", 2)
    with pytest.raises(GanforgeError, match=r"training diverged at step 2 \(.*grad_norm_d=(inf|nan)"):
        train(cfg(digits16, tmp_path / "run", precision="fp16"), data=load(digits16))
