import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from shortgan.averaging import ExponentialMovingAverage

def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def train_a_little(net: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        net(torch.randn(16, 4)).square().mean().backward()  # also moves BatchNorm's statistics and counter
        opt.step()
        opt.zero_grad()


def test_it_averages_exactly_as_torch_s_averaged_model_does_and_resumes():
    net = network()
    ours = ExponentialMovingAverage(net, decay=0.9)
    torch_s = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(4):
        train_a_little(net, 1)
        ours.update_parameters(net)
        torch_s.update_parameters(net)
    assert ours.state_dict().keys() == torch_s.state_dict().keys()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, torch_s.state_dict()[name]), name
    assert int(ours.n_averaged) == 4

    # A fresh average loaded from that state (a resumed run) goes on from the loaded count.
    resumed = ExponentialMovingAverage(copy.deepcopy(net), decay=0.9)
    resumed.load_state_dict(ours.state_dict())
    # And a loaded state brings its own count: one with n_averaged 0 starts again by copying.
    ours.load_state_dict(ExponentialMovingAverage(network(), decay=0.9).state_dict())
    torch_s_restarted = copy.deepcopy(torch_s)
    torch_s_restarted.load_state_dict(ours.state_dict())
    train_a_little(net, 1)
    for average in (resumed, torch_s, ours, torch_s_restarted):
        average.update_parameters(net)
    for (a, b) in ((resumed, torch_s), (ours, torch_s_restarted)):
        for name, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[name]), name
    assert int(ours.n_averaged) == 1 and int(resumed.n_averaged) == 5


def test_after_its_first_update_it_reads_nothing_back_from_the_device(forbid_host_reads):
    net = network()
    ours = ExponentialMovingAverage(net, decay=0.9)
    torch_s = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ours.update_parameters(net)  # reads the count once
    forbid_host_reads()
    for _ in range(3):
        ours.update_parameters(net)
    # torch's own asks its count twice per update: the check above would catch it.
    with pytest.raises(AssertionError, match="read back to the host"):
        torch_s.update_parameters(net)
