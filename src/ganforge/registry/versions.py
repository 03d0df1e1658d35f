"""``ganforge register``: a finished, evaluated training run becomes a registered model version.

The version holds the pyfunc of ``ganforge.registry.generator_model`` (code reference, safetensors
weights, a signature and an input example), tags that say where it came from and how good it is, a
description a person can read in the UI, and the alias ``candidate``. The slow part (building and
uploading the model) happens before the registry lock; only the "already registered?" check,
the version creation and the alias move happen under it, so parallel registrations stay consistent.

The order under the lock: create the version tagged ``ganforge.registration=pending``, tag it
``complete``, then move ``candidate`` to it: the alias move is the last act, so an alias never points
at an incomplete version. Killed at any point, a registration leaves the registry with nothing new
(a logged model at most), a ``pending`` version (``promote`` refuses it and loading it by URI is
refused), or a ``complete`` version without the alias; ``candidate`` stays on the version that held it
until the move. Re-running the same ``register`` completes what is left (the tag, then the alias).
``candidate`` never moves back: a complete version gets it only while it is unset or on an older
(lower-numbered) version, so repeating the ``register`` of an old run leaves it where a newer
registration put it. Exactly one version per (run, weights hash) survives even if the lock was lost:
see ``_create_version``.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.registry import access, store
from ganforge.registry.evidence import Evidence, find_evidence, scrub, scrub_tree

CANDIDATE = "candidate"
REGISTRATION = store.REGISTRATION  # the version tag: pending while registering, then complete (before the alias)
pending = store.pending  # the version's registration did not finish
REGISTRATION_TOKEN = "ganforge.registration_token"  # which process created the version


def register(run_id: str, name: str = store.DEFAULT_NAME, force: bool = False,
             pipeline_run_id: str | None = None, weights: str | None = None, reason: str | None = None) -> dict:
    """Register the generator of training run ``run_id`` as a new version of model ``name``.

    Registering a run's weights that already are a version of ``name`` returns that version
    (idempotent); a version whose registration was interrupted (tag ``ganforge.registration`` =
    ``pending``, or ``complete`` while ``candidate`` is unset or on an older version) is completed
    instead. The evidence is the newest evaluation and audit of exactly these weights (same
    ``generator_sha256``).

    Args:
        run_id: the MLflow run of ``ganforge train``.
        name: registered model name.
        force: register even if the run failed, its weights were not both evaluated and audited, or
            the audit failed; needs ``reason``.
        pipeline_run_id: the KFP run that produced it, recorded as a tag (None: not from a pipeline).
        weights: ``ema`` or ``raw`` generator weights; None: ``ema`` when the checkpoint has them, else ``raw``.
        reason: why ``force`` (recorded as the version tag ``forced_reason``).

    Returns:
        ``{"name", "version", "aliases", "tags", "created"}``: ``aliases`` as the registry holds them
        now; ``created`` is False when nothing was left to do.

    Raises:
        GanforgeError: bad arguments, unknown run, no generator (or no EMA weights for ``weights="ema"``),
            weights not evaluated and audited (or a failed audit, or a failed run) without ``force``,
            server down.
    """
    from ganforge.inference import WEIGHTS, check_weights, generator_weights, pick_weights

    check_run_id(run_id)
    check_model_name(name)
    check_weights(weights)
    check_force(force, reason, "register")
    c = store.client(check_user=False)  # access asks who we are next
    uri = f"runs:/{run_id}"
    with store.mlflow_errors(f"registering run {run_id}"):
        user = access.require(c, name, "register").user  # before anything is uploaded
        run = _training_run(c, run_id)
        listed = {Path(f.path).name for f in c.list_artifacts(run_id, store.CHECKPOINT_ARTIFACT)}
        if "generator.safetensors" in listed:  # refuse missing weights before downloading anything
            pick_weights({w for w, stem in WEIGHTS.items() if f"{stem}.safetensors" in listed}, weights, uri)
        checkpoint = store.resolve_model_uri(uri)  # also: does it hold a generator?
        source = generator_weights(checkpoint, weights, where=uri)
        existing = _existing_version(c, name, run_id, source)
        if existing is not None and finished(c, name, existing):
            store.clear_dead_tickets(c, name)  # e.g. the killed run this one repeats held the lock
            return _summary(c, name, existing, created=False)
        model_id = tags = description = None
        if existing is None:  # else only the interrupted registration's last steps are left
            evidence = find_evidence(c, run_id, source.sha256)
            _check_registrable(run, evidence, force, source.weights, source.sha256)
            meta = json.loads((checkpoint / "meta.json").read_text())
            meta = scrub_tree({**meta, **source.record(), "run_id": run_id})
            tags = version_tags(run, evidence, meta, pipeline_run_id, forced=force, reason=reason)
            tags["registered_by"] = scrub(user)
            description = describe(meta, evidence, tags)
            model_id = _log_model(c, run, checkpoint, meta)
        with store.registry_lock(c, name, purpose=f"register run {run_id} as {name}", user=user) as lock:
            existing = _existing_version(c, name, run_id, source)
            if existing is not None and finished(c, name, existing):
                return _summary(c, name, existing, created=False)
            if existing is None:
                if model_id is None:  # the pending version vanished (deleted by hand)
                    raise GanforgeError(f"the interrupted registration of run {run_id} as {name!r} was deleted "
                                        "meanwhile; re-run the command")
                assert tags is not None and description is not None  # made with model_id
                existing = _create_version(c, lock, name, run_id, source, model_id, tags, description)
            return _summary(c, name, _complete(c, lock, name, existing, user), created=True)


def _create_version(c, lock, name: str, run_id: str, source, model_id: str, tags: dict, description: str):
    """Create the version (pending until ``_complete``), then keep only the oldest one of these weights.

    The re-read after creating is what makes a lost lock harmless: of two versions of the same
    weights, every process keeps the oldest and deletes only its own newer one.
    """
    import uuid

    token = uuid.uuid4().hex
    _ensure_registered_model(c, name)
    lock.check()
    store.fault_point("register:before-create")
    mv = c.create_model_version(name, source=f"models:/{model_id}", run_id=run_id,
                                tags={**tags, REGISTRATION: "pending", REGISTRATION_TOKEN: token},
                                description=description, model_id=model_id, await_creation_for=0)
    store.fault_point("register:after-create")
    kept = _existing_version(c, name, run_id, source)
    if kept is not None and str(kept.version) != str(mv.version):
        try:
            c.delete_model_version(name, mv.version)  # ours only: the older one wins
        except Exception as exc:
            if not access.denied(exc):
                raise
            # deleting needs MANAGE; ours stays pending, which nothing loads, promotes or aliases
            raise GanforgeError(f"version {mv.version} of {name!r} duplicates version {kept.version} (made while "
                                "this process had lost the registry lock) and this user may not delete it (needs "
                                f"MANAGE); ask the owner of {name} to delete version {mv.version}") from None
        return kept
    return mv


def _complete(c, lock, name: str, mv, user: str):
    """The last steps of a registration: the tag that says the version is complete, then (the last act)
    the alias ``candidate``, unless a newer version holds it (see ``owes_alias``), then who moved it."""
    lock.check()
    if pending(mv):
        c.set_model_version_tag(name, mv.version, REGISTRATION, "complete")
    store.fault_point("register:before-alias")
    if owes_alias(c, name, mv):
        lock.check()
        c.set_registered_model_alias(name, CANDIDATE, mv.version)
        stamp(c, name, mv.version, CANDIDATE, user)
    store.fault_point("register:after-alias")
    return mv


def stamp(c, name: str, version, alias: str, user: str) -> None:
    """Record on the version who moved ``alias`` to it, and when (tags ``<alias>_by``, ``<alias>_since``)."""
    import time

    c.set_model_version_tag(name, str(version), f"{alias}_by", scrub(user))
    c.set_model_version_tag(name, str(version), f"{alias}_since", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def owes_alias(c, name: str, mv) -> bool:
    """Whether registering ``mv`` still owes it ``candidate``: the alias is unset or on an older version.

    A registration moves the alias last, so a complete version without it was either stopped just
    before the move (owed) or overtaken by a newer registration (not owed: ``candidate`` never moves back).
    """
    current = store.holder(c, name, CANDIDATE)
    return current is None or int(current.version) < int(mv.version)


def finished(c, name: str, mv) -> bool:
    """Whether ``mv``'s registration has nothing left to do (complete, and owes no alias)."""
    return not pending(mv) and not owes_alias(c, name, mv)


def check_run_id(run_id: str) -> None:
    """Raises GanforgeError unless ``run_id`` looks like an MLflow run id (checked before any server call)."""
    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise GanforgeError(f"--run-id {run_id!r} is not an MLflow run id (32 hex digits); pass the run id "
                            "`ganforge train` printed")


def check_model_name(name: str) -> None:
    """Raises GanforgeError unless ``name`` is a model name every registry command and URI can carry."""
    if not re.fullmatch(r"[A-Za-z0-9_][\w.\-]{0,199}", name, flags=re.ASCII) or name.endswith(store.LOCK_SUFFIX):
        raise GanforgeError(f"invalid model name {name!r}: up to 200 letters, digits, _, . and -, starting with a "
                            f"letter, digit or _, not ending in {store.LOCK_SUFFIX}")


def check_force(force: bool, reason: str | None, command: str) -> None:
    """Raises GanforgeError unless ``--force`` comes with a non-empty ``--reason`` (and vice versa for register)."""
    if force and not (reason and reason.strip()):
        raise GanforgeError("--force needs --reason \"why this ships anyway\"; the reason is recorded")
    if command == "register" and reason is not None and not force:
        raise GanforgeError("--reason is recorded only with --force; drop it or add --force")


def _training_run(c, run_id: str):
    try:
        run = c.get_run(run_id)
    except Exception as exc:
        if store.is_mlflow_error(exc, store.NOT_FOUND):
            raise GanforgeError(f"no MLflow run {run_id!r} at {store.redact(store.tracking_uri())}; pass the "
                                "run id `ganforge train` printed") from None
        if access.denied(exc):  # basic-auth answers a missing run and a run one may not read alike
            raise GanforgeError(f"no MLflow run {run_id!r} this user may read at {store.redact(store.tracking_uri())}"
                                "; pass the run id `ganforge train` printed, or ask for READ on its experiment") from None
        raise
    if run.data.tags.get("ganforge.step") in ("evaluate", "audit"):
        raise GanforgeError(f"run {run_id} is an {run.data.tags['ganforge.step']} run; pass the training run "
                            f"(its tag training_run_id is {run.data.tags.get('training_run_id', 'unknown')})")
    return run


def _check_registrable(run, evidence: Evidence, force: bool, weights: str, sha256: str) -> None:
    """Refuse weights that were not evaluated and audited (exactly these weights), unless forced."""
    problems = []
    if run.info.status != "FINISHED":
        problems.append(f"the run's status is {run.info.status}, not FINISHED")
    model = f"runs:/{run.info.run_id} --weights {weights}"
    if evidence.evaluation is None:
        problems.append(f"it has no evaluation of its {weights} weights (sha256 {sha256[:12]}; run `ganforge "
                        f"evaluate --checkpoint {model} ...`)")
    if evidence.audit is None:
        problems.append(f"it has no audit of its {weights} weights (run `ganforge audit --checkpoint {model} ...`)")
    elif evidence.verdict == "fail":
        problems.append(f"its audit failed (run {evidence.audit.info.run_id})")
    if problems and not force:
        ignored = f" (not counted: {'; '.join(evidence.ignored)})" if evidence.ignored else ""
        raise GanforgeError(f"run {run.info.run_id} cannot be registered: {'; '.join(problems)}{ignored}; "
                            "fix that or pass --force --reason \"...\"")


def _existing_version(c, name: str, run_id: str, source):
    """The oldest version of ``name`` holding these weights of ``run_id`` (by hash; older versions by kind)."""
    found = [mv for mv in c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
             if mv.tags.get("generator_sha256", source.sha256) == source.sha256
             and store.carried_weights(mv.tags) == source.weights]
    return min(found, key=lambda mv: int(mv.version)) if found else None


def _ensure_registered_model(c, name: str) -> None:
    try:
        c.create_registered_model(name, description="GAN image generators registered by ganforge. Each "
                                  "version's description says where it came from and how it scored.")
    except Exception as exc:
        if not store.is_mlflow_error(exc, store.ALREADY_EXISTS):
            raise


def version_tags(run, evidence: Evidence, meta: dict, pipeline_run_id: str | None, forced: bool,
                 reason: str | None = None) -> dict:
    """Provenance and quality tags of a new version (credentials scrubbed)."""
    import ganforge

    t = run.data.tags
    tags = {
        "dataset_uri": t.get("dataset_uri") or meta.get("dataset_uri", "unknown"),
        "dataset_fingerprint": t.get("dataset_fingerprint") or meta.get("dataset_fingerprint", "unknown"),
        "training_run_id": run.info.run_id, "git_commit": t.get("git_commit", "unknown"),
        "ganforge_version": ganforge.__version__, "model": meta["spec"]["model"],
        **{k: str(meta[k]) for k in ("weights", "checkpoint_step", "generator_sha256")},
    }  # fmt: skip
    if pipeline_run_id:
        tags["pipeline_run_id"] = pipeline_run_id
    if forced:
        tags["registered_with_force"] = "true"
        tags["forced_reason"] = reason or "none given"
    tags.update(evidence.tags())
    return {k: scrub(v) for k, v in tags.items()}


def describe(meta: dict, evidence: Evidence, tags: dict) -> str:
    """A few lines of Markdown for the registry UI."""
    s = meta["spec"]
    cond = f", conditional on {s['num_classes']} classes" if s.get("conditional") else ""
    lines = [
        f"**{s['model']}** generator, {s['image_size']} px, {s['channels']} channel(s), latent {s['latent_dim']}"
        f"{cond}; {tags['weights']} weights after {tags['checkpoint_step']} steps "
        f"(sha256 `{tags['generator_sha256'][:12]}`).",
        f"Trained on `{tags['dataset_uri']}` (fingerprint `{tags['dataset_fingerprint']}`) in run "
        f"`{tags['training_run_id']}`, ganforge {tags['ganforge_version']} at commit `{tags['git_commit'][:12]}`.",
    ]
    if evidence.evaluation is not None:
        scores = ", ".join(f"{k.split('/', 1)[1]} = {float(v):.4g}" for k, v in sorted(tags.items())
                           if k.startswith("eval/"))
        lines.append(f"Evaluation ({tags.get('backbone', 'unknown')} backbone): {scores}.")
    else:
        lines.append("Not evaluated.")
    lines.append(f"Audit: {evidence.verdict}." if evidence.audit is not None else "Not audited.")
    lines.append("Use: `mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({'seed': [0], 'label': [-1], "
                 "'n': [4]}))` returns one row per image with a base64 PNG in column `png`.")
    return scrub("\n\n".join(lines))


def _log_model(c, run, checkpoint: Path, meta: dict) -> str:
    """Upload the pyfunc as a logged model of the training run (not reopening the run); its model id."""
    from ganforge.registry.generator_model import build_model_dir

    with tempfile.TemporaryDirectory(prefix="ganforge-register-") as tmp:
        model_dir = build_model_dir(checkpoint, meta, Path(tmp) / "model")
        logged = c.create_logged_model(run.info.experiment_id, name="generator", source_run_id=run.info.run_id,
                                       tags={"ganforge.step": "register"}, model_type="ganforge-generator")
        try:
            c.log_model_artifacts(logged.model_id, str(model_dir))
        except BaseException:
            c.finalize_logged_model(logged.model_id, "FAILED")
            raise
        c.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def _summary(c, name: str, mv, created: bool) -> dict:
    """What ``register`` returns, re-read: a version found by ``search_model_versions`` carries no aliases."""
    mv = c.get_model_version(name, mv.version)
    return {"name": mv.name, "version": int(mv.version), "aliases": sorted(mv.aliases), "tags": dict(mv.tags),
            "created": created}
