"""Which runtime computes inception-tf's features on the CPU: PyTorch, ONNX Runtime or OpenVINO.

The network and its input contract are the same under every runtime: ``FeatureExtractor.preprocess``
makes the (N, 3, 299, 299) float32 input in TF's range, and the runtime maps it to the 2048-d pool
features. Only the kernels that do the arithmetic differ, so the features agree to float32 rounding
(measured: tests/unit/test_fid_runtimes.py, benchmarks/fid_runtimes.py).

- ``torch``: the TorchScript file as ``features.fast_inception_tf`` rewrites it (oneDNN through PyTorch);
  always there, the fallback.
- ``onnxruntime`` / ``openvino``: the same TorchScript exported once to ONNX (``torch.onnx.export``,
  TorchScript exporter; needs the ``onnx`` package) and run by that package's CPU engine. The export is
  cached as ``$GANFORGE_CACHE_DIR/onnx/<weights sha256>/torch-<version>-opset<N>.onnx``: keyed by the
  weights' hash and by the exporter (torch's version, the opset), written under a temp name and renamed,
  so a half-written file is never read and concurrent processes at worst export twice.

Which one: ``$GANFORGE_INCEPTION_RUNTIME`` (one of ``RUNTIME_NAMES``) forces one and fails with one
line when it is unknown or not installed; without it, the first of ``PREFERRED`` that is installed
(``pip install 'ganforge[fast-cpu]'`` brings it), else ``torch`` with today's numbers and no warning.
Only the known inception-tf file (its SHA-256) goes to another runtime unforced: agreement was measured
for that file, not for a file someone declared with ``--backbone-sha256``.

Threads follow ``torch.get_num_threads()`` when the extractor is built (``OMP_NUM_THREADS`` or
``torch.set_num_threads``), so one setting governs every runtime.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ganforge.errors import GanforgeError

RUNTIME_ENV = "GANFORGE_INCEPTION_RUNTIME"
RUNTIME_NAMES = ("torch", "onnxruntime", "openvino")
# The adopted runtime first, today's path last. benchmarks/fid_runtimes.py on this 2-core AMD EPYC (Zen 4),
# one thread, 4,000 Fashion-MNIST images: onnxruntime 9.05 images/s per core, openvino 8.74, torch 7.75
# (torch.compile 8.17, not a runtime here: it needs a C compiler and a minute of compiling per process);
# all agree (FID 2k vs 2k within 2e-7 of torch's). ONNX Runtime is the fastest that agrees, and the
# smaller wheel (28 MB against OpenVINO's 59 MB). OpenVINO stays available when forced.
PREFERRED = ("onnxruntime", "torch")
# Images per runtime call: torch's by benchmarks/fid.py; for ONNX Runtime and OpenVINO 1, 4 and 16 measured
# within 5% of each other, in no stable order (the machine is shared): 4 keeps the activations small.
FORWARD_BATCH = {"torch": 16, "onnxruntime": 4, "openvino": 4}
ONNX_OPSET = 17
EXTRA = "fast-cpu"  # ganforge's optional dependency group that installs the adopted runtime


def installed(name: str) -> bool:
    """Whether runtime ``name`` can run here: its package imports (and ``onnx``, for the export)."""
    if name == "torch":
        return True
    try:  # by name in the code, not import_module: the import graph (tests/unit/test_import_graph.py) sees them
        import onnx  # noqa: F401

        if name == "onnxruntime":
            import onnxruntime  # noqa: F401
        elif name == "openvino":
            import openvino  # noqa: F401
    except ImportError:  # also a module set to None in sys.modules (how tests simulate its absence)
        return False
    return name in RUNTIME_NAMES


def requested_runtime() -> str | None:
    """The runtime ``$GANFORGE_INCEPTION_RUNTIME`` forces, or None; checked to be known and installed."""
    name = os.environ.get(RUNTIME_ENV, "").strip()
    if not name:
        return None
    if name not in RUNTIME_NAMES:
        raise GanforgeError(f"unknown inception runtime {name!r} in ${RUNTIME_ENV}; use one of "
                            f"{', '.join(RUNTIME_NAMES)}, or unset it for the default")
    if not installed(name):
        how = f"'ganforge[{EXTRA}]'" if name == PREFERRED[0] else f"{name} onnx"
        raise GanforgeError(f"${RUNTIME_ENV}={name} but {name} (with onnx) is not installed; "
                            f"pip install {how}, or unset it for the default")
    return name


def choose_runtime(known_file: bool = True) -> str:
    """The runtime for inception-tf on the CPU: the forced one, else the first installed of ``PREFERRED``.

    Args:
        known_file: the weights are the known inception-tf file; any other file runs on ``torch`` unless
            a runtime is forced.
    """
    forced = requested_runtime()
    if forced is not None:
        return forced
    if not known_file:
        return "torch"
    return next(name for name in PREFERRED if installed(name))


def onnx_file(sha256: str, load: Callable[[], torch.jit.ScriptModule], cache_dir: str | Path | None = None) -> Path:
    """The cached ONNX export of the inception-tf TorchScript with weights ``sha256``; exported if missing.

    Args:
        sha256: the weights file's SHA-256 (the cache key, with torch's version and the opset).
        load: returns the TorchScript module; called only when the export is not cached.
        cache_dir: the ganforge cache folder (None: ``$GANFORGE_CACHE_DIR``, else ``~/.cache/ganforge``).
    """
    from ganforge.data.loader import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / "onnx" / sha256 / f"torch-{torch.__version__}-opset{ONNX_OPSET}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    example = torch.zeros(1, 3, 299, 299)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and signature notes
            warnings.simplefilter("ignore")
            torch.onnx.export(load().eval(), (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "n"}, "features": {0: "n"}})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxRuntimeModel:
    """The ONNX file in an ONNX Runtime CPU session: float32 (n, 3, 299, 299) tensor -> (n, 2048) tensor."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {"images": x.contiguous().numpy()})
        return torch.from_numpy(out)


class OpenVinoModel:
    """The ONNX file compiled by OpenVINO for the CPU in float32 (its default on CPUs with AVX-512 BF16
    is bf16, which moves the features by percents): float32 (n, 3, 299, 299) tensor -> (n, 2048) tensor."""

    def __init__(self, path: Path, threads: int):
        import openvino as ov

        core = ov.Core()  # reads the ONNX itself: no model conversion tool (and none of its telemetry)
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}  # a shared machine: no pinning
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.contiguous().numpy()})
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data, copy=True))  # reused buffer


def onnx_model(name: str, sha256: str, load: Callable[[], torch.jit.ScriptModule],
               threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """inception-tf under ``onnxruntime`` or ``openvino``, from the cached ONNX export.

    Args:
        name: "onnxruntime" or "openvino".
        sha256: the weights' SHA-256 (the export's cache key).
        load: returns the TorchScript module, for the export.
        threads: CPU threads (None: ``torch.get_num_threads()``).
    """
    runners: dict[str, Callable[[Path, int], Callable[[torch.Tensor], torch.Tensor]]] = {
        "onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    if name not in runners:
        raise GanforgeError(f"{name!r} is not an ONNX runtime; use one of {', '.join(runners)}")
    return runners[name](onnx_file(sha256, load), threads or torch.get_num_threads())
