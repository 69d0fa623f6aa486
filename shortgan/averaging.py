"""An exponential moving average of a network's weights whose update never waits for the GPU."""

from typing import Any, Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class ExponentialMovingAverage(AveragedModel):
    """torch's `AveragedModel` keeping an exponential moving average of a network's parameters and
    buffers with `decay`: the same math and the same state_dict (`module.*`, `n_averaged`).

    What differs is the update. `AveragedModel.update_parameters` asks `n_averaged == 0` and
    `n_averaged > 0` of a tensor that lives on the network's device; on a GPU each question makes the
    host wait for all the work queued so far, twice per training iteration. The only thing it needs
    to know is whether the average has started (its first update copies, later ones average), and
    that is read from the device once (after construction, or after a state_dict is loaded).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._started: Optional[bool] = None

    def started(self) -> bool:
        """Whether the average holds an update yet (the next one averages instead of copying)."""
        if self._started is None:
            self._started = bool(self.n_averaged > 0)
        return self._started

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self.started():
            self.average(model)
            return
        self.copy_from(model)
        self.n_averaged += 1

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Set the average to `model`'s weights (what the first update does), leaving the count as it is."""
        for a, c in zip(self._tensors(self.module), self._tensors(model), strict=True):
            a.copy_(c)
        self._started = True

    @torch.no_grad()
    def average(self, model: nn.Module) -> None:
        """One averaging update towards `model`, for an average that has `started()`. Tensor maths
        only, so a compiled training iteration can include it."""
        # Grouped by dtype, as AveragedModel does: the EMA function lerps float tensors with one
        # foreach kernel and averages integer buffers (BatchNorm's batch counter) on their own.
        groups: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for a, c in zip(self._tensors(self.module), self._tensors(model), strict=True):
            group = groups.setdefault(a.dtype, ([], []))
            group[0].append(a)
            group[1].append(c)
        for group_averaged, group_current in groups.values():
            self.multi_avg_fn(group_averaged, group_current, self.n_averaged)
        self.n_averaged += 1

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._started = None  # a loaded average brings its own count
