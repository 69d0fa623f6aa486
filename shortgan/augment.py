"""Differentiable augmentation of D's inputs (DiffAugment, Zhao et al. 2020): the same random
translation and cutout on real and generated images, in a way gradients pass through to G, so D sees
more varied images without G learning to make augmented ones. Images are in [-1, 1]; what an
augmentation uncovers is filled with -1, the background."""

from typing import Callable, Literal

import torch
import torch.nn.functional as F

Augmentation = Literal["translation", "cutout"]


def translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size in x and y (whole pixels), filling with -1."""
    b, _, h, w = images.shape
    dy, dx = round(h * ratio), round(w * ratio)
    shift_y = torch.randint(-dy, dy + 1, (b, 1, 1), device=images.device)
    shift_x = torch.randint(-dx, dx + 1, (b, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1) - shift_y  # (B, H, 1): source row
    cols = torch.arange(w, device=images.device).view(1, 1, w) - shift_x  # (B, 1, W): source column
    padded = F.pad(images, (dx, dx, dy, dy), value=-1.0)  # (B, C, H + 2dy, W + 2dx)
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows + dy, cols + dx].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Set a random square of `ratio` × the image size in each image to -1."""
    b, _, h, w = images.shape
    size_y, size_x = round(h * ratio), round(w * ratio)
    top = torch.randint(0, h - size_y + 1, (b, 1, 1), device=images.device)
    left = torch.randint(0, w - size_x + 1, (b, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), torch.full_like(images, -1.0), images)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"translation": translation, "cutout": cutout}


def augment(images: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Apply the named augmentations in order, each with fresh random draws."""
    for name in names:
        images = AUGMENTATIONS[name](images)
    return images
