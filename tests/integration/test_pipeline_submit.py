"""``ganforge pipeline submit`` through the real ``kfp.Client`` against a local HTTP stand-in of the KFP
API (127.0.0.1), which records every request: the submission path runs without a cluster."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from ganforge.cli import app


class _KfpStandIn(BaseHTTPRequestHandler):
    requests: list = []

    def _answer(self, body: dict, code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        rec = {"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        self.requests.append(rec)
        return rec

    def do_GET(self):  # noqa: N802 - http.server's name
        rec = self._record()
        if rec["path"].startswith("/apis/v2beta1/healthz"):
            self._answer({"multi_user": False})
        elif rec["path"].startswith("/apis/v2beta1/experiments"):
            self._answer({"experiments": []})  # none yet: the client creates it
        else:
            self._answer({"error": "not found"}, 404)

    def do_POST(self):  # noqa: N802
        rec = self._record()
        if rec["path"] == "/apis/v2beta1/experiments":
            self._answer({"experiment_id": "exp-1", "display_name": rec["body"]["display_name"]})
        elif rec["path"] == "/apis/v2beta1/runs":
            self._answer({"run_id": "run-42", "display_name": rec["body"]["display_name"], "state": "PENDING"})
        else:
            self._answer({"error": "not found"}, 404)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def kfp_endpoint():
    _KfpStandIn.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _KfpStandIn.requests
    server.shutdown()
    server.server_close()


def test_submit_sends_compiled_pipeline_and_prints_run_url(kfp_endpoint, monkeypatch):
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.config/kfp/context.json of the user
    host, requests = kfp_endpoint
    res = CliRunner().invoke(app, ["pipeline", "submit", "--host", host, "--token", "tok-123",
                                   "--experiment", "gans", "--steps", "2000", "--max-fid", "25",
                                   "--gpus", "2", "--image", "reg.example/ganforge:9"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == f"{host}/#/runs/details/run-42"
    posted = [r for r in requests if r["method"] == "POST"]
    assert [r["path"] for r in posted] == ["/apis/v2beta1/experiments", "/apis/v2beta1/runs"]
    assert posted[0]["body"]["display_name"] == "gans"
    run = posted[1]["body"]
    assert run["experiment_id"] == "exp-1"
    sent = run["pipeline_spec"]  # with a platform spec the client sends both documents
    spec, platform = sent["pipeline_spec"], sent["platform_spec"]
    assert spec["pipelineInfo"]["name"] == "ganforge-gan"
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert {s["secretName"] for s in train["secretAsEnv"]} == {"ganforge-mlflow", "ganforge-s3"}
    params = run["runtime_config"]["parameters"]
    assert params["steps"] == 2000 and params["max_fid"] == 25.0 and params["gpus"] == 2
    assert params["experiment"] == "gans" and params["preset"] == "digits-tiny"
    assert all(r["auth"] == "Bearer tok-123" for r in requests)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/ganforge:9"}
    assert "tok-123" not in json.dumps(run)


def test_submit_refuses_bad_parameter_before_sending(kfp_endpoint):
    host, requests = kfp_endpoint
    res = CliRunner().invoke(app, ["pipeline", "submit", "--host", host, "--gpus", "-1"])
    assert res.exit_code == 2 and "gpus: Input should be greater than or equal to 0" in res.output
    assert requests == []


def test_submit_without_gpus_is_refused(kfp_endpoint):
    host, requests = kfp_endpoint
    res = CliRunner().invoke(app, ["pipeline", "submit", "--host", host])
    assert res.exit_code == 2 and "--gpus 0 on a cluster" in res.output and requests == []


def test_submit_unreachable_endpoint_is_one_line():
    from tests.conftest import free_port

    res = CliRunner().invoke(app, ["pipeline", "submit", "--host", f"http://127.0.0.1:{free_port()}", "--gpus", "1"])
    assert res.exit_code == 2
    assert res.output.startswith("error: KFP at http://127.0.0.1:") and len(res.output.strip().splitlines()) == 1
