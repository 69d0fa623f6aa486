"""What every system that owns a generator shares: fixed sampling noise, sampling and predict."""

import lightning as L
import torch
from torch import nn


class GeneratorSystem(L.LightningModule):
    """A LightningModule with a `generator`, a fixed-noise buffer for progress grids, and `predict`.

    Args:
        generator: the network mapping noise (B, latent_dim) to images (B, C, H, W) in [-1, 1].
        num_fixed_samples: images in the fixed-noise grid logged during training.
        fixed_noise_seed: seed of that fixed noise, so grids of different runs are comparable.
    """

    def __init__(self, generator: nn.Module, num_fixed_samples: int = 64, fixed_noise_seed: int = 0) -> None:
        super().__init__()
        self.generator = generator
        seeded = torch.Generator().manual_seed(fixed_noise_seed)
        # A buffer: moves with the module and is saved in checkpoints, so a resumed run keeps it.
        self.register_buffer("fixed_noise", torch.randn(num_fixed_samples, generator.latent_dim, generator=seeded))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def sampling_generator(self) -> nn.Module:
        """The network that draws samples (a subclass may keep an averaged copy of the generator)."""
        return self.generator

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Images for noise z, with the generator in eval mode (BatchNorm running statistics)."""
        generator = self.sampling_generator()
        was_training = generator.training
        generator.eval()
        try:
            return generator(z)
        finally:
            generator.train(was_training)

    def fixed_samples(self) -> torch.Tensor:
        return self.sample(self.fixed_noise)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        z = torch.randn(len(batch), self.generator.latent_dim, device=self.device)
        return self.sample(z)
