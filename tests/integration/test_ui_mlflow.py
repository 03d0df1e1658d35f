"""What a user sees in the MLflow UI after a demo run, checked in headless Chromium.

A real ``mlflow server`` (the session fixture) gets a finished demo-like run through the CLI: ingest digits,
train a few steps, evaluate with the ``pixels`` backbone, audit, register (alias ``candidate``). Chromium
(Debian's ``chromium`` package, driven by Playwright; Playwright never downloads a browser here) then opens
the evaluate run page, the training run's sample-grid artifact and the registered model page, and the test
asserts that the FID metric, the grid image and the ``candidate`` alias are shown. A tiny ``ganforge pipeline
run --local`` against the same server gives the experiment page: the runs-table link the command prints opens
the Model training view (not MLflow 3's GenAI overview) with FID, KID and the audit verdict as columns.
Screenshots land in ``tests/artifacts/ui/`` (git-ignored): look at them after a run.

Runs in ``make test`` when Chromium and Playwright are installed (``.ci/run`` installs Chromium in CI);
``pytest -m browser`` runs it alone. Every request the page makes outside the server is blocked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(600)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
N = 128  # generated images scored: the metric is eval/fid_128_train


def _ganforge(*args: str, env: dict, timeout: float = 300) -> str:
    res = subprocess.run([sys.executable, "-m", "ganforge", *args], capture_output=True, text=True, env=env,
                         timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"ganforge {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (Debian) to run the MLflow UI check")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo_run(mlflow_server, digits16, tmp_path_factory):
    """Train, evaluate, audit and register through the CLI against the server; returns the ids involved."""
    tmp = tmp_path_factory.mktemp("ui-demo")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    experiment, model = f"ui-check-{uuid.uuid4().hex[:8]}", f"ui-generator-{uuid.uuid4().hex[:8]}"
    out = _ganforge("train", "--dataset", digits16, "--preset", "digits-tiny", "--steps", "20",
                    "--checkpoint-every", "20", "--sample-every", "20", "--device", "cpu", "--output", str(tmp / "run"),
                    "--experiment", experiment, env=env)
    train_run = re.search(r"MLflow run ([0-9a-f]{32})", out).group(1)
    out = _ganforge("evaluate", "--dataset", digits16, "--model", str(tmp / "run"), "--backbone", "pixels",
                    "--n", str(N), "--experiment", experiment, env=env)
    ev = json.loads(out[out.index("{"):])
    _ganforge("audit", "--dataset", digits16, "--model", str(tmp / "run"), "--n", str(N), "--experiment", experiment,
              "--output", str(tmp / "audit"), env=env)
    _ganforge("register", "--run-id", train_run, "--name", model, env=env)

    import mlflow

    client = mlflow.MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    grid = Path(client.download_artifacts(train_run, "samples/final.png", str(tmp)))
    return {"url": mlflow_server, "exp": exp_id, "train_run": train_run, "eval_run": ev["mlflow_run_id"],
            "fid": ev["metrics"][f"fid_{N}_train"], "model": model, "grid": grid}


@pytest.fixture(scope="module")
def pipeline_run(mlflow_server, tmp_path_factory):
    """``ganforge pipeline run --local`` (tiny) tracked on the server; returns its runs-table link and parent run."""
    import mlflow

    tmp = tmp_path_factory.mktemp("ui-pipeline")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    tag = uuid.uuid4().hex[:8]
    out = _ganforge("pipeline", "run", "--local", "--dir", str(tmp), "--experiment", f"ui-pipeline-{tag}",
                    "--model-name", f"ui-pipeline-{tag}", "--image-size", "16", "--limit", "128", "--steps", "20",
                    "--n", "64", "--audit-n", "24", "--max-fid", "1000", env=env, timeout=1000)
    parent = re.search(r"^MLflow run: +([0-9a-f]{32}) ", out, re.M).group(1)
    return {"url": mlflow_server, "runs_table": re.search(r"^runs table: +(\S+)$", out, re.M).group(1),
            "parent": mlflow.MlflowClient(mlflow_server).get_run(parent)}


def _page(browser, base: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    # Only the server, and the blob:/data: URLs its pages make, may be fetched: nothing leaves the machine.
    pg.route("**/*", lambda route: route.continue_() if route.request.url.startswith((base, "blob:", "data:"))
             else route.abort())
    return context, pg


@pytest.fixture
def page(browser, demo_run):
    context, pg = _page(browser, demo_run["url"])
    yield pg
    context.close()


def _shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_run_page_shows_fid(page, demo_run):
    page.goto(f"{demo_run['url']}/#/experiments/{demo_run['exp']}/runs/{demo_run['eval_run']}")
    page.get_by_text(f"eval/fid_{N}_train", exact=True).first.wait_for(timeout=60_000)
    _shot(page, "evaluate-run")
    body = page.inner_text("body")
    assert "pixels" in body  # the backbone param sits next to the metric
    # the metrics table shows the full-precision value
    assert repr(demo_run["fid"])[:8] in body, f"FID {demo_run['fid']} not on the page"


def test_artifact_page_shows_sample_grid(page, demo_run):
    from PIL import Image

    page.goto(f"{demo_run['url']}/#/experiments/{demo_run['exp']}/runs/{demo_run['train_run']}"
              "/artifacts/samples/final.png")
    page.get_by_text("samples/final.png", exact=True).first.wait_for(timeout=60_000)
    img = page.locator("img[src^='blob:']").first
    img.wait_for(timeout=60_000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
    _shot(page, "sample-grid-artifact")
    width, height = Image.open(demo_run["grid"]).size
    shown = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    assert shown == [width, height], "the page shows a different image than the logged samples/final.png"
    assert img.bounding_box()["width"] > 0  # laid out, not hidden


def test_model_page_shows_candidate_alias(page, demo_run):
    page.goto(f"{demo_run['url']}/#/models/{demo_run['model']}")
    alias = page.get_by_text(re.compile(r"^@\s*candidate$")).filter(visible=True).first  # the "@ candidate" chip
    alias.wait_for(timeout=60_000)
    _shot(page, "registered-model")
    body = page.inner_text("body")
    assert alias.bounding_box()["width"] > 0
    assert f"eval/fid_{N}_train" in body  # the version's tags carry the score it was registered with


@pytest.mark.timeout(1500)  # the pipeline run itself takes minutes on a busy CPU
def test_experiment_opens_on_runs_table(browser, pipeline_run):
    parent = pipeline_run["parent"]
    url = pipeline_run["runs_table"]
    assert url.startswith(f"{pipeline_run['url']}/#/experiments/{parent.info.experiment_id}/runs?")
    context, page = _page(browser, pipeline_run["url"])
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


def _scroll_charts_until(page, target, deadline_s: float = 240) -> None:
    """Scroll the charts pane until ``target`` is attached, or fail after ``deadline_s``.

    MLflow renders a chart card only once it is scrolled into view, and the image card sits in the "Model
    metrics" section below the metric charts, inside the pane's own scroll container: a single scroll made
    before that section has laid out (a busy machine) leaves the card unrendered for good, so keep scrolling.
    """
    import time

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    section = page.get_by_text("Model metrics", exact=True).first
    section.wait_for(timeout=int(deadline_s * 1000))
    end = time.monotonic() + deadline_s
    while True:
        section.scroll_into_view_if_needed()
        box = section.bounding_box()
        if box:  # wheel over the pane itself: the page around it does not scroll
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, 400)
        try:
            target.wait_for(state="attached", timeout=5_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > end:
                raise


@pytest.mark.timeout(1500)
def test_chart_view_shows_the_pipeline_runs_samples_beside_its_numbers(browser, pipeline_run):
    """The runs table's Chart view: the parent run's FID chart and its final sample grid (image key samples)."""
    parent = pipeline_run["parent"]
    context, page = _page(browser, pipeline_run["url"])
    try:
        page.goto(pipeline_run["runs_table"] + "&compareRunsMode=CHART")
        page.get_by_text("eval/fid", exact=True).first.wait_for(timeout=60_000)
        grid = page.locator(f"img[src*='images%2Fsamples'][src*='run_uuid={parent.info.run_id}']").first
        _scroll_charts_until(page, grid)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle(),
                               timeout=60_000)
        _shot(page, "experiment-chart-view")
        body = page.inner_text("body")
    finally:
        context.close()
    assert "samples" in body and parent.info.run_name in body
