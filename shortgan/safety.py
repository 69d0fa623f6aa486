"""Never lose a run: atomic checkpoint files, a checkpoint on interruption, exact RNG resume, and a
divergence guard that stops before a NaN reaches a checkpoint."""

import errno
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from shortgan.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A run killed mid-write, or a full disk, leaves the previous checkpoint intact: the rename is
    atomic on POSIX file systems, and nothing replaces the old file until the new one is complete.
    That holds without fsync for anything that ends the process (SIGKILL, the OOM killer, a crash):
    the kernel already has the written bytes. Only a kernel crash or power cut within the kernel's
    write-back delay (~30 s on Linux) can lose the newest checkpoint; ext4 writes a file's data
    before a rename that replaces another lands. `InterruptCheckpoint` fsyncs its file.

    Args:
        fsync: also flush each checkpoint and its folder to disk before going on (a checkpoint that
            survives a power cut, for the time the disk takes: tens of ms per checkpoint here).
    """

    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if self.fsync:
                fsync_folder(path.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            reason = "the disk is full" if err.errno == errno.ENOSPC else err.strerror or str(err)
            raise UserError(
                f"Could not write the checkpoint {path}: {reason}. The previous checkpoint there, if any, is intact."
            ) from err


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with `save_last: link` made safe and time cadence working in GAN runs.

    - `save_last: link` makes `last.ckpt` a hard link to the checkpoint just written (Lightning makes
      a symbolic link, after deleting the old one): one file's bytes per save instead of two, and
      `last.ckpt` always names a complete checkpoint, swapped atomically, never a deleted file.
      Where hard links are not possible, `last.ckpt` is a copy, also renamed into place.
    - `train_time_interval` (e.g. `0:10:00`) also saves modules with manual optimisation such as
      `GAN` (Lightning 2.6 checks the clock only under automatic optimisation). Such a checkpoint
      is taken mid-epoch; a resumed run continues from that batch, as from `interrupted.ckpt`.
    """

    @staticmethod
    def _link_checkpoint(trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            tmp = Path(linkpath).with_name(f".{Path(linkpath).name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(filepath, tmp)
            except OSError:
                shutil.copyfile(filepath, tmp)
            os.replace(tmp, linkpath)
        trainer.strategy.barrier()

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.save_last == "link" and not self.last_model_path:
            # The file written now becomes last.ckpt, so its state must already name last.ckpt: a run
            # resumed from it would otherwise take last.ckpt for another run's and write last-v1.ckpt.
            self.last_model_path = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if pl_module.automatic_optimization or self._train_time_interval is None:
            return
        now, interval = time.monotonic(), self._train_time_interval.total_seconds()
        due = self._last_time_checked is not None and now - self._last_time_checked >= interval
        # Every process must take the same decision (saving is a collective under DDP).
        if not trainer.strategy.broadcast(due) or self._should_skip_saving_checkpoint(trainer):
            return
        self._last_time_checked = now
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and self.monitor not in candidates:
            self._defer_save_until_validation = True  # Lightning saves at the next validation's end
            return
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


def seed_this_process(trainer: L.Trainer, epoch: int) -> None:
    """Under DDP, give each process its own torch random stream for this epoch.

    seed_everything gives every process the same seed, so all would draw the same noise and the same
    fakes. The stream is derived from the global seed, the epoch and the rank: reproducible, and a
    resumed run draws as an unbroken one. One process: nothing changes.
    """
    if trainer.world_size > 1:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        stream = np.random.SeedSequence([seed, epoch, trainer.global_rank])
        torch.manual_seed(int(stream.generate_state(1)[0]))


class RNGState(Callback):
    """Saves the torch, CUDA, NumPy and Python random states in checkpoints and restores them when
    training resumes, so a resumed run shuffles and draws noise exactly as an uninterrupted one."""

    def state_dict(self) -> dict[str, Any]:
        # The keys of Lightning's own RNG snapshot, so checkpoints written before stay loadable.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        states = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            # Checkpoints are loaded with weights_only=True, which refuses NumPy arrays: store a tensor.
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        }
        if torch.cuda.is_available():
            states["torch.cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored at once: the training DataLoader draws its shuffling seed before any train hook.
        torch.set_rng_state(state_dict["torch"])
        if state_dict.get("torch.cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["torch.cuda"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, state, python_gauss = state_dict["python"]
        random.setstate((version, tuple(state), python_gauss))


class DivergenceError(UserError):
    """Training produced a NaN or Inf."""


class InterruptCheckpoint(Checkpoint):
    """Saves `<dirpath>/<filename>.ckpt` on Ctrl-C, SIGTERM or an exception (not on divergence: those
    weights are broken). It is removed again when a run finishes normally.

    The one checkpoint flushed to disk (fsync): a stop often comes because the machine is going away
    (a preempted or shut-down instance gets SIGTERM), and it is written once per run.

    Not Lightning's `OnExceptionCheckpoint`, which does the same save: a Trainer that has one resumes
    every `fit` without a `ckpt_path` from the newest checkpoint it finds (warning each time that
    `ckpt_path=None` was passed), so a fresh run could continue an older one without being asked.
    ShortGAN resumes only when told to (`--ckpt_path`).
    """

    def __init__(self, dirpath: Any, filename: str = "interrupted") -> None:
        self.dirpath, self.filename = dirpath, filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, UserError):
            return
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero and os.path.isfile(self.ckpt_path):
            with open(self.ckpt_path, "rb") as f:
                os.fsync(f.fileno())
            fsync_folder(Path(self.ckpt_path).parent)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)


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
