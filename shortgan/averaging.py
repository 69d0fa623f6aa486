"""An exponential moving average of a network's weights whose update never waits for the GPU."""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class ExponentialMovingAverage(AveragedModel):
    """torch's `AveragedModel` keeping an exponential moving average of a network's parameters and
    buffers with `decay`: the same math and the same state_dict (`module.*`, `n_averaged`).

    What differs is the update. `AveragedModel.update_parameters` asks `n_averaged == 0` of a tensor
    that lives on the network's device, to copy on the first update and average on later ones; on a
    GPU each such question makes the host wait for all the work queued so far, and inside a compiled
    graph it is a graph break. Here the two cases are one formula: each tensor moves a fraction `w`
    of the way to the network's, with `w` = 1 on the first update (a copy) and 1 − decay after it,
    chosen on the device.

    Args:
        model: the network to average (copied at construction).
        decay: the weight of the average in each update, e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, use_buffers=True)
        self.decay = decay

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        step = torch.where(self.n_averaged > 0, 1.0 - self.decay, 1.0)  # 0-dim, on the device
        for averaged, current in zip(self._tensors(self.module), self._tensors(model), strict=True):
            if averaged.is_floating_point():
                averaged.lerp_(current, step.to(averaged.dtype))
            else:  # integer buffers (BatchNorm's batch counter), as AveragedModel's EMA rounds them
                averaged.copy_(averaged * (1 - step) + current * step)
        self.n_averaged += 1

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]
