"""MNIST, Fashion-MNIST and KMNIST through torchvision's own dataset classes.

Going through ``torchvision.datasets`` (rather than parsing IDX files ourselves) keeps the layout, the
download mirrors and the checksums torchvision's users already know. torchvision 0.29 reads the
*uncompressed* IDX files ``ROOT/<Class>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; the ``.gz``
archives alone are only used by ``download=True`` (which extracts them). It wants all four files even
to open one split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

import numpy as np

from ganforge.data.sources.base import Source
from ganforge.errors import GanforgeError

if TYPE_CHECKING:  # imported where used (torchvision loads on demand); KMNIST and FashionMNIST are MNISTs
    from torchvision.datasets import MNIST

DATA_ROOT_ENV = "GANFORGE_DATA_ROOT"
DEFAULT_ROOT = "~/.cache/ganforge/torchvision"


def open_mnist(input_path: str | None, download: bool) -> Source:
    """Open MNIST (handwritten digits, 60k train + 10k test, 28x28 grey).

    Args:
        input_path: torchvision root holding ``MNIST/raw/``; None means ``$GANFORGE_DATA_ROOT`` or
            ``~/.cache/ganforge/torchvision``.
        download: let torchvision fetch missing files (needs network).

    Returns:
        A ``Source`` with splits ``train``/``test`` and torchvision's class names.
    """
    from torchvision.datasets import MNIST

    return _open_idx("mnist", MNIST, input_path, download)


def open_fashion_mnist(input_path: str | None, download: bool) -> Source:
    """Open Fashion-MNIST (Zalando clothing, 60k train + 10k test, 28x28 grey).

    Args:
        input_path: torchvision root holding ``FashionMNIST/raw/``; None as for ``open_mnist``.
        download: let torchvision fetch missing files (needs network).

    Returns:
        A ``Source`` with splits ``train``/``test`` and torchvision's class names.
    """
    from torchvision.datasets import FashionMNIST

    return _open_idx("fashion-mnist", FashionMNIST, input_path, download)


def open_kmnist(input_path: str | None, download: bool) -> Source:
    """Open KMNIST (Kuzushiji cursive Japanese, 60k train + 10k test, 28x28 grey).

    Args:
        input_path: torchvision root holding ``KMNIST/raw/``; None as for ``open_mnist``.
        download: let torchvision fetch missing files (needs network).

    Returns:
        A ``Source`` with splits ``train``/``test`` and torchvision's class names.
    """
    from torchvision.datasets import KMNIST

    return _open_idx("kmnist", KMNIST, input_path, download)


def resolve_root(input_path: str | None) -> Path:
    """The torchvision root: ``input_path``, else ``$GANFORGE_DATA_ROOT``, else the user cache."""
    root = input_path or os.environ.get(DATA_ROOT_ENV) or DEFAULT_ROOT
    return Path(root).expanduser()


def _open_idx(name: str, dataset_cls: type[MNIST], input_path: str | None, download: bool) -> Source:
    root = resolve_root(input_path)
    train = _load_split(dataset_cls, root, train=True, download=download)
    # The train split already downloaded (or found) all four files; never ask twice.
    test = _load_split(dataset_cls, root, train=False, download=False)
    raw = root / dataset_cls.__name__ / "raw"
    for split, ds in (("train", train), ("t10k", test)):
        _check_split(ds, raw, split, len(dataset_cls.classes))
    if train.data.shape[1:] != test.data.shape[1:]:
        raise GanforgeError(
            f"{raw}: train images are {tuple(train.data.shape[1:])} but t10k images {tuple(test.data.shape[1:])}; "
            "replace the IDX files with a matching set"
        )
    # (N, 28, 28) uint8 -> (N, 28, 28, 1): ingest expects a channel axis.
    images = np.concatenate([train.data.numpy(), test.data.numpy()])[..., None]
    labels = np.concatenate([train.targets.numpy(), test.targets.numpy()]).astype(np.int64)
    splits = np.array(["train"] * len(train.targets) + ["test"] * len(test.targets))
    keys = np.array(
        [f"train/{i}" for i in range(len(train.targets))] + [f"test/{i}" for i in range(len(test.targets))]
    )

    def read(indices: np.ndarray) -> list[np.ndarray]:
        return list(images[np.asarray(indices, dtype=np.int64)])

    return Source(
        name=name,
        class_names=list(dataset_cls.classes),
        labels=labels,
        splits=splits,
        read=read,
        keys=keys,
        details={"torchvision_class": dataset_cls.__name__, "raw_folder": f"{dataset_cls.__name__}/raw"},
    )


def _check_split(ds, raw: Path, split: str, n_classes: int) -> None:
    """One split's images and labels agree in count, labels name classes, images are not empty.

    torchvision reads the two files independently and checks neither, so a short label file would
    otherwise cost the images it does not label.

    Raises:
        GanforgeError: naming the file and the mismatch.
    """
    images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
    n_img, n_lab = int(ds.data.shape[0]), int(ds.targets.shape[0])
    fix = "replace them with the original files (or delete them and re-run with --download)"
    if n_img != n_lab:
        raise GanforgeError(f"{raw}: {images} has {n_img} images but {labels} has {n_lab} labels; {fix}")
    if n_img == 0 or 0 in ds.data.shape[1:]:
        raise GanforgeError(f"{raw}/{images} holds no image pixels (shape {tuple(ds.data.shape)}); {fix}")
    if n_lab and (int(ds.targets.min()) < 0 or int(ds.targets.max()) >= n_classes):
        raise GanforgeError(
            f"{raw}/{labels} holds labels {int(ds.targets.min())}..{int(ds.targets.max())}, outside 0..{n_classes - 1} "
            f"({n_classes} classes); {fix}"
        )


def _load_split(dataset_cls: type[MNIST], root: Path, train: bool, download: bool):
    """Build the torchvision dataset, turning its errors into one-line ``GanforgeError``s."""
    try:
        return dataset_cls(root=str(root), train=train, download=download)
    except (RuntimeError, URLError, OSError) as err:
        raw = root / dataset_cls.__name__ / "raw"
        missing = _missing_files(dataset_cls, raw)
        if missing and not download:
            raise GanforgeError(_missing_message(dataset_cls, raw, missing)) from err
        if not missing and isinstance(err, RuntimeError):
            # Every file is there: torchvision's view() of a header that disagrees with the data.
            raise _invalid_idx(dataset_cls, root, err) from err
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GanforgeError(
            f"could not get {dataset_cls.__name__} into {raw} ({first_line}); on a machine without network "
            f"place the uncompressed IDX files there ({', '.join(_expected_files(dataset_cls))})"
        ) from err
    except (AssertionError, TypeError, ValueError, IndexError, KeyError, OverflowError, MemoryError) as err:
        # torchvision's IDX parser asserts on the magic number and checks dtype and rank.
        raise _invalid_idx(dataset_cls, root, err) from err


def _invalid_idx(dataset_cls: type[MNIST], root: Path, err: BaseException) -> GanforgeError:
    reason = " ".join(str(err).split())[:160] or type(err).__name__
    return GanforgeError(
        f"{dataset_cls.__name__} files under {root / dataset_cls.__name__ / 'raw'} are not valid IDX "
        f"files ({reason}); delete them and re-run with --download, or replace them with the original files"
    )


def _expected_files(dataset_cls: type[MNIST]) -> list[str]:
    # resources hold the archive names (``*.gz``); torchvision reads them without the suffix.
    return [os.path.splitext(os.path.basename(url))[0] for url, _md5 in dataset_cls.resources]


def _missing_files(dataset_cls: type[MNIST], raw: Path) -> list[str]:
    return [name for name in _expected_files(dataset_cls) if not (raw / name).is_file()]


def _missing_message(dataset_cls: type[MNIST], raw: Path, missing: list[str]) -> str:
    gzipped = [name for name in missing if (raw / f"{name}.gz").is_file()]
    if gzipped:
        fix = f"decompress them (gunzip {raw}/*.gz): torchvision reads only the uncompressed files"
    else:
        fix = (
            f"place the uncompressed IDX files in {raw}/ (torchvision's layout ROOT/{dataset_cls.__name__}/raw/"
            ") or give another ROOT as the input path, or re-run with --download on a machine with network"
        )
    return f"{dataset_cls.__name__} not found: missing {', '.join(missing)} in {raw}; {fix}"
