"""``ganforge datasets show``: the manifest, a class histogram and a sample grid."""

from __future__ import annotations

import json
import os
import uuid

from rich.console import Console
from rich.table import Table

from ganforge.data.loader import load, read_manifest
from ganforge.errors import GanforgeError


def print_dataset(uri: str, console: Console | None = None, split: str | None = None) -> dict:
    """Print the manifest summary and per-split class histograms; returns the manifest.

    Args:
        uri: the dataset.
        console: where to print; None: stdout.
        split: a split the caller will read next; checked before anything is printed.

    Raises:
        GanforgeError: no readable dataset at ``uri``, or it lacks ``split``.
    """
    console = console or Console()
    m = read_manifest(uri)
    if split is not None and split not in m["counts"]["splits"]:
        have = ", ".join(sorted(m["counts"]["splits"]))
        raise GanforgeError(f"dataset {uri} has no split {split!r} (it has: {have}); pass --split with one of those")
    console.print(f"[bold]{uri}[/bold]  fingerprint {m['fingerprint']}")
    console.print(
        f"source {m['source']['name']}, {m['image']['height']}x{m['image']['width']}x{m['image']['channels']}, "
        f"{m['counts']['total']} images, {len(m['shards'])} shard(s), schema v{m['schema_version']}"
    )
    console.print("options " + json.dumps(m["options"], sort_keys=True))
    if m.get("attributes"):  # per-image yes/no attributes (celeba): their names, for reconstruct --attribute
        console.print(f"attributes ({len(m['attributes'])}): " + ", ".join(m["attributes"]), markup=False)
    splits = list(m["counts"]["splits"])
    table = Table("class", *splits, "histogram (train)" if "train" in splits else "histogram")
    hist_split = "train" if "train" in splits else splits[0]
    top = max(m["counts"]["classes"][hist_split].values(), default=1)
    for name in m["class_names"]:
        row = [str(m["counts"]["classes"].get(s, {}).get(name, 0)) for s in splits]
        count = m["counts"]["classes"][hist_split].get(name, 0)
        table.add_row(name, *row, "#" * max(0, round(30 * count / top)))
    console.print(table)
    return m


GRID_MAX = 4096  # images in one grid: beyond this the PNG is unreadably large anyway


def check_n(n: int) -> None:
    """Raises GanforgeError unless ``n`` is a grid size of 1..GRID_MAX images."""
    if not 1 <= n <= GRID_MAX:
        raise GanforgeError(f"--n must be between 1 and {GRID_MAX} images, got {n}; e.g. --n 64")


def check_grid(path: str, n: int) -> None:
    """Refuse a grid request that cannot succeed, before any dataset is read.

    Raises:
        GanforgeError: ``n`` outside 1..GRID_MAX, a format PIL cannot write, or a path that is a
            directory or in a folder that is missing or not writable.
    """
    from PIL import Image

    check_n(n)
    if os.path.isdir(path):
        raise GanforgeError(f"--grid {path} is a directory; give a file name such as {os.path.join(path, 'grid.png')}")
    Image.init()
    ext = os.path.splitext(path)[1].lower()
    if ext not in Image.registered_extensions() or Image.registered_extensions()[ext] not in Image.SAVE:
        raise GanforgeError(f"cannot save a grid as {path!r} (unknown image format {ext or 'none'}); end it in .png")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise GanforgeError(f"--grid folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise GanforgeError(f"cannot write under {folder}; choose a --grid path you can write to")


def save_grid(uri: str, path: str, split: str = "train", n: int = 64) -> None:
    """Save the first ``n`` images of ``split`` as a grid PNG (torchvision.utils.make_grid).

    Written to a temporary name and renamed, so a failure leaves no partial file.

    Raises:
        GanforgeError: bad ``path``/``n`` (see :func:`check_grid`) or an unreadable dataset.
    """
    import math

    from PIL import Image
    from torchvision.utils import save_image

    check_grid(path, n)
    data = load(uri, split=split)
    batch = data.images[:n].float() / 255.0
    fmt = Image.registered_extensions()[os.path.splitext(path)[1].lower()]
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_image(batch, tmp, format=fmt, nrow=max(1, int(math.sqrt(len(batch)))), padding=2)
        os.replace(tmp, path)
    except OSError as err:
        raise GanforgeError(f"cannot write grid {path} ({err.strerror or err}); choose another --grid path") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
