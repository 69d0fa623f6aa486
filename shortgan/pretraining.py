"""Smooth-L1 pretraining of a generator on real images, without a discriminator."""

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from shortgan.generator_system import GeneratorSystem

Pairing = Literal["random", "nearest"]


def pretraining_loss(generator: nn.Module, real: torch.Tensor, pairing: Pairing, candidates: int = 4) -> torch.Tensor:
    """Smooth-L1 distance between generated images and the real batch they are paired with.

    `random` pairs each real image with fresh noise. Its minimiser ignores z and outputs the
    per-pixel median digit, so every sample looks alike.
    `nearest` draws `candidates`× more noise vectors than real images, and pulls, for each real
    image, the generated sample closest to it towards it (Implicit Maximum Likelihood Estimation,
    Li & Malik 2018). Every real image attracts some sample, so no mode is dropped.
    """
    b = real.size(0)
    z = torch.randn(b * (candidates if pairing == "nearest" else 1), generator.latent_dim, device=real.device)
    if pairing == "nearest":
        with torch.no_grad():
            pool = generator(z)  # (candidates·B, C, H, W)
            nearest = torch.cdist(real.flatten(1), pool.flatten(1)).argmin(1)  # (B,)
        z = z[nearest]
    return F.smooth_l1_loss(generator(z), real)


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
        real, _ = batch
        loss = pretraining_loss(self.generator, real, self.hparams.pairing, self.hparams.candidates)
        self.log("train/pretrain_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.generator.parameters())
