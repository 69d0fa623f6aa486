"""`compile: auto` and friends (shortgan/execution.py): which way the adversarial iterations run, and
the one line that says why."""

import logging
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from shortgan import execution
from shortgan.data import InMemoryImages, _batch_as_is
from shortgan.execution import choose_execution
from shortgan.gan import GAN
from shortgan.iteration import AdversarialRecipe
from shortgan.networks import DCGANDiscriminator, ShortGANDiscriminator, ShortGANGenerator


def stub_trainer(device: str = "cpu", max_epochs: int = 100, batches: int = 1000, world_size: int = 1,
                 precision: str = "32-true", optimizer=torch.optim.Adam, callbacks=()) -> SimpleNamespace:  # fmt: skip
    """What choose_execution reads of a Trainer, for machines this one is not (a GPU, DDP)."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), world_size=world_size, precision=precision,
        optimizers=[optimizer(params, lr=1e-3), torch.optim.Adam(params)], num_training_batches=batches,
        max_epochs=max_epochs, current_epoch=0, callbacks=list(callbacks),
    )  # fmt: skip


def choose(trainer, choice="auto", backend="inductor", recipe=AdversarialRecipe(), discriminator=None):
    return choose_execution(choice, None, backend, trainer, discriminator or ShortGANDiscriminator(channels=4),
                            recipe, pretrain_epochs=1, iterations_per_batch=1)  # fmt: skip


@pytest.fixture
def compiler(monkeypatch):
    monkeypatch.setattr(execution, "has_cpp_compiler", lambda: True)


class Clock(L.Callback):
    """A training clock: `total` seconds for the run, none spent yet."""

    def __init__(self, total: float) -> None:
        self.total = total

    def training_clock(self) -> tuple[float, float]:
        return 0.0, self.total


def test_auto_compiles_a_long_gpu_run_with_cuda_graphs_and_keeps_a_short_one_eager():
    long = choose(stub_trainer("cuda", max_epochs=101, batches=938))  # 100 epochs of MNIST at batch 64
    assert (long.path, long.mode, long.backend) == ("iteration", "reduce-overhead", "inductor")
    # Issue 30: a one-minute GPU run spent its minute compiling and learned nothing.
    minute = choose(stub_trainer("cuda", max_epochs=-1, callbacks=[Clock(60.0)]))
    assert minute.path == "eager" and "on a GPU a cold compile (~70 s)" in minute.why and "60 s" in minute.why
    few = choose(stub_trainer("cuda", max_epochs=3, batches=500))  # 1,000 adversarial iterations
    assert few.path == "eager" and "~1,000 iterations" in few.why


def test_auto_compiles_a_long_cpu_run_and_keeps_a_short_one_eager(compiler):
    long = choose(stub_trainer(max_epochs=101, batches=125))  # 100 adversarial epochs of the MNIST sample
    assert (long.path, long.mode) == ("iteration", "default")
    short = choose(stub_trainer(max_epochs=31, batches=125))  # the quickstart's 30: 3,750 iterations
    assert short.path == "eager" and "~3,750 iterations" in short.why


def test_auto_reads_a_time_bound_too(compiler):
    assert choose(stub_trainer(callbacks=[Clock(1200.0)])).path == "iteration"  # 20 minutes
    five = choose(stub_trainer(callbacks=[Clock(300.0)]))  # 5 minutes: a cold compile is not repaid
    assert five.path == "eager" and "300 s" in five.why


def test_auto_stays_eager_without_a_cpp_compiler(monkeypatch):
    monkeypatch.setattr(execution, "has_cpp_compiler", lambda: False)
    chosen = choose(stub_trainer())
    assert chosen.path == "eager" and "C++ compiler" in chosen.why


@pytest.mark.parametrize(
    ("trainer", "reason"),
    [
        (stub_trainer(world_size=2), "DDP"),
        (stub_trainer(precision="bf16-mixed"), "precision bf16-mixed"),
        (stub_trainer(optimizer=torch.optim.SGD), "SGD is not Adam"),
    ],
)
def test_engine_limits_keep_the_eager_step_and_say_why(trainer, reason, compiler):
    for choice in ("auto", "iteration"):
        chosen = choose(trainer, choice)
        assert chosen.path == "eager" and reason in chosen.why


def test_the_gradient_penalty_through_batchnorm_stays_eager(compiler):
    chosen = choose(stub_trainer(), "iteration", recipe=AdversarialRecipe(loss="wgan_gp"),
                    discriminator=DCGANDiscriminator(channels=4))  # fmt: skip
    assert chosen.path == "eager" and "BatchNorm" in chosen.why
    assert choose(stub_trainer(), "iteration", recipe=AdversarialRecipe(loss="wgan_gp")).path == "iteration"


def test_off_and_networks_are_taken_as_said():
    assert choose(stub_trainer("cuda"), "off").path == "eager"
    assert choose(stub_trainer(), "networks").path == "networks"


def test_a_run_says_in_one_line_which_way_it_trains(caplog, monkeypatch):
    monkeypatch.setattr("shortgan.execution.has_cpp_compiler", lambda: True)  # the same line on any CPU
    images = torch.rand(16, 1, 28, 28) * 2 - 1
    loader = DataLoader(
        InMemoryImages(images, torch.zeros(16, dtype=torch.long)), batch_size=8, collate_fn=_batch_as_is
    )
    model = GAN(ShortGANGenerator(channels=4), ShortGANDiscriminator(channels=8), classifier_checkpoint=None)
    with caplog.at_level(logging.INFO):
        L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(model, loader)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Adversarial iterations run")]
    # One line, naming the path taken and why: this run's 2 iterations against the compile's break-even.
    assert lines == [
        "Adversarial iterations run eagerly: on a CPU a cold compile (~90 s) is repaid after ~10,000 iterations or "
        "7 minutes, and this run's adversarial training is ~2 iterations (compile: iteration compiles anyway)."
    ]
