"""Working in an autoencoder's latent space (ae and vae): encode, reconstruct, attribute arithmetic.

Generative Deep Learning ch. 3's "latent space arithmetic": an attribute's vector is the mean latent of
the images that have it minus the mean latent of those that do not; adding ``alpha`` times it to an
image's latent and decoding adds (or, below 0, removes) the attribute. Here an attribute is one of the
dataset's per-image attributes (CelebA's ``Smiling``, ingested from ``list_attr_celeba.txt``, as the book
adds a smile) or one of its classes. A VAE encodes to the mean of q(z | x), so the same image always lands
on the same point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models import MODELS, ModelSpec

if TYPE_CHECKING:
    from ganforge.data import ImageData

AUTOENCODERS = tuple(name for name, family in MODELS.items() if family.encoder is not None)  # read from the registry


@dataclass
class Autoencoder:
    """An encoder and decoder loaded from one checkpoint.

    Attributes:
        encoder: maps (N, C, H, W) in [-1, 1] (and labels) to latents (ae) or (mu, logvar) (vae).
        decoder: the generator, (N, latent_dim) (and labels) to (N, C, H, W) in [-1, 1].
        spec: the ``ModelSpec``.
        class_names: the dataset's classes, as recorded in the checkpoint.
    """

    encoder: nn.Module
    decoder: nn.Module
    spec: ModelSpec
    class_names: list[str]


def load_autoencoder(path: str | Path, weights: str | None = None, device: str | torch.device = "cpu") -> Autoencoder:
    """Rebuild the encoder and decoder of an ``ae`` or ``vae`` checkpoint (or a run's newest one).

    Args:
        path: a ``ckpt-<step>`` directory or a run's ``--output`` directory.
        weights: decoder weights, ``ema`` or ``raw`` (see ``ganforge.inference.load_generator``).
        device: where to put the networks.

    Raises:
        GanforgeError: not a checkpoint, or one of a family without an encoder.
    """
    from ganforge.checkpoints import load_checkpoint, load_weights
    from ganforge.inference import generator_weights, load_generator
    from ganforge.models import build_encoder

    decoder, spec, meta = load_generator(path, weights, device)
    if spec.model not in AUTOENCODERS:
        raise GanforgeError(
            f"checkpoint {path} holds a {spec.model} model, which has no encoder; encode and reconstruct need an "
            f"{' or '.join(AUTOENCODERS)} checkpoint (train one with --model ae or --preset seed001-ae)"
        )
    ck_path = generator_weights(path, weights).checkpoint
    ck = load_checkpoint(ck_path, device)
    encoder = build_encoder(spec).to(device)
    load_weights(encoder, ck.weights.get("encoder", {}), str(ck_path))
    return Autoencoder(encoder.eval(), decoder, spec, list(meta.get("class_names", [])))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) images to floats in [-1, 1], as the networks were trained on."""
    return images.float().div(127.5).sub(1.0)


@torch.no_grad()
def encode(ae: Autoencoder, images: torch.Tensor, labels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Latents of uint8 images (N, C, H, W): the ae's point, or the vae's posterior mean.

    Returns:
        (N, latent_dim) float latents on the CPU.
    """
    device = next(ae.encoder.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch):
        x = to_unit(images[i : i + batch]).to(device)
        y = labels[i : i + batch].to(device) if labels is not None and ae.spec.conditional else None
        z = ae.encoder(x, y)
        out.append((z[0] if isinstance(z, tuple) else z).cpu())
    return torch.cat(out) if out else torch.empty(0, ae.spec.latent_dim)


@torch.no_grad()
def decode(ae: Autoencoder, z: torch.Tensor, labels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Images in [-1, 1] (N, C, H, W) on the CPU for latents ``z`` (N, latent_dim)."""
    from ganforge.inference import sample

    return sample(ae.decoder, z, labels if ae.spec.conditional else None, batch)


def reconstruct(ae: Autoencoder, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Decode(encode(images)): uint8 (N, C, H, W) in, images in [-1, 1] out."""
    return decode(ae, encode(ae, images, labels), labels)


def attribute_vector(z: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Mean latent of the images with the attribute minus that of the images without it.

    Args:
        z: latents (N, latent_dim).
        has: (N,) bool, which images have the attribute.

    Raises:
        GanforgeError: no image has the attribute, or every image has it.
    """
    has = has.bool()
    if not has.any() or has.all():
        raise GanforgeError(
            f"an attribute vector needs images with and without the attribute; got {int(has.sum())} of {len(has)}"
        )
    return z[has].mean(0) - z[~has].mean(0)


def shift(z: torch.Tensor, vector: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    """``z + alpha * vector`` for each latent and alpha: (N * len(alphas), latent_dim), one row of alphas
    per latent (z_new = z + alpha * feature_vector, as the book writes it)."""
    a = torch.tensor(alphas, dtype=z.dtype).view(1, -1, 1)
    return (z.unsqueeze(1) + a * vector.view(1, 1, -1)).reshape(-1, z.shape[1])


def plane(z: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str], str]:
    """Latents ``z`` (N, D) as points of a plane, for ``encode --plot``: the latent itself when D is 2 (the
    book's MNIST autoencoder and VAE), else its first two principal components, named on the axes with the
    share of the variance each holds, so the picture is not read as two of the latent's own coordinates.

    Returns:
        ((N, 2) points, the two axis labels, what the plane is).

    Raises:
        GanforgeError: a 1-d latent (no plane), or fewer than 2 images.
    """
    n, d = z.shape
    if d < 2:
        raise GanforgeError(f"--plot draws a plane; the latent has {d} dimension: use the latents in --out instead")
    if n < 2:
        raise GanforgeError(f"--plot needs at least 2 images, got {n}; raise --limit or use another --split")
    if d == 2:
        return z, ("z[0]", "z[1]"), "the 2-d latent"
    centred = z.double() - z.double().mean(0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    share = (s**2 / (s**2).sum()).tolist()
    points = (centred @ vt[:2].T).float()
    axes = (f"PC 1 ({100 * share[0]:.0f}% of the variance)", f"PC 2 ({100 * share[1]:.0f}%)")
    return points, axes, f"the first two principal components of the {d}-d latent ({100 * (share[0] + share[1]):.0f}% of its variance)"


def load_images(ae: Autoencoder, dataset: str, split: str, limit: int | None = None) -> ImageData:
    """A dataset split (its first ``limit`` images), checked against what the autoencoder was trained on.

    Returns:
        The split's ``ImageData``: uint8 images, labels, class names, and attributes where it has them.

    Raises:
        GanforgeError: the images' size or channels differ from the checkpoint's.
    """
    from ganforge.data import load

    data = load(dataset, split=split)
    _, c, h, _ = data.images.shape
    if (c, h) != (ae.spec.channels, ae.spec.image_size):
        raise GanforgeError(
            f"dataset {dataset} has {h} px images with {c} channel(s); the checkpoint was trained on "
            f"{ae.spec.image_size} px with {ae.spec.channels}: ingest the data at that size"
        )
    if limit is None or limit >= len(data):
        return data
    return dataclasses.replace(data, images=data.images[:limit], labels=data.labels[:limit],
                               attributes=data.attributes[:limit] if data.attributes is not None else None)


def attribute_mask(name: str, data: ImageData) -> tuple[torch.Tensor, str]:
    """Which images of ``data`` have the attribute ``name``, and what it is, for :func:`attribute_vector`.

    ``name`` is first looked up among the dataset's attributes (``Smiling``: the images whose attribute is
    set), then among its classes, by name or id (``7``: the images of class 7).

    Returns:
        ((N,) bool, ``"attribute 'Smiling'"`` or ``"class '7'"``).

    Raises:
        GanforgeError: neither an attribute nor a class of the dataset; the message lists both.
    """
    if data.attributes is not None and name in data.attribute_names:
        return data.attributes[:, data.attribute_names.index(name)].bool(), f"attribute {name!r}"
    try:
        c = class_id(name, data.class_names)
    except GanforgeError:
        classes = f"{', '.join(data.class_names)} (or ids 0 to {len(data.class_names) - 1})"
        if data.attribute_names:
            raise GanforgeError(f"unknown attribute {name!r}; the dataset's attributes: "
                                f"{', '.join(data.attribute_names)}; its classes: {classes}") from None
        raise GanforgeError(f"unknown class {name!r}; the dataset's classes: {classes}; it has no attributes (a "
                            "dataset ingested with an attribute table, such as celeba's, has)") from None
    return data.labels == c, f"class {data.class_names[c]!r}"


def class_id(name: str, class_names: list[str]) -> int:
    """A class given by name or id, as an id.

    Raises:
        GanforgeError: neither a class name nor an id in range.
    """
    if name in class_names:
        return class_names.index(name)
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    raise GanforgeError(f"unknown class {name!r}; the dataset's classes: {', '.join(class_names)} (or ids 0 to "
                        f"{len(class_names) - 1})")
