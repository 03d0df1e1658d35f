"""One function per pipeline step: what a KFP component body calls, importable and testable without KFP.

Each takes plain values (paths, numbers, run ids), turns the parent and KFP run ids into the
``RunContext`` its MLflow run nests by (``ganforge.pipeline.runs``) and calls the same library function
as the CLI command of that step.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ganforge.errors import GanforgeError, TransientError
from ganforge.outputs import write_text_atomic
from ganforge.pipeline.params import decode, one_line, train_flags
from ganforge.tracking import RunContext

USER_ERROR_EXIT = 2  # the CLI's exit code for a user error; no retry of the task runs it again
USER_ERROR = "user_error.json"  # in the train task's output: the error a retried attempt repeats at once


@contextlib.contextmanager
def user_errors():
    """A component body's step call: a user error ends the task with one ``error:`` line and exit 2.

    A ``TransientError`` (an unreachable server, an interrupted run) propagates with its traceback and
    exit 1 for the task's retry. KFP's retry policy cannot tell exit codes apart (kfp 2.x has a count and a
    back-off, no condition), so the train task, the one retried, also leaves ``USER_ERROR`` in its
    output folder and a retried attempt fails on it in a second (``train_step``) instead of training again.
    """
    from pydantic import ValidationError

    try:
        yield
    except TransientError:
        raise
    except GanforgeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None
    except ValidationError as exc:  # a step's config refusing a value: the same kind of mistake
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None


def ingest_step(source: str, dataset: str, input: str | None, image_size: int, limit: int | None,
                audit_fraction: float = 0.0):
    """Ingest ``source`` into ``dataset`` (reused when it already holds the same inputs).

    Optional values may come encoded as KFP carries them (``ganforge.pipeline.params.encode``), here and
    below; each step reads them back with ``decode``.
    """
    from ganforge.data.ingest import ingest

    return ingest(source, dataset, input=decode("input", input), image_size=image_size,
                  limit=decode("limit", limit), audit_fraction=audit_fraction)


def train_dir(work_dir: str, pipeline_run_id: str) -> Path:
    """Where a pipeline run's checkpoints live: the same directory on every retry of the task."""
    return Path(work_dir) / pipeline_run_id / "train"


def train_step(dataset: str, work_dir: str, model_dir: str, *, gpus: int, experiment: str, parent_run_id: str,
               pipeline_run_id: str, **flags):
    """Train into ``work_dir/<run>/train``, resuming from its newest checkpoint (a retried task), and
    copy the final checkpoint into ``model_dir``. Returns the ``TrainResult``.

    ``flags`` are the pipeline's training flags (``train_flags()``: preset, model, epochs, steps, seed,
    ...), ``TrainConfig`` fields by name, passed on to ``resolve_config``.
    """
    from pydantic import ValidationError

    unknown = sorted(set(flags) - set(train_flags()))
    if unknown:
        raise GanforgeError(f"train step: {', '.join(unknown)} are not training flags of the pipeline")
    output = train_dir(work_dir, pipeline_run_id)
    asked = {"dataset": dataset, **{k: decode(k, v) for k, v in sorted(flags.items())}}
    refused = output / USER_ERROR
    first = json.loads(refused.read_text()) if refused.is_file() else {}
    if first.get("asked") == asked:
        raise GanforgeError(f"{first['error']} (an earlier attempt of this task failed on it; a user error is not "
                            "retried)")
    try:
        return _train(dataset, output, model_dir, asked, gpus=gpus, experiment=experiment,
                      context=RunContext(parent_run_id, pipeline_run_id))
    except TransientError:
        raise
    except (GanforgeError, ValidationError) as exc:
        why = str(exc) if isinstance(exc, GanforgeError) else one_line(exc)
        write_text_atomic(refused, json.dumps({"asked": asked, "error": why}, indent=2, sort_keys=True))
        raise


def _train(dataset: str, output: Path, model_dir: str, asked: dict, *, gpus: int, experiment: str,
           context: RunContext):
    from ganforge.checkpoints import list_checkpoints
    from ganforge.training import resolve_config, train
    from ganforge.training.loop import TrainResult

    done = output / TRAIN_DONE
    finished = json.loads(done.read_text()) if done.is_file() else {}
    if finished.get("asked") == asked and (output / finished["result"]["checkpoint"]).is_dir():
        # a retry of a task whose training finished (the pod died while publishing): training again would
        # open a new, empty MLflow run (a finished run is never reopened) and register would get its id
        checkpoint = output / finished["result"]["checkpoint"]
        result = TrainResult(**{**finished["result"], "output": str(output), "checkpoint": str(checkpoint)})
        _publish_checkpoint(checkpoint, model_dir)
        return result
    config = resolve_config({**asked, "output": str(output), "experiment": experiment, "nproc": max(1, gpus),
                             "device": "cuda" if gpus > 0 else "auto",
                             "resume": "latest" if list_checkpoints(output) else None})
    result = train(config, context=context)
    if result.interrupted or not result.checkpoint:
        raise TransientError(f"training stopped at step {result.step} without finishing; the task's retry resumes it")
    record = {k: v for k, v in dataclasses.asdict(result).items() if k != "output"}
    record["checkpoint"] = Path(result.checkpoint).name
    grid = output / "samples" / "final.png"
    parent = context.parent_run_id
    if result.run_id and parent is not None and grid.is_file():  # tracked: the runs table's row gets the samples too
        from ganforge.pipeline.runs import log_samples

        log_samples(parent, grid, result.step)
    write_text_atomic(done, json.dumps({"asked": asked, "result": record}, indent=2, sort_keys=True, default=float))
    _publish_checkpoint(Path(result.checkpoint), model_dir)
    return result


TRAIN_DONE = "train_done.json"  # in the task's output: the finished training a retry reuses


def _publish_checkpoint(checkpoint: Path, model_dir: str) -> None:
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(checkpoint, Path(model_dir) / checkpoint.name)


def evaluate_step(dataset: str, model_dir: str, out_dir: str, *, n: int, seed: int, backbone: str,
                  backbone_weights: str | None, experiment: str, parent_run_id: str, pipeline_run_id: str):
    """FID/KID/PRDC of the generator in ``model_dir`` against the train split. Returns
    ``(record, fid)``; the record's metric keys state budget and reference (``fid_1k_train``)."""
    from ganforge.evaluate import EvalConfig, evaluate
    from ganforge.metrics import metric_key

    cfg = EvalConfig(checkpoint=model_dir, dataset=dataset, n=n, seed=seed, backbone=backbone,
                     backbone_weights=decode("backbone_weights", backbone_weights), experiment=experiment,
                     output=out_dir)
    record = evaluate(cfg, context=RunContext(parent_run_id, pipeline_run_id))
    kid = record["metrics"].get(metric_key("kid_mean", record["n"], "train"))
    if kid is not None:  # a stable name on the parent run: one KID column in the runs table, beside eval/fid
        from ganforge.pipeline.runs import log_outcome

        log_outcome(parent_run_id, {"eval/kid": kid}, {})
    return record, float(record["metrics"][metric_key("fid", record["n"], "train")])


def audit_step(dataset: str, model_dir: str, out_dir: str, html_path: str, *, n: int, seed: int,
               experiment: str, parent_run_id: str, pipeline_run_id: str):
    """Memorisation audit of the generator; writes the HTML report (stats + nearest-neighbour sheet)
    to ``html_path``. Returns the ``AuditReport``."""
    from ganforge.audit.run import AuditConfig, audit

    cfg = AuditConfig(checkpoint=model_dir, dataset=dataset, n=n, seed=seed, experiment=experiment, output=out_dir)
    report = audit(cfg, context=RunContext(parent_run_id, pipeline_run_id))
    Path(html_path).write_text(audit_html(report, Path(out_dir) / "audit_sheet.png"))
    return report


AUDIT_METRICS = ("fraction_below_baseline", "exact_duplicates", "z_u", "baseline_threshold")


def audit_metrics(report) -> dict[str, float]:
    """The audit's numbers as ``audit/<name>`` metrics (the same keys ``ganforge audit`` logs)."""
    return {"audit/passed": float(report.verdict == "pass"), "audit/nn_dist_min": report.generated_to_train.min,
            "audit/nn_dist_p1": report.generated_to_train.p1, "audit/baseline_dist_p1": report.heldout_to_train.p1,
            **{f"audit/{k}": float(getattr(report, k)) for k in AUDIT_METRICS}}


def audit_html(report, sheet: Path) -> str:
    """A self-contained HTML page: verdict, reasons, the numbers, and the closest-pairs sheet inline."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in audit_metrics(report).items())
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in report.reasons) or "<li>none</li>"
    img = ""
    if sheet.is_file():
        data = base64.b64encode(sheet.read_bytes()).decode()
        img = f'<h2>Closest generated/training pairs</h2><img src="data:image/png;base64,{data}" alt="nearest pairs">'
    return (f"<html><body><h1>Memorisation audit: {html.escape(report.verdict)}</h1>"
            f"<h2>Reasons</h2><ul>{reasons}</ul><table>{rows}</table>{img}</body></html>")


@dataclass
class GateOutcome:
    """The gate's decision as the pipeline reports it."""

    passed: bool
    reasons: str


def gate_step(fid: float, max_fid: float, audit_verdict: str, audit_reasons: list[str], parent_run_id: str) -> GateOutcome:
    """Decide registration and record the decision (and the FID) on the parent run."""
    from ganforge.pipeline.gate import decide
    from ganforge.pipeline.runs import log_outcome

    decision = decide(fid, max_fid, audit_verdict, audit_reasons)
    log_outcome(parent_run_id, {"eval/fid": fid, "gate/passed": float(decision.passed)},
                {"ganforge.gate": decision.summary(), "audit_verdict": audit_verdict})
    return GateOutcome(decision.passed, decision.summary())


def register_step(train_run_id: str, model_name: str, parent_run_id: str, pipeline_run_id: str) -> dict:
    """Register the training run's generator (alias ``candidate``); returns name, version, aliases, tags."""
    from ganforge.registry import register

    out = register(train_run_id, name=model_name, pipeline_run_id=pipeline_run_id)
    from ganforge.pipeline.runs import log_outcome

    log_outcome(parent_run_id, {}, {"ganforge.registered_model": f"{out['name']}/{out['version']}"})
    return out
