"""``ganforge encode`` and ``ganforge reconstruct``: an ae or vae checkpoint's latent space (ganforge.latent)."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ganforge.cli.common import user_errors
from ganforge.cli.options import Options, command


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    checkpoint: str = Field(description="A ckpt-<step> directory or a run's --output, of an ae or vae run.")
    dataset: str = Field(description="Dataset URI (`ganforge ingest`) whose images are encoded.")
    split: str = Field("train", description="Split of --dataset to read.")
    weights: str | None = Field(None, description="Decoder weights: ema or raw. Default: ema when present.")
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto (CUDA when present).")


class EncodeOptions(_Source):
    """``ganforge encode``: latents of a dataset split."""

    limit: int | None = Field(None, ge=1, description="Encode the first this many images. None: all.")
    out: str | None = Field(
        None, description="An .npz file: z (N, latent_dim), labels (N,), class_names; and attributes (N, A) bool "
        "and attribute_names for a dataset with attributes (celeba). None: none (then --plot is needed).",
    )
    plot: str | None = Field(
        None, description="A .png scatter of the encoded images coloured by class, with a legend of class names "
        "(seed 001's picture of the MNIST autoencoder): the latent itself when it is 2-d, else its first two "
        "principal components (the axes say so). None: no picture.",
    )

    @model_validator(mode="after")
    def _something(self) -> EncodeOptions:
        if self.out is None and self.plot is None:
            raise ValueError("give --out z.npz, --plot latent.png or both")
        return self


class ReconstructOptions(_Source):
    """``ganforge reconstruct``: originals above their reconstructions, or an attribute added in steps."""

    n: int = Field(8, ge=1, le=1024, description="Images to show (the first n of --split).")
    attribute: str | None = Field(
        None, description="An attribute of the dataset (celeba's Smiling, ...) or a class (name or id): add alpha "
        "times its vector (the mean latent of the images of --split with it minus that of those without) to each "
        "image's latent. None: plain reconstructions.",
    )
    # beyond +-100 a shifted latent decodes to saturated noise, and 1e300 overflows float32 to inf
    alphas: tuple[Annotated[float, Field(ge=-100, le=100)], ...] = Field(
        (-2.0, -1.0, 0.0, 1.0, 2.0), min_length=1, max_length=64,
        description="Multiples of the attribute vector, each in [-100, 100].")
    out: str = Field(description="The grid image to write (.png).")


ENCODE = Options(EncodeOptions, "encode")
RECONSTRUCT = Options(ReconstructOptions, "reconstruct")


def _check_out(out: str, suffix: str, flag: str = "--out") -> None:
    from pathlib import Path

    from ganforge.errors import GanforgeError
    from ganforge.outputs import check_output_dir

    if Path(out).suffix.lower() != suffix:
        raise GanforgeError(f"{flag} {out} must end in {suffix}")
    check_output_dir(Path(out).parent or ".", flag)


def encode_command(**flags) -> None:
    """Encode a dataset split with an ae or vae checkpoint into an .npz of latents and labels, and/or a scatter."""
    import io
    from pathlib import Path

    import numpy as np

    from ganforge.devices import select_device
    from ganforge.latent import encode, load_autoencoder, load_images
    from ganforge.outputs import write_bytes_atomic

    opts = ENCODE.build(flags)
    for path, suffix in ((opts.out, ".npz"), (opts.plot, ".png")):
        if path is not None:
            _check_out(path, suffix, "--out" if suffix == ".npz" else "--plot")
    ae = load_autoencoder(opts.checkpoint, opts.weights, select_device(opts.device))
    data = load_images(ae, opts.dataset, opts.split, opts.limit)
    z = encode(ae, data.images, data.labels)
    if opts.plot is not None:
        from ganforge.latent import plane
        from ganforge.pictures import latent_scatter_png

        points, axes, what = plane(z)  # refuses a 1-d latent before anything is written
    if opts.out is not None:
        extra = {} if data.attributes is None else {"attributes": data.attributes.cpu().numpy(),
                                                    "attribute_names": np.array(data.attribute_names)}
        buf = io.BytesIO()
        np.savez(buf, z=z.numpy().astype(np.float32), labels=data.labels.numpy(),
                 class_names=np.array(data.class_names), **extra)
        write_bytes_atomic(Path(opts.out), buf.getvalue())
        typer.echo(f"wrote {len(z)} latents of size {z.shape[1]} to {opts.out}")
    if opts.plot is not None:
        title = f"{len(z)} images of {opts.split}, encoded: {what}"
        write_bytes_atomic(Path(opts.plot), latent_scatter_png(points.numpy(), data.labels.numpy(),
                                                               list(data.class_names), axes, title))
        typer.echo(f"drew {what} of {len(z)} images, coloured by class, in {opts.plot}")


def reconstruct_command(**flags) -> None:
    """Reconstruct images with an ae or vae checkpoint, or move them along an attribute's (or a class's) vector."""
    from pathlib import Path

    import torch

    from ganforge import latent as lt
    from ganforge.devices import select_device
    from ganforge.pictures import grid_image, save_png

    opts = RECONSTRUCT.build(flags)
    _check_out(opts.out, ".png")
    ae = lt.load_autoencoder(opts.checkpoint, opts.weights, select_device(opts.device))
    data = lt.load_images(ae, opts.dataset, opts.split)
    images, labels = data.images, data.labels
    shown, shown_labels = images[: opts.n], labels[: opts.n]
    if opts.attribute is None:
        grid = torch.cat([lt.to_unit(shown), lt.reconstruct(ae, shown, shown_labels)])
        save_png(Path(opts.out), grid_image(grid, nrow=len(shown)))
        typer.echo(f"wrote {len(shown)} images and their reconstructions to {opts.out}")
        return
    has, what = lt.attribute_mask(opts.attribute, data)
    vector = lt.attribute_vector(lt.encode(ae, images, labels), has.cpu())
    moved = lt.decode(ae, lt.shift(lt.encode(ae, shown, shown_labels), vector, list(opts.alphas)),
                   shown_labels.repeat_interleave(len(opts.alphas)))  # fmt: skip
    rows = torch.cat([lt.to_unit(shown).unsqueeze(1), moved.view(len(shown), len(opts.alphas), *moved.shape[1:])], 1)
    save_png(Path(opts.out), grid_image(rows.flatten(0, 1), nrow=1 + len(opts.alphas)))
    typer.echo(f"wrote {len(shown)} rows (original, then alpha {', '.join(map(str, opts.alphas))} x the "
               f"{what} vector) to {opts.out}")


def register(app: typer.Typer) -> None:
    """Add ``encode`` and ``reconstruct``."""
    app.command("encode")(user_errors(command(encode_command, ENCODE)))
    app.command("reconstruct")(user_errors(command(reconstruct_command, RECONSTRUCT)))
