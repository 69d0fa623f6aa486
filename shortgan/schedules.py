"""Schedules keyed on how far training has come, so they end with the run however it is bounded."""

from dataclasses import dataclass
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from shortgan.errors import UserError


def training_clock(trainer: L.Trainer) -> Optional[tuple[float, float]]:
    """(seconds trained so far, seconds the run may train) when time bounds the run, else None.

    The clock is a callback's `training_clock()` method where one has it (`shortgan.compare` bounds
    each recipe by training time, evaluations excluded), else Lightning's Timer, which the Trainer
    adds for `max_time`.
    """
    for callback in trainer.callbacks:
        clock = getattr(callback, "training_clock", None)
        if callable(clock):
            return clock()
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:
        return None
    elapsed = timer.time_elapsed("train")
    return elapsed, elapsed + remaining


def adversarial_progress(
    trainer: L.Trainer,
    pretrain_epochs: int,
    batch_idx: int,
    clock: Optional[tuple[float, float]] = None,
    started_at: float = 0.0,
) -> float:
    """The fraction of the adversarial training done once batch `batch_idx` of this epoch ends.

    The larger of two readings: by epochs (`trainer.max_epochs`, counting the batches of the current
    epoch) and by time (`clock`, this batch's `training_clock` reading, counted from `started_at`,
    the clock's reading when the adversarial phase began). 0 during pretraining; 1 on the last batch
    of an epoch-bounded run, and within a batch's time of 1 when time ends a time-bounded one.
    """
    epoch = trainer.current_epoch - pretrain_epochs
    if epoch < 0:
        return 0.0
    readings = [0.0]
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs > pretrain_epochs and batches not in (0, float("inf")):
        readings.append((epoch + (batch_idx + 1) / batches) / (trainer.max_epochs - pretrain_epochs))
    if clock is not None:
        elapsed, total = clock
        readings.append((elapsed - started_at) / max(total - started_at, 1e-9))
    return min(1.0, max(readings))


class ProgressLR(torch.optim.lr_scheduler.LRScheduler):
    """Scales the learning rate linearly from 1 to `end_factor` over the adversarial training's
    progress (see `adversarial_progress`): the decay ends with the run, bounded by epochs or by time.

    `GAN` sets `progress` before stepping it at the end of each adversarial epoch.

    Args:
        optimizer: the optimizer whose learning rate it scales.
        end_factor: the factor reached at the end of training.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, end_factor: float = 0.1) -> None:
        self.end_factor = end_factor
        self.progress = 0.0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [base * (1.0 + (self.end_factor - 1.0) * self.progress) for base in self.base_lrs]


@dataclass(frozen=True)
class InstanceNoise:
    """The std of the Gaussian noise on the images D sees, over the adversarial training (the `GAN`
    arguments `instance_noise`, `instance_noise_fade` and `instance_noise_epochs`).

    Args:
        std: the std at the start (0 turns the noise off).
        fade: fall linearly to 0 over this fraction of the adversarial training's progress (see
            `adversarial_progress`); above 1 the run ends before it reaches 0 (2: half the std at the
            end); None keeps it constant.
        epochs: the older, epoch-counted fade: reach 0 after this many adversarial epochs.
    """

    std: float = 0.1
    fade: Optional[float] = None
    epochs: Optional[int] = None

    def __post_init__(self) -> None:
        if self.std < 0:
            raise UserError(f"model.instance_noise must be >= 0, got {self.std}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"model.instance_noise_epochs must be at least 1 (or null), got {self.epochs}")
        if self.fade is not None and not self.fade > 0:
            raise UserError(f"model.instance_noise_fade must be > 0 (or null), got {self.fade}")
        if self.fade is not None and self.epochs is not None:
            raise UserError("model.instance_noise_fade and model.instance_noise_epochs both set: keep one")

    def at(self, progress: float, adversarial_epoch: int) -> float:
        """The std at this `progress` (0 → 1) of the adversarial training, in this adversarial epoch."""
        if self.fade is not None:
            return self.std * max(0.0, 1.0 - progress / self.fade)
        if self.epochs is not None:
            return self.std * max(0.0, 1.0 - adversarial_epoch / self.epochs)
        return self.std
