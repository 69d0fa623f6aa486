"""What class-conditional networks share: checking that they were given one class per sample, "no
class" (`NO_CLASS`), and class-conditional BatchNorm."""

from typing import Optional

import torch
from torch import nn

# The label of a sample trained without its class (`GAN(label_dropout=...)`): a conditional network
# treats it as its unconditional self would (no class vector, no projection term).
NO_CLASS = -1


def class_labels(y: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """`y` if it holds one class index per sample of a batch of `batch`; else a ValueError that says so."""
    if y is None or y.shape != (batch,):
        got = None if y is None else tuple(y.shape)
        raise ValueError(f"a class-conditional network needs one class label per sample, (B,) = ({batch},); got {got}")
    return y


def embed_class(embedding: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """`embedding(y)`, with zeros for the samples whose label is `NO_CLASS`."""
    known = y != NO_CLASS
    # Not `embedding.weight.dtype`: reading a spectral-normed weight runs another power iteration.
    vectors = embedding(torch.where(known, y, 0))
    return vectors * known.unsqueeze(1).to(vectors.dtype)


class ClassBatchNorm2d(nn.Module):
    """BatchNorm2d whose scale and shift are learned per class (conditional BatchNorm, as in the
    projection-discriminator and BigGAN generators): the class shapes every feature map it follows,
    not only the layer where it enters. Starts as plain BatchNorm (scale 1, shift 0 for every class).

    A sample of `NO_CLASS` gets plain BatchNorm's scale 1 and shift 0.

    Args:
        num_features: channels normalised.
        num_classes: classes, each with its own scale and shift.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, affine=False)
        self.class_scale = nn.Embedding(num_classes, num_features)
        self.class_shift = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.class_scale.weight)
        nn.init.zeros_(self.class_shift.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # embed_class gives 0 for NO_CLASS: + 1 there makes its scale 1.
        scale = embed_class(self.class_scale, y) + (y == NO_CLASS).unsqueeze(1).to(h.dtype)
        scale, shift = scale[:, :, None, None], embed_class(self.class_shift, y)[:, :, None, None]  # (B, C, 1, 1)
        return self.norm(h) * scale + shift
