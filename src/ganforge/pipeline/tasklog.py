"""What ``ganforge pipeline run --local`` shows: one line per step as it starts and ends; KFP's logs go to a file.

While a pipeline runs, kfp.local writes everything to ``sys.stdout``: its log records
(``HH:MM:SS.mmm - INFO - Executing task 'train'``, ``Task 'train' finished with status SUCCESS``, then the
task's outputs), each task's own output streamed line by line, and a ruler after each task. ``TaskLog``
stands in for stdout and stderr during the run: every line goes to the log file (and, verbose, to the
terminal too); the records that start and end a task become one ``step_line`` each, the end line with the
step's key figure read from the outputs kfp.local prints (fingerprint and size, losses, FID/KID, verdict,
decision, model version). Records kfp.local logs outside its own handler (a skipped or retried task) are
caught by a root-logger handler that writes to the same ``TaskLog``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ganforge.progress import step_line

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names and statuses
RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - (?P<msg>.*)$")  # kfp.local's log format
START = re.compile(r"^Executing task '(?P<task>[^']+)'$")
END = re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)$")
OUTPUTS = re.compile(r"^Task '(?P<task>[^']+)' outputs:$")
SKIPPED = re.compile(r"^Skipping (?:conditional )?task (?P<task>[\w-]+)[: ]*(?P<why>.*)$")
RETRY = re.compile(r"^Task (?P<task>[\w-]+) failed \(attempt (?P<attempt>\d+)/(?P<of>\d+)\)")
CACHED = re.compile(r"^Task (?P<task>[\w-]+) cache hit")
RULER = re.compile(r"^-{20,}$")  # printed after each task's outputs
PARAM = re.compile(r"^    (?P<key>\w+): (?P<value>.*)$")
ARTIFACT = re.compile(r"^\w+\( name='[^']*',$")
ARTIFACT_URI = re.compile(r"^\s+uri='(?P<uri>.*)',$")
ARTIFACT_METADATA = re.compile(r"^\s+metadata=(?P<dict>\{.*\}) \)$")


class TaskLog(io.TextIOBase):
    """A text stream that files every line and turns kfp.local's task records into step lines.

    Attributes:
        path: the log file.
        failed: the steps that ended FAILED, with the last line each printed (usually the error).
        outputs: the outputs of each step that succeeded, as kfp.local printed them (``start-run``'s
            ``Output`` is the parent MLflow run's id).
        stopped: the steps that were running when a signal stopped the run (see ``stop``).
    """

    def __init__(self, path: Path, console: TextIO, verbose: bool = False,
                 groups: dict[str, tuple[str, list[str]]] | None = None):
        """Write the log to ``path``; step lines (and, ``verbose``, every raw line) go to ``console``.
        ``groups`` (``task_groups``) names the steps inside a skipped condition."""
        self.path, self.console, self.verbose = path, console, verbose
        self.groups = groups or {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._partial = ""
        self._started: dict[str, float] = {}
        self._ended: dict[str, str] = {}  # task -> status, until its outputs are read
        self._outputs: dict[str, Any] | None = None
        self._outputs_task = ""
        self._artifact: dict | None = None
        self._last_line: dict[str, str] = {}
        self._task = ""  # the task whose output is streaming
        self.failed: dict[str, str] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.stopped: list[str] = []  # the steps a signal stopped (``stop``)

    @property
    def running(self) -> list[str]:
        """The steps that started and have not ended, in the order they started."""
        return list(self._started)

    def stop(self, why: str) -> None:
        """A signal stopped the run: end each running step's line as ``stopped`` with ``why`` (those
        steps are kept in ``stopped``), and file ``why``."""
        self._finish_outputs()
        self._file.write(f"ganforge: {why}\n")
        self.stopped = self.running
        for task in self.stopped:
            self._end(task, "stopped", why)
        self._ended.clear()
        self._task = ""

    def writable(self) -> bool:  # noqa: D102
        return True

    def isatty(self) -> bool:  # noqa: D102 - no colours or bars from whatever writes here
        return False

    def write(self, text: str) -> int:  # noqa: D102
        if self.verbose:
            self.console.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(ANSI.sub("", line).rstrip("\r"))
        return len(text)

    def flush(self) -> None:  # noqa: D102 - also called by close(), after the file is closed
        if not self._file.closed:
            self._file.flush()
        self.console.flush()

    def close(self) -> None:
        """Write what is left of an unfinished line and close the file."""
        if self._partial:
            self._line(ANSI.sub("", self._partial))
            self._partial = ""
        self._finish_outputs()
        if not self._file.closed:
            self._file.close()
        super().close()

    def _say(self, line: str) -> None:
        print(line, file=self.console, flush=True)

    def _line(self, line: str) -> None:
        self._file.write(line + "\n")
        if self._outputs is not None:
            if RULER.match(line) or RECORD.match(line):
                self._finish_outputs()
            else:
                self._output_line(line)
                return
        record = RECORD.match(line)
        if record is None:
            if self._task and line.strip():
                self._last_line[self._task] = line.strip()
            return
        msg = record.group("msg")
        if m := START.match(msg):
            self._task = m.group("task")
            self._started[self._task] = time.time()
            self._say(step_line(self._task, "start"))
        elif m := END.match(msg):
            task, status = m.group("task"), m.group("status")
            self._task = ""
            if status == "SUCCESS":
                self._ended[task] = status  # said once its outputs are read
            else:
                why = self._last_line.get(task, "")
                self.failed[task] = why
                self._end(task, "FAILED", why)
        elif m := OUTPUTS.match(msg):
            self._outputs, self._outputs_task = {}, m.group("task")
        elif msg.startswith("Task ") and msg.endswith(" has no outputs"):
            task = msg[len("Task '"):].split("'", 1)[0]
            if self._ended.pop(task, None):
                self._end(task, "ok", key_figure(task, {}))
        elif m := SKIPPED.match(msg):
            task, why = m.group("task"), m.group("why").strip("(). ")
            label, steps = self.groups.get(task, ("", [task]))
            for step in steps:
                self._say(step_line(step, "skipped", figure=f"{label}: {why}" if label else why))
        elif m := RETRY.match(msg):
            self._say(step_line(m.group("task"), "retry", figure=f"attempt {m.group('attempt')} of "
                                f"{m.group('of')} failed: {self._last_line.get(m.group('task'), '')}"))
        elif m := CACHED.match(msg):
            self._say(step_line(m.group("task"), "cached"))

    def _output_line(self, line: str) -> None:
        """One line of a ``Task 'x' outputs:`` block: ``key: value`` or an artifact over three lines."""
        assert self._outputs is not None
        if self._artifact is not None:
            if m := ARTIFACT_URI.match(line):
                self._artifact["uri"] = m.group("uri")
            elif m := ARTIFACT_METADATA.match(line):
                self._artifact["metadata"] = _literal(m.group("dict"), {})
                self._artifact = None
            return
        if m := PARAM.match(line):
            key, value = m.group("key"), m.group("value")
            if ARTIFACT.match(value):
                self._artifact = self._outputs[key] = {"uri": "", "metadata": {}}
            elif len(value) >= 2 and value[0] == value[-1] == "'":
                self._outputs[key] = value[1:-1]  # kfp.local quotes strings without escaping them
            else:
                self._outputs[key] = _literal(value, value)

    def _finish_outputs(self) -> None:
        if self._outputs is None:
            return
        task, outputs = self._outputs_task, self._outputs
        self._outputs, self._artifact = None, None
        self.outputs[task] = outputs
        if self._ended.pop(task, None):
            self._end(task, "ok", key_figure(task, outputs))

    def _end(self, task: str, status: str, figure: str) -> None:
        started = self._started.pop(task, None)
        self._say(step_line(task, status, seconds=None if started is None else time.time() - started, figure=figure))


def task_groups(pipeline_spec) -> dict[str, tuple[str, list[str]]]:
    """``condition-2 -> ("gate-passed", ["register"])``: each task that is a group (a condition, an exit
    handler) of a compiled ``PipelineSpec``, with its display name and the steps inside it."""
    components = pipeline_spec.components

    def is_group(component: str) -> bool:
        return components[component].WhichOneof("implementation") == "dag"

    def steps(component: str) -> list[str]:
        out: list[str] = []
        for name, task in components[component].dag.tasks.items():
            out += steps(task.component_ref.name) if is_group(task.component_ref.name) else [name]
        return out

    dags = [pipeline_spec.root, *(c for name, c in components.items() if is_group(name))]
    return {name: (task.task_info.name, steps(task.component_ref.name))
            for dag in dags for name, task in dag.dag.tasks.items() if is_group(task.component_ref.name)}


def _literal(text: str, default):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return default


def key_figure(task: str, outputs: dict[str, Any]) -> str:
    """The one result worth a glance for each of the pipeline's steps ("" for a step it does not know)."""
    meta = {k: v.get("metadata", {}) for k, v in outputs.items() if isinstance(v, dict)}
    if task == "ingest" and "dataset_out" in meta:
        m = meta["dataset_out"]
        uri = str(m.get("uri", ""))
        return (f"{uri.rstrip('/').rsplit('/', 1)[-1]}: {_dataset_size(uri)}, fingerprint "
                f"{str(m.get('fingerprint', ''))[:12]} ({'reused' if m.get('reused') else 'written'})")
    if task == "start-run" and "Output" in outputs:
        return f"MLflow parent run {outputs['Output']}"
    if task == "train" and "metrics" in meta:
        m = meta["metrics"]
        losses = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in sorted(m.items())
                           if k.split("/")[-1] in ("loss_d", "loss_g"))
        step = meta.get("generator", {}).get("step")
        return f"step {step:.0f}, {losses}" if isinstance(step, int | float) else losses
    if task == "evaluate" and "metrics" in meta:
        m = meta["metrics"]
        fid = next((v for k, v in m.items() if k.startswith("eval/fid_")), outputs.get("Output"))
        kid = next((v for k, v in m.items() if k.startswith("eval/kid_mean_")), None)
        n = next((k.split("_")[-2] for k in m if k.startswith("eval/fid_")), "?")
        return f"FID {fid:.2f}" + (f", KID {kid:.4f}" if kid is not None else "") + f" ({n} images)"
    if task == "audit" and "verdict" in outputs:
        reasons = outputs.get("reasons") or []
        return f"verdict {outputs['verdict']}" + (": " + "; ".join(map(str, reasons)) if reasons else "")
    if task == "gate" and "Output" in outputs:
        decision = _read_text(outputs.get("decision", {}).get("uri", ""))
        return decision.replace("**", "").strip() or ("register" if outputs["Output"] else "do not register")
    if task == "register" and "name" in outputs:
        return f"{outputs['name']}/{outputs.get('version', '?')} (alias candidate)"
    if task == "finish-run" and "Output" in outputs:
        return str(outputs["Output"])
    return ""


def _dataset_size(uri: str) -> str:
    """``1,797 images`` from the dataset's manifest (local or S3); what went wrong otherwise."""
    from ganforge.data.parquet import read_manifest
    from ganforge.errors import GanforgeError
    from ganforge.storage import parse

    try:
        counts = read_manifest(parse(uri))["counts"]
    except GanforgeError as exc:  # shown, not raised: the step itself succeeded
        return f"size unknown ({exc})"
    return f"{counts['total']:,} images"


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


@contextlib.contextmanager
def capture(path: Path, verbose: bool = False, console: TextIO | None = None,
            pipeline_spec=None) -> Iterator[TaskLog]:
    """Route stdout, stderr and the root logger into a ``TaskLog`` at ``path`` for the body.

    Args:
        path: the log file (its folder is created).
        verbose: also copy every line to ``console``.
        console: where step lines go; None: ``sys.stderr`` as it is on entry.
        pipeline_spec: the running pipeline's compiled spec (names the steps of skipped conditions).
    """
    log = TaskLog(path, console or sys.stderr, verbose, task_groups(pipeline_spec) if pipeline_spec else None)
    root = logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d - %(levelname)s - %(message)s", "%H:%M:%S"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # kfp.local logs skipped and retried tasks at INFO, outside its own handler
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield log
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        log.close()
