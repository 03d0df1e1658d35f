"""README's "From the seeds" commands run as written, on small files in each seed's own data format.

The table's ``curl`` and ``tar`` lines fetch the seeds' data; here each download is replaced by a small file
of the same format at the same path (``tests/formats.py``), and ``--download`` finds torchvision's files
already in place (``$GANFORGE_DATA_ROOT``). Every ``ganforge`` line then runs as the README prints it,
``train`` with one step of 4 images (and a grid of 4) appended (the last value of a repeated flag wins), in the order given,
in one working folder per row. Each must succeed, no seed preset may be refused for its image size, and no
training may hold images out silently (``--val-fraction 0`` everywhere: no hold-out warning).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ganforge.cli import app
from tests import formats

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = ["--steps", "1", "--batch-size", "4", "--n-samples", "4", "--no-track", "--threads", "1"]


def seed_rows() -> list[tuple[str, list[str]]]:
    """(seed, its command lines) of the README's seed table."""
    text = README.read_text()
    table = text[text.index("| seed | preset | commands |"):].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0], re.findall(r"`([^`]+)`", cells[2])))
    return rows


ROWS = seed_rows()


def place_downloads(folder: Path, data_root: Path, text: str) -> None:
    """Small files where the table's downloads would put the data that the commands ``text`` name."""
    import torch
    from torchvision.models import inception_v3

    if "Galaxy10_DECals.h5" in text:
        formats.write_galaxy10_h5(folder / "Galaxy10_DECals.h5", n=16, size=64)
    if "camel.npy" in text:
        formats.write_quickdraw_npy(folder / "qd", "camel", n=16)
        shutil.move(folder / "qd" / "full_numpy_bitmap_camel.npy", folder / "camel.npy")  # the URL's file name
    if "cifar-10-batches-bin" in text:
        formats.write_cifar10_bin(folder, n_per_batch=(30, 30, 30, 30, 30), n_test=10)
    if "--input celeba" in text or "data/faces64" in text:
        formats.write_celeba(folder / "celeba", n=24, partition=False)
    if "--input prints" in text:
        formats.write_image_folder(folder / "prints", n_per_class=12, classes=None, size=(40, 48))
    for name in ("MNIST", "KMNIST"):
        if f"ingest {name.lower()} " in text:
            _, labels, *_ = formats.write_torchvision_idx(data_root, name, n_train=80, n_test=10)
            assert (labels == 7).any(), "the README's arithmetic uses class 7"
    if "inception_v3(weights=" in text:
        # torchvision's InceptionV3 download for seed 004's FID probe: found by name, hash and contents before
        # training; torchvision's architecture with random weights stands in, the same file format
        hub = folder / "torch" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
                   hub / "inception_v3_google-0cc3c7bd.pth")


def test_the_table_has_a_row_per_seed():
    seeds = {row.split()[0] for row, _ in ROWS}
    assert seeds == {"000", "001", "002", "003", "004"}
    assert all(any(c.startswith("ganforge train") for c in cmds) for _, cmds in ROWS)


@pytest.mark.parametrize("row,commands", ROWS, ids=[r for r, _ in ROWS])
def test_a_seed_rows_commands_run_on_its_data_format(row, commands, tmp_path, monkeypatch):
    import hashlib

    from ganforge.data.sources import galaxy10
    from ganforge.metrics import features

    needed = [c for c in commands if c.startswith("ganforge")]
    # a row that uses another row's data (the faces VAE reuses the WGAN-GP's ingest) runs that ingest first
    for _, other in ROWS:
        for c in other:
            words = shlex.split(c)
            if c.startswith("ganforge ingest") and c not in needed and \
                    any(f" {words[words.index('--output') + 1]}" in n for n in needed):
                needed.insert(0, c)
    data_root = tmp_path / "torchvision"
    place_downloads(tmp_path, data_root, " ".join(commands + needed))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANFORGE_DATA_ROOT", str(data_root))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # the published files' hashes are checked under their names: the small stand-ins' are published here instead
    if (tmp_path / "Galaxy10_DECals.h5").is_file():
        monkeypatch.setattr(galaxy10, "GALAXY10_SHA256",
                            hashlib.sha256((tmp_path / "Galaxy10_DECals.h5").read_bytes()).hexdigest())
    stand_in = tmp_path / "torch" / "hub" / "checkpoints" / features.INCEPTION_TORCHVISION_FILE
    if stand_in.is_file():
        monkeypatch.setattr(features, "INCEPTION_TORCHVISION_SHA256_PREFIX",
                            hashlib.sha256(stand_in.read_bytes()).hexdigest()[:8])
    runner = CliRunner()
    for command in needed:
        args = shlex.split(command)[1:]
        if args[0] == "train":
            args += FAST
        res = runner.invoke(app, args)
        assert res.exit_code == 0, f"{command}\n{res.output}"
        assert "warning: preset" not in res.stderr, res.stderr  # no silent (or said) hold-out
    for words in [shlex.split(c) for c in needed if c.startswith("ganforge train")]:
        out = Path(words[words.index("--output") + 1])
        assert any(out.glob("ckpt-*")), f"{words}: no checkpoint"
    pictures = [Path(w[w.index("--out") + 1]) for w in (shlex.split(c) for c in needed) if "--out" in w]
    assert all(p.is_file() and p.stat().st_size > 0 for p in pictures)
