"""Discriminator rejection sampling (Azadi et al. 2019): after training, keep the fakes D rates as real.

A BCE discriminator at its optimum has logit D(x) = log p_data(x) / p_G(x), so accepting each fake
with probability exp(D(x) − max D) turns samples of p_G into samples of p_data — the part of the
data G draws too often is thinned out, blends and broken strokes that D recognises are dropped.
ShortGAN's D is not at its optimum (label smoothing, finite training), so the cut-off is a
quantile of D's logits on fresh fakes rather than their maximum: every fake scored above it is kept,
one scored δ below it with probability exp(−δ). `quantile` 1 is the paper's rule; lower keeps more.
The cut-off is calibrated once (`calibrate`) and then holds for every sample drawn from that model.
Only a D trained with BCE has logits of that meaning: the GAN refuses the option for other losses.
"""

from collections.abc import Callable

import torch

from shortgan.errors import UserError

# The cut-off is a quantile of this many fresh fakes' logits, so it does not depend on how many
# samples one call asks for.
CALIBRATION_SAMPLES = 1000
# A D that rejects nearly everything would loop for ever; after this many rounds the slots still
# empty take their last candidate, and the caller is told how many did.
MAX_ROUNDS = 50
ROUND_SAMPLES = 256


def check_quantile(quantile: float | None) -> None:
    if quantile is not None and not 0.0 <= quantile <= 1.0:
        raise UserError(f"model.rejection_quantile must be in [0, 1] (or null to sample plainly), got {quantile}")


def calibrate(logits: torch.Tensor, quantile: float) -> torch.Tensor:
    """The cut-off: this quantile of D's logits on CALIBRATION_SAMPLES fresh fakes."""
    return torch.quantile(logits.detach().float(), quantile)


@torch.no_grad()
def rejection_sample(
    propose: Callable[[int, torch.Tensor | None], torch.Tensor],
    score: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    n: int,
    cutoff: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """n fakes kept by D, and how the sampling went: the fraction of candidates D accepted
    ("acceptance") and how many slots took a rejected fake after MAX_ROUNDS ("unfilled").

    `propose(k, y)` draws k fakes (of classes y, one per fake, for a conditional model; else y is
    None); `score(x, y)` is D's logit per fake; a fake is kept with probability exp(score − cutoff).
    Every slot i keeps drawing until a fake is accepted, of class labels[i] if given, so a
    conditional model's requested classes keep their proportions. `generator` drives the
    accept/reject draws (the fakes' noise is up to `propose`).
    """
    out: torch.Tensor | None = None
    empty = torch.arange(n, device=cutoff.device)  # slots still without a fake
    proposed = accepted_count = 0
    for _ in range(MAX_ROUNDS):
        m = len(empty)
        if m == 0:
            break
        # Several candidates per slot in one call: candidate j is for slot j mod m. Batches of at least
        # ROUND_SAMPLES also keep D's minibatch-stddev feature what it is for a large batch.
        rows = -(-ROUND_SAMPLES // m)
        y = None if labels is None else labels[empty].repeat(rows)
        x = propose(rows * m, y)
        if out is None:
            out = x.new_empty(n, *x.shape[1:])
        proposed += rows * m
        keep = torch.exp(score(x, y).float() - cutoff).clamp(max=1.0)
        u = torch.rand(rows * m, generator=generator, device=generator.device if generator else keep.device)
        accepted = (u.to(keep.device) < keep).view(rows, m)
        accepted_count += int(accepted.sum())
        x = x.view(rows, m, *x.shape[1:])
        first = accepted.float().argmax(0)  # each slot's first accepted candidate (0 if none)
        chosen = x[first, torch.arange(m, device=x.device)]
        filled = accepted.any(0)
        out[empty] = chosen  # unfilled slots hold a rejected fake until a later round replaces it
        empty = empty[~filled]
    if out is None:  # n == 0
        out = propose(0, None if labels is None else labels[:0])
    return out, {"acceptance": accepted_count / proposed if proposed else float("nan"), "unfilled": float(len(empty))}
