"""What the registry knows about a training run: its latest evaluation and audit, as version tags.

``ganforge evaluate`` and ``ganforge audit`` each leave a run tagged ``training_run_id`` (in any
experiment); the newest finished one of each is the evidence a registration records and a promotion
gates on. Evidence binds numbers to weights: with a weights hash given, only runs tagged with exactly
that ``generator_sha256`` count (runs from before the tag existed measured unknown weights), and an
audit whose held-out split is the training split never counts (its baseline distance is 0, so it
always passes). Runs passed over are listed in ``Evidence.ignored`` so a refusal can say why. Tag names repeat the runs' own names (``eval/fid_64_train``, ``audit_verdict``,
``audit/z_u``): one name per concept. Every value is scrubbed of credentials before it is written.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: store and generator_model are the registry's mlflow importers
    from mlflow.entities import Run

TRAIN_SPLIT = "train"  # the split ganforge trains on and the audit compares against
EVAL_PREFIXES = ("eval/fid_", "eval/kid_mean_", "eval/precision_", "eval/recall_")
AUDIT_KEYS = ("audit/fraction_below_baseline", "audit/z_u", "audit/exact_duplicates", "audit/nn_dist_min")
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:key|secret|token|signature|password|credential)[^=&#]*=)[^&#]*", re.I)


def scrub(value: str) -> str:
    """``value`` without credentials: URI user:password and secret-looking query parameters masked."""
    value = re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", str(value))
    return _SECRET_QUERY.sub(r"\1***", value)


def scrub_tree(obj):
    """``scrub`` every string inside a JSON-like tree."""
    if isinstance(obj, dict):
        return {k: scrub_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_tree(v) for v in obj]
    return scrub(obj) if isinstance(obj, str) else obj


@dataclass
class Evidence:
    """The newest evaluation and audit of one training run (None where there is none)."""

    evaluation: Run | None = None
    audit: Run | None = None
    backbone: dict = field(default_factory=dict)  # {"backbone": name, "backbone_sha256": hash}
    ignored: list[str] = field(default_factory=list)  # why newer evaluate/audit runs did not count

    @property
    def fid_key(self) -> str | None:
        """The overall FID metric's key (``eval/fid_<n>_<split>``), not the per-class ones."""
        if self.evaluation is None:
            return None
        keys = [k for k in self.evaluation.data.metrics if k.startswith("eval/fid_") and "_class" not in k]
        return sorted(keys)[0] if keys else None

    @property
    def fid(self) -> float | None:
        """The overall FID, or None without an evaluation that computed it."""
        key = self.fid_key
        return self.evaluation.data.metrics[key] if key and self.evaluation is not None else None

    @property
    def verdict(self) -> str | None:
        """``pass``/``fail`` of the newest audit, None when never audited."""
        return self.audit.data.tags.get("audit_verdict") if self.audit else None

    def tags(self) -> dict[str, str]:
        """Version tags recording this evidence."""
        out: dict[str, str] = {}
        if self.evaluation is not None:
            out["evaluate_run_id"] = self.evaluation.info.run_id
            for k, v in self.evaluation.data.metrics.items():
                if k.startswith(EVAL_PREFIXES) and "_class" not in k:
                    out[k] = repr(float(v))
            out.update({k: str(v) for k, v in self.backbone.items()})
        if self.audit is not None:
            out["audit_run_id"] = self.audit.info.run_id
            out["audit_verdict"] = self.verdict or "unknown"
            out.update({k: repr(float(self.audit.data.metrics[k])) for k in AUDIT_KEYS if k in self.audit.data.metrics})
        return {k: scrub(v) for k, v in out.items()}


def find_evidence(c, training_run_id: str, generator_sha256: str | None = None) -> Evidence:
    """Search every experiment for finished evaluate/audit runs of ``training_run_id``; newest wins.

    Args:
        c: an ``MlflowClient``.
        training_run_id: the training run the evaluations and audits name.
        generator_sha256: count only runs that measured exactly these weights (their tag
            ``generator_sha256``; runs without it measured unknown weights and do not count). None
            (a version registered before weights were hashed): any weights of the run.
    """
    exp_ids = [e.experiment_id for e in c.search_experiments(max_results=1000)]
    runs = c.search_runs(
        exp_ids, f"tags.training_run_id = '{training_run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=200,
    ) if exp_ids else []  # fmt: skip
    ev = Evidence()
    for run in runs:
        step = run.data.tags.get("ganforge.step")
        if step not in ("evaluate", "audit") or getattr(ev, "evaluation" if step == "evaluate" else "audit"):
            continue
        if why := not_evidence(run, generator_sha256):
            ev.ignored.append(f"{step} run {run.info.run_id} {why}")
        elif step == "evaluate":
            ev.evaluation = run
        else:
            ev.audit = run
    if ev.evaluation is not None:
        ev.backbone = _backbone(c, ev.evaluation.info.run_id)
    return ev


def not_evidence(run, generator_sha256: str | None) -> str | None:
    """Why an evaluate/audit run says nothing about these weights (None: it counts)."""
    measured = run.data.tags.get("generator_sha256")
    if generator_sha256 and measured != generator_sha256:
        # another set of weights of the same run (ema vs raw, an earlier or later checkpoint), or unknown ones
        return (f"measured other weights (sha256 {measured[:12]})" if measured
                else "does not record which weights it measured")
    if run.data.tags.get("ganforge.step") == "audit":
        held = heldout_split(run)
        train = run.data.tags.get("train_split") or run.data.params.get("train_split") or TRAIN_SPLIT
        if held == train:
            return (f"compared against its training split {train!r} as the held-out split (baseline distance 0: "
                    "it passes any generator)")
    return None


def heldout_split(run) -> str | None:
    """The held-out split an audit run used, as its tags or params recorded it (None: not recorded)."""
    for where in (run.data.tags, run.data.params):
        value = where.get("heldout_split")
        if value not in (None, "", "None"):
            return value
    return None


def _backbone(c, run_id: str) -> dict:
    """Backbone name and weights hash from the evaluation's ``evaluate.json``."""
    from ganforge.registry.store import quiet_downloads

    with tempfile.TemporaryDirectory() as tmp:
        try:
            # listed first: a server whose artifacts are in S3 answers a missing file with 500, which
            # MLflow's client retries for a minute and more; a listing says at once that it is not there
            if "evaluate.json" not in {f.path for f in c.list_artifacts(run_id)}:
                return {}
            with quiet_downloads():
                record = json.loads(Path(c.download_artifacts(run_id, "evaluate.json", tmp)).read_text())
        except Exception:  # noqa: BLE001 - an evaluation without its record still has metrics
            return {}
    b = record.get("backbone", {})
    return {k: b[k] for k in ("backbone", "backbone_sha256") if k in b}
