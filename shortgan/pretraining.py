"""Smooth-L1 pretraining of a generator on real images, without a discriminator."""

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from shortgan.generator_system import GeneratorSystem

Pairing = Literal["random", "nearest"]


def pretraining_loss(
    generator: nn.Module,
    real: torch.Tensor,
    pairing: Pairing,
    candidates: int = 4,
    labels: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Smooth-L1 distance between generated images and the real batch they are paired with.

    With `labels` (a class-conditional generator), every sample is drawn for a real image's class and
    paired only with images of that class.

    `random` pairs each real image with fresh noise. Its minimiser ignores z and outputs the
    per-pixel median digit, so every sample looks alike.
    `nearest` draws `candidates`× more noise vectors than real images, and pulls, for each real
    image, the generated sample closest to it towards it (Implicit Maximum Likelihood Estimation,
    Li & Malik 2018). Every real image attracts some sample, so no mode is dropped.
    """
    b = real.size(0)
    k = candidates if pairing == "nearest" else 1
    z = torch.randn(b * k, generator.latent_dim, device=real.device)
    y = None if labels is None else labels.repeat(k)  # candidate j is drawn for real image j mod B's class
    if pairing == "nearest":
        with torch.no_grad():
            pool = generator(z) if y is None else generator(z, y)  # (candidates·B, C, H, W)
            distances = torch.cdist(real.flatten(1), pool.flatten(1))  # (B, candidates·B)
            if y is not None:
                distances = distances.masked_fill(labels.unsqueeze(1) != y.unsqueeze(0), float("inf"))
            nearest = distances.argmin(1)  # (B,)
        z, y = z[nearest], None if y is None else y[nearest]
    return F.smooth_l1_loss(generator(z) if y is None else generator(z, y), real)


class GeneratorPretrainer(GeneratorSystem):
    """Trains a generator alone to produce images close to real ones; its checkpoint seeds a `GAN`.

    Args:
        generator: the network to pretrain (it must have a `latent_dim` attribute).
        pairing: how generated samples are matched to real images (see `pretraining_loss`).
        candidates: with `nearest`, noise vectors drawn per real image.
        optimizer: optimizer factory for the generator.
        num_fixed_samples: images in the fixed-noise grid logged each epoch.
        fixed_noise_seed: seed of the fixed noise.
    """

    def __init__(
        self,
        generator: nn.Module,
        pairing: Pairing = "nearest",
        candidates: int = 4,
        optimizer: OptimizerCallable = torch.optim.Adam,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 0,
    ) -> None:
        super().__init__(generator, num_fixed_samples, fixed_noise_seed)
        self.save_hyperparameters(ignore=["generator", "optimizer"])
        self.optimizer_factory = optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        real, labels = batch
        labels = labels if self.num_classes else None
        loss = pretraining_loss(self.generator, real, self.hparams.pairing, self.hparams.candidates, labels)
        self.log("train/pretrain_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.generator.parameters())
