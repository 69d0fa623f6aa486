"""Scratch: ShortGAN's D with differentiable augmentation (DiffAugment, Zhao et al. 2020) of every input.

Real and fake images are shifted by the same kind of random translation (and optionally cut out)
before D sees them, in D's and in G's steps, so D cannot memorise the 5,000 training digits.
Used by experiments/results/plateau2/*aug*.yaml with PYTHONPATH=experiments.
"""

import torch
import torch.nn.functional as F

from shortgan.networks import ShortGANDiscriminator


def translate(x: torch.Tensor, ratio: float, fill: float = -1.0) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    # Indices into the image padded by one `fill` pixel; anything shifted in from outside reads the pad.
    gy = (gy + dy + 1).clamp(0, h + 1)
    gx = (gx + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=fill).permute(0, 2, 3, 1)
    return padded[torch.arange(b, device=x.device)[:, None, None], gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float, fill: float = -1.0) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy).abs() <= ch // 2) & ((xs - cx).abs() <= cw // 2)
    return torch.where(inside[:, None], torch.full_like(x, fill), x)


class AugmentedDiscriminator(ShortGANDiscriminator):
    def __init__(self, *args, translation: float = 0.125, cutout: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.translation = translation
        self.cutout = cutout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.translation:
            x = translate(x, self.translation)
        if self.training and self.cutout:
            x = cutout(x, self.cutout)
        return super().forward(x)
