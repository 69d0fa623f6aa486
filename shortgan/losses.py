"""GAN losses as pure functions of discriminator logits."""

import torch
import torch.nn.functional as F


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
