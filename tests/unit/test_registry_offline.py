"""Registry pieces that need no server: URI parsing, scrubbing, history replay, the pyfunc, CLI checks."""

from __future__ import annotations

import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.errors import GanforgeError
from ganforge.registry.aliases import holder_stack
from ganforge.registry.compare import format_table
from ganforge.registry.evidence import scrub, scrub_tree
from ganforge.registry.store import ModelRef, parse_uri

runner = CliRunner()
RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("uri, ref", [
    ("models:/gan@champion", ModelRef("models", name="gan", alias="champion")),
    ("models:/ganforge-generator/12", ModelRef("models", name="ganforge-generator", version="12")),
    (f"runs:/{RUN}", ModelRef("runs", run_id=RUN)),
    (f"runs:/{RUN}/checkpoint", ModelRef("runs", run_id=RUN)),
])  # fmt: skip
def test_parse_uri(uri, ref):
    assert parse_uri(uri) == ref


@pytest.mark.parametrize("uri", ["models:/gan", "models:/gan/latest/2", "runs:/xyz", "s3://b/k", "models:/@a"])
def test_parse_uri_rejects_other_shapes(uri):
    with pytest.raises(GanforgeError, match="cannot be resolved"):
        parse_uri(uri)


def test_scrub_masks_credentials_only():
    assert scrub("s3://AKIA123:s3cret@bucket/data") == "s3://***@bucket/data"
    assert scrub("https://h/x?X-Amz-Signature=abc&part=1") == "https://h/x?X-Amz-Signature=***&part=1"
    assert scrub("/data/digits") == "/data/digits"
    assert scrub_tree({"a": ["http://u:p@h/", 3], "b": {"token_x": "?token=zz"}}) == \
        {"a": ["http://***@h/", 3], "b": {"token_x": "?token=***"}}


def test_history_replays_as_a_stack():
    def promo(v, prev=None):
        return {"action": "promote", "version": v, "previous": prev}

    assert holder_stack([]) == []
    assert holder_stack([promo(1), promo(2, 1), promo(3, 2)]) == [1, 2, 3]
    back = {"action": "rollback", "version": 2, "previous": 3}
    assert holder_stack([promo(1), promo(2, 1), promo(3, 2), back]) == [1, 2]
    assert holder_stack([promo(1), promo(2, 1), promo(3, 2), back, {**back, "version": 1}]) == [1]
    assert holder_stack([promo(4, 2)]) == [2, 4]  # the alias existed before ganforge kept history


def test_format_table_sorts_missing_last():
    from ganforge.registry.compare import _sort_key

    rows = [{"run_id": "a" * 32, "fid": None}, {"run_id": "b" * 32, "fid": 3.0}, {"run_id": "c" * 32, "fid": 1.5}]
    rows.sort(key=lambda r: _sort_key(r["fid"], False))
    text = format_table({"columns": ["run_id", "fid"], "rows": rows})
    assert text.splitlines() == ["run_id    fid", "cccccccc  1.5", "bbbbbbbb  3", "aaaaaaaa  -"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A conditional dcgan checkpoint with EMA weights, written without training."""
    from ganforge.checkpoints import save_checkpoint
    from ganforge.models import ModelSpec, build_generator

    spec = ModelSpec(model="dcgan", image_size=16, channels=1, num_classes=10, conditional=True, latent_dim=8, width=8)
    torch.manual_seed(0)
    g, ema = build_generator(spec), build_generator(spec)
    meta = {"spec": spec.model_dump(mode="json"), "config": {}, "step": 7, "class_names": list("0123456789")}
    return save_checkpoint(tmp_path_factory.mktemp("run"), 7, {"generator": g.state_dict(),
                           "generator_ema": ema.state_dict()}, {"step": 7}, meta, keep=1)


def test_pyfunc_predict_matches_generate(checkpoint, tmp_path):
    import mlflow.pyfunc

    from ganforge.inference import generate
    from ganforge.pictures import to_uint8
    from ganforge.registry.generator_model import build_model_dir, decode_png

    meta = {**__import__("json").loads((checkpoint / "meta.json").read_text()), "weights": "ema"}
    model_dir = build_model_dir(checkpoint, meta, tmp_path / "model")
    assert not list(model_dir.rglob("*.pkl")), "the model must not hold a pickle"
    model = mlflow.pyfunc.load_model(str(model_dir))
    out = model.predict(pd.DataFrame({"seed": [5, 9], "label": [3, -1], "n": [4, 3]}))
    assert list(out.columns) == ["row", "seed", "label", "index", "png"]
    assert out["row"].tolist() == [0] * 4 + [1] * 3 and out["label"].tolist() == [3, 3, 3, 3, 0, 1, 2]
    want = to_uint8(generate(str(checkpoint), n=4, labels=["3"], seed=5))
    got = np.stack([decode_png(p) for p in out["png"][:4]])
    assert got.shape == (4, 16, 16, 1) and np.array_equal(got, want)
    want_all = to_uint8(generate(str(checkpoint), n=3, seed=9))
    assert np.array_equal(np.stack([decode_png(p) for p in out["png"][4:]]), want_all)
    with pytest.raises(Exception, match="out of range"):
        model.predict(pd.DataFrame({"seed": [0], "label": [10], "n": [1]}))
    with pytest.raises(Exception, match="at most"):
        model.predict(pd.DataFrame({"seed": [0], "label": [-1], "n": [100000]}))


def one_error_line(res, match: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.stderr


def test_cli_checks_before_contacting_a_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing must be contacted
    one_error_line(runner.invoke(app, ["promote", "gan", "2", "--force"]), "--force needs --reason")
    one_error_line(runner.invoke(app, ["promote", "gan", "2", "--stage", "Prod"]), "unknown --stage 'Prod'")
    one_error_line(runner.invoke(app, ["promote", "gan", "2", "--alias", "v3"]), "invalid alias 'v3'")
    one_error_line(runner.invoke(app, ["register", "--run-id", RUN, "--weights", "best"]), "--weights 'best'")
    one_error_line(runner.invoke(app, ["generate", "--out", "x.png"]), "exactly one of --checkpoint")
    one_error_line(runner.invoke(app, ["generate", "--model", "models:/gan", "--out", "x.png"]), "cannot be resolved")


@pytest.mark.parametrize("args, match", [
    # a gate limit that switches the gate off (nan passes every comparison) or can never be met
    *[(["promote", "gan", "2", "--max-fid", v], f"--max-fid {w} is not a usable limit")
      for v, w in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("-1", "-1.0"), ("0", "0.0"), ("-0", "-0.0"))],
    (["promote", "gan", "0"], "version 0 is not a model version"),
    (["promote", "gan.ganforge-lock", "1"], "invalid model name"),
    (["promote", "gan", "1", "--force", "--reason", "  "], "--force needs --reason"),
    (["rollback", "a/b"], "invalid model name 'a/b'"),
    (["register", "--run-id", RUN, "--force"], "--force needs --reason"),
    (["register", "--run-id", RUN, "--reason", "why"], "--reason is recorded only with --force"),
    (["register", "--run-id", "xyz"], "--run-id 'xyz' is not an MLflow run id"),
    (["register", "--run-id", RUN, "--name", "x:y"], "invalid model name 'x:y'"),
    (["runs", "compare", "--experiment", "e", "--max-runs", "0"], "--max-runs 0 is out of range"),
    (["runs", "compare", "--experiment", " "], "--experiment is empty"),
])  # fmt: skip
def test_gates_and_flags_are_checked_before_contacting_a_server(monkeypatch, args, match):
    """Issue 13 items 2-3: every gate input is validated at parse time, in one line."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing must be contacted
    one_error_line(runner.invoke(app, args), match)


@pytest.mark.parametrize("args", [["register", "--run-id", RUN], ["promote", "gan", "1"], ["rollback", "gan"],
                                  ["runs", "compare", "--experiment", "e"],
                                  ["generate", "--model", "models:/gan@champion", "--out", "x.png"]])
def test_server_down_is_one_line_and_fast(monkeypatch, args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    res = runner.invoke(app, args)
    one_error_line(res, f"cannot reach the MLflow server at http://127.0.0.1:{port}")
    assert "--no-track" not in res.stderr  # the registry commands have no such flag
    assert time.monotonic() - t0 < 10


@pytest.fixture
def refusing_server():
    """An HTTP server whose /health answers but whose API refuses every call (403), as behind a proxy."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            ok = self.path.startswith("/health")
            body = b"OK" if ok else b'{"error_code": "PERMISSION_DENIED", "message": "token expired"}'
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "text/plain" if ok else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("args", [["register", "--run-id", RUN], ["promote", "gan", "1"], ["rollback", "gan"]])
def test_refusing_server_is_one_line(refusing_server, monkeypatch, args):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refusing_server)
    t0 = time.monotonic()
    one_error_line(runner.invoke(app, args), "token expired")
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("args", [
    ["evaluate", "--checkpoint", f"runs:/{RUN}", "--dataset", "DIGITS", "--no-track", "--backbone", "pixels"],
    ["generate", "--model-uri", f"runs:/{RUN}", "--out", "OUT"],
])  # fmt: skip
def test_unknown_run_names_the_uri_not_a_flag_the_user_did_not_type(args, digits16, tmp_path, monkeypatch,
                                                                    sqlite_store):
    """Issue 22: ``evaluate --checkpoint runs:/...`` of an unknown run named ``--run-id``."""
    args = [str(digits16) if a == "DIGITS" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    from mlflow import MlflowClient

    uri = sqlite_store
    MlflowClient(uri).create_experiment("other")  # a store that exists, without that run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.output, res.exception)
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: "), res.stderr
    assert "--run-id" not in line and f"runs:/{RUN}" in line and "no MLflow run" in line, line
