"""What class-conditional networks share: checking that they were given one class per sample."""

from typing import Optional

import torch


def class_labels(y: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """`y` if it holds one class index per sample of a batch of `batch`; else a ValueError that says so."""
    if y is None or y.shape != (batch,):
        got = None if y is None else tuple(y.shape)
        raise ValueError(f"a class-conditional network needs one class label per sample, (B,) = ({batch},); got {got}")
    return y
