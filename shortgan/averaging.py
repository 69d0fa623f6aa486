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
    host wait for all the work queued so far, twice per training iteration. Here the count is mirrored
    on the host, read from the device once (after construction, or after a state_dict is loaded).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._host_count: Optional[int] = None

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._host_count is None:
            self._host_count = int(self.n_averaged)
        averaged = [t.detach() for t in (*self.module.parameters(), *self.module.buffers())]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        if self._host_count == 0:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
        else:
            # Grouped by dtype, as AveragedModel does: the EMA function lerps float tensors with one
            # foreach kernel and averages integer buffers (BatchNorm's batch counter) on their own.
            groups: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
            for a, c in zip(averaged, current, strict=True):
                group = groups.setdefault(a.dtype, ([], []))
                group[0].append(a)
                group[1].append(c)
            for group_averaged, group_current in groups.values():
                self.multi_avg_fn(group_averaged, group_current, self.n_averaged)
        self.n_averaged += 1
        self._host_count += 1

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_count = None  # a loaded average brings its own count
