"""``ganforge runs compare``: the terminal twin of comparing runs in the MLflow UI.

One row per training run of an experiment: the params that differ between them, the final training
metrics, the newest evaluation's FID/KID/precision/recall and the newest audit verdict (evaluate and
audit runs are joined through their ``training_run_id`` tag, wherever they were logged).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ganforge.errors import GanforgeError
from ganforge.registry import store
from ganforge.registry.evidence import not_evidence

if TYPE_CHECKING:
    from mlflow.entities import Run

# Short column names for the joined evaluation numbers; --sort-by accepts these or any column.
SCORES = {"fid": "eval/fid_", "kid": "eval/kid_mean_", "precision": "eval/precision_", "recall": "eval/recall_"}
MAX_RUNS = 10000  # MLflow's search pages stop being cheap long before its own limit (50000)
NOISY_PARAMS = {"output", "experiment", "run_name"}  # always differ, say nothing about the model


def compare_runs(experiment: str, sort_by: str = "fid", descending: bool = False, max_runs: int = 100) -> dict:
    """Training runs of ``experiment`` with their differing params, final metrics and scores.

    Args:
        experiment: MLflow experiment name.
        sort_by: a column: ``fid``, ``kid``, ``precision``, ``recall``, a metric key (``train/loss_g``)
            or a param name; runs without a value go last.
        descending: largest first (e.g. for precision).
        max_runs: newest runs considered.

    Returns:
        ``{"columns": [...], "rows": [{column: value}], "sort_by": ...}``.

    Raises:
        GanforgeError: an empty experiment name, ``max_runs`` outside 1..MAX_RUNS, unknown experiment or
            sort column, server down (or a sqlite path that does not exist: nothing is created).
    """
    if not experiment.strip():
        raise GanforgeError("--experiment is empty; pass the MLflow experiment name your runs were logged to")
    if not 1 <= max_runs <= MAX_RUNS:
        raise GanforgeError(f"--max-runs {max_runs} is out of range; pass 1 to {MAX_RUNS}")
    c = store.client()
    with store.mlflow_errors(f"comparing runs of {experiment}"):
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(e.name for e in c.search_experiments(max_results=20))
            raise GanforgeError(f"no experiment {experiment!r}; existing: {names or 'none'}")
        runs = _training_runs(c, exp.experiment_id, max_runs)
        judged = _judging_runs(c, {r.info.run_id for r in runs})
    differing = _differing_params(runs)
    rows = [_row(r, differing, judged.get(r.info.run_id, {})) for r in runs]
    columns = ["run_id", "run_name", "status", *differing, *_metric_columns(rows), *SCORES, "audit_verdict",
               "fid_key"]  # fmt: skip
    if rows and sort_by not in columns:
        raise GanforgeError(f"cannot sort by {sort_by!r}; use one of {', '.join(columns)}")
    rows.sort(key=lambda row: _sort_key(row.get(sort_by), descending))
    return {"columns": columns, "rows": rows, "sort_by": sort_by}


def _training_runs(c, experiment_id: str, max_runs: int) -> list[Run]:
    """The newest ``max_runs`` training runs, paging past evaluate/audit runs logged to the same experiment.

    (Asking MLflow for ``max_runs`` runs and dropping the judging ones used to return fewer, even none.)
    """
    runs: list[Run] = []
    token: str | None = None
    while len(runs) < max_runs:
        page = c.search_runs([experiment_id], order_by=["attributes.start_time DESC"], page_token=token,
                             max_results=min(1000, max(100, max_runs)))
        runs += [r for r in page if "ganforge.step" not in r.data.tags]
        token = page.token
        if not token:
            break
    return runs[:max_runs]


def _judging_runs(c, run_ids: set[str]) -> dict[str, dict[str, object]]:
    """training run id -> {"evaluate": newest run, "audit": newest run}."""
    exp_ids = [e.experiment_id for e in c.search_experiments(max_results=1000)]
    found: dict[str, dict[str, object]] = {}
    runs = c.search_runs(exp_ids, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                         max_results=5000)
    for run in runs:
        tid, step = run.data.tags.get("training_run_id"), run.data.tags.get("ganforge.step")
        if step == "audit" and not_evidence(run, None):
            continue  # its held-out split was the training split: that "pass" says nothing
        if tid in run_ids and step in ("evaluate", "audit"):
            found.setdefault(tid, {}).setdefault(step, run)
    return found


def _differing_params(runs) -> list[str]:
    keys = sorted({k for r in runs for k in r.data.params} - NOISY_PARAMS)
    return [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]


def _metric_columns(rows: list[dict]) -> list[str]:
    return sorted({k for row in rows for k in row if k.startswith("train/")})


def _row(run, differing: list[str], judged: dict) -> dict:
    row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status}
    row.update({k: run.data.params.get(k) for k in differing})
    row.update({k: v for k, v in run.data.metrics.items() if k.startswith("train/")})
    ev, au = judged.get("evaluate"), judged.get("audit")
    row.update(dict.fromkeys([*SCORES, "fid_key"]))
    if ev is not None:
        for short, prefix in SCORES.items():
            keys = sorted(k for k in ev.data.metrics if k.startswith(prefix) and "_class" not in k)
            if keys:
                row[short] = ev.data.metrics[keys[0]]
                if short == "fid":
                    row["fid_key"] = keys[0]
    row["audit_verdict"] = au.data.tags.get("audit_verdict") if au is not None else None
    return row


def _sort_key(value, descending: bool):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0)
    if isinstance(value, (int, float)):
        return (0, -value if descending else value)
    try:
        number = float(value)
        return (0, -number if descending else number)
    except ValueError:
        return (0, str(value))


def format_table(result: dict) -> str:
    """Fixed-width text table of ``compare_runs``'s result (run ids shortened to 8 characters)."""
    cols = result["columns"]
    if not result["rows"]:
        return "no training runs"

    def cell(col, v):
        if v is None:
            return "-"
        if col == "run_id":
            return str(v)[:8]
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [cols] + [[cell(col, row.get(col)) for col in cols] for row in result["rows"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)
