"""The adversarial iteration, written once: (1) one D step, (2) `g_steps` G steps on fresh noise,
(3) the weight average of G; and the pretraining step beside it.

`AdversarialRecipe.schedule` decides what changes from iteration to iteration (the instance noise's
std, whether G updates); `adversarial_iteration` holds every other GAN decision of an iteration:
which noise D sees, D's loss and gradient penalty, weight clipping, the curves, G's loss through D,
the weight average. `pretraining_iteration` is G's Smooth-L1 step before the adversarial phase.
Neither updates a network itself; it asks an `Updates` object to "minimise this objective for this network",
and that is the only thing the ways of running it differ in:

- `EagerUpdates` (here): Lightning's toggled optimizer, `manual_backward` and `optimizer.step()`,
  the code of the DCGAN reference implementation;
- `PlainUpdates` (here): the same in plain PyTorch, no Lightning: the reference a reader can follow,
  and the plain side of `benchmarks.lightning_overhead`;
- `FunctionalUpdates` (shortgan/functional.py): the same objective differentiated with `torch.func`
  and Adam written as tensor maths, so that `torch.compile` can take the whole iteration as one
  graph (one CUDA-graph launch on a GPU).
"""

from __future__ import annotations  # nested functions' annotations stay strings: dynamo traces through them

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

from shortgan import losses
from shortgan.augment import Augmentation, augment
from shortgan.errors import UserError
from shortgan.networks.conditioning import NO_CLASS
from shortgan.pretraining import Pairing, pretraining_loss
from shortgan.schedules import InstanceNoise

Loss = Literal["bce", "minimax", "lsgan", "wgan", "wgan_gp", "hinge"]
# What one update steps: G or D with its optimizer, or G with its pretraining optimizer.
Network = Literal["generator", "discriminator", "pretraining"]
# An objective takes the generator and the discriminator as callables (the modules themselves, or
# the same modules over other parameter tensors) and returns (loss, what else the caller wants).
Objective = Callable[[Callable[..., torch.Tensor], Callable[..., torch.Tensor]], tuple[torch.Tensor, Any]]


@dataclass(frozen=True)
class AdversarialRecipe:
    """The GAN decisions of an iteration that a user sets (the `GAN` arguments of the same names;
    `noise` holds `instance_noise`, `instance_noise_fade` and `instance_noise_epochs`)."""

    loss: Loss = "bce"
    g_steps: int = 2
    clip_value: float | None = None
    gp_weight: float = 10.0
    real_label: float = 0.9
    fake_label: float = 0.0
    noise_fakes: bool = True
    augment: tuple[Augmentation, ...] = ()
    freeze_discriminator: bool = False
    mode_seeking: float = 0.0
    r1_gamma: float = 0.0
    n_critic: int = 1
    noise: InstanceNoise = InstanceNoise()
    label_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_critic < 1:
            raise UserError(f"model.n_critic must be at least 1, got {self.n_critic}")
        if self.g_steps < 1:
            raise UserError(f"model.g_steps must be at least 1, got {self.g_steps}")
        if self.mode_seeking < 0:
            raise UserError(f"model.mode_seeking must be >= 0 (0 turns it off), got {self.mode_seeking}")
        if self.r1_gamma < 0:
            raise UserError(f"model.r1_gamma must be >= 0 (0 turns it off), got {self.r1_gamma}")
        if not 0 <= self.label_dropout < 1:
            raise UserError(f"model.label_dropout must be in [0, 1) (0 turns it off), got {self.label_dropout}")
        if self.clip_value is not None and self.clip_value <= 0:
            raise UserError(f"model.clip_value must be > 0 (or null to turn clipping off), got {self.clip_value}")

    def schedule(self, iteration: int, progress: float, adversarial_epoch: int) -> tuple[float, bool]:
        """(instance-noise std, whether G updates) for the `iteration`-th adversarial iteration of its
        epoch (from 0): G updates on every `n_critic`-th; the noise fades with the `progress` (0 → 1) of
        the adversarial training, or with its epochs (`instance_noise_epochs`)."""
        return self.noise.at(progress, adversarial_epoch), (iteration + 1) % self.n_critic == 0

    @property
    def input_gradient_penalty(self) -> bool:
        """Whether D's loss holds a gradient of D with respect to its input (WGAN-GP's penalty, R1)."""
        return not self.freeze_discriminator and (self.loss == "wgan_gp" or self.r1_gamma > 0)

    @property
    def bce(self) -> bool:
        """Whether D outputs probabilities' logits (bce, minimax) rather than critic scores."""
        return self.loss in ("bce", "minimax")

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.bce:
            return losses.discriminator_bce(real_logits, fake_logits, self.real_label, self.fake_label)
        return losses.DISCRIMINATOR[self.loss](real_logits, fake_logits)

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return losses.GENERATOR[self.loss](fake_logits)

    def discriminator_curves(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a user watches of D besides its loss."""
        # float(): under bf16 autocast the logits are bfloat16, and curves should not carry its rounding.
        real_logits, fake_logits = real_logits.detach().float(), fake_logits.detach().float()
        if self.bce:
            # Mean D probabilities: D(x) near 1 and D(G(z)) near 0 means D is winning.
            return {"d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}
        # For WGAN this gap estimates the Wasserstein distance: it should shrink as G improves.
        return {"critic_gap": real_logits.mean() - fake_logits.mean()}


class Updates(Protocol):
    """How an objective is minimised for one network: the one seam between the ways of running."""

    def minimise(self, network: Network, objective: Objective) -> tuple[torch.Tensor, Any]:
        """One optimizer step of `network` on `objective`; returns its (detached loss, aux)."""

    def evaluate(self, objective: Objective) -> tuple[torch.Tensor, Any]:
        """The objective's value without any update (a frozen discriminator's loss, for the curves)."""

    def input_gradient(self, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """∇ₓ Σ f(x), differentiable in f's weights (for the gradient penalty)."""


def add_instance_noise(images: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """images + N(0, std²). A float std of 0 draws nothing; a tensor std (the compiled iteration's,
    so that a fading std never recompiles the graph) always draws."""
    if isinstance(std, float) and std <= 0:
        return images
    return images + std * torch.randn_like(images)


def adversarial_iteration(
    generator: nn.Module,
    discriminator: nn.Module,
    updates: Updates,
    recipe: AdversarialRecipe,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    noise_std: float | torch.Tensor,
    g_turn: bool = True,
    average: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """One adversarial iteration on the real batch `real` (B, C, H, W); returns its curves.

    `labels` (B,) are the classes of a conditional GAN (None otherwise): the fakes take the real
    batch's classes; with `label_dropout`, a share of the real images and the fakes drawn for them
    are `NO_CLASS`. `noise_std` is the instance noise of this iteration; `g_turn` whether G updates
    (every `n_critic`-th iteration); `average` the weight average of G (`ExponentialMovingAverage`).
    """
    b = real.size(0)
    if labels is not None and recipe.label_dropout:
        # D and G learn the unconditional task beside the conditional one, in the same weights.
        dropped = torch.rand(b, device=labels.device) < recipe.label_dropout
        labels = torch.where(dropped, NO_CLASS, labels)
    cond = () if labels is None else (labels,)

    def noise() -> torch.Tensor:
        return torch.randn(b, generator.latent_dim, device=real.device, dtype=real.dtype)

    def seen_by_d(images: torch.Tensor, fake: bool) -> torch.Tensor:
        # Noise on real images alone would let D tell them apart by their noise (`noise_fakes`).
        if not fake or recipe.noise_fakes:
            images = add_instance_noise(images, noise_std)
        return augment(images, recipe.augment) if recipe.augment else images

    # (1) update D: real (+ noise) → "real", G(z) → "fake"; a gradient penalty if the recipe has one.
    # No graph through G, and said with no_grad rather than only G's frozen parameters: a compiled G
    # is told apart from the G-step graph by grad mode; torch.compile does not always guard
    # parameters' requires_grad (pytorch/pytorch#139476). G's BatchNorm statistics move here too.
    with torch.no_grad():
        fake = generator(noise(), *cond)
    real_in, fake_in = seen_by_d(real, fake=False), seen_by_d(fake, fake=True)

    def d_objective(G: Callable, D: Callable) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        # Two calls, not one on real+fake: batch statistics (minibatch stddev, BatchNorm) must not mix
        # the two batches, as in the DCGAN reference implementation.
        real_logits, fake_logits = D(real_in, *cond), D(fake_in, *cond)
        loss = recipe.discriminator_loss(real_logits, fake_logits)
        critic = lambda x: D(x, *cond)
        if recipe.loss == "wgan_gp" and not recipe.freeze_discriminator:
            loss = loss + recipe.gp_weight * losses.gradient_penalty(critic, real_in, fake_in, updates.input_gradient)
        if recipe.r1_gamma and not recipe.freeze_discriminator:
            loss = loss + recipe.r1_gamma * losses.r1_penalty(critic, real_in, updates.input_gradient)
        return loss, (real_logits.detach(), fake_logits.detach())

    if recipe.freeze_discriminator:
        d_loss, (real_logits, fake_logits) = updates.evaluate(d_objective)
    else:
        d_loss, (real_logits, fake_logits) = updates.minimise("discriminator", d_objective)
        if recipe.clip_value is not None:
            # WGAN's way to keep the critic Lipschitz.
            with torch.no_grad():
                for p in discriminator.parameters():
                    p.clamp_(-recipe.clip_value, recipe.clip_value)
    curves = {"d_loss": d_loss, **recipe.discriminator_curves(real_logits, fake_logits)}

    # (2) update G g_steps times on fresh noise: make D call the fakes real.
    if g_turn:
        if recipe.mode_seeking and b < 2:
            raise UserError(f"model.mode_seeking pairs the fakes of a batch, so it needs batches of at least 2 (got {b})")
        g_cond = cond
        if recipe.mode_seeking and labels is not None:
            # Mode seeking pairs fake i with fake i + b//2: each pair is drawn for one class.
            h = b // 2
            g_cond = (torch.cat([labels[:h], labels[:h], labels[2 * h :]]),)
        for _ in range(recipe.g_steps):
            z = noise()

            def g_objective(G: Callable, D: Callable, z: torch.Tensor = z) -> tuple[torch.Tensor, tuple]:
                fake = G(z, *g_cond)
                loss = recipe.generator_loss(D(seen_by_d(fake, fake=True), *g_cond))
                if recipe.mode_seeking:
                    loss = loss + recipe.mode_seeking * losses.mode_seeking(fake, z)
                return loss, ()

            curves["g_loss"], _ = updates.minimise("generator", g_objective)

    # (3) the weight average follows G: once per G turn, so ema_decay is the decay per G update
    # whatever n_critic is (a D-only iteration leaves G, and so its average, as they were).
    if g_turn:
        follow(average, generator)
    return curves


def pretraining_iteration(
    generator: nn.Module,
    updates: Updates,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    pairing: Pairing,
    candidates: int,
    average: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """One step of G's pretraining towards the real batch (`pretraining_loss`, no D), with G's
    pretraining optimizer; then the weight average follows G, as after an adversarial G turn."""
    loss, _ = updates.minimise(
        "pretraining", lambda G, D: (pretraining_loss(G, real, pairing, candidates, labels), ())
    )
    follow(average, generator)
    return {"pretrain_loss": loss}


def follow(average: nn.Module | None, generator: nn.Module) -> None:
    """The weight average's update after G has stepped (its first copies G)."""
    if average is not None:
        average.update_parameters(generator)


class EagerUpdates:
    """`Updates` through Lightning's manual optimisation: toggle the network's optimizer (the other
    network's parameters stop taking gradients), `zero_grad`, `manual_backward`, `step`. Works with any
    optimizer, precision plugin and strategy (DDP reduces gradients in `manual_backward`).

    Args:
        module: the LightningModule with `generator`, `discriminator` and optimizers (G's, D's, …).
    """

    input_gradient = staticmethod(losses.input_gradient)

    def __init__(self, module: Any) -> None:
        self.module = module

    def minimise(self, network: Network, objective: Objective) -> tuple[torch.Tensor, Any]:
        module = self.module
        # The GAN's optimizers, in configure_optimizers' order.
        optimizer = module.optimizers()[("generator", "discriminator", "pretraining").index(network)]
        with module.toggled_optimizer(optimizer):
            loss, aux = objective(module.generator, module.discriminator)
            optimizer.zero_grad()
            module.manual_backward(loss)
            optimizer.step()
        return loss.detach(), aux

    def evaluate(self, objective: Objective) -> tuple[torch.Tensor, Any]:
        with torch.no_grad():
            return objective(self.module.generator, self.module.discriminator)


class PlainUpdates:
    """`Updates` in plain PyTorch, as the pytorch/examples DCGAN loop writes them: freeze the other
    network, `zero_grad`, `backward`, `step`.

    Args:
        generator, discriminator: the networks.
        generator_optimizer, discriminator_optimizer: their optimizers.
        pretraining_optimizer: G's optimizer in pretraining, if it runs.
    """

    input_gradient = staticmethod(losses.input_gradient)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, generator_optimizer: torch.optim.Optimizer,
                 discriminator_optimizer: torch.optim.Optimizer,
                 pretraining_optimizer: torch.optim.Optimizer | None = None) -> None:  # fmt: skip
        self.generator, self.discriminator = generator, discriminator
        self.optimizers = {"generator": generator_optimizer, "discriminator": discriminator_optimizer,
                           "pretraining": pretraining_optimizer}  # fmt: skip

    def minimise(self, network: Network, objective: Objective) -> tuple[torch.Tensor, Any]:
        other = self.generator if network == "discriminator" else self.discriminator
        other.requires_grad_(False)  # the other network's weights take no gradient from this loss
        loss, aux = objective(self.generator, self.discriminator)
        self.optimizers[network].zero_grad()
        loss.backward()
        self.optimizers[network].step()
        other.requires_grad_(True)
        return loss.detach(), aux

    def evaluate(self, objective: Objective) -> tuple[torch.Tensor, Any]:
        with torch.no_grad():
            return objective(self.generator, self.discriminator)
