"""inception-tf's CPU runtimes (ganforge.metrics.runtimes): choice, fallback, ONNX export cache, agreement.

Quick: a small stand-in network for the mechanics, and a few images through the real file for the adopted
runtime's agreement. Nothing is downloaded; the tests that need an optional runtime skip without it.
"""

import sys
import warnings

import pytest
import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.metrics import runtimes
from ganforge.metrics.features import INCEPTION_TF_SHA256, file_sha256, get_extractor
from ganforge.metrics.runtimes import PREFERRED, RUNTIME_ENV, RUNTIME_NAMES, choose_runtime, onnx_file

ADOPTED = PREFERRED[0]
ONNX_RUNTIMES = [name for name in RUNTIME_NAMES if name != "torch"]


@pytest.fixture(autouse=True)
def _one_thread_no_forcing(monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class StandIn(nn.Module):
    """(N, 3, 299, 299) -> (N, 2048) like inception-tf: a strided conv, ReLU and a global mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2048, 7, stride=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean((2, 3))


@pytest.fixture
def stand_in(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "stand-in.pt"
    with warnings.catch_warnings():  # torch.jit.script/save announce TorchScript's deprecation
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(StandIn().eval()), str(path))
    return path, file_sha256(path)


def images(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_forcing_an_unknown_runtime_is_one_line_error(monkeypatch):
    monkeypatch.setenv(RUNTIME_ENV, "tensorrt")
    with pytest.raises(GanforgeError, match=r"^unknown inception runtime 'tensorrt' in \$GANFORGE_INCEPTION_RUNTIME; "
                                            r"use one of torch, onnxruntime, openvino, or unset it") as e:
        get_extractor("inception-tf")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ONNX_RUNTIMES)
def test_without_the_package_the_default_is_todays_torch_path_and_forcing_it_says_how_to_install(name, monkeypatch):
    for other in ONNX_RUNTIMES:
        monkeypatch.setitem(sys.modules, other, None)  # none installed
    assert choose_runtime() == "torch"
    ext = get_extractor("inception-tf")  # no error, no warning: today's path
    assert ext.runtime == "torch" and ext.forward_batch == 16 and ext.record()["backbone_runtime"] == "torch"
    assert "mkldnn::_convolution_pointwise" in {node.kind() for node in ext.module.graph.nodes()}
    monkeypatch.setenv(RUNTIME_ENV, name)
    how = r"'ganforge\[fast-cpu\]'" if name == ADOPTED else f"{name} onnx"
    with pytest.raises(GanforgeError, match=rf"^\$GANFORGE_INCEPTION_RUNTIME={name} but {name} .*is not installed; "
                                            rf"pip install {how}, or unset it"):
        choose_runtime()


def test_the_adopted_runtime_needs_the_onnx_package_for_its_export(monkeypatch):
    if ADOPTED == "torch":
        pytest.skip("torch is the adopted runtime")
    pytest.importorskip(ADOPTED)
    assert choose_runtime() == ADOPTED
    monkeypatch.setitem(sys.modules, "onnx", None)  # the runtime without the exporter's package
    assert not runtimes.installed(ADOPTED) and choose_runtime() == "torch"


def test_a_file_other_than_the_known_one_runs_on_torch_unless_forced(stand_in):
    path, sha = stand_in
    assert sha != INCEPTION_TF_SHA256  # declared by its hash: agreement was measured for the known file only
    assert get_extractor("inception-tf", path, expected_sha256=sha).runtime == "torch"
    assert choose_runtime(known_file=False) == "torch"


@pytest.mark.parametrize("name", ONNX_RUNTIMES)
def test_forced_runtime_runs_the_same_network_with_the_same_contract(name, stand_in, monkeypatch):
    pytest.importorskip(name)
    pytest.importorskip("onnx")
    path, sha = stand_in
    reference = get_extractor("inception-tf", path, expected_sha256=sha)
    monkeypatch.setenv(RUNTIME_ENV, name)
    ext = get_extractor("inception-tf", path, expected_sha256=sha)
    assert (ext.runtime, ext.record()["backbone_runtime"], ext.contract, ext.dim) == (
        name, name, reference.contract, 2048)
    threads = (ext.module.session.get_session_options().intra_op_num_threads if name == "onnxruntime"
               else int(ext.module.compiled.get_property("INFERENCE_NUM_THREADS")))
    assert threads == torch.get_num_threads() == 1
    x = images(5)  # 5: calls of forward_batch and a remainder
    f, ref = ext.extract(x, batch_size=5), reference.extract(x, batch_size=5)
    assert f.shape == (5, 2048) and f.dtype == torch.float32
    assert ref.abs().max() > 0.1 and (f - ref).abs().max() < 1e-4 * ref.abs().max()


def test_onnx_export_is_cached_by_weights_hash_and_exporter(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.setenv("GANFORGE_CACHE_DIR", str(tmp_path / "cache"))
    sha, loads = "ab" * 32, []

    def load():
        loads.append(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.script(StandIn().eval())

    path = onnx_file(sha, load)
    assert path == tmp_path / "cache" / "onnx" / sha / f"torch-{torch.__version__}-opset{runtimes.ONNX_OPSET}.onnx"
    assert path.stat().st_size > 4 * 2048 * 3 * 7 * 7  # the weights are in it
    assert onnx_file(sha, lambda: pytest.fail("exported again")) == path and loads == [1]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left

    def broken():
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        onnx_file("cd" * 32, broken)
    assert not any((tmp_path / "cache" / "onnx" / ("cd" * 32)).iterdir())  # nothing half-written stays


def test_adopted_runtime_is_the_default_and_agrees_with_torch_on_the_real_network(monkeypatch):
    if ADOPTED == "torch":
        pytest.skip("torch is the adopted runtime")
    pytest.importorskip(ADOPTED)
    pytest.importorskip("onnx")
    ext = get_extractor("inception-tf")
    assert ext.runtime == ADOPTED and ext.record()["backbone_runtime"] == ADOPTED
    monkeypatch.setenv(RUNTIME_ENV, "torch")
    reference = get_extractor("inception-tf")
    x = images(4)
    f, ref = ext.extract(x), reference.extract(x)
    assert ref.abs().max() > 1  # real features
    # measured on 4,000 images: ONNX Runtime within 2.1e-6 of the largest feature, OpenVINO bit-identical
    assert (f - ref).abs().max() < 1e-5 * ref.abs().max()
