"""Experiment tracking: the MLflow boundary for runs, experiments and artifacts.

Only this module (and, for registry calls, ``ganforge.registry.store``, through the same ``client``
factory) imports mlflow. The training loop sees the small ``Tracker`` interface (``NullTracker`` when
tracking is off, ``MlflowTracker`` otherwise). Metrics go through mlflow's asynchronous logging and
images through a one-thread background queue, so the loop never waits on the tracking server; ``close``
flushes both. The server is reached through ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``
in the working directory); URIs are shown with any credentials masked. A run's place in a pipeline
(its parent run, the KFP run) travels as an explicit ``RunContext``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ganforge.errors import GanforgeError

DEFAULT_URI = "sqlite:///mlflow.db"
PIPELINE_RUN_TAG = "ganforge.pipeline_run_id"  # the KFP run id, on the parent run and on every step's run


@dataclass(frozen=True)
class RunContext:
    """Where a run belongs: nested under a pipeline's parent run, tagged with the KFP run id.

    Passed explicitly from the pipeline step down to the run it opens (never read from the environment);
    the default context is a run of its own.
    """

    parent_run_id: str | None = None
    pipeline_run_id: str | None = None

    def tags(self) -> dict[str, str]:
        """``mlflow.parentRunId`` (MLflow's nesting) and ``ganforge.pipeline_run_id``, those that are set."""
        tags = {}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        if self.pipeline_run_id:
            tags[PIPELINE_RUN_TAG] = self.pipeline_run_id
        return tags


class Tracker(Protocol):
    """What the training loop needs from experiment tracking."""

    @property
    def run_id(self) -> str | None:
        """The MLflow run written to; None when nothing is recorded."""

    active: bool  # False: nothing is recorded, so the loop skips rendering sample grids
    continued: bool  # True: run_id is the run asked for (an unfinished one reopened), not a new run

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record numbers at ``step`` (never blocks on the server)."""

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """Record an (H, W, C) uint8 image under ``key`` at ``step`` (never blocks)."""

    def log_artifacts(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or directory (at the end of a run; may block)."""

    def log_loss_curves(self, history: dict[str, list[tuple[int, float]]]) -> None:
        """Plot ``key -> [(step, value)]`` into ``loss_curve.png`` (``ganforge.pictures.loss_plot_png``)."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush pending logging and mark the run finished (or FAILED/KILLED)."""


class NullTracker:
    """Tracking switched off (``--no-track``, ranks other than 0, benchmarks)."""

    run_id: str | None = None
    active = False
    continued = False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:  # noqa: D102
        pass

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:  # noqa: D102
        pass

    def log_artifacts(self, local_path: str | Path, artifact_path: str | None = None) -> None:  # noqa: D102
        pass

    def log_loss_curves(self, history: dict[str, list[tuple[int, float]]]) -> None:  # noqa: D102
        pass

    def close(self, status: str = "FINISHED") -> None:  # noqa: D102
        pass


def tracking_uri() -> str:
    """The tracking URI in effect: ``MLFLOW_TRACKING_URI`` or the local sqlite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def redact(uri: str) -> str:
    """``uri`` with user/password replaced, safe to print or log."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def check_reachable(uri: str, timeout: float = 5.0, no_track_flag: bool = False) -> None:
    """Fail fast, before any work, when the tracking store cannot be used.

    An HTTP server must answer ``/health``; a sqlite store's folder (and its database file, when there
    is one) must be writable: MLflow would otherwise retry for minutes before failing.

    Args:
        uri: the tracking URI (see ``tracking_uri``).
        timeout: seconds to wait for an HTTP server.
        no_track_flag: the calling command has ``--no-track``; the message then suggests it.

    Raises:
        GanforgeError: the server cannot be reached, or the sqlite store cannot be written.
    """
    fix = ", or pass --no-track" if no_track_flag else ""
    if uri.startswith("sqlite:"):
        _check_sqlite(uri, fix)
    check_http(uri, timeout, fix)
    identity(uri)  # a server with users refuses bad credentials here, in one line, not at the first write


CURRENT_USER = "/api/2.0/mlflow/users/current"  # MLflow basic-auth's "who am I"; 404 on a server without users


def identity(uri: str | None = None) -> tuple[bool, str, bool]:
    """``(auth, user, is_admin)``: who the environment's credentials make us on tracking server ``uri``.

    MLflow's client sends ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``); ganforge
    only asks the server whom they name. A store without users (a file, a server without basic-auth)
    gives ``(False, <OS account>, False)``.

    Raises:
        GanforgeError: the server wants credentials and got none, or refused the ones given.
    """
    import getpass

    uri = uri or tracking_uri()
    os_user = getpass.getuser()
    if not uri.startswith(("http://", "https://")):
        return False, os_user, False
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        resp = http_request(get_default_host_creds(uri), CURRENT_USER, "GET", max_retries=2, timeout=30,
                            raise_on_status=False)
    except Exception as exc:  # requests' and MLflow's errors alike; never their headers
        raise GanforgeError(f"cannot ask the MLflow server at {redact(uri)} who we are ({type(exc).__name__}); "
                            "check MLFLOW_TRACKING_URI and that the server is up") from None
    if resp.status_code == 404:
        return False, os_user, False
    if resp.status_code == 401:
        raise GanforgeError(credentials_problem(uri))
    if resp.status_code != 200:
        try:
            said = json.loads(resp.text).get("message") or resp.text
        except ValueError:
            said = resp.text
        said = " ".join(str(said).split())[:200]
        raise GanforgeError(f"the MLflow server at {redact(uri)} answered {resp.status_code} to {CURRENT_USER} "
                            f"({said}); check MLFLOW_TRACKING_URI and the credentials in MLFLOW_TRACKING_USERNAME/"
                            "PASSWORD or MLFLOW_TRACKING_TOKEN")
    user = json.loads(resp.text)["user"]
    return True, user["username"], bool(user.get("is_admin"))


def credentials_problem(uri: str) -> str:
    """The one-line error for a server that refused (or was given no) credentials; it names no secret."""
    who = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if who:
        return (f"the MLflow server at {redact(uri)} refused the credentials of user {who!r}; fix "
                "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or ask its admin to create the user)")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return f"the MLflow server at {redact(uri)} refused the token in MLFLOW_TRACKING_TOKEN; set a valid one"
    return (f"the MLflow server at {redact(uri)} needs a user: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")


def check_http(uri: str, timeout: float = 5.0, fix: str = "") -> None:
    """An HTTP(S) tracking server must answer ``/health`` within ``timeout`` (other URIs pass).

    Raises:
        GanforgeError: it does not answer; ``fix`` is appended to the advice.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        from ganforge.errors import TransientError

        raise TransientError(  # a server restarting is a retry's to wait out
            f"cannot reach the MLflow server at {redact(uri)} ({reason}); start it, fix MLFLOW_TRACKING_URI{fix}"
        ) from None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other URIs and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]  # sqlite:////abs -> /abs, sqlite:///rel -> rel
    return Path(path) if path and path != ":memory:" else None


def _check_sqlite(uri: str, fix: str) -> None:
    """A sqlite store needs a writable folder (journal files) and, when it exists, a writable database.

    Probed by creating a file, not with ``os.access``: root passes every access check, yet cannot write
    on a read-only mount.
    """
    import tempfile

    db = sqlite_path(uri)
    if db is None or str(db) == ".":
        return  # sqlite:// alone and :memory: are in-memory databases
    where = f"the MLflow store {redact(uri)}"
    if not db.parent.is_dir():
        raise GanforgeError(f"{where}: folder {db.parent} does not exist; create it or fix MLFLOW_TRACKING_URI{fix}")
    if db.exists() and not db.is_file():
        raise GanforgeError(f"{where}: {db} is not a file; fix MLFLOW_TRACKING_URI{fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ganforge-probe-", dir=db.parent)
        os.close(fd)
        os.unlink(probe)
        if db.exists():
            open(db, "r+b").close()  # opens for writing, changes nothing
    except OSError as exc:
        raise GanforgeError(
            f"{where} cannot be written ({exc.strerror}: {exc.filename or db.parent}); point MLFLOW_TRACKING_URI "
            f"at a writable folder{fix}"
        ) from None


def client(check: bool = True):
    """The one ``MlflowClient`` factory (runs and the registry), for the tracking URI in effect.

    Args:
        check: first refuse an unreachable server or unwritable sqlite store (``check_reachable``);
            the registry checks its store its own way and passes False.

    Raises:
        GanforgeError: ``check`` and the store cannot be used.
    """
    import logging

    from mlflow.tracking import MlflowClient

    # INFO chatter (creating a sqlite store, "waiting for model version") would break one-line errors
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.store.model_registry.abstract_store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri()
    if check:
        check_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def log_image_to(run_id: str, image: np.ndarray, key: str, step: int) -> str | None:
    """Log an image to an existing run; returns None, or the first line of MLflow's refusal (a missing
    run) for a caller to whom the picture is not worth failing over."""
    from mlflow.exceptions import MlflowException

    try:
        client().log_image(run_id, image, key=key, step=step)
    except MlflowException as e:
        return str(e).splitlines()[0]
    return None


def create_run(c, experiment: str, run_name: str | None, params: dict, tags: dict[str, str]) -> str:
    """A new RUNNING run in ``experiment`` (created when missing) with ``params`` and ``tags``; its id."""
    from mlflow.entities import Param

    exp_id = experiment_id(c, experiment)
    run_id = c.create_run(exp_id, tags=tags, run_name=run_name).info.run_id
    c.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
    return run_id


def search_runs(experiment: str, filter_string: str = "", order_by: list[str] | None = None,
                max_results: int | None = None) -> list:
    """Runs of ``experiment`` matching ``filter_string`` (MLflow's search syntax); [] without the experiment."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    kw = {"max_results": max_results} if max_results else {}
    return list(c.search_runs([exp.experiment_id], filter_string, order_by=order_by, **kw))


PIPELINE_ERROR_TAG = "ganforge.pipeline_error"  # why a pipeline run failed or was stopped (on its runs)
UNFINISHED = ("RUNNING", "SCHEDULED")


def end_pipeline_runs(parent_run_id: str, reason: str, status: str = "KILLED") -> tuple[str | None, list]:
    """End a pipeline's parent run and every run of the same pipeline run that is still unfinished.

    The steps' runs are found by their tags (``ganforge.pipeline_run_id`` as on the parent, or nested
    under it by ``mlflow.parentRunId``) in the parent's experiment. Each unfinished one gets the tag
    ``ganforge.pipeline_error`` = ``reason`` and ends as ``status`` (KILLED or FAILED); finished ones
    are left as they are.

    Returns:
        (the pipeline run id of the parent's tags, the runs ended as they were before: the parent first).

    Raises:
        GanforgeError: the tracking store cannot be reached. MLflow's own errors pass through.
    """
    c = client()
    parent = c.get_run(parent_run_id)
    pipeline_run_id = parent.data.tags.get(PIPELINE_RUN_TAG)
    found = {parent.info.run_id: parent}
    filters = [f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"]
    if pipeline_run_id:
        filters.append(f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'")
    for f in filters:
        for run in c.search_runs([parent.info.experiment_id], f):
            found.setdefault(run.info.run_id, run)
    ended = [r for r in found.values() if r.info.status in UNFINISHED]
    for run in ended:
        c.set_tag(run.info.run_id, PIPELINE_ERROR_TAG, reason[:5000])
        c.set_terminated(run.info.run_id, status)
    return pipeline_run_id, ended


def git_commit() -> str:
    """Commit of the ganforge source tree (``GANFORGE_GIT_COMMIT`` wins, e.g. inside an image)."""
    if os.environ.get("GANFORGE_GIT_COMMIT"):
        return os.environ["GANFORGE_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


# MLflow 3.x's UI tells a model-training experiment (runs table) from a GenAI one (traces, latency) by this
# tag; 3.17 still opens every experiment on its GenAI overview unless the URL asks for the Model training
# view, which ``runs_table_url`` does.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A view of the runs table shared through the experiment's tags (what the UI's "share" writes), opened by
# ``runs_table_url``: FID, KID and the audit verdict as columns, under the names every run logs them by.
RUNS_VIEW = "ganforge"
RUNS_VIEW_COLUMNS = ("attributes.`Models`", "metrics.`eval/fid`", "metrics.`eval/kid`", "tags.`audit_verdict`")
EXPERIMENT_TAGS = {**EXPERIMENT_KIND,
                   f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps({"selectedColumns": list(RUNS_VIEW_COLUMNS)})}


def experiment_id(client, name: str) -> str:
    """The id of experiment ``name``, created (tagged ``EXPERIMENT_TAGS``) when missing; an experiment
    without these tags gets them, one tagged another kind by its owner keeps its own."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created meanwhile by a concurrent step (evaluate || audit)
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in EXPERIMENT_TAGS.items():
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def runs_table_url(ui: str, exp_id: str) -> str:
    """The MLflow UI at ``ui`` (``http://host:port``) opened on experiment ``exp_id``'s runs table, in the
    Model training view, with ``RUNS_VIEW``'s columns."""
    return f"{ui.rstrip('/')}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW}"


class MlflowTracker:
    """One MLflow run: params and tags up front, async metrics and images, artifacts at the end."""

    active = True

    def __init__(
        self,
        experiment: str,
        run_name: str | None,
        params: dict,
        tags: dict[str, str],
        run_id: str | None = None,
        lineage: dict[str, str] | None = None,
    ):
        """Create the run, or continue ``run_id`` when this store has it and it did not finish.

        Continuing a run (``--resume`` after a kill) keeps its params and adds only new ones: MLflow
        refuses to change a logged param, and the resumable settings that may differ (steps, output...)
        are recorded as ``resume.<name>`` tags instead. A FINISHED run is never reopened: its numbers
        (and the evaluations and registrations made from it) describe its last checkpoint, so more
        training goes into a new run, tagged with ``lineage``.

        Args:
            experiment: experiment name of a new run.
            run_name: name of a new run (None: MLflow picks one).
            params: logged as params.
            tags: set on the run, new or continued.
            run_id: the run to continue, if it is unfinished.
            lineage: tags set only on a new run (``resumed_from_*``: the checkpoint it started from).

        Raises:
            GanforgeError: the server is unreachable or refuses the run.
        """
        uri = tracking_uri()
        try:
            self.client = client()
            self.run_id = self._continue(run_id, params, tags) or self._create(
                experiment, run_name, params, {**tags, **(lineage or {})}
            )
        except GanforgeError:
            raise
        except Exception as exc:  # MlflowException, sqlalchemy and HTTP errors alike: one line
            raise GanforgeError(
                f"MLflow at {redact(uri)} refused the run: {' '.join(str(exc).split())[:200]}"
            ) from None
        self.continued = self.run_id == run_id
        self._images = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ganforge-mlflow")
        self._pending: list = []

    def _create(self, experiment: str, run_name: str | None, params: dict, tags: dict[str, str]) -> str:
        return create_run(self.client, experiment, run_name, params, tags)

    def _continue(self, run_id: str | None, params: dict, tags: dict[str, str]) -> str | None:
        """Reopen ``run_id`` when this store has it and it is not FINISHED (nor deleted); None otherwise."""
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        if run_id is None:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None  # another tracking store: the new run gets its own params
        if run.info.status == "FINISHED" or run.info.lifecycle_stage != "active":
            return None  # KILLED, FAILED, or RUNNING after a kill -9: continued
        old = run.data.params
        new = [Param(k, str(v)) for k, v in sorted(params.items()) if k not in old]
        changed = [RunTag(f"resume.{k}", str(v)) for k, v in sorted(params.items()) if k in old and old[k] != str(v)]
        self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(run_id, params=new, tags=changed + [RunTag(k, v) for k, v in tags.items()])
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:  # noqa: D102
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._pending.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:  # noqa: D102
        # copy: the caller may reuse the buffer while the worker thread encodes the PNG
        img = np.ascontiguousarray(image).copy()
        self._pending.append(self._images.submit(self.client.log_image, self.run_id, img, key=key, step=step))

    def log_artifacts(self, local_path: str | Path, artifact_path: str | None = None) -> None:  # noqa: D102
        p = Path(local_path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_loss_curves(self, history: dict[str, list[tuple[int, float]]]) -> None:  # noqa: D102
        import tempfile

        from ganforge.pictures import LOSS_PLOT, loss_plot_png

        with tempfile.TemporaryDirectory(prefix="ganforge-plot-") as tmp:  # the plot the run's --output gets
            path = Path(tmp) / LOSS_PLOT
            path.write_bytes(loss_plot_png(history))
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:  # noqa: D102
        self._images.shutdown(wait=True)
        for op in self._pending:
            (op.result if hasattr(op, "result") else op.wait)()
        self._pending.clear()
        self.client.set_terminated(self.run_id, status)


def open_tracker(
    enabled: bool,
    experiment: str,
    run_name: str | None,
    params: dict,
    tags: dict,
    run_id: str | None = None,
    lineage: dict[str, str] | None = None,
    context: RunContext | None = None,
) -> Tracker:
    """An ``MlflowTracker`` when ``enabled``, else a ``NullTracker``.

    Args:
        enabled: False: nothing is recorded.
        experiment: experiment name of a new run.
        run_name: name of a new run (None: MLflow picks one).
        params: logged as params.
        tags: set on the run (plus ``context``'s nesting tags).
        run_id: continue this run when it did not finish (a FINISHED run is never reopened).
        lineage: tags for a new run only, e.g. ``resumed_from_run_id`` (see ``MlflowTracker``).
        context: the pipeline run this run belongs to (None: a run of its own).

    Raises:
        GanforgeError: tracking is enabled and the server cannot be reached.
    """
    if not enabled:
        return NullTracker()
    return MlflowTracker(experiment, run_name, params, {**tags, **(context or RunContext()).tags()}, run_id, lineage)
