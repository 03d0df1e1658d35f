"""``ganforge datasets show``: the manifest, a class histogram and a sample grid."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ganforge.data.loader import load, read_manifest


def print_dataset(uri: str, console: Console | None = None) -> dict:
    """Print the manifest summary and per-split class histograms; returns the manifest."""
    console = console or Console()
    m = read_manifest(uri)
    console.print(f"[bold]{uri}[/bold]  fingerprint {m['fingerprint']}")
    console.print(
        f"source {m['source']['name']}, {m['image']['height']}x{m['image']['width']}x{m['image']['channels']}, "
        f"{m['counts']['total']} images, {len(m['shards'])} shard(s), schema v{m['schema_version']}"
    )
    console.print("options " + json.dumps(m["options"], sort_keys=True))
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


def save_grid(uri: str, path: str, split: str = "train", n: int = 64) -> None:
    """Save the first ``n`` images of ``split`` as a grid PNG (torchvision.utils.make_grid)."""
    import math

    from torchvision.utils import save_image

    data = load(uri, split=split)
    batch = data.images[:n].float() / 255.0
    save_image(batch, path, nrow=max(1, int(math.sqrt(len(batch)))), padding=2)
