"""GAN objectives and the VAE loss.

An objective turns discriminator outputs into the two players' losses. ``OBJECTIVES`` maps each
name (the --loss choices) to its class; ``build_objective`` checks the options and builds one.

Who detaches: ``d_loss`` detaches ``fake`` itself, so the loop may pass the generator's output
straight in and reuse it for ``g_loss``; ``g_loss`` must see the undetached ``fake``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import GanforgeError

# What a loss calls: a network, or what the loop calls in its place (compiled, augmenting); only ever called.
Net = Callable[..., Any]

SOFT_REAL = (0.9, 1.0)  # real targets under label smoothing (Salimans et al., 2016: one-sided)
SOFT_FAKE = (0.0, 0.1)  # fake targets under noisy labels (which also soften the real ones)


def draw_targets(n: int, *, real: bool, soft: bool, device: torch.device | str | None = None) -> Tensor:
    """Targets for the binary cross-entropy discriminator loss.

    Args:
        n: Number of targets.
        real: Targets for real images (1) or fakes (0).
        soft: Draw uniformly in ``SOFT_REAL`` / ``SOFT_FAKE`` instead of exactly 1 / 0.
        device: Where the targets live.

    Returns:
        (n,) float targets.
    """
    if not soft:
        return torch.full((n,), float(real), device=device)
    low, high = SOFT_REAL if real else SOFT_FAKE
    return torch.empty(n, device=device).uniform_(low, high)


def feature_matching_loss(D: Net, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
    """Mean squared distance between the mean D features of real and fake images (Salimans et al., 2016).

    The mean over features (not the sum) keeps its scale independent of the discriminator's width.

    Args:
        D: Discriminator accepting ``features=True``.
        real: Real images (N, C, H, W); only a target, so no gradient flows through them.
        fake: Generated images (M, C, H, W), undetached.
        labels: Class ids shared by real and fake (N,), or None.

    Returns:
        Scalar loss; zero when real and fake give the same features.
    """
    with torch.no_grad():
        _, f_real = D(real, labels, features=True)
    _, f_fake = D(fake, labels, features=True)
    return (f_real.mean(dim=0) - f_fake.mean(dim=0)).pow(2).mean()


def _stats(**values: Tensor) -> dict[str, float]:
    """Scalars to floats with one device sync instead of one per value."""
    floats = torch.stack([v.detach().float() for v in values.values()]).tolist()
    return dict(zip(values, floats))


def _forward(D: Net, real: Tensor, fake: Tensor, labels: Tensor | None, joint: bool, **kw) -> tuple[Any, Any]:
    """D's outputs on real and on fake: two forwards, or one on their concatenation split in two."""
    if not joint:
        return D(real, labels, **kw), D(fake, labels, **kw)
    both = D(torch.cat([real, fake]), None if labels is None else torch.cat([labels, labels]), **kw)
    n = len(real)
    if isinstance(both, tuple):
        return tuple(x[:n] for x in both), tuple(x[n:] for x in both)
    return both[:n], both[n:]


def _class_targets(labels: Tensor | None) -> Tensor:
    """AC-GAN's class targets: the batch's labels (an auxiliary classifier is built for conditional models only)."""
    if labels is None:
        raise ValueError("the auxiliary classifier's loss needs the batch's class labels")
    return labels


class Objective:
    """Base objective: subclasses define the loss terms on logits.

    Attributes:
        name: Registry name.
        n_critic: Discriminator steps per generator step.
        feature_matching: The generator matches mean D features of real images instead of fooling D.
    """

    name = ""
    default_n_critic = 1

    # Two-term objectives (a real term and a fake term) report loss_d as their mean and can optimise
    # their sum instead; the Wasserstein estimate is one difference, not two terms, so it cannot.
    two_terms = True

    def __init__(
        self,
        *,
        feature_matching: bool = False,
        n_critic: int | None = None,
        d_loss_sum: bool = False,
        aux_classifier: bool = False,
    ) -> None:
        """Set the options shared by every objective.

        Args:
            feature_matching: Replace the generator's adversarial loss by feature matching.
            n_critic: Discriminator steps per generator step; None: the objective's default.
            d_loss_sum: Optimise real + fake (the Galaxy10 and woodblock seeds) instead of their mean.
            aux_classifier: AC-GAN: add the class cross-entropy on real and fake images to D's loss and
                on fakes to G's (the discriminator must have been built with ``aux_classifier``).
        """
        self.feature_matching = feature_matching
        self.n_critic = n_critic if n_critic is not None else self.default_n_critic
        self.d_loss_sum = d_loss_sum
        self.aux_classifier = aux_classifier

    # Whether the discriminator's penalties need the real and the fake batch together (the gradient penalty
    # interpolates between them): such an objective cannot step on a real and a fake batch apart.
    penalty_needs_both = False

    def d_term(self, logits: Tensor, real: bool) -> Tensor:
        """The discriminator's loss term on a batch that is all real (``real``) or all fake."""
        raise NotImplementedError

    def d_real_fake(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        """The real and the fake term of the discriminator loss (their sum is ``d_terms``)."""
        return self.d_term(real_logits, True), self.d_term(fake_logits, False)

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Discriminator loss from its outputs on real and fake images (the sum of the two terms)."""
        real_term, fake_term = self.d_real_fake(real_logits, fake_logits)
        return real_term + fake_term

    def g_term(self, fake_logits: Tensor) -> Tensor:
        """Generator adversarial loss from the discriminator's outputs on fakes."""
        return -fake_logits.mean()

    def score(self, logits: Tensor) -> Tensor:
        """What ``d_real`` / ``d_fake`` report: the raw critic score unless overridden."""
        return logits

    def d_loss(
        self, D: Net, real: Tensor, fake: Tensor, labels: Tensor | None, *, joint: bool = False
    ) -> tuple[Tensor, dict]:
        """Discriminator loss on a real and a fake batch (``fake`` is detached here).

        Args:
            D: The discriminator.
            real: Real images (N, C, H, W) in [-1, 1].
            fake: Generated images (N, C, H, W); detached here.
            labels: Class ids (N,) for both batches, or None.
            joint: One forward of D on the concatenation of real and fake (Keras' ``train_on_batch`` on
                ``np.concatenate``: D's batch-norm statistics mix both) instead of one forward each.

        Returns:
            (loss, stats) with stats keys ``loss_d``, ``d_real``, ``d_fake`` and one per penalty.
        """
        fake = fake.detach()
        extra: dict[str, Tensor] = {}
        if self.aux_classifier:
            (real_logits, real_cls), (fake_logits, fake_cls) = _forward(D, real, fake, labels, joint, classes=True)
            targets = _class_targets(labels)
            aux = F.cross_entropy(real_cls, targets) + F.cross_entropy(fake_cls, targets)
            extra["loss_aux"] = aux
            extra["d_class_acc"] = (real_cls.argmax(1) == labels).float().mean()
        else:
            real_logits, fake_logits = _forward(D, real, fake, labels, joint)
        return self._d_from_logits(D, real, fake, labels, real_logits, fake_logits, extra)

    def _d_from_logits(self, D: Net, real: Tensor, fake: Tensor, labels: Tensor | None, real_logits: Tensor,
                       fake_logits: Tensor, extra: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """D's loss and stats from its outputs on real and fake (``extra``: the AC-GAN term, when there is one)."""
        if self.two_terms:
            real_term, fake_term = self.d_real_fake(real_logits, fake_logits)
            loss = (real_term + fake_term) * (1.0 if self.d_loss_sum else 0.5)
            extra["loss_d_mean"] = (real_term + fake_term) * 0.5
            if self.d_loss_sum:
                extra["loss_d_sum"] = real_term + fake_term
            # a logit above 0 calls the image real, for bce and hinge alike (the Keras 'accuracy' metric)
            extra["d_acc"] = torch.cat([(real_logits > 0).float(), (fake_logits <= 0).float()]).mean()
        else:
            loss = self.d_terms(real_logits, fake_logits)
        if "loss_aux" in extra:
            loss = loss + extra["loss_aux"]
        penalties = self.penalties(D, real, fake, labels)  # they detach fake themselves
        for weight, value in penalties.values():
            loss = loss + weight * value
        # loss_d is the optimised loss for one-term objectives and the mean of real and fake for two-term
        # ones, whichever of mean or sum is optimised (penalties and the aux term are reported on their own).
        loss_d = extra.pop("loss_d_mean") if self.two_terms else loss
        return loss, _stats(
            loss_d=loss_d,
            d_real=self.score(real_logits).mean(),
            d_fake=self.score(fake_logits).mean(),
            **extra,
            **{name: value for name, (_, value) in penalties.items()},
        )

    def d_loss_one(self, D: Net, images: Tensor, labels: Tensor | None, real: bool) -> tuple[Tensor, dict]:
        """Discriminator loss on a batch that is all real or all fake (one Keras ``train_on_batch`` of the
        book's GAN): the one term, with the AC-GAN class term on the same batch; no penalty.

        Returns:
            (loss, stats) with stats keys ``loss_d_real`` or ``loss_d_fake`` and ``d_real`` or ``d_fake``.
        """
        if self.penalty_needs_both:
            raise GanforgeError(f"loss {self.name!r} penalises between real and fake images; it needs both in one step")
        images = images.detach()
        which = "real" if real else "fake"
        extra: dict[str, Tensor] = {}
        if self.aux_classifier:
            logits, cls = D(images, labels, classes=True)
            extra[f"loss_aux_{which}"] = F.cross_entropy(cls, _class_targets(labels))
        else:
            logits = D(images, labels)
        term = self.d_term(logits, real)
        loss = term + extra[f"loss_aux_{which}"] if extra else term
        return loss, _stats(**{f"loss_d_{which}": term, f"d_{which}": self.score(logits).mean()}, **extra)

    def joint_losses(self, D: Net, real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, dict]:
        """Both players' losses from one forward of D on the real and on the (undetached) fake batch, as
        TensorFlow's two gradient tapes take them: D's loss, G's loss and their stats. The caller takes each
        loss's gradient with respect to its own player only.
        """
        if self.feature_matching or self.aux_classifier:
            raise GanforgeError("feature matching and the AC-GAN class term need forwards of their own; "
                                "one shared forward (update simultaneous) cannot give them")
        real_logits, fake_logits = D(real, labels), D(fake, labels)
        loss_d, stats = self._d_from_logits(D, real, fake, labels, real_logits, fake_logits, {})
        loss_g = self.g_term(fake_logits)
        return loss_d, loss_g, {**stats, "loss_g": float(loss_g.detach())}

    def penalties(
        self, D: Net, real: Tensor, fake: Tensor, labels: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        """Regularisers added to the discriminator loss, as name -> (weight, value); none by default."""
        return {}

    def g_loss(
        self, D: Net, fake: Tensor, labels: Tensor | None, real: Tensor | None = None
    ) -> tuple[Tensor, dict]:
        """Generator loss.

        Args:
            D: The discriminator.
            fake: Generated images (N, C, H, W), undetached.
            labels: Class ids (N,) of the fakes, or None.
            real: Real images (N, C, H, W); required with feature matching.

        Returns:
            (loss, stats) with stats key ``loss_g``.
        """
        extra: dict[str, Tensor] = {}
        if self.feature_matching:
            if real is None:
                raise ValueError("feature matching needs the real batch: pass real=")
            loss = feature_matching_loss(D, real, fake, labels)
            if self.aux_classifier:
                extra["loss_aux_g"] = F.cross_entropy(D(fake, labels, classes=True)[1], _class_targets(labels))
        elif self.aux_classifier:
            logits, cls = D(fake, labels, classes=True)
            loss = self.g_term(logits)
            extra["loss_aux_g"] = F.cross_entropy(cls, _class_targets(labels))
        else:
            loss = self.g_term(D(fake, labels))
        if extra:
            return loss + extra["loss_aux_g"], _stats(loss_g=loss, **extra)
        return loss, _stats(loss_g=loss)

    def after_d_step(self, D: nn.Module) -> None:
        """Hook run after each discriminator optimiser step; nothing by default."""


class NonSaturatingBCE(Objective):
    """Binary cross-entropy; the generator maximises log D(G(z)) (Goodfellow et al., 2014).

    Optional one-sided label smoothing (real targets in [0.9, 1]) and noisy labels (real targets in
    [0.9, 1] and fake ones in [0, 0.1]).
    """

    name = "bce"

    def __init__(self, *, label_smoothing: bool = False, noisy_labels: bool = False, **common) -> None:
        """Set the target options.

        Args:
            label_smoothing: Draw real targets in ``SOFT_REAL`` instead of 1 (one-sided).
            noisy_labels: Draw real targets in ``SOFT_REAL`` and fake ones in ``SOFT_FAKE``.
            **common: Options of ``Objective``.
        """
        super().__init__(**common)
        self.label_smoothing = label_smoothing
        self.noisy_labels = noisy_labels

    def d_term(self, logits: Tensor, real: bool) -> Tensor:
        """BCE against targets ~1 (real) or ~0 (fake)."""
        soft = (self.label_smoothing or self.noisy_labels) if real else self.noisy_labels
        targets = draw_targets(len(logits), real=real, soft=soft, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))

    def g_term(self, fake_logits: Tensor) -> Tensor:
        """-log sigmoid(D(G(z))): strong gradients while D still rejects the fakes."""
        return F.softplus(-fake_logits).mean()

    def score(self, logits: Tensor) -> Tensor:
        """Probability that the image is real."""
        return torch.sigmoid(logits)


class Hinge(Objective):
    """Hinge loss (Lim & Ye, 2017; used by SNGAN and BigGAN)."""

    name = "hinge"

    def d_term(self, logits: Tensor, real: bool) -> Tensor:
        """max(0, 1 - D(x)) on real images, max(0, 1 + D(G(z))) on fakes."""
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()


class Wasserstein(Objective):
    """Critic loss of the WGANs; each subclass keeps the critic Lipschitz its own way."""

    default_n_critic = 5  # the critic should be near optimal before each generator step
    two_terms = False

    def d_term(self, logits: Tensor, real: bool) -> Tensor:
        """-E[D(x)] on real images, E[D(G(z))] on fakes (Keras' -mean(y * pred) with y = 1 and -1)."""
        return -logits.mean() if real else logits.mean()

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Negative Wasserstein estimate: E[D(G(z))] - E[D(x)]."""
        return fake_logits.mean() - real_logits.mean()


class WassersteinClip(Wasserstein):
    """WGAN with weight clipping (Arjovsky et al., 2017); kept for comparison with WGAN-GP."""

    name = "wgan-clip"

    def __init__(self, *, clip: float = 0.01, **common) -> None:
        """Set the clipping bound.

        Args:
            clip: Every discriminator parameter is clamped to [-clip, clip] after each step.
            **common: Options of ``Objective``.
        """
        super().__init__(**common)
        self.clip = clip

    @torch.no_grad()
    def after_d_step(self, D: nn.Module) -> None:
        """Clamp every parameter: a crude way to keep the critic Lipschitz."""
        for p in D.parameters():
            p.clamp_(-self.clip, self.clip)


def gradient_penalty(
    D: Net, real: Tensor, fake: Tensor, labels: Tensor | None = None, eps: Tensor | None = None
) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat between real and fake.

    Args:
        D: The critic.
        real: Real images (N, C, H, W).
        fake: Generated images (N, C, H, W).
        labels: Class ids (N,) for the critic, or None.
        eps: Interpolation weights (N, 1, 1, 1); None: uniform in [0, 1].

    Returns:
        Scalar penalty, differentiable with respect to D's parameters.
    """
    real, fake = real.detach(), fake.detach()
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, labels).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


class WassersteinGP(Wasserstein):
    """WGAN-GP (Gulrajani et al., 2017): the Wasserstein loss plus a gradient penalty, no clipping."""

    name = "wgan-gp"
    penalty_needs_both = True

    def __init__(self, *, gp_weight: float = 10.0, **common) -> None:
        """Set the penalty weight.

        Args:
            gp_weight: Weight of the gradient penalty (lambda; 10 in the paper).
            **common: Options of ``Objective``.
        """
        super().__init__(**common)
        self.gp_weight = gp_weight

    def penalties(
        self, D: Net, real: Tensor, fake: Tensor, labels: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        """The gradient penalty, reported as ``gp`` (unweighted)."""
        return {"gp": (self.gp_weight, gradient_penalty(D, real, fake, labels))}


OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (NonSaturatingBCE, Hinge, WassersteinGP, WassersteinClip)
}


def build_objective(
    name: str,
    *,
    label_smoothing: bool,
    noisy_labels: bool,
    feature_matching: bool,
    gp_weight: float = 10.0,
    clip: float = 0.01,
    n_critic: int | None = None,
    d_loss_sum: bool = False,
    aux_classifier: bool = False,
) -> Objective:
    """Build an objective by name, checking that the options fit it.

    Args:
        name: One of ``OBJECTIVES``.
        label_smoothing: Real targets in [0.9, 1] (bce only).
        noisy_labels: Real targets in [0.9, 1] and fake ones in [0, 0.1] (bce only).
        feature_matching: Generator matches mean discriminator features of real images.
        gp_weight: Gradient penalty weight (wgan-gp).
        clip: Weight clipping bound (wgan-clip).
        n_critic: Discriminator steps per generator step; None: 5 for the WGANs, 1 otherwise.
        d_loss_sum: Optimise the sum of the real and fake terms instead of their mean (bce, hinge).
        aux_classifier: Add AC-GAN's class cross-entropy to both losses.

    Returns:
        The objective.

    Raises:
        GanforgeError: Unknown name, or options that do not apply or are out of range.
    """
    if name not in OBJECTIVES:
        raise GanforgeError(f"unknown loss {name!r}; valid losses: {', '.join(OBJECTIVES)}")
    if (label_smoothing or noisy_labels) and name != "bce":
        raise GanforgeError(f"label_smoothing and noisy_labels apply only to loss 'bce', not {name!r}")
    if n_critic is not None and n_critic < 1:
        raise GanforgeError(f"n_critic must be at least 1, got {n_critic}")
    if d_loss_sum and not OBJECTIVES[name].two_terms:
        raise GanforgeError(f"d_loss_sum applies to losses with a real and a fake term (bce, hinge), not {name!r}")
    if gp_weight < 0 or clip <= 0:
        raise GanforgeError(f"gp_weight must be >= 0 and clip > 0, got {gp_weight} and {clip}")
    own_options: dict[str, dict[str, Any]] = {
        "bce": {"label_smoothing": label_smoothing, "noisy_labels": noisy_labels},
        "wgan-gp": {"gp_weight": gp_weight},
        "wgan-clip": {"clip": clip},
    }
    options = own_options.get(name, {})
    return OBJECTIVES[name](
        feature_matching=feature_matching, n_critic=n_critic, d_loss_sum=d_loss_sum, aux_classifier=aux_classifier,
        **options,
    )


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """Draw z = mu + sigma * eps, differentiable in mu and logvar (Kingma & Welling, 2014)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def vae_loss(
    decoder: Net, encoder: Net, real: Tensor, labels: Tensor | None, kl_weight: float = 1.0,
    unit: bool = False,
) -> tuple[Tensor, dict]:
    """Negative ELBO per image: squared-error reconstruction plus ``kl_weight`` times KL(q(z|x) || N(0, I)).

    Both terms are summed over pixels / latent dimensions and averaged over the batch, so their
    balance does not depend on the batch size (the squared error is a Gaussian likelihood with a
    fixed variance, up to a constant).

    Args:
        decoder: The VAE's generator.
        encoder: The VAE's encoder.
        real: Images (N, C, H, W) in [-1, 1].
        labels: Class ids (N,), or None.
        kl_weight: Weight of the KL term (beta).
        unit: Take the squared error on [0, 1] (``(x + 1) / 2``: a sigmoid decoder's own output) instead.

    Returns:
        (loss, stats) with stats keys ``loss_vae``, ``loss_recon``, ``loss_kl``.
    """
    n = real.shape[0]
    mu, logvar = encoder(real, labels)
    recon = decoder(reparameterise(mu, logvar), labels)
    recon_loss = F.mse_loss(*_on_unit(recon, real, unit), reduction="sum") / n
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
    loss = recon_loss + kl_weight * kl
    return loss, _stats(loss_vae=loss, loss_recon=recon_loss, loss_kl=kl)


def _on_unit(recon: Tensor, real: Tensor, unit: bool) -> tuple[Tensor, Tensor]:
    """Both images mapped from [-1, 1] to [0, 1] when ``unit`` (the book's pixel scale), else as given."""
    return ((recon + 1) / 2, (real + 1) / 2) if unit else (recon, real)


def ae_loss(
    decoder: Net, encoder: Net, real: Tensor, labels: Tensor | None, unit: bool = False
) -> tuple[Tensor, dict]:
    """Mean squared reconstruction error per pixel (the book's r_loss: ``K.mean(K.square(...))``).

    Args:
        decoder: The autoencoder's generator.
        encoder: The autoencoder's encoder (one latent point per image).
        real: Images (N, C, H, W) in [-1, 1] (a squared error 4x the book's on [0, 1]; same minimiser).
        labels: Class ids (N,), or None.
        unit: Take the error on [0, 1] as the book does (its sigmoid decoder's scale).

    Returns:
        (loss, stats) with stats key ``loss_recon``.
    """
    recon = decoder(encoder(real, labels), labels)
    loss = F.mse_loss(*_on_unit(recon, real, unit))
    return loss, _stats(loss_recon=loss)
