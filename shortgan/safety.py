"""Never lose a run: atomic checkpoint files, a checkpoint on interruption, exact RNG resume, and a
divergence guard that stops before a NaN reaches a checkpoint."""

import errno
import math
import os
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from shortgan.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A run killed mid-write, or a full disk, leaves the previous checkpoint intact: the rename is
    atomic on POSIX file systems, and nothing replaces the old file until the new one is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            reason = "the disk is full" if err.errno == errno.ENOSPC else err.strerror or str(err)
            raise UserError(
                f"Could not write the checkpoint {path}: {reason}. The previous checkpoint there, if any, is intact."
            ) from err


class RNGState(Callback):
    """Saves the torch, CUDA, NumPy and Python random states in checkpoints and restores them when
    training resumes, so a resumed run shuffles and draws noise exactly as an uninterrupted one."""

    def state_dict(self) -> dict[str, Any]:
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        # Checkpoints are loaded with weights_only=True, which refuses NumPy arrays: store a tensor.
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored at once: the training DataLoader draws its shuffling seed before any train hook.
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        _set_rng_states({**state_dict, "numpy": (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)})


class DivergenceError(UserError):
    """Training produced a NaN or Inf."""


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Saves `interrupted.ckpt` on Ctrl-C, SIGTERM or an exception (not on divergence: those weights
    are broken). It is removed again when a run finishes normally."""

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        exception = args[-1] if args else kwargs.get("exception")
        if isinstance(exception, UserError):
            return
        super().on_exception(trainer, *args, **kwargs)


class DivergenceGuard(Callback):
    """Stops training when a logged `train/` loss or a weight is NaN or Inf.

    The error names the loss and the step; `last.ckpt` still holds the last good epoch, because the
    check also runs at the end of each epoch, before the epoch's checkpoint is written. Under DDP
    every process stops together (a process left waiting in a collective would hang the run).

    Args:
        every_n_batches: check after every this many batches, and at the end of each epoch. A check
            reads the losses on the host (a GPU sync) and, under DDP, agrees across processes. The
            losses it sees are the last logged ones: `GAN` logs every `trainer.log_every_n_steps`
            batches, so a NaN loss shows up at the next logging batch, a NaN weight at the next check.
        rollback_lr_factor: instead of stopping, load the weights and optimizer states of the last
            good checkpoint (`last.ckpt`), multiply every learning rate by this factor (e.g. 0.5)
            and go on training; None stops. Training still stops when no checkpoint exists yet or
            after `max_rollbacks` rollbacks.
        max_rollbacks: how many rollbacks one run may make.
    """

    def __init__(
        self, every_n_batches: int = 10, rollback_lr_factor: Optional[float] = None, max_rollbacks: int = 3
    ) -> None:
        if every_n_batches < 1:
            raise UserError(f"divergence_guard.every_n_batches must be at least 1, got {every_n_batches}")
        if rollback_lr_factor is not None and not 0 < rollback_lr_factor < 1:
            raise UserError(f"divergence_guard.rollback_lr_factor must be between 0 and 1, got {rollback_lr_factor}")
        self.every_n_batches = every_n_batches
        self.rollback_lr_factor = rollback_lr_factor
        self.max_rollbacks = max_rollbacks
        self.rollbacks = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.every_n_batches == 0:
            self.check(trainer, pl_module, batch_idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, None)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, batch_idx: Optional[int]) -> None:
        problem = self._find(trainer, pl_module)
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
            problem = problem or "another process saw a NaN/Inf"
        if problem is None:
            return
        where = f"epoch {trainer.current_epoch}" + ("" if batch_idx is None else f", batch {batch_idx}")
        where += f" (optimizer step {trainer.global_step})"
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        if last and self.rollback_lr_factor is not None and self.rollbacks < self.max_rollbacks:
            self._roll_back(trainer, pl_module, last)
            rank_zero_warn(
                f"Training diverged: {problem} at {where}. Rolled back to {last} and multiplied the learning rates "
                f"by {self.rollback_lr_factor} (rollback {self.rollbacks} of at most {self.max_rollbacks})."
            )
            return
        keep = f" The last good checkpoint is {last}." if last else ""
        raise DivergenceError(
            f"Training diverged: {problem} at {where}.{keep} Resume from the last good checkpoint with a lower "
            f"learning rate (--ckpt_path last --model.init_args.generator_optimizer.init_args.lr …), or let the "
            f"guard do it: --divergence_guard.rollback_lr_factor 0.5."
        )

    def _roll_back(self, trainer: L.Trainer, pl_module: L.LightningModule, path: str) -> None:
        checkpoint = trainer.strategy.checkpoint_io.load_checkpoint(path, map_location=pl_module.device)
        pl_module.load_state_dict(checkpoint["state_dict"])
        for optimizer, state in zip(trainer.optimizers, checkpoint["optimizer_states"]):
            optimizer.load_state_dict(state)
            for group in optimizer.param_groups:
                group["lr"] *= self.rollback_lr_factor
        self.rollbacks += 1

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rollbacks = state_dict["rollbacks"]

    @staticmethod
    def _find(trainer: L.Trainer, pl_module: L.LightningModule) -> Optional[str]:
        for name, value in trainer.callback_metrics.items():
            if name.startswith("train/") and not math.isfinite(float(value)):
                return f"{name} is {float(value)}"
        for name, param in pl_module.named_parameters():
            if not torch.isfinite(param).all():
                return f"the weight {name} holds NaN/Inf"
        return None
