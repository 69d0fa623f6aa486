"""MP-GAN style networks: a dense-then-transposed-conv G and a two-conv D with dropout. Plain PyTorch.

The layout of the common Keras/TensorFlow DCGAN tutorial that MP-GAN experiments build on.
"""

import torch
from torch import nn


class MPGANGenerator(nn.Module):
    """Noise → Linear to a 4C×7×7 map → two stride-2 ConvTranspose2d (BatchNorm, LeakyReLU) → 3×3 Conv → Tanh.

    The final ordinary conv mixes neighbouring pixels after upsampling, smoothing the checkerboard
    pattern a last transposed conv tends to leave.

    Args:
        latent_dim: size of the noise vector z.
        channels: channels of the 28×28 map; the 14×14 map has 2×, the 7×7 map 4× as many.
    """

    def __init__(self, latent_dim: int = 100, channels: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = (1, 28, 28)
        c = channels
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 4 * c * 7 * 7, bias=False),
            nn.BatchNorm1d(4 * c * 7 * 7),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1, bias=False),  # (B, 2C, 14, 14)
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),  # (B, C, 28, 28)
            nn.BatchNorm2d(c),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.to_pixels = nn.Conv2d(c, 1, 3, padding=1)  # (B, 1, 28, 28)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.size(0), -1, 7, 7)  # (B, 4C, 7, 7)
        return torch.tanh(self.to_pixels(self.upsample(h)))  # (B, 1, 28, 28) in [-1, 1]


class MPGANDiscriminator(nn.Module):
    """5×5 stride-2 Conv2d → LeakyReLU → Dropout → 5×5 stride-2 Conv2d → LeakyReLU → Dropout → Linear logit.

    Args:
        channels: channels of the first conv; the second has twice as many.
        dropout: dropout probability after each conv.
    """

    def __init__(self, channels: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 5, 2, 2),  # (B, C, 14, 14)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(c, 2 * c, 5, 2, 2),  # (B, 2C, 7, 7)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
        )
        self.to_logit = nn.Linear(2 * c * 7 * 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logit(self.features(x).flatten(1)).squeeze(1)  # (B,) logits
