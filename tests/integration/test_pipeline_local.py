"""The whole pipeline through kfp.local (SubprocessRunner) against a real ``mlflow server`` and a real S3
endpoint (moto), both on 127.0.0.1: a run that registers, what its console, MLflow runs and registry say,
and what a user then sees of it in the MLflow UI, checked in headless Chromium.

The run (16 px digits on S3, 20 training steps, 64 evaluated and 24 audited images) happens once per module
and every test reads it; most of its time is the start-up of one Python process per task. The runs that
stop at the gate or fail in a step are test_pipeline_outcomes.py.

The browser checks (marked ``browser``; ``pytest -m browser`` runs them alone) drive Debian's ``chromium``
package through Playwright, which never downloads a browser here; they are skipped where it is missing
(``make test`` installs it where it can, ``.ci/system-deps``). They open the evaluate run page (the FID metric), the training run's
sample-grid artifact, the registered model page (the ``candidate`` alias), the runs-table link the command
prints (the Model training view, not MLflow 3's GenAI overview, with FID, KID and the audit verdict as
columns) and its chart view (the parent run's sample grid). Every request the page makes outside the
server is blocked. Screenshots land in ``tests/artifacts/ui/`` (git-ignored): look at them after a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ganforge.cli import app
from tests.conftest import s3_bucket
from tests.integration.kfp_runs import STEPS, TINY, step_lines, step_runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]  # the run takes minutes on a busy CPU

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"


@dataclass
class Registered:
    """The registering run: where it ran, its names, its console output and its MLflow runs by step."""

    root: Path
    url: str
    experiment: str
    model_name: str
    dataset: str
    exit_code: int
    output: str

    def lines(self) -> dict[str, str]:
        """The summary lines by label (``registered``, ``MLflow run``, ``runs table``, ...)."""
        return {ln.split(":")[0].strip(): ln for ln in self.output.splitlines() if ":" in ln}

    def parent(self):
        return MlflowClient(self.url).get_run(self.lines()["MLflow run"].split(":", 1)[1].split()[0])


@pytest.fixture(scope="module")
def registered(mlflow_server, moto_server, tmp_path_factory):
    """``ganforge pipeline run --local`` once for the module: MLflow at the server, the dataset on S3."""
    root = tmp_path_factory.mktemp("registered")
    experiment, model_name = "exp-registers", "gen-registers"
    with pytest.MonkeyPatch.context() as mp:
        dataset = f"s3://{s3_bucket(moto_server, mp)}/datasets/digits16"
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mp.setenv("GANFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("OMP_NUM_THREADS", "1")
        args = ["pipeline", "run", "--local", "--dir", str(root), "--dataset", dataset, "--experiment", experiment,
                "--model-name", model_name,
                *[x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
        res = CliRunner().invoke(app, args)
    return Registered(root, mlflow_server, experiment, model_name, dataset, res.exit_code, res.output)


@pytest.fixture
def run(registered, monkeypatch):
    """The registering run, checked to have succeeded; ``MlflowClient()`` talks to its server."""
    assert registered.exit_code == 0, registered.output[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.url)
    return registered


def test_local_run_registers_candidate(run):
    root, experiment, model_name, dataset, res = run.root, run.experiment, run.model_name, run.dataset, run
    # one screen: a start and an end line per step, then the summary; kfp.local's own logs are in the file
    assert len(res.output.splitlines()) <= 40, res.output
    assert "Executing task" not in res.output and "Streamed logs" not in res.output
    steps = step_lines(res.output)
    for step in STEPS:
        assert (step, "start") in steps and (step, "ok") in steps, (step, res.output)
    assert re.match(r"0:\d\d:\d\d  digits16: 1,797 images, fingerprint [0-9a-f]{12} ", steps["ingest", "ok"])
    assert re.search(r"step 20, loss_d \d+\.\d{3}, loss_g \d+\.\d{3}$", steps["train", "ok"])
    assert re.search(r"FID \d+\.\d\d, KID -?\d\.\d{4} \(64 images\)$", steps["evaluate", "ok"])
    assert steps["audit", "ok"].endswith("verdict pass")
    assert steps["gate", "ok"].endswith("register: passed: FID and audit within limits")
    assert steps["register", "ok"].endswith(f"{model_name}/1 (alias candidate)")
    lines = {ln.split(":")[0].strip(): ln for ln in res.output.splitlines() if ":" in ln}
    log = root / lines["executor logs"].split(":", 1)[1].strip()
    assert log.parent == root / "logs" and log.is_file()
    text = log.read_text()
    for step in STEPS:
        assert f"Executing task '{step}'" in text and f"Task '{step}' finished with status SUCCESS" in text, step
    assert "step 20/20 loss_d=" in text  # the training task's own output, streamed by kfp.local
    assert "FINISHED" in next(ln for ln in res.output.splitlines() if ln.startswith("pipeline run "))
    assert f"{model_name}/1 (alias candidate)" in lines["registered"]
    assert "mlflow ui --backend-store-uri" in lines["open the MLflow UI"]
    grid = lines["sample grid"].split(":", 1)[1].strip()
    assert grid.endswith("samples/final.png") and (root / "runs").as_posix() in grid

    client = MlflowClient()
    parent_id = lines["MLflow run"].split(":", 1)[1].split()[0]
    parent = client.get_run(parent_id)
    kfp_run = parent.data.tags["ganforge.pipeline_run_id"]
    assert parent.info.status == "FINISHED"
    assert f"/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning&" in lines["runs table"]
    assert parent.data.tags["ganforge.pipeline_version"] and parent.data.tags["ganforge.gate"].startswith("passed")
    assert parent.data.tags["ganforge.registered_model"] == f"{model_name}/1"
    assert parent.data.metrics["gate/passed"] == 1.0 and parent.data.metrics["eval/fid"] > 0

    runs = step_runs(experiment, kfp_run)
    assert set(runs) == {"pipeline", "train", "evaluate", "audit"}
    for step in ("train", "evaluate", "audit"):
        assert runs[step].data.tags["mlflow.parentRunId"] == parent_id, step
        assert runs[step].info.status == "FINISHED", step
    assert runs["train"].data.params["dataset"] == dataset and runs["train"].data.params["steps"] == "20"
    assert "train/loss_d" in runs["train"].data.metrics
    assert runs["evaluate"].data.metrics["eval/fid_64_train"] == pytest.approx(parent.data.metrics["eval/fid"])
    # the runs table's columns: FID, KID and the audit verdict under the same names whatever n was
    assert runs["evaluate"].data.metrics["eval/kid_mean_64_train"] == pytest.approx(parent.data.metrics["eval/kid"])
    assert parent.data.tags["audit_verdict"] == "pass"
    # the final sample grid is an image of the parent run (MLflow's chart view shows it beside the table)
    images = [f.path for f in client.list_artifacts(parent_id, "images")]
    assert any(p.startswith("images/samples") and p.endswith(".png") for p in images), images
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert runs["audit"].data.metrics["audit/passed"] == 1.0

    version = client.get_model_version_by_alias(model_name, "candidate")
    assert version.version == "1" and version.run_id == runs["train"].info.run_id
    assert version.tags["pipeline_run_id"] == kfp_run
    assert version.tags["dataset_uri"] == dataset
    assert version.tags["dataset_fingerprint"] == runs["train"].data.tags["dataset_fingerprint"]


# --- what the MLflow UI shows of the run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (Debian) to run the MLflow UI check")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def ui(run):
    """The registering run's ids as the UI checks need them."""
    parent = run.parent()
    runs = step_runs(run.experiment, parent.data.tags["ganforge.pipeline_run_id"])
    n = TINY["n"]
    return {"url": run.url, "exp": parent.info.experiment_id, "parent": parent, "runs": runs,
            "fid_key": f"eval/fid_{n}_train", "runs_table": run.lines()["runs table"].split(":", 1)[1].strip(),
            "model": run.model_name, "root": run.root}


@pytest.fixture
def page(browser, ui):
    context, pg = _page(browser, ui["url"])
    yield pg
    context.close()


def _page(browser, base: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    # Only the server, and the blob:/data: URLs its pages make, may be fetched: nothing leaves the machine.
    pg.route("**/*", lambda route: route.continue_() if route.request.url.startswith((base, "blob:", "data:"))
             else route.abort())
    return context, pg


def _shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.browser
def test_run_page_shows_fid(page, ui):
    evaluate = ui["runs"]["evaluate"]
    page.goto(f"{ui['url']}/#/experiments/{ui['exp']}/runs/{evaluate.info.run_id}")
    page.get_by_text(ui["fid_key"], exact=True).first.wait_for(timeout=60_000)
    _shot(page, "evaluate-run")
    body = page.inner_text("body")
    assert evaluate.data.params["backbone"] in body  # the backbone param sits next to the metric
    fid = evaluate.data.metrics[ui["fid_key"]]
    assert repr(fid)[:8] in body, f"FID {fid} not on the page"  # the metrics table shows the full value


@pytest.mark.browser
def test_artifact_page_shows_sample_grid(page, ui, tmp_path):
    from PIL import Image

    train = ui["runs"]["train"].info.run_id
    grid = Path(MlflowClient(ui["url"]).download_artifacts(train, "samples/final.png", str(tmp_path)))
    page.goto(f"{ui['url']}/#/experiments/{ui['exp']}/runs/{train}/artifacts/samples/final.png")
    page.get_by_text("samples/final.png", exact=True).first.wait_for(timeout=60_000)
    img = page.locator("img[src^='blob:']").first
    img.wait_for(timeout=60_000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
    _shot(page, "sample-grid-artifact")
    width, height = Image.open(grid).size
    shown = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    assert shown == [width, height], "the page shows a different image than the logged samples/final.png"
    assert img.bounding_box()["width"] > 0  # laid out, not hidden


@pytest.mark.browser
def test_model_page_shows_candidate_alias(page, ui):
    page.goto(f"{ui['url']}/#/models/{ui['model']}")
    alias = page.get_by_text(re.compile(r"^@\s*candidate$")).filter(visible=True).first  # the "@ candidate" chip
    alias.wait_for(timeout=60_000)
    _shot(page, "registered-model")
    body = page.inner_text("body")
    assert alias.bounding_box()["width"] > 0
    assert ui["fid_key"] in body  # the version's tags carry the score it was registered with


@pytest.mark.browser
def test_experiment_opens_on_runs_table(browser, ui):
    parent = ui["parent"]
    url = ui["runs_table"]
    assert url.startswith(f"{ui['url']}/#/experiments/{parent.info.experiment_id}/runs?")
    context, page = _page(browser, ui["url"])
    try:
        page.goto(url)
        page.get_by_text(parent.info.run_name, exact=True).first.wait_for(timeout=60_000)
        for column in ("eval/fid", "eval/kid", "audit_verdict"):  # the columns of ganforge's shared view
            page.get_by_text(column, exact=True).first.wait_for(timeout=30_000)
        _shot(page, "experiment-runs-table")
        body = page.inner_text("body")
    finally:
        context.close()
    assert "Run Name" in body and "matching run" in body  # the runs table
    # not the GenAI overview MLflow 3 opens by default (traces, latency, token usage: all empty here)
    assert "Token Usage" not in body and "No data available for the selected time range" not in body
    row = body[body.index(parent.info.run_name):]
    row = row.split("matching run")[0]
    assert parent.data.tags["audit_verdict"] in row and str(parent.data.metrics["eval/fid"])[:5] in row


def _show_chart_card(page, title: str, target, deadline_s: float = 300) -> None:
    """Show only the chart card called ``title`` until ``target`` (inside it) is attached.

    MLflow renders a chart card only once it is in view, and the image card sits below the metric charts in
    the pane's own scroll container, where scrolling raced the layout on a busy machine. The pane's "Search
    metric charts" box leaves that one card at the top, in view. An image card fetches its image list when
    it first renders, so a page that still shows none after a while is loaded afresh. Fails after
    ``deadline_s`` saying what the page showed.
    """
    import time

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    end = time.monotonic() + deadline_s
    while True:
        try:
            search = page.get_by_placeholder("Search metric charts")
            search.fill(title, timeout=30_000)
            page.get_by_text(title, exact=True).last.scroll_into_view_if_needed(timeout=30_000)
            target.wait_for(state="attached", timeout=30_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > end:
                srcs = page.eval_on_selector_all("img", "els => els.map(e => e.src.slice(0, 160))")
                _shot(page, "experiment-chart-view-failed")
                raise AssertionError(f"chart card {title!r} never showed its image; images on the page: {srcs}; "
                                     f"page text: {page.inner_text('body')[:2000]!r}") from None
            page.reload()


@pytest.mark.browser
def test_chart_view_shows_the_pipeline_runs_samples_beside_its_numbers(browser, ui):
    """The runs table's Chart view: the parent run's FID chart and its final sample grid (image key samples)."""
    parent = ui["parent"]
    context, page = _page(browser, ui["url"])
    try:
        requested: list[str] = []
        page.on("request", lambda r: requested.append(unquote(r.url)))
        page.goto(ui["runs_table"] + "&compareRunsMode=CHART")
        page.get_by_text("eval/fid", exact=True).first.wait_for(timeout=60_000)
        # MLflow 3.17 puts the artifact URL in the img; 3.18 fetches it and shows a blob: URL
        grid = page.locator(f"img[src*='images%2Fsamples'][src*='run_uuid={parent.info.run_id}'], img[src^='blob:']").first
        _show_chart_card(page, "samples", grid)
        fetched = [u for u in requested if "images/samples" in u and parent.info.run_id in u]
        assert fetched, f"the parent run's sample image was never fetched: {requested}"
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle(),
                               timeout=60_000)
        _shot(page, "experiment-chart-view")
        body = page.inner_text("body")
    finally:
        context.close()
    assert "samples" in body and parent.info.run_name in body
