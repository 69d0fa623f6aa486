"""Never lose a run: exact resume, interruption, atomic checkpoints, divergence (issue 6)."""

import errno
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from shortgan.cli import cli_main, latest_checkpoint
from shortgan.errors import UserError
from shortgan.gan import GAN
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.safety import AtomicCheckpointIO, DivergenceError, DivergenceGuard, RNGState

# No domain metrics: they are not the point here, and their classifier would be cached in data/.
TINY = ["--config", "configs/quickstart.yaml", "--trainer.limit_train_batches", "4",
        "--trainer.enable_progress_bar", "false", "--model.init_args.pretrain_epochs", "1",
        "--model.init_args.classifier_checkpoint", "null"]  # fmt: skip


def last_ckpt(root: Path) -> dict:
    return torch.load(root / "quickstart" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for param_id, state in opt_a["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(opt_b["state"][param_id][name], value, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_resume_gives_the_same_weights_and_optimizer_states_as_one_straight_run(tmp_path):
    """Across the pretraining → adversarial boundary: 3 epochs straight == 1 epoch + resume for 2."""
    cli_main(["fit", *TINY, "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(tmp_path / "straight")])
    cli_main(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "split")])
    cli_main(["fit", *TINY, "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(tmp_path / "split"),
              "--ckpt_path", "last"])  # fmt: skip
    assert_same_training_state(last_ckpt(tmp_path / "straight"), last_ckpt(tmp_path / "split"))


def start_run(root: Path) -> subprocess.Popen:
    args = [*TINY, "--trainer.limit_train_batches", "1000", "--trainer.max_epochs", "50"]
    return subprocess.Popen([sys.executable, "main.py", "fit", *args, "--trainer.default_root_dir", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_run_resumes_from_its_last_good_checkpoint(tmp_path, sig):
    checkpoints = tmp_path / "quickstart" / "version_0" / "checkpoints"
    run = start_run(tmp_path)
    try:
        wait_for(checkpoints / "last.ckpt")  # one epoch done
        time.sleep(1.0)  # now mid-epoch (and possibly mid-write: the write is atomic)
        run.send_signal(sig)
        run.wait(timeout=60)
    finally:
        run.kill()
    assert run.returncode != 0
    assert not list(checkpoints.glob(".*.tmp")) or sig == signal.SIGKILL
    saved = torch.load(checkpoints / "last.ckpt", weights_only=True)  # never half-written
    if sig == signal.SIGTERM:  # a graceful stop says so, and also saves the interrupted epoch
        assert run.returncode == 128 + signal.SIGTERM and "resume with --ckpt_path last" in run.stderr.read()
        interrupted = torch.load(checkpoints / "interrupted.ckpt", weights_only=True)
        assert interrupted["global_step"] > saved["global_step"]
    cli = cli_main(["fit", *TINY, "--trainer.max_epochs", str(saved["epoch"] + 1),
                    "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "last"])  # fmt: skip
    # `last` is the newer of the two: the interrupted epoch after SIGTERM, the last whole one after SIGKILL.
    assert Path(cli.trainer.ckpt_path).name == ("interrupted.ckpt" if sig == signal.SIGTERM else "last.ckpt")
    assert cli.trainer.current_epoch == saved["epoch"] + 1
    assert sorted(p.name for p in (tmp_path / "quickstart").iterdir()) == ["version_0"]


def test_last_means_the_newest_last_or_interrupted_checkpoint_of_any_version(tmp_path):
    def write(path: str, mtime: float) -> Path:
        file = tmp_path / "quickstart" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"")
        os.utime(file, (mtime, mtime))
        return file

    write("version_0/checkpoints/last.ckpt", 100)
    newest_last = write("version_1/checkpoints/last.ckpt", 200)
    assert latest_checkpoint(str(tmp_path), "quickstart") == newest_last
    interrupted = write("version_1/checkpoints/interrupted.ckpt", 300)  # a stop after that epoch's checkpoint
    assert latest_checkpoint(str(tmp_path), "quickstart") == interrupted
    with pytest.raises(UserError, match="no run of 'other'"):
        latest_checkpoint(str(tmp_path), "other")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"weights": torch.ones(3)}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="disk is full.*previous checkpoint there, if any, is intact"):
        io.save_checkpoint({"weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


class NaNAfter(nn.Module):
    """A discriminator whose logits turn NaN after `calls` forward passes (for `window` passes, or for good)."""

    def __init__(self, calls: int, window: Optional[int] = None) -> None:
        super().__init__()
        self.inner, self.calls, self.window = ShortGANDiscriminator(channels=4), calls, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls -= 1
        logits = self.inner(x)
        poisoned = self.calls < 0 and (self.window is None or self.calls >= -self.window)
        return logits * float("nan") if poisoned else logits


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    batches = [(torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8))] * 3
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    # 3 D calls per batch: the 5th batch (epoch 1, batch 1) produces NaN.
    model = GAN(ShortGANGenerator(channels=4, up_channels=1), NaNAfter(calls=3 * 4), g_steps=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    # log_every_n_steps 1: GAN logs its losses only on the batches the logger writes.
    trainer = L.Trainer(max_epochs=3, logger=False, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[DivergenceGuard(every_n_batches=1), checkpoint], default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(DivergenceError, match=r"train/d_loss is nan at epoch 1, batch 1.*last good checkpoint is"):
        trainer.fit(model, loader)
    good = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert good["epoch"] == 0 or good["global_step"] == 6  # written after epoch 0 only
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())


def test_rollback_reloads_the_last_good_checkpoint_with_lower_learning_rates_and_goes_on(tmp_path):
    batches = [(torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8))] * 3
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    # NaN logits for the 3 D calls of epoch 1, batch 1 only: one bad batch, then healthy again.
    model = GAN(ShortGANGenerator(channels=4, up_channels=1), NaNAfter(calls=3 * 4, window=3), g_steps=1)
    guard = DivergenceGuard(every_n_batches=1, rollback_lr_factor=0.5)
    # log_every_n_steps 1: GAN logs its losses only on the batches the logger writes.
    trainer = L.Trainer(max_epochs=3, logger=False, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[guard, ModelCheckpoint(dirpath=tmp_path, save_last=True)],
                        default_root_dir=tmp_path)  # fmt: skip
    rolled_back = r"train/d_loss is nan at epoch 1, batch 1 \(optimizer step 10\)\. Rolled back to .*last\.ckpt"
    with pytest.warns(UserWarning, match=rolled_back):
        trainer.fit(model, loader)
    assert guard.rollbacks == 1 and trainer.current_epoch == 3
    assert [opt.param_groups[0]["lr"] for opt in trainer.optimizers] == [0.5 * 1e-3] * 3  # Adam's default lr, halved
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_runs_started_together_get_their_own_folders(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from shortgan.cli import claim_version

    (tmp_path / "version_3").mkdir(parents=True)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: claim_version(tmp_path), range(16)))
    assert sorted(versions, key=lambda v: int(v.split("_")[1])) == [f"version_{n}" for n in range(4, 20)]



def test_the_guard_stops_once_max_rollbacks_are_spent(tmp_path):
    batches = [(torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8))] * 3
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    # NaN logits for good from epoch 1, batch 1: every rollback meets them again.
    model = GAN(ShortGANGenerator(channels=4, up_channels=1), NaNAfter(calls=3 * 4), g_steps=1)
    guard = DivergenceGuard(every_n_batches=1, rollback_lr_factor=0.5, max_rollbacks=2)
    trainer = L.Trainer(max_epochs=6, logger=False, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[guard, ModelCheckpoint(dirpath=tmp_path, save_last=True)])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the two "Rolled back" warnings
        with pytest.raises(DivergenceError, match="train/d_loss is nan"):
            trainer.fit(model, loader)
    assert guard.rollbacks == 2


def test_a_nan_weight_stops_training_and_names_the_weight(tmp_path):
    class Poison(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == 1:
                with torch.no_grad():
                    module.discriminator.to_logit.bias.fill_(float("nan"))

    batches = [(torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8))] * 3
    model = GAN(ShortGANGenerator(channels=4, up_channels=1), ShortGANDiscriminator(channels=4), g_steps=1)
    # Losses are logged every 1000 batches: only the weight check can see this.
    trainer = L.Trainer(max_epochs=1, logger=False, log_every_n_steps=1000, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[Poison(), DivergenceGuard(every_n_batches=1)])  # fmt: skip
    with pytest.raises(DivergenceError, match=r"the weight discriminator\.to_logit\.bias holds NaN/Inf at epoch 0, batch 1"):
        trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))


def test_the_epoch_end_check_keeps_a_nan_weight_out_of_the_epoch_s_checkpoint(tmp_path):
    class PoisonLastBatch(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                with torch.no_grad():
                    module.discriminator.to_logit.bias.fill_(float("nan"))

    batches = [(torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8))] * 3
    model = GAN(ShortGANGenerator(channels=4, up_channels=1), ShortGANDiscriminator(channels=4), g_steps=1)
    # No batch is ever checked (every 1000 batches): only the check at the epoch's end can see the NaN.
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[PoisonLastBatch(), DivergenceGuard(every_n_batches=1000),
                                   ModelCheckpoint(dirpath=tmp_path, save_last=True)], default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(DivergenceError, match=r"discriminator\.to_logit\.bias holds NaN/Inf at epoch 1 \(optimizer"):
        trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    good = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert good["epoch"] == 0 and torch.isfinite(good["state_dict"]["discriminator.to_logit.bias"]).all()


def test_rng_state_restores_the_torch_numpy_and_python_streams_through_a_checkpoint(tmp_path):
    def draw() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    path = tmp_path / "rng.pt"
    torch.save(RNGState().state_dict(), path)
    expected = draw()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    RNGState().load_state_dict(torch.load(path, weights_only=True))  # as checkpoints are loaded
    torch_draws, numpy_draws, python_draws = draw()
    assert torch_draws == expected[0]
    assert numpy_draws == expected[1]
    assert python_draws == expected[2]
