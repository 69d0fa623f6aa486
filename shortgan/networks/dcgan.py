"""DCGAN (Radford et al. 2016) sized for 28×28: transposed-conv G, strided-conv D. Plain PyTorch."""

from typing import Optional

import torch
from torch import nn

from shortgan.networks.conditioning import class_labels, embed_class


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """Noise as a 1×1 map → ConvTranspose2d to 7×7 → two stride-2 ConvTranspose2d to 28×28 → Tanh.

    BatchNorm and ReLU after every layer but the last, as in the paper.

    Args:
        latent_dim: size of the noise vector z.
        channels: channels of the 14×14 map; the 7×7 map has twice as many.
        num_classes: 0 for an unconditional generator; else `forward(z, y)` adds a learned 2C×7×7
            map per class to the first layer's output (what a one-hot class concatenated to z does).
    """

    def __init__(self, latent_dim: int = 100, channels: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = (1, 28, 28)
        self.num_classes = num_classes
        c = channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * c, 7, 1, 0, bias=False),  # (B, 2C, 7, 7)
            nn.BatchNorm2d(2 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),  # (B, C, 14, 14)
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c, 1, 4, 2, 1, bias=False),  # (B, 1, 28, 28)
            nn.Tanh(),
        )
        # Only a conditional G has this parameter, so unconditional checkpoints are unchanged.
        self.class_map = nn.Embedding(num_classes, 2 * c * 7 * 7) if num_classes else None
        self.apply(dcgan_init)
        if self.class_map is not None:
            nn.init.zeros_(self.class_map.weight)  # starts as the unconditional G

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.class_map is None:
            return self.net(z[:, :, None, None])  # (B, latent, 1, 1) → (B, 1, 28, 28)
        h = self.net[0](z[:, :, None, None])  # (B, 2C, 7, 7)
        h = h + embed_class(self.class_map, class_labels(y, z.size(0))).view_as(h)  # the class of each sample
        return self.net[1:](h)


class DCGANDiscriminator(nn.Module):
    """Two stride-2 Conv2d with LeakyReLU(0.2) (BatchNorm on the second) → a 7×7 conv to one logit.

    Args:
        channels: channels of the first conv; the second has twice as many.
        batch_norm: BatchNorm on the second conv. Turn it off for WGAN-GP, whose per-sample
            gradient penalty is ill-defined when samples are mixed by batch statistics.
        num_classes: 0 for an unconditional D; else `forward(x, y)` is a projection discriminator:
            the logit adds the inner product of the 2C×7×7 features with a learned class embedding.
    """

    def __init__(self, channels: int = 64, batch_norm: bool = True, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1, bias=False),  # (B, C, 14, 14); no BatchNorm on D's input layer
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),  # (B, 2C, 7, 7)
            nn.BatchNorm2d(2 * c) if batch_norm else nn.Identity(),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 1, 7, 1, 0, bias=False),  # (B, 1, 1, 1)
        )
        self.class_embedding = nn.Embedding(num_classes, 2 * c * 7 * 7) if num_classes else None
        self.apply(dcgan_init)
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding.weight, 0.0, 0.02)  # the paper's scale, as the convs

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.class_embedding is None:
            return self.net(x).flatten()  # (B,) logits
        h = self.net[:-1](x)  # (B, 2C, 7, 7)
        projection = (embed_class(self.class_embedding, class_labels(y, x.size(0))) * h.flatten(1)).sum(1)
        return self.net[-1](h).flatten() + projection
