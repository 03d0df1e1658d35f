"""Pictures: one drawing of each run picture, whoever writes it (the run's --output or its MLflow run)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from ganforge.pictures import (
    LOSS_PLOT,
    encode_image,
    grid_columns,
    grid_image,
    loss_plot_png,
    save_png,
    to_uint8,
)

HISTORY = {"train/loss_g": [(1, 1.0), (2, 0.5), (3, 0.7)], "train/loss_d": [(1, 0.3), (2, 0.4), (3, 0.2)]}


@pytest.mark.parametrize("n, columns", [(1, 1), (2, 2), (4, 2), (24, 6), (25, 5), (64, 8), (7, 3), (10, 5)])
def test_grid_columns_make_full_grids(n, columns):
    assert grid_columns(n) == columns


def test_to_uint8_maps_the_range_ends_and_moves_channels_last():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    assert to_uint8(x).tolist() == [[[[0], [128]], [[255], [255]]]]


def test_a_grid_pads_with_black_and_keeps_channels():
    images = torch.ones(4, 3, 5, 5)
    g = grid_image(images, nrow=2)
    assert g.shape == (2 + 2 * (5 + 2), 2 + 2 * (5 + 2), 3) and g.dtype == np.uint8
    assert g[0, 0].tolist() == [0, 0, 0] and g[2, 2].tolist() == [255, 255, 255]


def test_save_png_round_trips_one_channel(tmp_path):
    from PIL import Image

    image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1) * 20
    save_png(tmp_path / "a" / "x.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "x.png")), image[..., 0])
    assert encode_image(image) == (tmp_path / "a" / "x.png").read_bytes()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.png"]  # no temp file left


def test_the_loss_plot_is_one_picture_for_the_output_and_the_tracker(tmp_path, monkeypatch, sqlite_store):
    """Issue 23: the trainer's loss_curve.png and the one its MLflow run gets are drawn by one function."""
    from PIL import Image

    from ganforge.tracking import open_tracker
    from ganforge.training.run_files import write_loss_plot

    png = loss_plot_png(HISTORY)
    assert Image.open(io.BytesIO(png)).size == (700, 400)
    written = write_loss_plot(tmp_path / "out", HISTORY)
    assert written == tmp_path / "out" / LOSS_PLOT and written.read_bytes() == png

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)  # absolute: mlflow caches stores by URI
    tracker = open_tracker(True, "unit", None, {}, {})
    tracker.log_loss_curves(HISTORY)
    tracker.close()
    logged = tracker.client.download_artifacts(tracker.run_id, LOSS_PLOT, str(tmp_path / "dl"))
    assert open(logged, "rb").read() == png


def test_inference_still_offers_what_registered_model_code_imports():
    """Each registered version carries its own copy of registry/generator_model.py; those written before
    checkpoints and pictures had their own modules import these names from ganforge.inference."""
    from ganforge import checkpoints, inference, pictures

    assert inference.load_weights is checkpoints.load_weights
    assert inference.to_uint8 is pictures.to_uint8
    assert callable(inference.sample) and callable(inference.latents) and "ema" in inference.WEIGHTS
