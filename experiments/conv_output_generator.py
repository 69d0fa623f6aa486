"""Scratch experiment (plateau search): ShortGAN G with a conv output stage instead of the final Linear.

Not part of the recipe; run with PYTHONPATH=experiments. See experiments/README.md."""

from typing import Optional

import torch
from torch import nn

from shortgan.networks import ShortGANGenerator
from shortgan.networks.conditioning import class_labels


class ConvOutGenerator(ShortGANGenerator):
    """ShortGAN G whose last stage is a 3x3 conv on the 32x32 map, center-cropped to 28x28 (no final Linear)."""

    def __init__(self, out_kernel: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        c_up = self.upsample[0].out_channels
        self.to_pixels = nn.Conv2d(c_up, self.image_shape[0], out_kernel, padding=out_kernel // 2)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        b = z.size(0)
        h = self.project(z)
        if self.class_bias is not None:  # conditional (issue 22's run), as in ShortGANGenerator
            h = h + self.class_bias(class_labels(y, b))
        h = torch.relu(h).view(b, 1, self.side, self.side)
        h = self.upsample(self.convs(h))  # (B, C_up, 32, 32)
        x = self.to_pixels(h)
        off = (x.size(-1) - self.image_shape[-1]) // 2
        x = x[..., off:off + self.image_shape[1], off:off + self.image_shape[2]]
        return torch.tanh(x)
