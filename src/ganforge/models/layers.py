"""Pieces every model family shares: label conditioning, the discriminator head, initialisation.

A family only writes its *body* (the layers that differ); the wrappers here give every generator
and discriminator the same forward signature, so the loop, sampling and evaluation treat all
families alike.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

M = TypeVar("M", bound=nn.Module)  # a network handed back by what changes it in place

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope of the DCGAN paper and the PyTorch examples (Keras' default is 0.3)
ACTIVATIONS = ("relu", "leaky_relu", "tanh")  # the hidden-layer activations a spec may name
BN_MOMENTUM = 0.1  # PyTorch's default; Keras' momentum m is PyTorch's 1 - m (Keras 0.8 = PyTorch 0.2)
BN_EPS = 1e-5  # PyTorch's default; Keras' BatchNormalization uses 1e-3
# Weight initialisations a spec may name (``init_weights``): the DCGAN paper's, Keras' RandomNormal(0, 0.02)
# kernels (the book's GANs), Keras' defaults, and PyTorch's own (what a module has when it is built).
INITS = ("dcgan", "normal", "glorot", "torch")
OUTPUT_ACTIVATIONS = ("tanh", "sigmoid")  # of the generator/decoder; sigmoid: ae/vae working on [0, 1]


def activation(name: str, slope: float = NEGATIVE_SLOPE) -> nn.Module:
    """The hidden-layer activation ``name`` (one of ``ACTIVATIONS``); ``slope`` is LeakyReLU's."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def batch_norm(channels: int, momentum: float | None, dims: int = 2, eps: float | None = None) -> nn.Module:
    """BatchNorm over ``channels`` (2d maps or 1d vectors) with PyTorch's momentum convention.

    ``eps`` None is PyTorch's 1e-5; the Keras seeds pass Keras' 1e-3 (it matters for near-constant channels).
    """
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=BN_EPS if eps is None else eps, momentum=BN_MOMENTUM if momentum is None else momentum)


class SignedSigmoid(nn.Module):
    """``2 sigmoid(x) - 1``: a sigmoid output on [0, 1] handed on in ganforge's [-1, 1] image convention.

    The ae/vae with ``output_activation="sigmoid"`` (the book's decoders) compute their loss on
    ``(y + 1) / 2``, which is the sigmoid itself, so sampling, FID and the audit see [-1, 1] as for tanh.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) logits to (N, ...) in [-1, 1]."""
        return torch.sigmoid(x).mul(2.0).sub(1.0)


def output_activation(name: str) -> nn.Module:
    """The generator's last activation: tanh, or the sigmoid mapped to [-1, 1] (``SignedSigmoid``)."""
    return SignedSigmoid() if name == "sigmoid" else nn.Tanh()


class Projection(nn.Linear):
    """The Linear that stands for a k x k transposed conv on a 1 x 1 input (PyTorch DCGAN's first layer).

    Same shapes and parameter count; under ``init_weights(..., "torch")`` it is drawn as that conv
    would be: PyTorch computes a transposed conv's fan-in from its *output* maps (C * k * k), so its
    default bound is 1/sqrt(C k^2), not the Linear's 1/sqrt(latent).
    """

    def __init__(self, in_features: int, channels: int, side: int, bias: bool = True) -> None:
        """A Linear from ``in_features`` to a (channels, side, side) map, flattened."""
        super().__init__(in_features, channels * side * side, bias=bias)
        self.conv_fan_in = channels * side * side


def check_labels(labels: torch.Tensor | None, n: int) -> torch.Tensor:
    """Return ``labels`` if they fit a batch of ``n``; a conditional network cannot run without them.

    Args:
        labels: Class ids, (N,) long, or None.
        n: Batch size the labels must match.

    Returns:
        The labels, unchanged.

    Raises:
        ValueError: When labels are missing or of the wrong length (a programmer error, not the user's).
    """
    if labels is None:
        raise ValueError("this network is conditional: pass labels of shape (N,)")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    return labels


class Generator(nn.Module):
    """Latent (and label embedding) in, image in [-1, 1] out.

    The label embedding is concatenated to the latent, as in the Galaxy10 conditional GAN, so the
    body sees a ``latent_dim + embed_dim`` vector either way.

    Attributes:
        latent_dim: Size of ``z``.
        num_classes: Classes the embedding knows; 0 when unconditional.
    """

    def __init__(self, body: nn.Module, latent_dim: int, num_classes: int = 0, embed_dim: int = 0) -> None:
        """Wrap ``body``, which maps (N, latent_dim + embed_dim) to (N, C, H, W) in [-1, 1].

        Args:
            body: The family's layers.
            latent_dim: Size of ``z``.
            num_classes: Number of classes; 0 makes the generator unconditional.
            embed_dim: Size of the label embedding (ignored when unconditional).
        """
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.body = body

    @property
    def conditional(self) -> bool:
        """Whether forward needs labels."""
        return self.embed is not None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images.

        Args:
            z: Latents, (N, latent_dim).
            labels: Class ids, (N,) long; required when conditional, ignored otherwise.

        Returns:
            Images, (N, C, H, W) in [-1, 1].
        """
        if self.embed is not None:
            z = torch.cat([z, self.embed(check_labels(labels, z.shape[0]))], dim=1)
        return self.body(z)


class LabelPlane(nn.Module):
    """Appends a learned (1, H, W) plane per class to the image: the Galaxy10 CGAN's label channel."""

    def __init__(self, num_classes: int, image_size: int) -> None:
        """Create one H*W embedding row per class.

        Args:
            num_classes: Number of classes.
            image_size: Side of the square image, H = W.
        """
        super().__init__()
        self.image_size = image_size
        self.embed = nn.Embedding(num_classes, image_size * image_size)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Return (N, C + 1, H, W): the image with its label plane."""
        plane = self.embed(check_labels(labels, x.shape[0]))
        return torch.cat([x, plane.view(-1, 1, self.image_size, self.image_size)], dim=1)


class Discriminator(nn.Module):
    """Image (and label) in, one logit or critic score per image out.

    Conditioning is either a label plane concatenated to the image (the body then takes C + 1
    channels) or a projection head (Miyato & Koyama, 2018): ``logit = w·h + embed(y)·h``, which
    leaves the body unconditional.
    """

    def __init__(
        self,
        body: nn.Module,
        feature_dim: int,
        *,
        num_classes: int = 0,
        image_size: int = 0,
        projection: bool = False,
        aux_classifier: bool = False,
        head_bias: bool = True,
    ) -> None:
        """Wrap ``body``, which maps images to features (N, feature_dim).

        Args:
            body: The family's layers; takes C + 1 channels when conditioned by a label plane.
            feature_dim: Size of the body's output.
            num_classes: Number of classes; 0 makes the discriminator unconditional.
            image_size: Side of the image (needed for the label plane).
            projection: Condition through a projection head instead of a label plane.
            aux_classifier: AC-GAN (Odena et al., 2017): the body sees the image alone and a second
                head predicts its class; the label is then never an input.
            head_bias: Give the real/fake head a bias (the woodblock seed's final conv has none).
        """
        super().__init__()
        self.num_classes = num_classes
        plane = num_classes and not projection and not aux_classifier
        self.label_plane = LabelPlane(num_classes, image_size) if plane else None
        self.body = body
        self.head = nn.Linear(feature_dim, 1, bias=head_bias)
        self.projection = nn.Embedding(num_classes, feature_dim) if num_classes and projection else None
        self.classifier = nn.Linear(feature_dim, num_classes) if num_classes and aux_classifier else None

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, features: bool = False, classes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score images.

        Args:
            x: Images, (N, C, H, W) in [-1, 1].
            labels: Class ids, (N,) long; required when conditioned by a label plane or projection.
            features: Also return the penultimate features (for feature matching).
            classes: Return the auxiliary classifier's class logits (N, K) instead of the features.

        Returns:
            Logits (N,); (logits, features (N, F)) when ``features`` is true; (logits, class logits)
            when ``classes`` is true.
        """
        if self.label_plane is not None:
            x = self.label_plane(x, labels)
        h = self.body(x)
        logits = self.head(h).squeeze(1)
        if self.projection is not None:
            logits = logits + (self.projection(check_labels(labels, x.shape[0])) * h).sum(dim=1)
        if classes:
            if self.classifier is None:
                raise ValueError("this discriminator has no auxiliary classifier")
            return logits, self.classifier(h)
        return (logits, h) if features else logits


def init_weights(net: M, scheme: str) -> M:
    """Initialise ``net`` in place by one of ``INITS`` and return it.

    dcgan: conv/linear weights N(0, 0.02), zero biases, norm scales N(1, 0.02) and zero shifts (the DCGAN
    paper); embeddings keep PyTorch's N(0, 1). normal: Keras' RandomNormal(0, 0.02) kernels (the book's
    GANs) with Keras' other defaults. glorot: Keras' defaults: glorot-uniform weights, zero biases, norm
    scales 1 and shifts 0, embeddings U(-0.05, 0.05). torch: PyTorch's defaults, as built (a
    ``Projection`` drawn as the transposed conv it stands for).
    """
    if scheme == "dcgan":
        net.apply(dcgan_init)
        return net
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    for m in net.modules():
        if scheme == "torch":
            if isinstance(m, Projection):
                bound = m.conv_fan_in**-0.5  # kaiming_uniform(a=sqrt(5)) and the bias rule of ConvTranspose2d
                nn.init.uniform_(m.weight, -bound, bound)
                if m.bias is not None:
                    nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if scheme == "glorot":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.uniform_(m.weight, -0.05, 0.05)
    return net


def dcgan_init(module: nn.Module) -> None:
    """Initialise weights as the DCGAN paper: conv/linear N(0, 0.02), norm scales N(1, 0.02).

    Embeddings keep PyTorch's N(0, 1): a label plane of std 0.02 would be invisible next to pixels
    in [-1, 1].

    Args:
        module: Any module; apply with ``net.apply(dcgan_init)``.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def add_spectral_norm(net: M) -> M:
    """Put spectral normalisation on every conv and linear layer of ``net``, in place.

    Apply after initialisation: the parametrisation keeps the initialised weight as its original.

    Args:
        net: A discriminator.

    Returns:
        ``net``, for chaining.
    """
    targets = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in targets:
        spectral_norm(m)
    return net
