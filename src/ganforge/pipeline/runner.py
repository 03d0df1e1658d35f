"""Compile the GAN pipeline, run it locally through ``kfp.local``, or submit it to a KFP endpoint.

The pipeline definition lives in ``pipelines/gan_pipeline.py`` (and its components in ``components/``)
at the root of the source tree, beside ``src/``; both ship in the wheel as top-level packages
(pyproject.toml). The library never imports them: each function here takes the pipeline's builder,
``build(cluster)`` -> the pipeline function for one ``ClusterConfig`` (``pipelines.gan_pipeline.build``),
from its caller: the CLI, the one part of ganforge that imports ``pipelines``, or a test.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.pipeline.params import ClusterConfig, PipelineParams, check_params

# ``pipelines.gan_pipeline.build``: a ClusterConfig (None: the default) -> the pipeline function
PipelineBuilder = Callable[[ClusterConfig | None], object]


def load_pipeline(build: PipelineBuilder, cluster: ClusterConfig | None = None):
    """The pipeline ``build`` makes for ``cluster``, its defaults checked against ``PipelineParams``.

    Raises:
        GanforgeError: the pipeline's parameters and ``PipelineParams`` disagree (``check_defaults``).
    """
    pipeline = build(cluster)
    check_defaults(pipeline)
    return pipeline


def check_defaults(pipeline) -> None:
    """The pipeline's parameter defaults must be ``PipelineParams``' (one name, one default per concept)."""
    declared = {k: v.default for k, v in pipeline.component_spec.inputs.items()}
    expected = PipelineParams().arguments()
    if set(declared) != set(expected) or any(declared[k] != expected[k] for k in declared):
        diff = sorted(k for k in set(declared) | set(expected) if declared.get(k) != expected.get(k))
        raise GanforgeError(f"pipeline parameters and PipelineParams disagree on {', '.join(diff)}; align "
                            "pipelines/gan_pipeline.py with ganforge/pipeline/params.py")


def compile_pipeline(output: str | Path, cluster: ClusterConfig | None = None, *,
                     build: PipelineBuilder) -> float:
    """Write the pipeline ``build`` makes for ``cluster`` to ``output`` as YAML; returns the seconds taken."""
    from kfp import compiler

    t0 = time.perf_counter()
    check_output_file(output)
    from ganforge.pipeline.validate import check_run

    check_run(PipelineParams(), local=False)  # the defaults the package carries run as they are
    pipeline = load_pipeline(build, cluster)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.yaml")
    try:
        compiler.Compiler().compile(pipeline, str(tmp))
        os.replace(tmp, out)  # a half-written package is never left under the real name
    finally:
        tmp.unlink(missing_ok=True)
    return time.perf_counter() - t0


def check_output_file(output: str | Path) -> None:
    """``--output`` must be a file path whose folder can be written.

    Raises:
        GanforgeError: it is a directory, or its folder cannot be created or written.
    """
    from ganforge.outputs import check_output_dir

    out = Path(output)
    if out.is_dir():
        raise GanforgeError(f"--output {output} is a directory; pass a file path such as {out / 'gan_pipeline.yaml'}")
    check_output_dir(out.parent, f"--output {output}: its folder")


@dataclass
class LocalRun:
    """Where a local pipeline run left its results."""

    pipeline_run_id: str
    parent_run_id: str
    status: str  # the parent run's MLflow status: FINISHED or FAILED
    outcome: str  # the pipeline's output line (gate decision, or the failure)
    registered: str | None  # "<name>/<version>" or None
    grid: Path | None  # the final sample grid
    tracking_uri: str
    seconds: float
    log: Path | None = None  # KFP's executor logs of the run
    runs_url: str = ""  # the experiment's runs table in the MLflow UI


def local_params(root: Path, **overrides) -> PipelineParams:
    """The demo's parameters: digits in ``root/datasets``, checkpoints in ``root/runs``, the CPU preset, and
    CPU-sized scoring (500 evaluated images: KID's kernels over 1000 take ~25 s on 2 cores).

    Raises:
        GanforgeError: a bad parameter, as one line.
    """
    values = {"work_dir": str(root / "runs"), "n": 500, "audit_n": 200, **overrides}
    values.setdefault("dataset", str(root / "datasets" / local_dataset_name(values)))
    return check_params(values)


def local_dataset_name(values: dict) -> str:
    """One dataset folder per ingest recipe, so runs of other sources or sizes in one ``--dir`` coexist."""
    import hashlib

    defaults = PipelineParams.model_fields
    source = values.get("source", defaults["source"].default)
    name = f"{source}-{values.get('image_size', defaults['image_size'].default)}px"
    if values.get("limit"):
        name += f"-limit{values['limit']}"
    if values.get("input"):
        name += "-" + hashlib.sha256(str(Path(values["input"]).resolve()).encode()).hexdigest()[:8]
    return name


def run_local(params: PipelineParams, root: str | Path, verbose: bool = False, *,
              build: PipelineBuilder) -> LocalRun:
    """Run the whole DAG ``build`` makes on this machine through ``kfp.local`` (SubprocessRunner, this Python).

    MLflow goes to ``MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``; S3 settings come from
    the usual AWS environment. Each step runs as a subprocess that inherits this environment. The console
    (stderr) gets one line per step as it starts and ends; KFP's executor logs go to
    ``<root>/logs/kfp-<time>-<pid>.log`` (and to stderr too when ``verbose``).

    SIGTERM or SIGINT stops the run (``ganforge.pipeline.stop``): the step processes get the signal,
    then SIGKILL after ``STOP_GRACE_SECONDS``; every MLflow run the pipeline opened that is still
    RUNNING ends KILLED, tagged ``ganforge.pipeline_error`` = ``stopped by SIGTERM during train``.

    Raises:
        GanforgeError: a step failed (the parent run is then FAILED and nothing was registered); the
            message names the log file.
        PipelineStopped: a signal stopped the run, as above; a ``SystemExit`` of 128 + the signal (143
            for SIGTERM, 130 for SIGINT) after one ``error:`` line on stderr.
    """
    import kfp.local

    from ganforge.outputs import check_output_dir
    from ganforge.pipeline.steps import train_dir
    from ganforge.pipeline.stop import StopOnSignals, Stopped, signal_name
    from ganforge.pipeline.tasklog import capture
    from ganforge.pipeline.validate import check_run
    from ganforge.tracking import check_reachable, redact, runs_table_url

    notes = check_run(params, local=True)  # every step's checks on the parameters, before the first step
    root = check_output_dir(Path(root).resolve(), "--dir")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        root.mkdir(parents=True, exist_ok=True)  # the default sqlite store lives in it: its folder must exist
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    check_reachable(os.environ["MLFLOW_TRACKING_URI"])  # before ingest and training, not after
    for note in notes:  # once nothing refuses the run: a refused run prints its one error line only
        print(f"note: {note}", file=sys.stderr, flush=True)
    root.mkdir(parents=True, exist_ok=True)
    # No retries here: a machine of one's own has no preemption to wait out, and a user error is final.
    pipeline = load_pipeline(build, ClusterConfig(train_retries=0))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "kfp"),
                   raise_on_error=False)
    t0 = time.time()
    log_path = root / "logs" / f"kfp-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    print(f"kfp.local run of {pipeline.name}; executor logs: {log_path}", file=sys.stderr, flush=True)
    log = None
    with StopOnSignals() as stop:  # SIGTERM/SIGINT: end the steps' processes, then unwind with Stopped
        try:
            with warnings.catch_warnings(), capture(log_path, verbose, pipeline_spec=pipeline.pipeline_spec) as log:
                warnings.filterwarnings("ignore", message=".*non-Python base image.*")  # the image holds Python
                warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")  # cluster
                try:
                    pipeline(**params.arguments())
                except Stopped as exc:
                    log.stop(f"stopped by {signal_name(exc.signum)}")  # the running steps' lines, while it is open
                    raise
        except Stopped as exc:
            raise _stopped(exc.signum, stop, params.experiment, t0, log, log_path) from None
    where = f"executor logs: {log_path}"
    if log.failed:
        where = "; ".join(f"{task}: {' '.join(why.split())[:200]}" for task, why in log.failed.items()) + "; " + where
    parent = _latest_parent(params.experiment, t0)
    if parent is None:
        raise GanforgeError(f"the pipeline failed before opening its MLflow run; {where}")
    tags = parent.data.tags
    pipeline_run_id = tags["ganforge.pipeline_run_id"]
    status = parent.info.status
    outcome = tags.get("ganforge.pipeline_error") or tags.get("ganforge.gate", "")
    if status != "FINISHED":
        why = " ".join(tags.get("ganforge.pipeline_error", "").split())[:300] or "a step failed"
        raise GanforgeError(f"pipeline run {pipeline_run_id} failed: {why}; parent MLflow "
                            f"run {parent.info.run_id} is marked FAILED and nothing was registered; {where}")
    grid = train_dir(params.work_dir, pipeline_run_id) / "samples" / "final.png"
    uri = os.environ["MLFLOW_TRACKING_URI"]
    ui = redact(uri) if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"  # `mlflow ui`'s
    return LocalRun(pipeline_run_id, parent.info.run_id, status, outcome, tags.get("ganforge.registered_model"),
                    grid if grid.is_file() else None, uri, time.time() - t0, log_path,
                    runs_table_url(ui, parent.info.experiment_id))


class PipelineStopped(SystemExit):
    """A signal stopped ``run_local``: its processes ended and its MLflow runs are KILLED. Exits 128 +
    the signal (143 for SIGTERM, 130 for SIGINT); ``message`` is the ``error:`` line already printed."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum, self.message = signum, message


def _stopped(signum: int, stop, experiment: str, since: float, log, log_path: Path) -> PipelineStopped:
    """After a signal ended the run's processes: end its unfinished MLflow runs as KILLED, say so in one
    ``error:`` line on stderr, and return the ``PipelineStopped`` to raise.

    The parent run is the one ``start-run`` printed, or, when the signal came while ``start-run`` ran,
    the newest one opened since ``since`` (never guessed otherwise: another run of the experiment may be
    going on). A further signal now exits at once (``StopOnSignals``).
    """
    from ganforge.pipeline.stop import signal_name
    from ganforge.tracking import end_pipeline_runs

    steps = log.stopped if log is not None else []
    why = f"stopped by {signal_name(signum)}" + (f" during {', '.join(steps)}" if steps else "")
    ended, killed = stop.ended
    procs = f"{ended + killed} step process(es) ended" if ended + killed else "no step process was running"
    if killed:
        procs += f" ({killed} killed {'on a second signal' if stop.hurried else f'after {stop.grace:.0f}s'})"
    pipeline_run_id = None
    try:
        parent_id = (log.outputs.get("start-run") or {}).get("Output") if log is not None else None
        if not parent_id and log is not None and "start-run" in log.stopped:  # it may have opened the run
            parent = _latest_parent(experiment, since)
            parent_id = parent.info.run_id if parent is not None else None
        if parent_id:
            pipeline_run_id, runs = end_pipeline_runs(str(parent_id), why, "KILLED")
            named = [_run_label(r) for r in runs]
            runs_said = (f"MLflow runs marked KILLED: {', '.join(named)}" if named
                         else f"no MLflow run of parent run {parent_id} was left RUNNING")
        else:
            runs_said = "no MLflow run was open yet"
    except Exception as exc:  # GanforgeError, MLflow and HTTP errors alike: the stop is still reported
        runs_said = (f"its MLflow runs could not be marked KILLED ({' '.join(str(exc).split())[:200]}) and may "
                     "show RUNNING")
    run = f"pipeline run {pipeline_run_id}" if pipeline_run_id else "the pipeline run"
    message = f"{run} {why}: {procs}; {runs_said}; executor logs: {log_path}"
    print(f"error: {message}", file=sys.stderr, flush=True)
    return PipelineStopped(signum, message)


def _run_label(run) -> str:
    """``parent <id>``, ``train <id>``, ``evaluate <id>``...: which of a pipeline's runs this is."""
    step = run.data.tags.get("ganforge.step", "train")  # a training run has no ganforge.step tag
    return f"{'parent' if step == 'pipeline' else step} {run.info.run_id}"


def _latest_parent(experiment: str, since: float):
    """The newest parent run of ``experiment`` opened after ``since`` (a local run's own)."""
    from ganforge.tracking import search_runs

    runs = search_runs(experiment, "tags.`ganforge.step` = 'pipeline'", order_by=["attributes.start_time DESC"],
                       max_results=1)
    return runs[0] if runs and runs[0].info.start_time >= since * 1000 - 1000 else None


def submit(host: str, params: PipelineParams, cluster: ClusterConfig | None = None, *, build: PipelineBuilder,
           namespace: str | None = None, experiment: str | None = None, token: str | None = None, credentials=None,
           run_name: str | None = None) -> str:
    """Compile the pipeline ``build`` makes for ``cluster`` and submit a run of it to the KFP endpoint at ``host``;
    returns the run's URL.

    Raises:
        GanforgeError: the endpoint cannot be reached or refuses the run.
    """
    import tempfile

    import kfp

    from ganforge.pipeline.validate import check_run

    if params.gpus < 1:  # the training task is pinned to the GPU node pool: it would hold a GPU node idle
        raise GanforgeError("--gpus 0 on a cluster holds a GPU node without using it; pass --gpus 1 or more")
    for note in check_run(params, local=False):
        print(f"note: {note}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "gan_pipeline.yaml"
        compile_pipeline(package, cluster, build=build)
        try:
            client = kfp.Client(host=host, namespace=namespace, existing_token=token, credentials=credentials)
            run = client.create_run_from_pipeline_package(
                str(package), arguments=params.arguments(), run_name=run_name,
                experiment_name=experiment or params.experiment, namespace=namespace)
        except Exception as exc:  # urllib3/ApiException/ValueError alike: one line
            raise GanforgeError(f"KFP at {host} refused the run: {' '.join(str(exc).split())[:300]}; check --host, "
                                "--namespace and --token") from None
    return f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
