"""Talking to the MLflow registry: the client, one-line errors, a cross-process lock, URI resolution.

``resolve_model_uri`` turns ``models:/NAME@alias``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID`` into
a local ``ckpt-<step>`` directory that ``ganforge.training.checkpoint.load_generator`` reads, so
``evaluate``, ``audit`` and ``generate`` accept registry URIs without knowing about MLflow. Downloads
are cached under ``$GANFORGE_CACHE_DIR/registry``, keyed by run id and end time (a resumed run logs a
newer checkpoint) or by name/version and the version's source (a deleted and re-created model reuses
version numbers), written to a temp directory and renamed, so a half-finished download never looks
complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.tracking import check_reachable, redact, tracking_uri

DEFAULT_NAME = "ganforge-generator"
CHECKPOINT_ARTIFACT = "checkpoint"  # where ``ganforge train`` logs its final checkpoint in the run
LOCK_SUFFIX = ".ganforge-lock"
LOCK_STALE_SECONDS = 120.0  # a lock older than this was left by a killed process


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/`` or ``runs:/`` URI."""

    kind: str  # "models" or "runs"
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


def parse_uri(uri: str) -> ModelRef:
    """Parse ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID[/checkpoint]``.

    Raises:
        GanforgeError: any other shape.
    """
    if m := re.fullmatch(r"models:/([^/@]+)@([\w\-]+)", uri):
        return ModelRef("models", name=m.group(1), alias=m.group(2))
    if m := re.fullmatch(r"models:/([^/@]+)/(\d+)", uri):
        return ModelRef("models", name=m.group(1), version=m.group(2))
    if m := re.fullmatch(r"runs:/([0-9a-f]{32})(?:/checkpoint/?)?", uri):
        return ModelRef("runs", run_id=m.group(1))
    raise GanforgeError(f"model URI {uri!r} cannot be resolved: use models:/NAME@ALIAS, models:/NAME/VERSION "
                        "or runs:/RUN_ID")


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message squeezed onto one line."""
    return " ".join(str(exc).split())[:limit]


def error_code(exc: BaseException) -> str:
    """MLflow's error code (``RESOURCE_DOES_NOT_EXIST``...) or ``""``."""
    return getattr(exc, "error_code", "") or ""


def client():
    """An ``MlflowClient`` for the tracking URI in effect, after a fast reachability check.

    Raises:
        GanforgeError: an HTTP server that does not answer (instead of minutes of retries).
    """
    import logging

    from mlflow.tracking import MlflowClient

    # INFO chatter (creating a sqlite store, "waiting for model version") would break one-line errors
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.store.model_registry.abstract_store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri()
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def mlflow_errors(action: str):
    """Turn MLflow/HTTP errors raised inside the block into one-line ``GanforgeError``s."""
    try:
        yield
    except GanforgeError:
        raise
    except Exception as exc:  # MlflowException, RestException, requests and sqlalchemy errors alike
        if type(exc).__module__.startswith(("mlflow", "requests", "urllib3", "sqlalchemy")):
            raise GanforgeError(f"{action} failed at {redact(tracking_uri())}: {one_line(exc)}") from None
        raise


def get_version(c, ref: ModelRef):
    """The ``ModelVersion`` a ``models:/`` reference points to.

    Raises:
        GanforgeError: unknown model, version or alias, with what exists instead.
    """
    from mlflow.exceptions import MlflowException

    uri = f"models:/{ref.name}@{ref.alias}" if ref.alias else f"models:/{ref.name}/{ref.version}"
    try:
        model = c.get_registered_model(ref.name)
    except MlflowException as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise GanforgeError(f"model URI {uri} cannot be resolved: no registered model {ref.name!r}; "
                                "register one with `ganforge register --run-id RUN`") from None
        raise GanforgeError(f"model URI {uri}: {one_line(exc)}") from None
    try:
        if ref.alias:
            return c.get_model_version_by_alias(ref.name, ref.alias)
        return c.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        if error_code(exc) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise GanforgeError(f"model URI {uri}: {one_line(exc)}") from None
    aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items())) or "none"
    what = f"no alias {ref.alias!r}" if ref.alias else f"no version {ref.version}"
    raise GanforgeError(f"model {ref.name!r} has {what} (aliases: {aliases}); pass an existing alias or version")


@contextlib.contextmanager
def registry_lock(c, name: str, timeout: float = 120.0):
    """Serialise read-modify-write sequences on model ``name`` across processes and machines.

    MLflow has no compare-and-swap; creating a registered model is the one operation the server makes
    atomic (unique name), so a ``<name>.ganforge-lock`` model is the lock. A lock older than
    ``LOCK_STALE_SECONDS`` was left by a killed process and is broken.

    Raises:
        GanforgeError: the lock stayed taken for ``timeout`` seconds.
    """
    from mlflow.exceptions import MlflowException

    lock = name + LOCK_SUFFIX
    token = uuid.uuid4().hex
    deadline, wait = time.monotonic() + timeout, 0.05
    while True:
        try:
            c.create_registered_model(lock, tags={"ganforge.lock_owner": token},
                                      description="ganforge lock: held while a registration or promotion runs")
            break
        except MlflowException as exc:
            if error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        _break_if_stale(c, lock)
        if time.monotonic() > deadline:
            raise GanforgeError(f"model {name!r} stayed locked for {timeout:.0f}s by another registration or "
                                f"promotion; retry, or delete the registered model {lock!r} if none is running")
        time.sleep(wait)
        wait = min(wait * 2, 1.0)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            if c.get_registered_model(lock).tags.get("ganforge.lock_owner") == token:
                c.delete_registered_model(lock)


def _break_if_stale(c, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        held = c.get_registered_model(lock)
        if time.time() - held.creation_timestamp / 1000 > LOCK_STALE_SECONDS:
            c.delete_registered_model(lock)


def cache_root() -> Path:
    """Where resolved checkpoints are kept."""
    from ganforge.data.loader import default_cache_dir

    return Path(default_cache_dir()) / "registry"


def resolve_model_uri(uri: str) -> Path:
    """A local ``ckpt-<step>`` directory for ``models:/...`` or ``runs:/...`` (downloaded once, cached).

    Its ``meta.json`` carries ``run_id``: the training run the weights come from.

    Raises:
        GanforgeError: bad URI, unknown model/version/alias/run, a run without a generator, server down.
    """
    ref = parse_uri(uri)
    c = client()
    with mlflow_errors(f"resolving {uri}"):
        if ref.kind == "runs":
            return _resolve_run(c, ref.run_id)
        mv = get_version(c, ref)
        # "named": the weights file is named by what it holds (ema/raw); copies laid out before are not reused
        key = hashlib.sha256(f"{mv.source}|{mv.run_id}|named".encode()).hexdigest()[:12]
        dest = cache_root() / "models" / _safe(ref.name) / f"v{mv.version}-{key}"
        found = _cached(dest)
        return found or _publish(dest, lambda tmp: _download_version(c, ref.name, mv.version, tmp))


def _resolve_run(c, run_id: str) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        run = c.get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise GanforgeError(f"no MLflow run {run_id} at {redact(tracking_uri())}; check --run-id") from None
        raise
    # a resumed run logs a newer checkpoint under the same id: its end time tells the copies apart
    dest = cache_root() / "runs" / f"{run.info.run_id}-{run.info.end_time or 'running'}"
    return _cached(dest) or _publish(dest, lambda tmp: _download_run_checkpoint(c, run, tmp))


def _cached(dest: Path) -> Path | None:
    found = sorted(dest.glob("ckpt-*")) if dest.is_dir() else []
    return found[-1] if found else None


def _publish(dest: Path, fill) -> Path:
    """Run ``fill(tmp_dir) -> ckpt name`` and rename the result to ``dest`` (first writer wins)."""
    tmp = dest.with_name(f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        name = fill(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process published the same download first
            if not _cached(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / name


def _download_run_checkpoint(c, run, tmp: Path) -> str:
    names = {Path(f.path).name for f in c.list_artifacts(run.info.run_id, CHECKPOINT_ARTIFACT)}
    if not {"generator.safetensors", "meta.json", "state.pt"} <= names:
        raise GanforgeError(f"run {run.info.run_id} has no generator (no {CHECKPOINT_ARTIFACT}/generator.safetensors "
                            "artifact); pass the run id of a finished `ganforge train` run")
    local = Path(c.download_artifacts(run.info.run_id, CHECKPOINT_ARTIFACT, str(tmp)))
    meta = json.loads((local / "meta.json").read_text())
    meta["run_id"] = run.info.run_id  # the run is known here even when the trainer did not record it
    (local / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    name = f"ckpt-{int(meta.get('step', 0)):06d}"
    local.rename(tmp / name)
    return name


def _download_version(c, name: str, version: str, tmp: Path) -> str:
    """The registered pyfunc's weights and meta.json, laid out as a checkpoint ``load_generator`` reads."""
    import mlflow.artifacts
    import torch

    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                         dst_path=str(tmp / "model"), tracking_uri=tracking_uri()))
    art = model_dir / "artifacts"
    if not (art / "generator.safetensors").is_file() or not (art / "meta.json").is_file():
        raise GanforgeError(f"models:/{name}/{version} is not a ganforge generator (no artifacts/"
                            "generator.safetensors); register it with `ganforge register`")
    from ganforge.training.checkpoint import WEIGHTS

    meta = json.loads((art / "meta.json").read_text())
    ckpt = tmp / f"ckpt-{int(meta.get('step', 0)):06d}"
    ckpt.mkdir()
    # named as in a training checkpoint, so load_generator picks and records the weights it really holds
    stem = WEIGHTS.get(carried_weights(meta), "generator")
    shutil.move(art / "generator.safetensors", ckpt / f"{stem}.safetensors")
    shutil.move(art / "meta.json", ckpt / "meta.json")
    # load_generator wants a complete checkpoint; the step is its only state a generator needs
    torch.save({"step": int(meta.get("step", 0))}, ckpt / "state.pt")
    shutil.rmtree(tmp / "model", ignore_errors=True)
    return ckpt.name


def carried_weights(meta_or_tags: dict) -> str:
    """``ema`` or ``raw``: the weights a registered version holds (its meta.json or tags say so;
    versions registered before ``--weights`` existed say ``generator_ema`` or ``generator``)."""
    w = meta_or_tags.get("weights", "raw")
    return {"generator_ema": "ema", "generator": "raw"}.get(w, w)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]", "_", name)
