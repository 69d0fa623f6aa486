"""A small CNN classifier whose penultimate features judge generated 28×28 images."""

import torch
from torch import nn


class DigitClassifier(nn.Module):
    """Two conv blocks → a `feature_dim` embedding → class logits.

    Args:
        num_classes: number of classes.
        channels: channels of the first conv block (the second has twice as many).
        feature_dim: size of the penultimate embedding used for FID and precision/recall.
        dropout: dropout before the last layer.
    """

    def __init__(self, num_classes: int = 10, channels: int = 32, feature_dim: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, C, 14, 14)
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 2C, 7, 7)
            nn.Flatten(),
            nn.Linear(2 * channels * 49, feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (B, feature_dim) of images in [-1, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, num_classes) logits
