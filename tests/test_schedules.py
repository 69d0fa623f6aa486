"""Schedules keyed on training progress end with the run, whether epochs or time bound it."""

from functools import partial
from typing import Optional

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, timer

from shortgan.errors import UserError
from shortgan.schedules import ProgressLR
from test_gan import FixedBatch, RecordingDiscriminator, fit, small_gan


def real_batch_stds(d: RecordingDiscriminator) -> list[float]:
    # Images are zeros, so the std of a D step's real batch is the instance noise's std; with
    # g_steps=1 and noise_fakes off, D sees real, fake, fake (the G step's) per iteration.
    return [x.std().item() for x in d.seen[0::3]]


def test_an_epoch_bounded_run_fades_the_noise_to_zero_on_its_last_batch():
    d = RecordingDiscriminator()
    model = small_gan(discriminator=d, g_steps=1, instance_noise=0.4, instance_noise_fade=1.0, noise_fakes=False,
                      pretrain_epochs=1)  # fmt: skip
    fit(model, torch.zeros(16, 1, 28, 28), epochs=3, batches=2)  # 1 pretraining + 2 adversarial epochs of 2 batches
    # Progress by the end of each adversarial batch: 1/4, 2/4, 3/4, 4/4.
    assert real_batch_stds(d) == pytest.approx([0.3, 0.2, 0.1, 0.0], abs=0.02)


def test_a_fade_over_half_the_run_reaches_zero_halfway():
    d = RecordingDiscriminator()
    model = small_gan(discriminator=d, g_steps=1, instance_noise=0.4, instance_noise_fade=0.5, noise_fakes=False)
    fit(model, torch.zeros(16, 1, 28, 28), epochs=4)
    assert real_batch_stds(d) == pytest.approx([0.2, 0.0, 0.0, 0.0], abs=0.02)


class FakeClock(L.Callback):
    """Stands in for the clock of Lightning's Timer (the `max_time` bound): every batch takes
    `seconds` on it, whatever it really takes, so a time-bounded run has a known pace and no wait."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.now = seconds, 0.0

    def monotonic(self) -> float:
        return self.now

    def on_train_batch_end(self, *args) -> None:
        self.now += self.seconds


@pytest.mark.parametrize("bound", ["epochs", "time"])
def test_noise_and_learning_rate_schedules_end_with_the_run_however_it_is_bounded(bound, monkeypatch):
    d = RecordingDiscriminator()
    model = small_gan(discriminator=d, g_steps=1, instance_noise=0.4, instance_noise_fade=1.0, noise_fakes=False,
                      generator_scheduler=partial(ProgressLR, end_factor=0.1))  # fmt: skip
    clock = FakeClock(0.05)
    monkeypatch.setattr(timer, "time", clock)  # the Timer reads only time.monotonic()
    limits = {"max_epochs": 20} if bound == "epochs" else {"max_time": {"seconds": 2}, "max_epochs": -1}
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock], **limits)  # fmt: skip
    trainer.fit(model, FixedBatch(torch.zeros(8, 1, 28, 28)))
    stds = real_batch_stds(d)
    assert len(stds) == (20 if bound == "epochs" else 40)  # 20 epochs of one batch; 2 s at 0.05 s a batch
    assert stds[0] > 0.35  # it started near full strength …
    assert stds[-1] < 0.04  # … and ended within a batch or two of 0
    # The learning rate follows the same progress: 1e-3 (Adam's default) down to 1e-4 at the end.
    assert model.progress > 0.9
    assert model.optimizers()[0].param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 0.9 * model.progress))


def test_the_epoch_counted_fade_keeps_its_meaning_and_the_two_forms_exclude_each_other():
    with pytest.raises(UserError, match="instance_noise_fade and model.instance_noise_epochs"):
        small_gan(instance_noise_fade=1.0, instance_noise_epochs=10)
    with pytest.raises(UserError, match="instance_noise_fade must be > 0"):
        small_gan(instance_noise_fade=0.0)


class BatchBudget(L.Callback):
    """A run bounded by a clock of its own (as shortgan.compare's, which leaves evaluations out):
    here one 'second' per batch, 10 in all. Saved in checkpoints, so a resumed run's clock goes on."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, *args) -> None:
        self.batches += 1
        trainer.should_stop = self.batches >= 10

    def training_clock(self) -> tuple[float, float]:
        return float(self.batches), 10.0

    def state_dict(self) -> dict:
        return {"batches": self.batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches = state_dict["batches"]


def test_a_callback_s_own_training_clock_drives_the_schedules():
    d = RecordingDiscriminator()
    model = small_gan(discriminator=d, g_steps=1, instance_noise=0.4, instance_noise_fade=1.0, noise_fakes=False)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[BatchBudget()])  # fmt: skip
    trainer.fit(model, FixedBatch(torch.zeros(8, 1, 28, 28)))
    # The clock reads k 'seconds' when batch k starts.
    assert real_batch_stds(d) == pytest.approx([0.4 * (1 - k / 10) for k in range(10)], abs=0.01)


def test_a_resumed_run_keys_its_time_schedules_to_when_the_adversarial_phase_began(tmp_path):
    # 1 pretraining epoch of 2 batches (clock 0 and 1), then adversarial batches from clock 2 to 9;
    # the run is stopped after its first adversarial epoch (clock 2 and 3) and resumed.
    def run(d: RecordingDiscriminator, max_epochs: int, ckpt_path: Optional[str] = None) -> None:
        model = small_gan(discriminator=d, g_steps=1, instance_noise=0.4, instance_noise_fade=1.0, noise_fakes=False,
                          pretrain_epochs=1)  # fmt: skip
        trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path, callbacks=[BatchBudget(), ModelCheckpoint(tmp_path, save_last=True)])  # fmt: skip
        trainer.fit(model, FixedBatch(torch.zeros(8, 1, 28, 28), batches=2), ckpt_path=ckpt_path)

    run(RecordingDiscriminator(), max_epochs=2)
    resumed = RecordingDiscriminator()
    run(resumed, max_epochs=-1, ckpt_path=str(tmp_path / "last.ckpt"))
    # The fade runs from clock 2, where the adversarial phase began, to 10; not from the resume at clock 4.
    assert real_batch_stds(resumed) == pytest.approx([0.4 * (1 - (c - 2) / 8) for c in range(4, 10)], abs=0.01)
