"""``ganforge promote`` and ``ganforge rollback``: gated alias moves with a history kept in tags.

The gate: the version has an evaluation and a passed audit (the newest ones of its training run), its
FID is at or below ``max_fid``, and it is not worse than the alias's current holder (FIDs compared
only when measured alike: same metric key, i.e. sample size and split, and same backbone hash).
``force`` (which needs a ``reason``) overrides only that last comparison: a failed audit or a FID over
the ceiling never ships.

Each promotion or rollback appends one registered-model tag ``ganforge.history.<alias>.<NNNNNN>``
holding a JSON record; rollback replays them as a stack. Everything happens under the registry lock.
The alias move is the commit point and comes first: a promotion that fails (or is killed) before it
leaves the alias and the history as they were. One killed after it leaves the alias moved but no
record; the next promote or rollback sees that the holder is not the top of the replayed history and
writes the missing record (``repaired``) before its own, so rollback still returns to the right version.
"""

from __future__ import annotations

import json
import math
import time
import warnings

from ganforge.errors import GanforgeError
from ganforge.registry import access, store
from ganforge.registry.evidence import Evidence, find_evidence, scrub
from ganforge.registry.versions import stamp

CHAMPION = "champion"
STAGES = ("Staging", "Production")
HISTORY_PREFIX = "ganforge.history."


def promote(name: str, version: int | str, alias: str = CHAMPION, max_fid: float | None = None,
            force: bool = False, reason: str | None = None, stage: str | None = None) -> dict:
    """Move ``alias`` of model ``name`` to ``version`` if it passes the gate.

    Args:
        name: registered model name.
        version: the version to promote.
        alias: the alias to move.
        max_fid: FID ceiling (None: no ceiling).
        force: promote even if worse than (or not comparable with) the current holder; needs ``reason``.
        reason: why, recorded in the history and on the version (required with ``force``).
        stage: also transition the version to this deprecated registry stage (Staging or Production).

    Returns:
        The history record of this promotion (``previous`` is the version the alias held, or None).

    Raises:
        GanforgeError: unknown model/version, a gate failure, or the server refusing.
    """
    from ganforge.registry.versions import check_force, check_model_name, pending

    check_model_name(name)
    check_version(version)
    check_limit("--max-fid", max_fid)
    check_force(force, reason, "promote")
    if stage is not None and stage not in STAGES:
        raise GanforgeError(f"unknown --stage {stage!r}; use one of {', '.join(STAGES)}")
    _check_alias(alias)
    c = store.client(check_user=False)  # access asks who we are next
    with store.mlflow_errors(f"promoting {name} version {version}"):
        user = _require(c, name, "promote")
        mv = store.get_version(c, store.ModelRef("models", name=name, version=str(int(version))))
        if pending(mv):
            raise GanforgeError(f"version {mv.version} of {name!r} is a registration that did not finish; re-run "
                                f"`ganforge register --run-id {mv.run_id} --name {name}` to complete it")
        evidence = find_evidence(c, mv.tags.get("training_run_id") or mv.run_id or "",
                                 mv.tags.get("generator_sha256"))  # measured on exactly its weights
        with store.registry_lock(c, name, purpose=f"promote {name} version {mv.version} to {alias}",
                                 user=user) as lock:
            previous = store.holder(c, name, alias)
            notes = gate(c, mv, evidence, previous, max_fid, force)
            record = {"action": "promote", "alias": alias, "version": int(mv.version),
                      "previous": int(previous.version) if previous else None, "time": time.time(),
                      "user": user, "fid": evidence.fid, "gate": notes}
            if reason:
                record["reason"] = scrub(reason)
            _apply(c, lock, name, alias, mv, record, stage)
            return record


def rollback(name: str, alias: str = CHAMPION) -> dict:
    """Put the version that held ``alias`` before the current one back (its promotion history as a stack).

    Returns:
        The history record of the rollback.

    Raises:
        GanforgeError: unknown model, no alias, or no earlier holder to go back to.
    """
    from ganforge.registry.versions import check_model_name

    check_model_name(name)
    _check_alias(alias)
    c = store.client(check_user=False)  # access asks who we are next
    with store.mlflow_errors(f"rolling back {name}@{alias}"):
        user = _require(c, name, "rollback")
        store.get_version(c, store.ModelRef("models", name=name, alias=alias))  # model and alias exist
        with store.registry_lock(c, name, purpose=f"roll back {name}@{alias}", user=user) as lock:
            current = store.holder(c, name, alias)
            stack = holder_stack(history(c, name, alias))
            if stack and current is not None and stack[-1] != int(current.version):
                stack.append(int(current.version))  # moved outside ganforge (or by a killed promote): undo that
            if len(stack) < 2:
                raise GanforgeError(f"{name}@{alias} has no earlier version to roll back to (history: "
                                    f"{stack or 'empty'}); promote one with `ganforge promote`")
            target = store.get_version(c, store.ModelRef("models", name=name, version=str(stack[-2])))
            record = {"action": "rollback", "alias": alias, "version": stack[-2], "previous": stack[-1],
                      "time": time.time(), "user": user}
            _apply(c, lock, name, alias, target, record, stage=None)
            return record


def gate(c, mv, evidence: Evidence, previous, max_fid: float | None, force: bool) -> list[str]:
    """Raise ``GanforgeError`` unless ``mv`` may take the alias; returns notes on overridden checks."""
    v = f"version {mv.version}"
    ignored = f" (not counted: {'; '.join(evidence.ignored)})" if evidence.ignored else ""
    if evidence.evaluation is None or evidence.fid is None:
        raise GanforgeError(f"{v} has no FID evaluation of its weights{ignored}; run `ganforge evaluate --checkpoint "
                            f"models:/{mv.name}/{mv.version} ...` first")
    if evidence.verdict != "pass":
        what = "no audit of its weights" if evidence.audit is None else f"a {evidence.verdict} audit"
        raise GanforgeError(f"{v} has {what}{ignored}; it needs a passed `ganforge audit --checkpoint "
                            f"models:/{mv.name}/{mv.version}` before promotion")
    if max_fid is not None and evidence.fid > max_fid:
        raise GanforgeError(f"{v} has {evidence.fid_key} {evidence.fid:.4g} > --max-fid {max_fid:g}")
    if previous is None or previous.version == mv.version:
        return []
    prev = find_evidence(c, previous.tags.get("training_run_id") or previous.run_id or "",
                         previous.tags.get("generator_sha256"))
    problem = _compare(evidence, prev, mv.version, previous.version)
    if problem and not force:
        raise GanforgeError(f"{problem}; pass --force --reason \"...\" to promote anyway")
    return [problem] if problem else []


def _compare(new: Evidence, old: Evidence, v_new, v_old) -> str | None:
    """Why ``new`` does not beat ``old`` (None when it is at least as good)."""
    if old.fid is None:
        return None  # the holder was never measured: nothing to be worse than
    if new.fid_key != old.fid_key or new.backbone.get("backbone_sha256") != old.backbone.get("backbone_sha256"):
        return (f"FIDs not comparable: version {v_new} has {new.fid_key} ({new.backbone.get('backbone')}), "
                f"version {v_old} has {old.fid_key} ({old.backbone.get('backbone')}); evaluate both alike")
    assert new.fid is not None  # the same FID key as the holder's, which has a value
    if new.fid > old.fid:
        return f"version {v_new} is worse than the current holder version {v_old} (FID {new.fid:.4g} > {old.fid:.4g})"
    return None


def _apply(c, lock, name: str, alias: str, mv, record: dict, stage: str | None) -> None:
    """Move the alias (the commit point, the one step readers see), then record it.

    A missing record of an earlier move (a promotion killed between its alias move and its record,
    or a move made outside ganforge) is written first, marked ``repaired``, so the history replays
    to the holder the alias really had.
    """
    records = history(c, name, alias)
    stack = holder_stack(records)
    if record["previous"] is not None and (not stack or stack[-1] != record["previous"]):
        missing = {"action": "promote", "alias": alias, "version": record["previous"],
                   "previous": stack[-1] if stack else None, "time": time.time(), "repaired": True}
        records.append(missing)
        _record(c, name, alias, records, missing)
    lock.check()
    store.fault_point(f"{record['action']}:before-alias")
    set_alias(c, name, alias, mv.version)
    store.fault_point(f"{record['action']}:after-alias")
    if stage is not None:
        warnings.warn("registry stages are deprecated by MLflow; use aliases (--alias)", FutureWarning, stacklevel=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            c.transition_model_version_stage(name, mv.version, stage, archive_existing_versions=True)
        record["stage"] = stage
    _record(c, name, alias, records, record)
    if record.get("reason"):
        c.set_model_version_tag(name, mv.version, "promotion_reason", record["reason"])
    stamp(c, name, mv.version, alias, record["user"])


def _require(c, name: str, action: str) -> str:
    """The acting user (MLflow's, or the OS account without basic-auth) once they may ``action`` model ``name``.

    Checked before the model or version is looked up, so a refused user learns nothing but the refusal.
    """
    return scrub(access.require(c, name, action).user)


def _record(c, name: str, alias: str, records: list[dict], record: dict) -> None:
    """Append ``record`` as the next history tag (numbered after the highest existing one)."""
    prefix = f"{HISTORY_PREFIX}{alias}."
    numbers = [int(k[len(prefix):]) for k in c.get_registered_model(name).tags if k.startswith(prefix)
               and k[len(prefix):].isdigit()]
    c.set_registered_model_tag(name, f"{prefix}{max(numbers, default=0) + 1:06d}", json.dumps(record, sort_keys=True))


def set_alias(c, name: str, alias: str, version) -> None:
    """Point ``alias`` at ``version`` (a seam where tests inject a failure)."""
    c.set_registered_model_alias(name, alias, str(version))


def history(c, name: str, alias: str) -> list[dict]:
    """The promotion/rollback records of ``alias``, oldest first."""
    tags = c.get_registered_model(name).tags
    prefix = f"{HISTORY_PREFIX}{alias}."
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(prefix))]


def holder_stack(records: list[dict]) -> list[int]:
    """Replay history: a promotion pushes its version, a rollback pops back to the one below."""
    stack: list[int] = []
    for r in records:
        if r["action"] == "rollback":
            while stack and stack[-1] != r["version"]:
                stack.pop()
            if not stack:
                stack.append(r["version"])
        elif not stack or stack[-1] != r["version"]:
            if not stack and r.get("previous") is not None:
                stack.append(r["previous"])  # the alias was set before ganforge kept history
            stack.append(r["version"])
    return stack


def check_version(version) -> None:
    """Raises GanforgeError unless ``version`` is a version number (1, 2, ...)."""
    try:
        ok = int(str(version)) >= 1
    except ValueError:
        ok = False
    if not ok:
        raise GanforgeError(f"version {version!r} is not a model version; versions are numbered 1, 2, ...")


def check_limit(flag: str, value: float | None) -> None:
    """Raises GanforgeError unless a gate limit is None (no gate) or a finite, positive number.

    NaN would pass every comparison, infinity and negative numbers make the gate meaningless, and 0
    no generator can meet: each is a gate switched off (or on) by accident.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise GanforgeError(f"{flag} {value!r} is not a usable limit; pass a finite number above 0, or leave "
                            f"{flag} out for no limit")


def _check_alias(alias: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z_][\w\-]{0,254}", alias) or re.fullmatch(r"[vV]\d+", alias) or alias == "latest":
        raise GanforgeError(f"invalid alias {alias!r}: letters, digits, _ and -, not 'latest' or v<number>")
