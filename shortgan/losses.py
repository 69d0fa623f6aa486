"""GAN losses as pure functions of discriminator logits (raw critic scores for WGAN and hinge).

Each adversarial loss is a pair: `discriminator_*` (D minimises it) and `generator_*` (G minimises it).
"""

from typing import Callable

import torch
import torch.nn.functional as F


# ---- non-saturating and minimax BCE (Goodfellow et al. 2014) ----------------------------------


def discriminator_bce(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0, fake_label: float = 0.0
) -> torch.Tensor:
    """BCE of D on real images (target `real_label`, e.g. 0.9 for one-sided label smoothing) plus on fakes.

    The two terms are summed, so an undecided D (logit 0 everywhere) scores 2·ln 2 ≈ 1.39.
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_label))
    return real + fake


def generator_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss: BCE towards "real" (−log D(G(z))), strong gradients when D wins."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def generator_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's original minimax loss, log(1 − D(G(z))) = −softplus(logit).

    Its gradient, −sigmoid(logit), vanishes when D confidently rejects the fakes, which is early
    in training: the reason the non-saturating loss replaced it.
    """
    return -F.softplus(fake_logits).mean()


# ---- least squares (Mao et al. 2017), targets a=0 (fake), b=1 (real), c=1 (G's aim) ------------


def discriminator_lsgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """½·E[(D(x) − 1)²] + ½·E[D(G(z))²]: D regresses reals to 1 and fakes to 0."""
    return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()


def generator_lsgan(fake_logits: torch.Tensor) -> torch.Tensor:
    """½·E[(D(G(z)) − 1)²]: G pulls its scores to the real target; far-off fakes get large gradients."""
    return 0.5 * (fake_logits - 1).square().mean()


# ---- Wasserstein (Arjovsky et al. 2017; Gulrajani et al. 2017) ---------------------------------


def discriminator_wasserstein(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[D(G(z))] − E[D(x)]: the negated Wasserstein estimate, if D is kept 1-Lipschitz."""
    return fake_scores.mean() - real_scores.mean()


def generator_wasserstein(fake_scores: torch.Tensor) -> torch.Tensor:
    """−E[D(G(z))]; also G's hinge loss (Lim & Ye 2017, Miyato et al. 2018)."""
    return -fake_scores.mean()


def input_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """∇ₓ Σ f(x), kept in the graph: a loss made of it still trains f's weights by backward()."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
    return grad


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    gradient: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor] = input_gradient,
) -> torch.Tensor:
    """WGAN-GP's E[(‖∇D(x̂)‖ − 1)²] at random points x̂ on lines between real and fake images.

    Zero for a critic whose gradient has unit norm everywhere (a 1-Lipschitz critic that is tight).
    `gradient(f, x)` takes the gradient: `input_gradient` (autograd), or its torch.func form inside
    the functional iteration, where autograd cannot run.
    """
    eps = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = eps * real + (1 - eps) * fake.detach()
    return (gradient(critic, mixed).flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    gradient: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor] = input_gradient,
) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ½·E[‖∇D(x)‖²] on real images, a zero-centred penalty.

    D may not slope around the real data, so it cannot sharpen its boundary around the few modes G
    covers; G's gradients stay informative elsewhere. `gradient` as in `gradient_penalty`.
    """
    return 0.5 * gradient(critic, real).flatten(1).square().sum(1).mean()


# ---- hinge (Lim & Ye 2017) ---------------------------------------------------------------------


def discriminator_hinge(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 − D(x))] + E[max(0, 1 + D(G(z)))]: no loss once reals score ≥ 1 and fakes ≤ −1."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


generator_hinge = generator_wasserstein


# ---- by name, as configs choose them -------------------------------------------------------------

# bce and minimax share D's BCE, which takes the label targets (discriminator_bce); the others take none.
DISCRIMINATOR: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "lsgan": discriminator_lsgan,
    "wgan": discriminator_wasserstein,
    "wgan_gp": discriminator_wasserstein,
    "hinge": discriminator_hinge,
}
GENERATOR: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bce": generator_nonsaturating,
    "minimax": generator_minimax,
    "lsgan": generator_lsgan,
    "wgan": generator_wasserstein,
    "wgan_gp": generator_wasserstein,
    "hinge": generator_hinge,
}


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mao et al. 2019 (MSGAN): how far apart two fakes' noise is for how far apart the fakes are,
    mean|z1 − z2| / mean|G(z1) − G(z2)|, over the pairs (first half, second half) of the batch.
    Minimising it pushes nearby noise to distinct images: G may not map many z to one image."""
    h = fake.size(0) // 2
    image_distance = (fake[:h] - fake[h : 2 * h]).abs().mean()
    return 1.0 / (image_distance / (z[:h] - z[h : 2 * h]).abs().mean() + eps)
