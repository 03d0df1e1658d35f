"""Writers of small but *real* on-disk dataset formats, for tests.

Each writer produces the bytes the real distribution has (IDX magic numbers, astroNN's HDF5 layout,
PNG/JPEG files in class folders), seeded, so a source opened on them can be checked pixel for pixel.
Plain functions, no pytest fixtures: any test module can import them (``import formats`` with
``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

# IDX magic: two zero bytes, the element type (0x08 = unsigned byte) and the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array of rank 1 or 3 in the IDX format (big-endian dimension sizes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_torchvision_idx(
    root: str | Path,
    dataset: str = "MNIST",
    n_train: int = 20,
    n_test: int = 10,
    seed: int = 0,
    compressed: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write the four IDX files where torchvision 0.29 looks for them: ``root/<dataset>/raw/``.

    Offline, torchvision reads only the uncompressed files (``train-images-idx3-ubyte`` ...);
    ``compressed=True`` writes only the ``.gz`` archives instead, as they are distributed, which
    torchvision does not read without ``download=True``.

    Args:
        root: the torchvision root.
        dataset: ``MNIST``, ``FashionMNIST`` or ``KMNIST`` (the torchvision class name).
        n_train: images in the train split.
        n_test: images in the test split.
        seed: seeds images and labels.
        compressed: write ``*.gz`` only.

    Returns:
        (train_images (n_train, 28, 28) uint8, train_labels (n_train,) uint8, test_images, test_labels).
    """
    if dataset not in TORCHVISION_DATASETS:
        raise ValueError(f"dataset must be one of {TORCHVISION_DATASETS}, not {dataset!r}")
    rng = np.random.default_rng(seed)
    raw = Path(root) / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = _patterned(rng, (n, 28, 28))
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if compressed:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
        out += [images, labels]
    return tuple(out)


def write_galaxy10_h5(
    path: str | Path, n: int = 8, seed: int = 0, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Write an HDF5 file in astroNN's Galaxy10 DECals layout.

    ``images`` (n, size, size, 3) uint8 and ``ans`` (n,) uint8, plus the ``ra``/``dec``/``redshift``/
    ``pxscale`` columns the real file also carries. The real file has ``size=256``.

    Args:
        path: the file to write (parent folders are created).
        n: number of galaxies.
        seed: seeds images and labels.
        size: image side in pixels; smaller than 256 only to keep tests fast.

    Returns:
        (images, labels) exactly as written.
    """
    import h5py

    rng = np.random.default_rng(seed)
    images = _patterned(rng, (n, size, size, 3))
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("ans", data=labels)
        for column in ("ra", "dec", "redshift", "pxscale"):
            f.create_dataset(column, data=rng.random(n))
    return images, labels


class WrittenImage(NamedTuple):
    """One file written by ``write_image_folder``.

    Attributes:
        label: index of its class in the sorted class names.
        class_name: its class folder's name.
        pixels: what the folder source should return, (H, W, C) uint8, C = 1 for grey modes else 3; for
            a lossy file (JPEG) the pixels before compression.
        lossless: True for PNG (compare exactly), False for JPEG (compare with a tolerance).
    """

    label: int
    class_name: str
    pixels: np.ndarray
    lossless: bool


def write_image_folder(
    root: str | Path,
    n_per_class: int = 3,
    classes: tuple[str, ...] | None = ("a", "b"),
    size: tuple[int, int] = (16, 20),
    mode: str = "RGB",
    seed: int = 0,
    vary_size: bool = False,
) -> dict[str, WrittenImage]:
    """Write images in class sub-folders (torchvision ImageFolder layout), or flat.

    Files alternate PNG and JPEG where the mode allows JPEG (``RGB``, ``L``); ``RGBA`` and ``I;16``
    are PNG only. Expected pixels follow the folder source's rules: RGBA composited on black, 16-bit
    grey scaled to 8-bit with rounding.

    Args:
        root: the folder to fill.
        n_per_class: files per class.
        classes: class folder names; None writes ``n_per_class`` files flat into ``root``.
        size: (H, W) of every image.
        mode: PIL mode of the written files: ``RGB``, ``L``, ``RGBA`` or ``I;16``.
        seed: seeds the pixels.
        vary_size: give each image a different size near ``size``.

    Returns:
        {relative posix path: WrittenImage}, in the order the folder source lists them.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    written: dict[str, WrittenImage] = {}
    for label, class_name in enumerate(sorted(classes) if classes is not None else [None]):
        folder = root / class_name if class_name is not None else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            h, w = size
            if vary_size:
                h, w = h + int(rng.integers(0, 9)), w + int(rng.integers(0, 9))
            jpeg = mode in ("RGB", "L") and i % 2 == 1
            stored, expected = _image_in_mode(rng, (h, w), mode)
            name = f"img_{i:03d}.{'jpg' if jpeg else 'png'}"
            # uint16 (H, W) arrays become PIL's "I;16", uint8 (H, W, 4) "RGBA": the mode follows the array.
            Image.fromarray(stored).save(folder / name, **({"quality": 95, "subsampling": 0} if jpeg else {}))
            rel = (folder / name).relative_to(root).as_posix()
            written[rel] = WrittenImage(label, class_name or root.name, expected, not jpeg)
    return dict(sorted(written.items()))


def _image_in_mode(rng: np.random.Generator, hw: tuple[int, int], mode: str):
    """(array to store, expected (H, W, C) uint8 the source should decode) for one image."""
    if mode == "RGB":
        rgb = _patterned(rng, (1, *hw, 3))[0]
        return rgb, rgb
    if mode == "L":
        grey = _patterned(rng, (1, *hw))[0]
        return grey, grey[..., None]
    if mode == "RGBA":
        rgba = _patterned(rng, (1, *hw, 4))[0]
        alpha = rgba[..., 3:].astype(np.uint32)
        composited = (rgba[..., :3].astype(np.uint32) * alpha + 127) // 255
        return rgba, composited.astype(np.uint8)
    if mode == "I;16":
        grey16 = rng.integers(0, 65536, size=hw, dtype=np.uint16)
        grey8 = (grey16.astype(np.uint32) * 255 + 32767) // 65535
        return grey16, grey8.astype(np.uint8)[..., None]
    raise ValueError(f"mode must be RGB, L, RGBA or I;16, not {mode!r}")


def _patterned(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth seeded waves plus noise: varied enough to catch a transposed or shifted read, smooth
    enough that JPEG keeps it recognisable."""
    n, h, w = shape[0], shape[1], shape[2]
    channels = shape[3] if len(shape) == 4 else 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((n, h, w, channels), dtype=np.uint8)
    for i in range(n):
        for c in range(channels):
            fy, fx, phase = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4), rng.uniform(0, 2 * np.pi)
            wave = 127.5 + 100 * np.sin(fy * yy + fx * xx + phase)
            noise = rng.integers(-20, 21, size=(h, w))
            out[i, :, :, c] = np.clip(np.rint(wave) + noise, 0, 255).astype(np.uint8)
    return out if len(shape) == 4 else out[..., 0]


def write_idx_split_files(
    root: str | Path, dataset: str, files: dict[str, bytes]
) -> Path:
    """Write raw IDX files (bytes as given, valid or not) into ``root/<dataset>/raw/``.

    Args:
        root: the torchvision root.
        dataset: the torchvision class name (``MNIST`` ...).
        files: {file name such as ``train-labels-idx1-ubyte``: its bytes}.

    Returns:
        The ``raw`` folder.
    """
    raw = Path(root) / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    return raw


def write_galaxy10_arrays(path: str | Path, datasets: dict[str, np.ndarray]) -> Path:
    """Write an HDF5 file with exactly ``datasets`` ({name: array}), for malformed Galaxy10 layouts."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, array in datasets.items():
            f.create_dataset(name, data=array)
    return path


# --- the data of seed 001 (Generative Deep Learning): Quick, Draw!, CIFAR-10 binary, CelebA -------------------

QUICKDRAW_PREFIX = "full_numpy_bitmap_"


def write_quickdraw_npy(folder: str | Path, category: str, n: int = 6, seed: int = 0) -> np.ndarray:
    """Write ``folder/full_numpy_bitmap_<category>.npy`` as Google publishes it: uint8 (n, 784), each row a
    28x28 drawing row after row.

    Returns:
        The (n, 784) array written.
    """
    rng = np.random.default_rng(seed)
    drawings = _patterned(rng, (n, 28, 28)).reshape(n, 784)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{QUICKDRAW_PREFIX}{category}.npy", drawings, allow_pickle=False)
    return drawings


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_RECORD = 1 + 3 * 32 * 32


def cifar10_record(label: int, image: np.ndarray) -> bytes:
    """One record of CIFAR-10's binary version: the label byte, then the red, green and blue 32x32 planes."""
    return bytes([label]) + np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.uint8).tobytes()


def write_cifar10_bin(
    root: str | Path, n_per_batch: tuple[int, ...] = (3, 2, 2, 1, 2), n_test: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write ``root/cifar-10-batches-bin/`` as ``cifar-10-binary.tar.gz`` extracts it (the real batches hold
    10,000 records each): ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin`` and
    ``batches.meta.txt`` (the class names, one per line, then blank lines, as in the release).

    Returns:
        (images (N, 32, 32, 3) uint8, labels (N,) int64, splits (N,) str), in file order (train batches, then test).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    images, labels, splits = [], [], []
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, (*n_per_batch, n_test)):
        batch = _patterned(rng, (n, 32, 32, 3))
        batch_labels = rng.integers(0, 10, size=n)
        (folder / name).write_bytes(b"".join(cifar10_record(int(y), x) for x, y in zip(batch, batch_labels)))
        images.append(batch)
        labels.append(batch_labels)
        splits += ["test" if name == "test_batch.bin" else "train"] * n
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), np.array(splits)


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
    "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()


class CelebaImage(NamedTuple):
    """One image written by ``write_celeba``.

    Attributes:
        pixels: (H, W, 3) uint8 before JPEG compression.
        attributes: (40,) bool, in ``CELEBA_ATTRIBUTES`` order.
        partition: 0 (train), 1 (validation) or 2 (test).
    """

    pixels: np.ndarray
    attributes: np.ndarray
    partition: int


def write_celeba(
    root: str | Path, n: int = 8, size: tuple[int, int] = (26, 22), seed: int = 0, partition: bool = True,
    csv: bool = False,
) -> dict[str, CelebaImage]:
    """Write a CelebA folder as the release lays it out: ``img_align_celeba/000001.jpg`` ... (the release's are
    218x178 JPEGs), ``list_attr_celeba.txt`` (the count, the 40 names, then a file name and right-aligned
    1/-1 per attribute) and ``list_eval_partition.txt`` (file name and 0/1/2). ``csv=True`` writes Kaggle's
    copy instead: the images one folder deeper and the two tables as ``.csv`` with ``image_id`` headers.

    Args:
        root: the folder to fill.
        n: number of images; partitions cycle 0, 0, 1, 2 so that every split has some.
        size: (H, W) of every image.
        seed: seeds pixels and attributes.
        partition: write the partition table.
        csv: Kaggle's layout.

    Returns:
        {file name: CelebaImage}, in the tables' order.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    images = root / ("img_align_celeba/img_align_celeba" if csv else "img_align_celeba")
    images.mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        pixels = _patterned(rng, (1, *size, 3))[0]
        Image.fromarray(pixels).save(images / name, quality=95)
        written[name] = CelebaImage(pixels, rng.random(len(CELEBA_ATTRIBUTES)) < 0.5, (0, 0, 1, 2)[i % 4])
    if csv:
        rows = [",".join(["image_id", *CELEBA_ATTRIBUTES])]
        rows += [",".join([name, *("1" if a else "-1" for a in img.attributes)]) for name, img in written.items()]
        (root / "list_attr_celeba.csv").write_text("\n".join(rows) + "\n")
        if partition:
            parts = ["image_id,partition"] + [f"{name},{img.partition}" for name, img in written.items()]
            (root / "list_eval_partition.csv").write_text("\n".join(parts) + "\n")
        return written
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [name + " " + " ".join(" 1" if a else "-1" for a in img.attributes) for name, img in written.items()]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        parts = "".join(f"{name} {img.partition}\n" for name, img in written.items())
        (root / "list_eval_partition.txt").write_text(parts)
    return written
