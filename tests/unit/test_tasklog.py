"""The local pipeline's console: kfp.local's records (made here by kfp.local's own formatting helpers) become
one line per step as it starts and ends; every line lands in the log file. The whole pipeline through
kfp.local is run in tests/integration/test_pipeline_local.py."""

from __future__ import annotations

import io
import logging
import re
import sys

from kfp import dsl
from kfp.local import logging_utils, status

from ganforge.pipeline.tasklog import capture, task_groups
from ganforge.progress import step_line
from pipelines.gan_pipeline import build

LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<step>[\w-]+) +(?P<status>\w+)\b *(?P<rest>.*)$")


def _task(name: str, outcome: status.Status, outputs: dict, streamed: list[str]) -> None:
    """What kfp.local's task dispatcher writes for one task (its messages, with its own helpers)."""
    with logging_utils.local_logger_context():
        logging.info(f"Executing task {logging_utils.format_task_name(name)}")
        logging.info("Streamed logs:\n")
        with logging_utils.indented_print():
            for line in streamed:
                print(line)
            print("\n")
        logging.info(f"Task {logging_utils.format_task_name(name)} finished with status "
                     f"{logging_utils.format_status(outcome)}")
        if outcome == status.Status.SUCCESS:
            if outputs:
                logging.info("\n".join([f"Task {logging_utils.format_task_name(name)} outputs:",
                                        *logging_utils.make_log_lines_for_outputs(outputs)]))
            else:
                logging.info(f"Task {logging_utils.format_task_name(name)} has no outputs")
        logging_utils.print_horizontal_line()


def _artifact(cls, name: str, uri: str, metadata: dict):
    art = cls(name=name, uri=uri)
    art.metadata.update(metadata)
    return art


def _steps(text: str) -> dict[tuple[str, str], str]:
    return {(m["step"], m["status"]): m["rest"] for ln in text.splitlines() if (m := LINE.match(ln))}


def test_step_lines_and_log_file(tmp_path):
    console = io.StringIO()
    decision = tmp_path / "decision.md"
    decision.write_text("**do not register**: not registered: FID 212.40 is above max_fid 100\n")
    log_path = tmp_path / "logs" / "kfp.log"
    with capture(log_path, console=console, pipeline_spec=build().pipeline_spec) as log:
        _task("start-run", status.Status.SUCCESS, {"Output": "f34b96e4150340efb6cfaffae7417c97"},
              ["2026/12/01 10:50:14 INFO mlflow.store.db.utils: Creating initial MLflow database tables..."])
        _task("train", status.Status.SUCCESS, {
            "Output": "eca1fd69",
            "generator": _artifact(dsl.Model, "generator", "/kfp/train/generator", {"step": 20.0}),
            "metrics": _artifact(dsl.Metrics, "metrics", "/kfp/train/metrics",
                                 {"train/loss_d": 0.4376, "train/lr_g": 0.0002, "train/loss_g": 0.6955}),
        }, ["step 20/20 loss_d=0.438 loss_g=0.696"])
        _task("evaluate", status.Status.SUCCESS, {
            "Output": 212.4,
            "metrics": _artifact(dsl.Metrics, "metrics", "/kfp/evaluate/metrics",
                                 {"eval/fid_64_train": 212.4, "eval/kid_mean_64_train": 0.41077}),
        }, [])
        _task("audit", status.Status.SUCCESS, {"verdict": "fail", "reasons": ["3 near copies"]}, [])
        _task("gate", status.Status.SUCCESS, {"Output": False, "decision": _artifact(
            dsl.Markdown, "decision", str(decision), {})}, [])
        logging.info("Skipping conditional task condition-2 (condition evaluated to False)")  # kfp.local's words
        _task("finish-run", status.Status.SUCCESS, {}, [])
        print("a last line without a newline", end="")
    out = console.getvalue()
    assert len(out.splitlines()) == 13 and "Executing task" not in out and "\x1b[" not in out
    steps = _steps(out)
    assert steps["start-run", "start"] == ""
    assert re.fullmatch(r"0:00:0\d  MLflow parent run f34b96e4150340efb6cfaffae7417c97", steps["start-run", "ok"])
    assert steps["train", "ok"].endswith("  step 20, loss_d 0.438, loss_g 0.696")
    assert steps["evaluate", "ok"].endswith("  FID 212.40, KID 0.4108 (64 images)")
    assert steps["audit", "ok"].endswith("  verdict fail: 3 near copies")
    assert steps["gate", "ok"].endswith("  do not register: not registered: FID 212.40 is above max_fid 100")
    assert steps["register", "skipped"] == "gate-passed: condition evaluated to False"
    assert re.fullmatch(r"0:00:0\d", steps["finish-run", "ok"])  # no outputs, no figure
    assert log.failed == {}
    text = log_path.read_text()
    assert "Executing task 'train'" in text and "    step 20/20 loss_d=0.438 loss_g=0.696" in text
    assert "Creating initial MLflow database tables" in text and "\x1b[" not in text
    assert text.endswith("a last line without a newline\n")


def test_failed_and_retried_steps(tmp_path):
    console = io.StringIO()
    with capture(tmp_path / "kfp.log", verbose=True, console=console) as log:
        _task("train", status.Status.FAILURE, {}, ["Traceback (most recent call last):",
                                                  "ganforge.errors.GanforgeError: out of memory"])
        logging.info("Task train failed (attempt 1/3). Retrying in 60.0s...")
        _task("evaluate", status.Status.FAILURE, {}, ["ValueError: no weights for inception-torchvision"])
        logging.info("Skipping task gate: upstream task(s) ['evaluate'] failed.")
    steps = _steps(console.getvalue())
    assert steps["train", "FAILED"].endswith("  ganforge.errors.GanforgeError: out of memory")
    assert steps["train", "retry"] == "attempt 1 of 3 failed: ganforge.errors.GanforgeError: out of memory"
    assert steps["gate", "skipped"] == "upstream task(s) ['evaluate'] failed"
    assert log.failed == {"train": "ganforge.errors.GanforgeError: out of memory",
                          "evaluate": "ValueError: no weights for inception-torchvision"}
    # verbose: kfp.local's own lines reach the console as they come, colours and all
    assert "Executing task \x1b[96m'evaluate'" in console.getvalue()
    # afterwards stdout, stderr and the root logger are what they were
    assert sys.stdout is not log and sys.stderr is not log
    assert not any(getattr(h, "stream", None) is log for h in logging.getLogger().handlers)


def test_a_stop_ends_the_running_steps_lines_and_keeps_the_outputs(tmp_path):
    """What run_local reads after a signal: the parent run's id (start-run's output) and the running steps."""
    console = io.StringIO()
    with capture(tmp_path / "kfp.log", console=console) as log:
        _task("start-run", status.Status.SUCCESS, {"Output": "f34b96e4150340efb6cfaffae7417c97"}, [])
        with logging_utils.local_logger_context():
            logging.info(f"Executing task {logging_utils.format_task_name('train')}")
            logging.info("Streamed logs:\n")
        print("    step 10/100000 loss_d=0.480")
        assert log.running == ["train"]
        log.stop("stopped by SIGTERM")
    assert log.outputs["start-run"] == {"Output": "f34b96e4150340efb6cfaffae7417c97"}
    assert log.stopped == ["train"] and log.running == [] and log.failed == {}
    assert re.fullmatch(r"0:00:0\d  stopped by SIGTERM", _steps(console.getvalue())["train", "stopped"])
    assert (tmp_path / "kfp.log").read_text().endswith("ganforge: stopped by SIGTERM\n")


def test_task_groups_name_the_steps_of_conditions():
    groups = task_groups(build().pipeline_spec)
    assert groups["condition-2"] == ("gate-passed", ["register"])
    assert set(groups["exit-handler-1"][1]) == {"start-run", "ingest", "train", "evaluate", "audit", "gate",
                                                "register"}


def test_step_line_is_one_screen_row():
    line = step_line("evaluate", "ok", seconds=75, figure="x" * 300, at=0)
    assert len(line) == 120 and line.endswith("...") and " 0:01:15  x" in line
    assert step_line("train", "start", at=0).split()[1:] == ["train", "start"]
