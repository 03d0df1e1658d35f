"""One training loop for every family: step, evaluate (sample), checkpoint, log.

Randomness that decides *what* is trained is a pure function of ``(seed, step)``: the data order of
each epoch and the latents of each step come from generators seeded by them. A resumed run (or one
rank of N) therefore draws exactly what an uninterrupted single-process run draws; the global RNG
(label noise, augmentation, the VAE's epsilon) is saved in checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ganforge import checkpoints as ckpt
from ganforge.errors import GanforgeError
from ganforge.inference import sample
from ganforge.pictures import grid_columns, grid_image, save_png
from ganforge.tracking import RunContext
from ganforge.training import distributed as ddp
from ganforge.training import fid_probe
from ganforge.training.config import TrainConfig
from ganforge.training.progress import Progress
from ganforge.training.run_files import (
    GRIDS_DIR,
    clear_outputs,
    read_metrics_csv,
    write_loss_plot,
    write_metrics_csv,
)
from ganforge.training.state import Trainer, build_trainer, restore, trainer_state
from ganforge.training.updates import UPDATES, autocast, grad_norm
from ganforge.training.visuals import interpolation_strip

MAX_ROLLBACKS = 3  # --on-nan rollback gives up after this many (each halves the learning rates)


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        output: the run's output directory.
        checkpoint: the last checkpoint written (None if none was).
        step: generator updates done.
        run_id: the MLflow run (None when tracking was off).
        seconds: wall time of the loop.
        images_per_second: real images consumed per second by the loop.
        interrupted: True when SIGTERM/SIGINT stopped the run (a checkpoint was written).
        stop_signal: the signal number that stopped it, else None.
        metrics: the last logged metrics.
    """

    output: str
    checkpoint: str | None
    step: int
    run_id: str | None
    seconds: float
    images_per_second: float
    interrupted: bool = False
    metrics: dict = field(default_factory=dict)
    stop_signal: int | None = None


def train(config: TrainConfig, data=None, tracker=None, context: RunContext | None = None) -> TrainResult:
    """Train as ``config`` says; the library twin of ``ganforge train``.

    Args:
        config: the resolved configuration (see ``resolve_config``).
        data: an ``ImageData`` to train on instead of loading ``config.dataset`` (tests, benchmarks);
            ignored with ``nproc`` > 1, where each rank loads the dataset itself.
        tracker: a ``ganforge.tracking.Tracker`` to use instead of opening one from the config.
        context: the pipeline run the MLflow run nests under (None: a run of its own).

    Raises:
        GanforgeError: a user mistake or a diverged run, as one line; mistakes are found before any
            work (see ``ganforge.training.preflight``).
    """
    import os

    from ganforge.training.preflight import preflight

    if "WORLD_SIZE" not in os.environ:  # the launcher checks once for all ranks
        preflight(config, data, tracking=tracker is None)
    if config.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return TrainResult(**ddp.launch(config, config.nproc, context))  # relaunch through torchrun; ranks call run_training
    return run_training(config, data, tracker, context)


def run_training(config: TrainConfig, data=None, tracker=None, context: RunContext | None = None) -> TrainResult:
    """Train in this process (one rank of a torchrun job, or the only process)."""
    from ganforge.training.preflight import write_resolved_config

    rt = ddp.setup(config.device, config.threads)
    try:
        if rt.is_main:
            ckpt.clean_stale(config.output)  # what a killed run left half-written
        t = build_trainer(config, rt, data)
        lineage = None
        if config.resume:
            path = ckpt.resolve_resume(config.resume, config.output)
            ck = ckpt.load_checkpoint(path, rt.device)
            restore(t, ck, check_config=True)
            lineage = _lineage(ck)
            if path.parent.resolve() != Path(config.output).resolve():
                t.run_id = None  # another output directory: a new run, never the parent's
        elif ckpt.list_checkpoints(config.output):
            _fresh_output(config, delete=rt.is_main)
        if config.fid_every and rt.is_main:  # a missing backbone fails now, not an epoch into training
            t.fid_extractor = fid_probe.extractor(config, t.images.device)
        config_file = write_resolved_config(config) if rt.is_main else None  # before step 0, tracked or not
        if rt.is_main and tracker is None:
            tracker = _open_tracker(t, lineage, context)
            tracker.log_artifacts(config_file)  # the run ganforge opens records what it trains with
        if tracker is None:
            from ganforge.tracking import NullTracker

            tracker = NullTracker()
        if lineage is not None and not _continues(t, tracker, path):
            t.resumed_from = lineage
        t.run_id = tracker.run_id
        return _run(t, tracker)
    finally:
        ddp.teardown(rt)


def _lineage(ck: ckpt.Checkpoint) -> dict:
    """Where a resumed run starts: the checkpoint's run, directory and step (tags and checkpoint meta)."""
    out = {"checkpoint": str(ck.path.resolve()), "step": ck.step}
    if ck.meta.get("run_id"):
        out["run_id"] = ck.meta["run_id"]
    return out


def _continues(t: Trainer, tracker, path) -> bool:
    """Whether a resume carries on the checkpoint's own run (an interrupted one, in its own directory)."""
    if getattr(tracker, "active", True) and tracker.run_id is not None:
        return bool(getattr(tracker, "continued", False))
    return path.parent.resolve() == Path(t.config.output).resolve()  # untracked: the directory is the run


def _fresh_output(config: TrainConfig, delete: bool) -> None:
    """Old checkpoints must not mix with a new run's (rollback and --resume latest would pick them)."""
    if not config.overwrite:
        ckpt.check_fresh_output(config.output)
    import shutil

    for p in ckpt.list_checkpoints(config.output) if delete else []:
        shutil.rmtree(p, ignore_errors=True)
    if delete:
        clear_outputs(config.output)


def _open_tracker(t: Trainer, lineage: dict | None, context: RunContext | None):
    """The run to record into: a resume continues the checkpoint's run unless it finished (then a new,
    linked run); a fresh run or a resume into another directory starts one."""
    from ganforge.tracking import git_commit, open_tracker, redact

    c = t.config
    tags = {"dataset_uri": redact(t.data_uri), "dataset_fingerprint": t.fingerprint, "git_commit": git_commit(),
            "ganforge.model": c.model, "ganforge.precision": t.precision}  # fmt: skip
    params = {**c.model_dump(mode="json"), "dataset": redact(c.dataset)}
    link = {f"resumed_from_{k}": str(v) for k, v in (lineage or {}).items()}
    return open_tracker(c.track, c.experiment, None, params, tags, run_id=t.run_id, lineage=link, context=context)


@contextlib.contextmanager
def _stop_on_signals(t: Trainer):
    """SIGTERM/SIGINT (preemption, Ctrl-C) ask the loop to checkpoint and stop after this step."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def ask(signum, _frame):
        t.stop_signal = signum

    previous = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _run(t: Trainer, tracker) -> TrainResult:
    """The loop proper: step; every N steps log, sample and checkpoint; finish or stop cleanly."""
    c, rt = t.config, t.rt
    progress = Progress(t.total_steps, t.step, rt.is_main)
    step_fn = _vae_step if t.E is not None else UPDATES[c.update]
    if t.rt.is_main and t.step and not t.metric_rows:  # a resume: keep the rows logged up to the checkpoint
        t.metric_rows = [r for r in read_metrics_csv(c.output) if r["step"] <= t.step]
    status, last_ckpt, metrics = "FAILED", None, {}
    t0 = window_t0 = time.perf_counter()
    start_step = window_step = t.step
    try:
        with _stop_on_signals(t):
            while t.step < t.total_steps:
                if c.lr_schedule != "none":
                    t.apply_lr()
                want_log = (t.step + 1) % c.log_every == 0 or t.step + 1 == t.total_steps
                stats = step_fn(t, want_log)
                if t.scaling is not None:  # fp16: the unscaled gradients' norms; a skipped step is no divergence
                    stats = t.scaling.settle(stats, want_log)
                stats = ddp.average_values({**stats, "stop": float(t.stop_signal is not None)}, rt)
                if not all(math.isfinite(v) for v in stats.values()):
                    last_ckpt = _diverged(t, stats, progress) or last_ckpt
                    continue
                t.step += 1
                if want_log:
                    now = time.perf_counter()
                    ips = (t.step - window_step) * t.images_per_step / max(now - window_t0, 1e-9)
                    metrics = _log(t, tracker, progress, stats, ips)
                    window_t0, window_step = now, t.step
                if c.fid_every and t.epochs_done(t.step) // c.fid_every > t.epochs_done(t.step - 1) // c.fid_every:
                    fid_probe.measure(t, tracker)
                if rt.is_main:
                    _maybe_sample(t, tracker)
                if stats["stop"] > 0:
                    last_ckpt = _checkpoint(t)
                    progress.message(f"stopped by signal at step {t.step}; checkpoint {last_ckpt}")
                    status = "KILLED"
                    break
                if t.step % c.checkpoint_every == 0 or t.step == t.total_steps:
                    last_ckpt = _checkpoint(t)
            else:
                status = "FINISHED"
        seconds = time.perf_counter() - t0
        if status == "FINISHED" and rt.is_main:
            _final_artifacts(t, tracker, last_ckpt)
    finally:
        progress.close()
        tracker.close(status)
    ips = (t.step - start_step) * t.images_per_step / max(seconds, 1e-9)
    return TrainResult(
        output=str(c.output), checkpoint=str(last_ckpt) if last_ckpt else None, step=t.step,
        run_id=tracker.run_id, seconds=seconds, images_per_second=ips, interrupted=status == "KILLED",
        metrics=metrics, stop_signal=t.stop_signal if status == "KILLED" else None,
    )  # fmt: skip


def _maybe_sample(t: Trainer, tracker) -> None:
    """The fixed-latent grid every --sample-every steps (of the run, or batches of each epoch with
    --sample-counter epoch) or every --sample-every-epochs epochs: on disk and tracked."""
    c = t.config
    if c.sample_every_epochs:
        epoch = t.epochs_done(t.step)
        if epoch // c.sample_every_epochs <= t.epochs_done(t.step - 1) // c.sample_every_epochs:
            return
        name = f"epoch-{epoch:04d}.png"
    elif not _sample_due(t, t.step):
        return
    else:
        name = f"step-{t.step:07d}.png"
    grid = grid_image(sample(t.sampler(), t.fixed_z, t.fixed_labels), grid_columns(len(t.fixed_z)))
    save_png(Path(c.output) / GRIDS_DIR / name, grid)
    if getattr(tracker, "active", True):
        tracker.log_image(grid, "samples", t.step)


def _sample_due(t: Trainer, step: int) -> bool:
    """Whether the grid of --sample-every is due after generator update number ``step`` (counted from 1).

    ``run``: every N-th update. ``epoch``: the update that consumed batch i of an epoch (i from 0) with
    i % N == 0, as the PyTorch DCGAN example snapshots inside ``for i, batch in enumerate(dataloader)``
    after that batch's updates: once at the start of every epoch while N exceeds its batches. An update
    consumes n_critic batches, numbered on through the epochs as ``Trainer.batch`` numbers them.
    """
    every = t.config.sample_every
    if t.config.sample_counter == "run":
        return step % every == 0
    first = (step - 1) * t.n_critic
    return any((b % t.steps_per_epoch) % every == 0 for b in range(first, first + t.n_critic))


def _vae_step(t: Trainer, want_norms: bool) -> dict[str, float]:
    """One VAE or AE update (encoder and decoder share the generator's optimiser)."""
    from ganforge.training.losses import ae_loss, vae_loss

    assert t.E is not None, "an autoencoder step needs the encoder"
    real, labels = t.batch(t.step)
    unit = t.config.output_activation == "sigmoid"  # the book's loss, on [0, 1] images
    with autocast(t):
        if t.config.model == "ae":
            loss, s = ae_loss(t.g_fwd, t.E, real, labels, unit=unit)
        else:
            loss, s = vae_loss(t.g_fwd, t.E, real, labels, t.config.kl_weight, unit=unit)
    t.opt_g.zero_grad(set_to_none=True)
    (loss if t.scaling is None else t.scaling.scale("g", loss)).backward()  # fp16: unscaled in opt_g's step hook
    params = list(t.G.parameters()) + list(t.E.parameters())
    ddp.average_gradients(params, t.rt)
    stats = {"loss_g": s.get("loss_vae", s["loss_recon"]), **{k: v for k, v in s.items() if k != "loss_vae"}}
    if want_norms:
        stats["grad_norm_g"] = grad_norm(params)
    t.opt_g.step()
    if t.ema is not None:
        t.ema.update(t.G, t.step + 1)  # t.step counts updates before this one
    return stats


def _log(t: Trainer, tracker, progress: Progress, stats: dict[str, float], ips: float) -> dict[str, float]:
    """Send one step's numbers to the tracker and the progress display (rank 0 only)."""
    metrics = {f"train/{k}": v for k, v in stats.items() if k != "stop"}
    metrics["train/lr_g"] = t.opt_g.param_groups[0]["lr"]
    if t.opt_d is not None:
        metrics["train/lr_d"] = t.opt_d.param_groups[0]["lr"]
    metrics["time/images_per_second"] = ips
    for key in ("loss_g", "loss_d"):
        if key in stats:
            t.history.setdefault(f"train/{key}", []).append((t.step, stats[key]))
    t.metric_rows.append({"step": t.step, **metrics})
    if t.rt.is_main:
        tracker.log_metrics(metrics, t.step)
        progress.update(t.step, stats, ips)
    return metrics


def _checkpoint(t: Trainer):
    """Write ``ckpt-<step>`` on rank 0; every rank returns its path."""
    path = ckpt.checkpoint_name(t.step)
    if t.rt.is_main:
        write_metrics_csv(t.config.output, t.metric_rows)  # with the checkpoint, so a resume finds its rows
        weights, state, meta = trainer_state(t)
        return ckpt.save_checkpoint(t.config.output, t.step, weights, state, meta, t.config.keep_checkpoints)
    return f"{t.config.output}/{path}"


def _diverged(t: Trainer, stats: dict[str, float], progress: Progress):
    """Stop with a clear message, or roll back to the newest checkpoint with halved learning rates."""
    shown = ", ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "stop")
    if t.config.on_nan == "stop":
        raise GanforgeError(
            f"training diverged at step {t.step + 1} ({shown}); lower --lr-g/--lr-d, try --spectral-norm, "
            "or pass --on-nan rollback"
        )
    found = ckpt.list_checkpoints(t.config.output)
    if not found:
        raise GanforgeError(
            f"training diverged at step {t.step + 1} ({shown}) before any checkpoint was written; "
            "lower --lr-g/--lr-d or --checkpoint-every"
        )
    if t.rollbacks >= MAX_ROLLBACKS:
        raise GanforgeError(
            f"training diverged at step {t.step + 1} ({shown}) again after {MAX_ROLLBACKS} rollbacks; "
            "lower --lr-g/--lr-d"
        )
    restore(t, ckpt.load_checkpoint(found[-1], t.rt.device), check_config=False)
    t.rollbacks += 1
    t.lr_scale *= 0.5
    t.apply_lr()
    progress.message(f"loss was not finite ({shown}); rolled back to {found[-1].name}, lr x{t.lr_scale:g}")
    return found[-1]


def _final_artifacts(t: Trainer, tracker, last_ckpt) -> None:
    """Interpolation strip, loss curves (and FID per epoch), metrics and the final checkpoint, locally and in the
    run."""
    out = Path(t.config.output) / "samples"
    strip = interpolation_strip(t.sampler(), t.fixed_z, t.fixed_labels, t.config.interpolation_steps,
                                t.config.interpolation)
    save_png(out / "interpolation.png", strip)
    save_png(out / "final.png", grid_image(sample(t.sampler(), t.fixed_z, t.fixed_labels), grid_columns(len(t.fixed_z))))
    tracker.log_artifacts(out, "samples")  # the periodic grids (grids/) are in the run already (log_image)
    tracker.log_loss_curves(t.history)
    write_metrics_csv(t.config.output, t.metric_rows)
    write_loss_plot(t.config.output, t.history)
    fid_curve = fid_probe.draw_curve(t)
    if fid_curve is not None:
        tracker.log_artifacts(fid_curve)  # at the artifacts' root, beside loss_curve.png
    if last_ckpt is not None:
        tracker.log_artifacts(last_ckpt, "checkpoint")
