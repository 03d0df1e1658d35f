"""Dataset sources opened on small real files: exact pixels, labels, splits, and one-line user errors."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
import types
from pathlib import Path
from urllib.error import URLError

import h5py
import numpy as np
import pytest
from PIL import Image

from ganforge.data.sources import SOURCE_NAMES, SOURCES, galaxy10, open_source
from ganforge.data.sources import folder as folder_source
from ganforge.errors import GanforgeError

# tests/ is not a package; its format writers are shared by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import formats  # noqa: E402


@contextlib.contextmanager
def raises_one_line(match: str):
    """``pytest.raises(GanforgeError)`` whose message must match and fit on one line."""
    with pytest.raises(GanforgeError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


def test_registry_has_every_source():
    open_source("digits")  # fills the registry
    assert set(SOURCES) == set(SOURCE_NAMES)


# --- torchvision IDX -------------------------------------------------------------------------------

TORCHVISION = [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")]


@pytest.mark.parametrize("name,dataset", TORCHVISION)
def test_torchvision_source_returns_written_pixels_labels_and_splits(tmp_path, name, dataset):
    import torchvision.datasets

    train_x, train_y, test_x, test_y = formats.write_torchvision_idx(tmp_path, dataset, 7, 4, seed=3)
    source = open_source(name, str(tmp_path))
    assert source.name == name
    assert source.class_names == list(getattr(torchvision.datasets, dataset).classes)
    assert source.splits.tolist() == ["train"] * 7 + ["test"] * 4
    np.testing.assert_array_equal(source.labels, np.concatenate([train_y, test_y]).astype(np.int64))
    assert source.labels.dtype == np.int64
    everything = np.concatenate([train_x, test_x])
    for chunk in (np.array([0, 1, 2]), np.array([3, 6, 7, 10])):
        images = source.read(chunk)
        assert len(images) == len(chunk)
        for index, image in zip(chunk, images):
            assert image.shape == (28, 28, 1) and image.dtype == np.uint8
            np.testing.assert_array_equal(image[..., 0], everything[index])


def test_torchvision_root_defaults_to_env(tmp_path, monkeypatch):
    formats.write_torchvision_idx(tmp_path, "MNIST", 3, 2, seed=0)
    monkeypatch.setenv("GANFORGE_DATA_ROOT", str(tmp_path))
    assert len(open_source("mnist")) == 5


class NetworkAttempted(Exception):
    """Raised by the network stubs; no source catches it, so it fails the test."""


def _forbid_network(monkeypatch):
    """Any download or socket connection fails the test."""
    import torchvision.datasets.mnist as tv_mnist

    def no_network(*args, **kwargs):
        raise NetworkAttempted("network access attempted")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)


def test_torchvision_download_false_takes_the_offline_path(tmp_path, monkeypatch):
    import torchvision.datasets

    formats.write_torchvision_idx(tmp_path, "FashionMNIST", 3, 2, seed=0)
    _forbid_network(monkeypatch)
    calls = []
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", lambda self: calls.append(self))
    assert len(open_source("fashion-mnist", str(tmp_path), download=False)) == 5
    assert calls == []


def test_torchvision_download_true_with_files_present_stays_offline(tmp_path, monkeypatch):
    formats.write_torchvision_idx(tmp_path, "KMNIST", 3, 2, seed=0)
    _forbid_network(monkeypatch)
    assert len(open_source("kmnist", str(tmp_path), download=True)) == 5


def test_torchvision_missing_files_name_layout_and_download(tmp_path):
    formats.write_torchvision_idx(tmp_path, "MNIST", 3, 2, seed=0)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with raises_one_line(r"missing t10k-labels-idx1-ubyte in .*MNIST/raw.*--download"):
        open_source("mnist", str(tmp_path))


def test_torchvision_empty_root_says_what_to_place(tmp_path):
    with raises_one_line(r"KMNIST not found: missing train-images-idx3-ubyte, .*ROOT/KMNIST/raw/"):
        open_source("kmnist", str(tmp_path / "nothing"))


def test_torchvision_gz_only_says_to_decompress(tmp_path):
    formats.write_torchvision_idx(tmp_path, "MNIST", 3, 2, seed=0, compressed=True)
    with raises_one_line("gunzip"):
        open_source("mnist", str(tmp_path))


def test_torchvision_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with raises_one_line(r"could not get MNIST into .*Error downloading train-images-idx3-ubyte.gz"):
        open_source("mnist", str(tmp_path), download=True)


def test_torchvision_corrupt_idx_file(tmp_path):
    formats.write_torchvision_idx(tmp_path, "MNIST", 3, 2, seed=0)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x09\x07" + bytes(64))
    with raises_one_line("not valid IDX files"):
        open_source("mnist", str(tmp_path))


# --- Galaxy10 DECals -------------------------------------------------------------------------------


def test_galaxy10_returns_written_pixels_in_chunks(tmp_path):
    path = tmp_path / "my_galaxies.h5"
    images, labels = formats.write_galaxy10_h5(path, n=12, seed=1, size=16)
    source = open_source("galaxy10", str(path))
    assert source.splits is None
    assert source.class_names == galaxy10.GALAXY10_CLASSES and len(source.class_names) == 10
    np.testing.assert_array_equal(source.labels, labels.astype(np.int64))
    np.testing.assert_array_equal(source.keys, np.arange(12))
    assert source.details == {"file_name": "my_galaxies.h5", "size_bytes": path.stat().st_size}
    # Runs and gaps, a single row, the last row, and everything.
    for chunk in ([0, 1, 2, 5, 6, 9], [4], [11], list(range(12))):
        read = source.read(np.array(chunk, dtype=np.int64))
        assert len(read) == len(chunk)
        for index, image in zip(chunk, read):
            assert image.shape == (16, 16, 3) and image.dtype == np.uint8
            np.testing.assert_array_equal(image, images[index])
    assert source.read(np.array([], dtype=np.int64)) == []


def test_galaxy10_reads_runs_as_slices():
    assert galaxy10._runs(np.array([0, 1, 2, 5, 6, 9])) == [(0, 3), (5, 7), (9, 10)]
    assert galaxy10._runs(np.array([7])) == [(7, 8)]


def test_galaxy10_real_size_default(tmp_path):
    images, _ = formats.write_galaxy10_h5(tmp_path / "g.h5", n=2, seed=0)
    assert images.shape == (2, 256, 256, 3)
    np.testing.assert_array_equal(
        open_source("galaxy10", str(tmp_path / "g.h5")).read(np.array([1]))[0], images[1]
    )


def _known_file(tmp_path, monkeypatch, sha: str | None = None) -> Path:
    """A small ``Galaxy10_DECals.h5`` whose hash stands in for the published one (or ``sha``)."""
    path = tmp_path / galaxy10.GALAXY10_FILE_NAME
    formats.write_galaxy10_h5(path, n=4, seed=2, size=8)
    monkeypatch.setattr(galaxy10, "GALAXY10_SHA256", sha or hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def test_galaxy10_known_file_hash_is_verified_and_kept(tmp_path, monkeypatch):
    path = _known_file(tmp_path, monkeypatch)
    source = open_source("galaxy10", str(tmp_path))  # a folder finds Galaxy10_DECals.h5 inside
    assert source.details["sha256"] == galaxy10.GALAXY10_SHA256
    assert source.details["file_name"] == "Galaxy10_DECals.h5"
    assert source.details["size_bytes"] == path.stat().st_size


def test_galaxy10_hash_mismatch_says_redownload(tmp_path, monkeypatch):
    _known_file(tmp_path, monkeypatch, sha="0" * 64)
    with raises_one_line(r"SHA-256 .* incomplete or corrupt; delete it and download it again"):
        open_source("galaxy10", str(tmp_path / "Galaxy10_DECals.h5"))


def test_galaxy10_published_hash_is_astronn_s():
    assert (
        galaxy10.GALAXY10_SHA256 == "19AEFC477C41BB7F77FF07599A6B82A038DC042F889A111B0D4D98BB755C1571".lower()
    )


def test_file_sha256_streams_blocks(tmp_path, monkeypatch):
    path = tmp_path / "blob"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    monkeypatch.setattr(galaxy10, "HASH_BLOCK_BYTES", 64)
    assert galaxy10.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_galaxy10_missing_file_shows_astronn_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with raises_one_line(r"load_galaxy10\(\).*\.astroNN/datasets/Galaxy10_DECals\.h5"):
        open_source("galaxy10")


def test_galaxy10_default_path_is_astronn_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _known_file(tmp_path / ".astroNN" / "datasets", monkeypatch)
    assert len(open_source("galaxy10")) == 4


def test_galaxy10_download_without_astronn_says_how(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "astroNN", None)  # makes the import fail
    with raises_one_line("pip install astroNN"):
        open_source("galaxy10", str(tmp_path / "Galaxy10_DECals.h5"), download=True)


def test_galaxy10_download_goes_through_astronn(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".astroNN"
    calls = []

    def load_galaxy10():
        calls.append(1)
        _known_file(cache / "datasets", monkeypatch)

    package = types.ModuleType("astroNN")
    monkeypatch.setitem(sys.modules, "astroNN", package)
    monkeypatch.setitem(sys.modules, "astroNN.config", types.SimpleNamespace(astroNN_CACHE_DIR=str(cache)))
    monkeypatch.setitem(sys.modules, "astroNN.datasets", types.SimpleNamespace(load_galaxy10=load_galaxy10))
    assert len(open_source("galaxy10", download=True)) == 4
    assert calls == [1]
    with raises_one_line("leave the input path unset"):
        open_source("galaxy10", str(tmp_path / "elsewhere.h5"), download=True)


def _h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


GOOD_IMAGES = np.zeros((3, 4, 4, 3), np.uint8)
GOOD_LABELS = np.array([0, 1, 9], np.uint8)


@pytest.mark.parametrize(
    "datasets,problem",
    [
        ({"ans": GOOD_LABELS}, "no dataset 'images'"),
        ({"images": GOOD_IMAGES}, "no dataset 'ans'"),
        ({"images": GOOD_IMAGES.astype(np.float32), "ans": GOOD_LABELS}, "'images' is .*float32"),
        ({"images": GOOD_IMAGES[..., 0], "ans": GOOD_LABELS}, r"'images' is \(3, 4, 4\)"),
        ({"images": GOOD_IMAGES[..., :1], "ans": GOOD_LABELS}, r"'images' is \(3, 4, 4, 1\)"),
        ({"images": GOOD_IMAGES, "ans": GOOD_LABELS[:, None]}, r"'ans' is \(3, 1\)"),
        ({"images": GOOD_IMAGES, "ans": GOOD_LABELS.astype(np.float32)}, "'ans' is .*float32"),
        ({"images": GOOD_IMAGES, "ans": GOOD_LABELS[:2]}, "3 rows but 'ans' 2"),
        ({"images": GOOD_IMAGES, "ans": np.array([0, 1, 10], np.uint8)}, "labels 0..10"),
    ],
)
def test_galaxy10_wrong_layout_names_dataset_and_expected_layout(tmp_path, datasets, problem):
    path = _h5(tmp_path / "bad.h5", **datasets)
    with raises_one_line(f"{problem}.*expected astroNN's layout"):
        open_source("galaxy10", str(path))


def test_galaxy10_not_hdf5(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file")
    with raises_one_line("not a readable HDF5 file"):
        open_source("galaxy10", str(tmp_path / "bad.h5"))


# --- image folder ----------------------------------------------------------------------------------


def _check_folder(source, written):
    assert source.keys.tolist() == list(written)
    np.testing.assert_array_equal(source.labels, [w.label for w in written.values()])
    images = source.read(np.arange(len(written)))
    for (key, expected), image in zip(written.items(), images):
        assert image.dtype == np.uint8 and image.shape == expected.pixels.shape, key
        if expected.lossless:
            np.testing.assert_array_equal(image, expected.pixels, err_msg=key)
        else:
            assert np.abs(image.astype(int) - expected.pixels).mean() < 8, key


def test_folder_class_subdirs_png_and_jpeg(tmp_path):
    written = formats.write_image_folder(tmp_path, 4, classes=("zebra", "ant"), size=(12, 10), seed=5)
    source = open_source("folder", str(tmp_path))
    assert source.class_names == ["ant", "zebra"]
    assert source.splits is None
    assert {Path(k).suffix for k in written} == {".png", ".jpg"}
    _check_folder(source, written)
    assert source.details["layout"] == "class folders"


def test_folder_chunk_reads_match_full_read(tmp_path):
    written = formats.write_image_folder(tmp_path, 3, classes=("a", "b", "c"), seed=1)
    source = open_source("folder", str(tmp_path))
    whole = source.read(np.arange(len(written)))
    for got, index in zip(source.read(np.array([1, 4, 8])), (1, 4, 8)):
        np.testing.assert_array_equal(got, whole[index])


def test_folder_flat_is_one_class_named_after_it(tmp_path):
    root = tmp_path / "moons"
    written = formats.write_image_folder(root, 3, classes=None, seed=2)
    source = open_source("folder", str(root))
    assert source.class_names == ["moons"]
    assert source.details["layout"] == "flat"
    _check_folder(source, written)


@pytest.mark.parametrize("mode,channels", [("L", 1), ("I;16", 1), ("RGBA", 3), ("RGB", 3)])
def test_folder_modes_decode_to_grey_or_rgb(tmp_path, mode, channels):
    written = formats.write_image_folder(tmp_path, 2, mode=mode, seed=3, vary_size=True)
    assert {w.pixels.shape[2] for w in written.values()} == {channels}
    _check_folder(open_source("folder", str(tmp_path)), written)


def test_folder_palette_image_becomes_rgb(tmp_path):
    rgb = formats.write_image_folder(tmp_path / "src", 1, classes=None, seed=4)["img_000.png"].pixels
    palette = Image.fromarray(rgb).quantize(16)
    (tmp_path / "flat").mkdir()
    palette.save(tmp_path / "flat" / "p.png")
    image = open_source("folder", str(tmp_path / "flat")).read(np.array([0]))[0]
    np.testing.assert_array_equal(image, np.asarray(palette.convert("RGB")))


def test_folder_listing_rules(tmp_path):
    formats.write_image_folder(tmp_path, 2, classes=("a",), seed=0)
    (tmp_path / "a" / "img_000.png").rename(tmp_path / "a" / "UPPER.PNG")
    (tmp_path / "a" / "deeper").mkdir()
    formats.write_image_folder(tmp_path / "a" / "deeper", 1, classes=None, seed=1)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "._img_001.jpg").write_bytes(b"macOS sidecar")
    (tmp_path / ".hidden").mkdir()
    source = open_source("folder", str(tmp_path))
    assert source.class_names == ["a"]
    assert source.keys.tolist() == ["a/UPPER.PNG", "a/img_001.jpg", "a/deeper/img_000.png"]


def test_folder_undecodable_file_names_it(tmp_path):
    formats.write_image_folder(tmp_path, 2, classes=("a",), seed=0)
    (tmp_path / "a" / "img_000.png").write_bytes(b"\x89PNG truncated")
    source = open_source("folder", str(tmp_path))  # listing does not decode
    with raises_one_line(r"cannot decode image .*a/img_000\.png .*remove or replace the file"):
        source.read(np.array([0]))


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.write_text("x"), "is not a directory"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: (root / "a").mkdir(parents=True), r"class folder .*a has no images"),
    ],
)
def test_folder_bad_inputs(tmp_path, make, problem):
    root = tmp_path / "data"
    make(root)
    with raises_one_line(problem):
        open_source("folder", str(root))


def test_folder_loose_images_beside_class_folders(tmp_path):
    formats.write_image_folder(tmp_path, 1, classes=("a",), seed=0)
    formats.write_image_folder(tmp_path, 1, classes=None, seed=1)
    with raises_one_line("beside its class folders .*move them into a class folder"):
        open_source("folder", str(tmp_path))


def test_folder_needs_a_path():
    with raises_one_line("needs an input path"):
        open_source("folder", None)


def test_decode_image_direct(tmp_path):
    written = formats.write_image_folder(tmp_path, 1, classes=None, mode="L", seed=9)
    np.testing.assert_array_equal(
        folder_source.decode_image(tmp_path / "img_000.png"), written["img_000.png"].pixels
    )


# --- scikit-learn digits ---------------------------------------------------------------------------


def test_digits_scaled_exactly():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    source = open_source("digits")
    assert len(source) == 1797
    assert source.class_names == [str(d) for d in range(10)]
    assert source.splits is None
    np.testing.assert_array_equal(source.labels, bunch.target)
    indices = np.array([0, 1, 500, 1796])
    for index, image in zip(indices, source.read(indices)):
        assert image.shape == (8, 8, 1) and image.dtype == np.uint8
        expected = [[int(v * 255 / 16 + 0.5) for v in row] for row in bunch.images[index]]
        np.testing.assert_array_equal(image[..., 0], expected)
    everything = np.stack(source.read(np.arange(1797)))
    assert everything.min() == 0 and everything.max() == 255
