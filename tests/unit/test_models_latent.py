"""The ae family and ganforge.latent: encode, reconstruct, attribute arithmetic; `ganforge encode/reconstruct`."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.data import load
from ganforge.errors import GanforgeError
from ganforge.latent import attribute_vector, decode, encode, load_autoencoder, reconstruct, shift
from ganforge.training import TrainConfig, train

runner = CliRunner()


def one_error_line(res, pattern):
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def runs(digits16, tmp_path_factory):
    """An ae and a vae trained briefly on digits (16 px, 10 classes), and a dcgan."""
    root = tmp_path_factory.mktemp("latent")
    out = {}
    for model in ("ae", "vae", "dcgan"):
        out[model] = str(root / model)
        # the ae without batch norm, as the book's: 40 steps leave a BN decoder's running statistics behind
        # its fast-moving latents, so eval-mode reconstructions would not show what it learned
        kw = {"g_norm": "none", "steps": 200} if model == "ae" else {"steps": 40}
        train(TrainConfig(dataset=digits16, model=model, batch_size=16, width=8, latent_dim=4, lr_g=2e-3,
                          track=False, log_every=10, checkpoint_every=200, output=out[model], **kw))  # fmt: skip
    return out


def test_attribute_vector_and_shift_by_hand():
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 0.0], [0.0, 4.0]])
    v = attribute_vector(z, torch.tensor([True, True, False, False]))
    assert v.tolist() == [2.0 - 0.0, 1.0 - 2.0]  # mean of the first two minus mean of the last two
    moved = shift(z[:2], v, [-1.0, 0.0, 2.0])
    assert moved.tolist() == [[-1, 1], [1, 0], [5, -2], [1, 3], [3, 2], [7, 0]]
    with pytest.raises(GanforgeError, match="needs images with and without the attribute; got 0 of 4"):
        attribute_vector(z, torch.zeros(4, dtype=torch.bool))


def test_ae_encodes_to_points_and_reconstructs_better_than_the_mean_image(runs, digits16):
    ae = load_autoencoder(runs["ae"])
    assert ae.spec.model == "ae" and len(ae.class_names) == 10
    data = load(digits16)
    images = data.images[:32]
    z = encode(ae, images)
    assert z.shape == (32, 4) and torch.equal(z, encode(ae, images))
    rec = reconstruct(ae, images)
    x = images.float() / 127.5 - 1
    err = (rec - x).pow(2).mean().item()
    assert rec.shape == x.shape and err < (x - x.mean(0)).pow(2).mean().item()  # it learned the images
    assert torch.allclose(decode(ae, z), rec)


def test_vae_encodes_to_its_posterior_mean(runs, digits16):
    vae = load_autoencoder(runs["vae"])
    images = load(digits16).images[:8]
    mu, _ = vae.encoder(images.float() / 127.5 - 1)
    assert torch.allclose(encode(vae, images), mu.detach(), atol=1e-6)


def test_cli_encode_writes_latents_and_labels(runs, digits16, tmp_path):
    res = runner.invoke(app, ["encode", "--checkpoint", runs["ae"], "--dataset", digits16, "--limit", "20",
                              "--out", str(tmp_path / "z.npz")])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = np.load(tmp_path / "z.npz")
    assert got["z"].shape == (20, 4) and got["labels"].shape == (20,) and len(got["class_names"]) == 10
    ae = load_autoencoder(runs["ae"])
    assert np.allclose(got["z"], encode(ae, load(digits16).images[:20]).numpy(), atol=1e-6)


def test_cli_reconstruct_and_attribute_arithmetic_grids(runs, digits16, tmp_path):
    res = runner.invoke(app, ["reconstruct", "--checkpoint", runs["vae"], "--dataset", digits16, "--n", "5",
                              "--out", str(tmp_path / "r.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "r.png").size == (5 * 18 + 2, 2 * 18 + 2)  # originals over reconstructions
    res = runner.invoke(app, ["reconstruct", "--checkpoint", runs["ae"], "--dataset", digits16, "--n", "3",
                              "--attribute", "7", "--alphas=-1,0,1",
                              "--out", str(tmp_path / "a.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "a.png").size == (4 * 18 + 2, 3 * 18 + 2)  # original + 3 alphas, 3 rows
    # alpha 0 is the plain reconstruction; alpha 1 differs from it by the decoded class-7 vector
    grid = np.asarray(Image.open(tmp_path / "a.png"))[..., 0]  # make_grid repeats grey to RGB
    cell = lambda r, c: grid[2 + 18 * r : 18 + 18 * r, 2 + 18 * c : 18 + 18 * c]  # noqa: E731
    ae = load_autoencoder(runs["ae"])
    images = load(digits16).images[:3]
    plain = ((reconstruct(ae, images) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    assert np.abs(cell(0, 2).astype(int) - plain[0]).max() <= 1
    assert np.abs(cell(0, 3).astype(int) - plain[0]).max() > 1


def test_cli_latent_bad_input_is_one_line(runs, digits16, tmp_path):
    base = ["--dataset", digits16, "--out", str(tmp_path / "x.png")]
    one_error_line(runner.invoke(app, ["reconstruct", "--checkpoint", runs["dcgan"], *base]),
                   "holds a dcgan model, which has no encoder")  # fmt: skip
    one_error_line(runner.invoke(app, ["reconstruct", "--checkpoint", runs["ae"], "--attribute", "cat", *base]),
                   "unknown class 'cat'; the dataset's classes: 0, 1")  # fmt: skip
    one_error_line(runner.invoke(app, ["encode", "--checkpoint", runs["ae"], "--dataset", digits16, "--out",
                                       str(tmp_path / "z.txt")]), r"--out .*z.txt must end in .npz")  # fmt: skip
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def ae2(digits16, tmp_path_factory):
    """A tiny ae with a 2-d latent, as seed 001's MNIST autoencoder, trained for a few steps."""
    out = str(tmp_path_factory.mktemp("ae2") / "ae")
    train(TrainConfig(dataset=digits16, model="ae", batch_size=16, width=8, latent_dim=2, lr_g=2e-3, g_norm="none",
                      steps=20, track=False, log_every=10, checkpoint_every=20, output=out))  # fmt: skip
    return out


def scatter_calls(monkeypatch) -> list[dict]:
    """What each ``Axes.scatter`` call of the plot drew: its label (the legend entry) and its points."""
    from matplotlib.axes import Axes

    calls = []
    real = Axes.scatter

    def spy(self, x, y, *args, **kwargs):
        calls.append({"label": kwargs.get("label"), "points": np.column_stack([x, y])})
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "scatter", spy)
    return calls


def test_encode_plot_draws_the_2d_latent_coloured_by_class(ae2, digits16, tmp_path, monkeypatch):
    calls = scatter_calls(monkeypatch)
    res = runner.invoke(app, ["encode", "--checkpoint", ae2, "--dataset", digits16, "--limit", "60",
                              "--plot", str(tmp_path / "latent.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "drew the 2-d latent of 60 images, coloured by class, in" in res.stdout
    assert Image.open(tmp_path / "latent.png").size == (800, 700) and list(tmp_path.iterdir()) == [tmp_path / "latent.png"]
    data = load(digits16)
    labels = data.labels[:60]
    z = encode(load_autoencoder(ae2), data.images[:60])
    present = sorted(set(labels.tolist()))
    assert [c["label"] for c in calls] == [data.class_names[i] for i in present]  # one legend entry per class
    for call, c in zip(calls, present):  # each class's points are its images' latents
        assert np.allclose(call["points"], z[labels == c].numpy(), atol=1e-6)


def test_encode_plot_projects_a_wider_latent_on_its_principal_components(runs, digits16, tmp_path):
    res = runner.invoke(app, ["encode", "--checkpoint", runs["ae"], "--dataset", digits16, "--limit", "40",
                              "--out", str(tmp_path / "z.npz"), "--plot", str(tmp_path / "latent.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "z.npz")["z"].shape == (40, 4)
    assert re.search(r"drew the first two principal components of the 4-d latent \(\d+% of its variance\) of 40 "
                     "images", res.stdout), res.stdout  # fmt: skip
    assert (tmp_path / "latent.png").is_file()


def test_plane_is_the_latent_itself_or_its_principal_components():
    from ganforge.latent import plane

    z = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    points, axes, what = plane(z)
    assert torch.equal(points, z) and axes == ("z[0]", "z[1]") and what == "the 2-d latent"
    # spread 10 along (1, 1, 0)/sqrt(2), 1 along z[2], none along (1, -1, 0): PC 1 and 2 are those two directions
    t = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    s = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    z = torch.stack([10 * t / 2**0.5, 10 * t / 2**0.5, s], 1) + 5.0
    points, axes, what = plane(z)
    assert torch.allclose(points.abs(), torch.stack([10 * t, s], 1).abs(), atol=1e-5)
    assert axes == ("PC 1 (99% of the variance)", "PC 2 (1%)") and "(100% of its variance)" in what
    with pytest.raises(GanforgeError, match="--plot draws a plane; the latent has 1 dimension"):
        plane(torch.zeros(5, 1))


def test_encode_needs_an_output_and_a_png_plot(runs, digits16, tmp_path):
    base = ["encode", "--checkpoint", runs["ae"], "--dataset", digits16]
    one_error_line(runner.invoke(app, base), "give --out z.npz, --plot latent.png or both")
    one_error_line(runner.invoke(app, [*base, "--plot", str(tmp_path / "z.jpg")]), r"--plot .*z.jpg must end in .png")
    assert list(tmp_path.iterdir()) == []
