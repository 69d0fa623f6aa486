"""Fully connected GANs: the classic tutorial MLP and its BatchNorm variant. Plain PyTorch."""

import math
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "leaky_relu"]


def _activation(name: Activation) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.LeakyReLU(0.2, inplace=True)


class MLPGenerator(nn.Module):
    """Noise → (Linear → [BatchNorm1d] → activation) per hidden width → Linear → Tanh → image.

    The plain tutorial GAN is `hidden_dims=[256, 256]`, ReLU, no BatchNorm (3 Linear layers). The
    BatchNorm variant is `hidden_dims=[128, 256, 512]`, LeakyReLU, `batch_norm=True`; as in that
    recipe, the first hidden layer has no BatchNorm.

    Args:
        latent_dim: size of the noise vector z.
        hidden_dims: widths of the hidden layers.
        activation: `relu` or `leaky_relu` (slope 0.2).
        batch_norm: BatchNorm1d after every hidden Linear but the first.
        image_shape: (C, H, W) of the images produced.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        hidden_dims: tuple[int, ...] = (256, 256),
        activation: Activation = "relu",
        batch_norm: bool = False,
        image_shape: tuple[int, int, int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for i, out in enumerate(hidden_dims):
            layers.append(nn.Linear(width, out))
            if batch_norm and i > 0:
                # Default eps and momentum. Tutorials often write BatchNorm1d(out, 0.8), which sets
                # eps=0.8 (not momentum): it barely normalises small-variance features.
                layers.append(nn.BatchNorm1d(out))
            layers.append(_activation(activation))
            width = out
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.size(0), *self.image_shape)  # (B, C, H, W) in [-1, 1]


class MLPDiscriminator(nn.Module):
    """Flattened image → (Linear → LeakyReLU(0.2) → [Dropout]) per hidden width → Linear → logit.

    Args:
        image_shape: (C, H, W) of the images scored.
        hidden_dims: widths of the hidden layers ([256, 256] tutorial, [512, 256] BatchNorm variant).
        dropout: dropout after each hidden layer (0 turns it off).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        hidden_dims: tuple[int, ...] = (256, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(image_shape)
        for out in hidden_dims:
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # (B,) logits
