"""Talking to the MLflow registry: the client, one-line errors, a cross-process lock, URI resolution.

The lock (``registry_lock``) and what it guarantees. MLflow offers no compare-and-swap, but two of
its operations are atomic in every SQL-backed store (sqlite, PostgreSQL, MySQL; an ``mlflow server``
forwards to one): creating a model version takes the next number under a unique (name, version) key,
and a deleted version's number is never handed out again (versions are soft-deleted). So the lock
on model NAME is a ticket queue: each command creates a version of the registered model
``NAME.ganforge-lock`` (kept, never deleted, so numbers never repeat) tagged with its host, pid,
start time and purpose, and holds the lock while its ticket is the lowest live one. Release deletes
one's own ticket; a waiter deletes a dead one's: same machine (hostname, boot id, pid namespace) and
the pid gone or reused, at once; any machine, when its heartbeat tag (bumped every
``HEARTBEAT_SECONDS``) stood still for ``LOCK_LEASE_SECONDS`` as the waiter's own clock saw it.
Deleting a number that is never reused cannot remove a newer ticket, so breaking a stale lock is
safe, and two breakers are harmless. Guarantee: one holder at a time, unless a live holder stalls
for longer than the lease (SIGSTOP, a frozen VM); then ``RegistryLock.check()``, called before each
write, stops it at its next write, and the writes themselves are idempotent and re-verified (see
``versions`` and ``aliases``), so a rerun completes whatever a killed or stopped command left.
A waiter says once on stderr who holds the lock (host, pid, since when) and how long it will wait.

``resolve_model_uri`` turns ``models:/NAME@alias``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID`` into
a local ``ckpt-<step>`` directory that ``ganforge.inference.load_generator`` reads (a version whose
registration did not finish is refused, ``check_complete``), so
``evaluate``, ``audit`` and ``generate`` accept registry URIs without knowing about MLflow. Downloads
are cached under ``$GANFORGE_CACHE_DIR/registry``, keyed by run id and end time (a resumed run logs a
newer checkpoint) or by name/version and the version's source (a deleted and re-created model reuses
version numbers), written to a temp directory and renamed, so a half-finished download never looks
complete.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.faults import FAULT_ENV, fault_point  # noqa: F401 - registry modules call store.fault_point
from ganforge.tracking import check_http, identity, redact, sqlite_path, tracking_uri

DEFAULT_NAME = "ganforge-generator"
CHECKPOINT_ARTIFACT = "checkpoint"  # where ``ganforge train`` logs its final checkpoint in the run
LOCK_SUFFIX = ".ganforge-lock"
LOCK_SOURCE = "s3://ganforge-lock/ticket"  # a version needs a source; nothing ever reads this one
LOCK_TIMEOUT_SECONDS = 120.0  # how long a command waits for the lock by default
LOCK_TIMEOUT_ENV = "GANFORGE_LOCK_TIMEOUT"
LOCK_LEASE_SECONDS = 60.0  # a ticket whose heartbeat stood still this long, as a waiter saw it, is dead
HEARTBEAT_SECONDS = 5.0


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


NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # MLflow's codes for "no such run/model"
ALREADY_EXISTS = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")


def is_mlflow_error(exc: BaseException, codes: tuple[str, ...] | None = None) -> bool:
    """``exc`` is an MLflow error with one of ``codes``, or any when None (the registry modules never import
    mlflow)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and (codes is None or error_code(exc) in codes)


def client(check_user: bool = True):
    """``ganforge.tracking.client`` after the registry's own check that the store holds runs.

    ``check_user=False`` leaves out asking the server who the credentials name, for a caller that asks
    next anyway (``access.require``): one request, not two.

    Raises:
        GanforgeError: an HTTP server that does not answer (instead of minutes of retries), a
            ``sqlite:///`` file that does not exist (MLflow would create an empty database there), or
            credentials the server refuses.
    """
    from ganforge import tracking

    check_store(tracking_uri(), check_user=check_user)
    return tracking.client(check=False)


def auth_client(uri: str):
    """MLflow's client of the basic-auth app's users and permissions on server ``uri``."""
    from mlflow.server.auth.client import AuthServiceClient

    return AuthServiceClient(uri)


def check_store(uri: str, timeout: float = 5.0, check_user: bool = True) -> None:
    """Refuse a tracking URI the registry commands cannot use, before anything is read or written.

    Every registry command works on runs that already exist, so a mistyped ``sqlite:///`` path is an
    error here, never a new empty database; an HTTP server must answer ``/health``.

    Raises:
        GanforgeError: a missing sqlite file, or an HTTP server that does not answer.
    """
    if (path := sqlite_path(uri)) is not None:
        if not path.is_file():
            raise GanforgeError(f"no MLflow database at {path} (MLFLOW_TRACKING_URI={redact(uri)}); fix the path "
                                "or point MLFLOW_TRACKING_URI at the store your runs were logged to")
        return
    check_http(uri, timeout)
    if check_user:
        identity(uri)  # a refused user is one line here, not a 401 from the first write


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


class RegistryLock:
    """The registry lock on one model, held through a ticket (a version of ``<name>.ganforge-lock``).

    ``check()`` before a write fences out a holder whose ticket was taken over while it stalled.
    """

    def __init__(self, c, name: str, version: str, user: str | None = None):
        self.c, self.name, self.lock, self.version, self.user = c, name, name + LOCK_SUFFIX, version, user
        self._stop = threading.Event()

    def check(self) -> None:
        """Raise unless this process still holds the lock.

        Raises:
            GanforgeError: the ticket was taken over as stale (this process stalled for over the lease).
        """
        from mlflow.exceptions import MlflowException

        try:
            self.c.get_model_version(self.lock, self.version)
            return
        except MlflowException as exc:
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
        raise GanforgeError(f"lost the registry lock on model {self.name!r}: this process stalled for over "
                            f"{LOCK_LEASE_SECONDS:.0f}s and another one took over; re-run the command to complete it")

    def _beat(self) -> None:
        n = 0
        while not self._stop.wait(HEARTBEAT_SECONDS):
            n += 1
            # a missed beat is harmless: waiters allow LOCK_LEASE_SECONDS, many beats
            with contextlib.suppress(Exception):
                self.c.set_model_version_tag(self.lock, self.version, "ganforge.lock.beat", str(n))


@contextlib.contextmanager
def registry_lock(c, name: str, purpose: str = "a registry change", timeout: float | None = None,
                  user: str | None = None):
    """Serialise read-modify-write sequences on model ``name`` across processes and machines.

    A ticket lock: each process creates a version of the registered model ``<name>.ganforge-lock``
    (MLflow numbers versions atomically and never reuses a number, deleted versions included), and
    the lowest live version holds the lock. Release deletes one's own ticket; a dead holder's ticket
    is deleted by a waiter (no number is reused, so a delete can never hit a newer ticket). Dead:
    same machine and its pid is gone (at once), or its heartbeat tag stood still for
    ``LOCK_LEASE_SECONDS`` as the waiter saw it (any machine; no clocks compared). A waiter says once
    on stderr who holds the lock and how long it will wait.

    ``user`` (the acting MLflow user) is recorded on the ticket, so a waiter can say who holds it.

    Yields:
        A ``RegistryLock``; call its ``check()`` before each write.

    Raises:
        GanforgeError: the lock stayed taken for ``timeout`` seconds (default ``GANFORGE_LOCK_TIMEOUT``
            or ``LOCK_TIMEOUT_SECONDS``), or the server refuses this user the lock model.
    """
    timeout = lock_timeout() if timeout is None else timeout
    held = RegistryLock(c, name, _take_ticket(c, name + LOCK_SUFFIX, purpose, user), user)
    beat = threading.Thread(target=held._beat, name="ganforge-lock-heartbeat", daemon=True)
    beat.start()
    try:
        _wait_turn(c, held, purpose, timeout)
        yield held
    finally:
        held._stop.set()
        with contextlib.suppress(Exception):  # left behind, it is taken over once this process is gone
            c.delete_model_version(held.lock, held.version)


def lock_timeout() -> float:
    """Seconds a command waits for the registry lock (``GANFORGE_LOCK_TIMEOUT`` or the default).

    Raises:
        GanforgeError: the variable is not a finite, positive number.
    """
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if raw is None:
        return LOCK_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise GanforgeError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds; set a positive number or unset it")
    return value


def _take_ticket(c, lock: str, purpose: str, user: str | None = None) -> str:
    from mlflow.exceptions import MlflowException

    proc = _proc(os.getpid())
    tags = {"ganforge.lock.host": socket.gethostname(), "ganforge.lock.machine": _machine(),
            "ganforge.lock.pid": str(os.getpid()), "ganforge.lock.started": proc[1] if proc else "",
            "ganforge.lock.since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ganforge.lock.purpose": purpose[:200], "ganforge.lock.beat": "0"}  # fmt: skip
    if user:
        tags["ganforge.lock.user"] = user[:200]
    refusals = 0
    for _ in range(8):
        try:
            return str(c.create_model_version(lock, LOCK_SOURCE, tags=tags, await_creation_for=0).version)
        except MlflowException as exc:
            if "Model Version creation error" in str(exc):  # the store's own retries collided under load
                time.sleep(0.05 + 0.2 * (uuid.uuid4().int % 8) / 8)
                continue
            if error_code(exc) == "PERMISSION_DENIED":
                if not model_exists(c, lock):
                    ensure_lock_model(c, lock)  # basic-auth refuses a version of a missing model: not "not found"
                    continue
                refusals += 1
                if refusals == 1:
                    continue  # refused while missing, then made by another process beside us: try once more
                raise GanforgeError(lock_refused(user, lock.removesuffix(LOCK_SUFFIX), "EDIT")) from None
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
        ensure_lock_model(c, lock)  # first use (or someone deleted it)
    raise GanforgeError(f"registered model {lock!r} keeps vanishing; stop whatever deletes it and retry")


def model_exists(c, name: str) -> bool:
    """Whether registered model ``name`` exists; one the user may not even read does (basic-auth refuses it,
    and answers "not found" only for a missing one)."""
    try:
        c.get_registered_model(name)
    except Exception as exc:
        if is_mlflow_error(exc, NOT_FOUND):
            return False
        if is_mlflow_error(exc, ("PERMISSION_DENIED",)):
            return True
        raise
    return True


def lock_refused(user: str | None, name: str, grant: str, has: str | None = None) -> str:
    """The one-line error for a user the server refuses the registry lock of model ``name``."""
    had = f", has {has}" if has else ""
    return (f"user {user or 'this user'!r} may not take the registry lock on {name} (needs MANAGE on the registered "
            f"model {name}{LOCK_SUFFIX}, which holds the lock's tickets{had}); ask the owner of {name}: `ganforge "
            f"permissions grant --user {user or 'USER'} --permission {grant} --name {name}` grants both")


def ensure_lock_model(c, lock: str) -> None:
    """Create the lock model ``NAME.ganforge-lock`` unless it exists; it is created once and kept."""
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(lock, tags={"ganforge.lock": "true"}, description=(
            "ganforge's registry lock: each version is one process's ticket and the lowest holds the lock. "
            "Kept while idle (no versions) so ticket numbers never repeat; do not delete it."))
    except MlflowException as exc:
        if error_code(exc) not in ALREADY_EXISTS:
            raise


def _wait_turn(c, held: RegistryLock, purpose: str, timeout: float) -> None:

    deadline, wait = time.monotonic() + timeout, 0.05
    seen: dict[str, tuple[str, float]] = {}  # ticket -> (its beat, when that value was first seen)
    announced = None
    while True:
        tickets = sorted(c.search_model_versions(f"name = '{held.lock}'"), key=lambda mv: int(mv.version))
        if held.version not in {str(mv.version) for mv in tickets}:  # a sqlite store numbers them as int
            # ours was taken over as stale while this process stalled: queue again at the end
            held.version = _take_ticket(c, held.lock, purpose, held.user)
            continue
        ahead = [mv for mv in tickets if int(mv.version) < int(held.version)]
        if not ahead:
            return
        now = time.monotonic()
        dead = [(mv, why) for mv in ahead if (why := _dead(mv, seen, now))]
        for mv, why in dead:
            _remove_ticket(c, held.name, mv, why)
        if dead:
            continue
        if announced != str(ahead[0].version):
            _say(f"waiting for the registry lock on model {held.name!r}: held by {_who(ahead[0])}"
                 + (f", {len(ahead) - 1} more waiting" if len(ahead) > 1 else "")
                 + f"; waiting up to {timeout:.0f}s")
            announced = str(ahead[0].version)
        if now > deadline:
            raise GanforgeError(
                f"model {held.name!r} stayed locked for {timeout:.0f}s by {_who(ahead[0])}; retry later (or raise "
                f"{LOCK_TIMEOUT_ENV}); if that process is gone, delete version {ahead[0].version} of the "
                f"registered model {held.lock!r}")
        time.sleep(wait)
        wait = min(wait * 2, 1.0)


def clear_dead_tickets(c, name: str) -> None:
    """Remove lock tickets on model ``name`` left by processes of this machine that are gone.

    A command killed while it held the lock leaves its ticket; the next command that waits removes it,
    but a rerun with nothing left to do takes no lock, so it clears them here (tickets of other machines
    need a lease of watching, and are left to the next waiter).
    """
    from mlflow.exceptions import MlflowException

    lock = name + LOCK_SUFFIX
    try:
        tickets = c.search_model_versions(f"name = '{lock}'")
    except MlflowException:
        return  # no lock model yet, or not ours to read: nothing to clear
    now = time.monotonic()
    for mv in tickets:
        if why := _dead(mv, {}, now):
            _remove_ticket(c, name, mv, why)


def _remove_ticket(c, name: str, mv, why: str) -> None:
    """Delete a dead process's ticket on model ``name``'s lock, and say so."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # another waiter may have deleted it first
        c.delete_model_version(name + LOCK_SUFFIX, mv.version)
    _say(f"registry lock on model {name!r}: removed the ticket of {_who(mv)} ({why})")


def _dead(mv, seen: dict, now: float) -> str | None:
    """Why ticket ``mv`` belongs to a dead process, or None while it may be alive."""
    t = mv.tags
    pid = t.get("ganforge.lock.pid", "")
    if t.get("ganforge.lock.machine") == _machine() and pid.isdigit():
        proc = _proc(int(pid))
        started = t.get("ganforge.lock.started", "")
        if proc is None or proc[0] == "Z" or (started and proc[1] and proc[1] != started):
            return "its process is gone"  # or its pid now belongs to a newer process
    beat, last = t.get("ganforge.lock.beat", ""), seen.get(str(mv.version))
    if last is None or last[0] != beat:
        seen[str(mv.version)] = (beat, now)
    elif now - last[1] > LOCK_LEASE_SECONDS:
        return f"no heartbeat for {LOCK_LEASE_SECONDS:.0f}s"
    return None


def _who(mv) -> str:
    t = mv.tags
    user = f"user {t['ganforge.lock.user']}, " if t.get("ganforge.lock.user") else ""
    return (f"{t.get('ganforge.lock.purpose', 'an unknown command')} ({user}host {t.get('ganforge.lock.host', '?')}, "
            f"pid {t.get('ganforge.lock.pid', '?')}, since {t.get('ganforge.lock.since', '?')})")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@functools.cache
def _machine() -> str:
    """This machine and pid namespace: pids of two tickets are comparable only when these agree."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _proc(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of process ``pid``, None when there is none.

    Without ``/proc`` only existence is known: ("?", "").
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?", ""

@contextlib.contextmanager
def quiet_downloads():
    """Keep MLflow's download progress bars off stderr, where a command's one-line error goes.

    (MLflow's only switch is an environment variable; setting one while its threads read the
    environment can race, so stderr is swapped instead, only around a download.)
    """
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


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
            assert ref.run_id is not None  # parse_uri sets it for runs:/
            return _resolve_run(c, ref.run_id, uri)
        assert ref.name is not None  # and the name for models:/
        name = ref.name
        mv = get_version(c, ref)
        check_complete(mv, uri)
        # "named": the weights file is named by what it holds (ema/raw); copies laid out before are not reused
        key = hashlib.sha256(f"{mv.source}|{mv.run_id}|named".encode()).hexdigest()[:12]
        dest = cache_root() / "models" / _safe(name) / f"v{mv.version}-{key}"
        found = _cached(dest)
        return found or _publish(dest, lambda tmp: _download_version(c, name, mv.version, tmp))


REGISTRATION = "ganforge.registration"  # version tag: pending while a registration runs, complete once it finished


def pending(mv) -> bool:
    """Whether ``mv``'s registration was interrupted before the version was complete (a rerun of
    ``register`` completes it); such a version is never loaded, promoted, or given an alias."""
    return mv.tags.get(REGISTRATION) == "pending"


def holder(c, name: str, alias: str):
    """The ``ModelVersion`` that ``alias`` of model ``name`` points at, or None when it is unset."""
    try:
        return c.get_model_version_by_alias(name, alias)
    except Exception as exc:
        if is_mlflow_error(exc, NOT_FOUND):
            return None
        raise


def check_complete(mv, uri: str) -> None:
    """Refuse to load a version whose registration did not finish (tag ``ganforge.registration=pending``).

    This ganforge never points an alias at one (the alias move is the last act of ``register``), but
    an older one could, and ``models:/NAME/VERSION`` can name one.

    Raises:
        GanforgeError: the version is pending, with how to complete it or what to load instead.
    """
    if pending(mv):
        what = f"version {mv.version} of {mv.name!r}" + (f" ({uri})" if "@" in uri else "")
        run_id = mv.tags.get("training_run_id") or mv.run_id
        raise GanforgeError(f"{what} is incomplete: its registration did not finish ({REGISTRATION}=pending); "
                            f"complete it with `ganforge register --run-id {run_id} --name {mv.name}`, or load "
                            "another version")


def _resolve_run(c, run_id: str, uri: str) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        run = c.get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            # the URI is what the user typed (through --checkpoint, --model-uri, ...): name it, not a flag
            raise GanforgeError(f"model URI {uri}: no MLflow run {run_id} at {redact(tracking_uri())}; check the "
                                "run id in runs:/RUN_ID") from None
        if error_code(exc) == "PERMISSION_DENIED":  # basic-auth: missing, or not readable by this user
            raise GanforgeError(f"model URI {uri}: no MLflow run {run_id} this user may read at "
                                f"{redact(tracking_uri())}; check the run id in runs:/RUN_ID, or ask for READ on "
                                "its experiment") from None
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
    with quiet_downloads():
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

    with quiet_downloads():
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                             dst_path=str(tmp / "model"), tracking_uri=tracking_uri()))
    art = model_dir / "artifacts"
    if not (art / "generator.safetensors").is_file() or not (art / "meta.json").is_file():
        raise GanforgeError(f"models:/{name}/{version} is not a ganforge generator (no artifacts/"
                            "generator.safetensors); register it with `ganforge register`")
    from ganforge.inference import WEIGHTS

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
