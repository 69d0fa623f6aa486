"""What a run writes per epoch (issue 14): one checkpoint, last.ckpt a hard link to it, cadence by
epochs or minutes, fsync only where a stop makes it matter, no idle validation loops."""

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from shortgan.cli import ShortGANCLI, cli_main
from shortgan.safety import AtomicCheckpointIO, InterruptCheckpoint, RunCheckpoint

# 2 adversarial batches per epoch (3 optimizer steps each: 1 D + 2 G). No domain metrics unless a test
# asks for them (their classifier would be cached in data/).
TINY = ["--config", "configs/quickstart.yaml", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
        "--model.init_args.pretrain_epochs", "0", "--trainer.enable_model_summary", "false",
        "--model.init_args.classifier_checkpoint", "null"]  # fmt: skip


@pytest.fixture
def saved(monkeypatch) -> list[Path]:
    """The paths of every checkpoint written from now on (each a full torch.save)."""
    paths = []
    write = AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        paths.append(Path(path))
        write(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record)
    return paths


@pytest.mark.slow
def test_each_epoch_writes_one_checkpoint_and_last_ckpt_is_a_hard_link_to_it(tmp_path, saved):
    cli_main(["fit", *TINY, "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(tmp_path)])
    checkpoints = tmp_path / "quickstart" / "version_0" / "checkpoints"
    assert [p.name for p in saved] == ["epoch=0-step=6.ckpt", "epoch=1-step=12.ckpt", "epoch=2-step=18.ckpt"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=2-step=18.ckpt", "last.ckpt"]
    last = checkpoints / "last.ckpt"
    assert not last.is_symlink() and os.path.samefile(last, checkpoints / "epoch=2-step=18.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_resume_from_the_linked_last_ckpt_continues_it(tmp_path, saved):
    root = ["--trainer.default_root_dir", str(tmp_path)]
    cli_main(["fit", *TINY, "--trainer.max_epochs", "1", *root])
    cli_main(["fit", *TINY, "--trainer.max_epochs", "3", *root, "--ckpt_path", "last"])
    checkpoints = tmp_path / "quickstart" / "version_0" / "checkpoints"
    # The resumed run keeps writing last.ckpt (not last-v1.ckpt beside a stale one), still as a link.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=2-step=18.ckpt", "last.ckpt"]
    assert os.path.samefile(checkpoints / "last.ckpt", checkpoints / "epoch=2-step=18.ckpt")
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 2
    assert len(saved) == 3


@pytest.mark.slow
def test_train_time_interval_saves_gan_runs_by_the_clock(tmp_path, saved):
    # An interval of 0 s: a checkpoint after every batch (Lightning alone checks the clock only
    # under automatic optimisation, so a GAN run would save none).
    cli_main(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path),
              "--checkpoint.train_time_interval", "0:00:00", "--periodic_checkpoint.every_n_epochs", "0"])  # fmt: skip
    assert [p.name for p in saved] == ["epoch=0-step=3.ckpt", "epoch=0-step=6.ckpt"]
    checkpoints = tmp_path / "quickstart" / "version_0" / "checkpoints"
    assert os.path.samefile(checkpoints / "last.ckpt", checkpoints / "epoch=0-step=6.ckpt")


def test_checkpoints_are_not_fsynced_except_the_interrupt_checkpoint(tmp_path, monkeypatch):
    """A rename makes a checkpoint safe from a killed process; only a stop, often before the machine
    goes away, is worth flushing to disk."""
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or fsync(fd))

    class FailsInEpoch1(BoringModel):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, plugins=[AtomicCheckpointIO()], default_root_dir=tmp_path,
                        callbacks=[RunCheckpoint(dirpath=tmp_path, save_last="link"), InterruptCheckpoint(tmp_path, "interrupted")])  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(FailsInEpoch1())
    assert (tmp_path / "last.ckpt").is_file()
    assert synced == [(tmp_path / "interrupted.ckpt").stat().st_ino, tmp_path.stat().st_ino]
    # Asked for (--trainer.plugins.fsync true), every checkpoint is flushed, the file and its folder.
    synced.clear()
    AtomicCheckpointIO(fsync=True).save_checkpoint({"weights": torch.ones(3)}, tmp_path / "durable.ckpt")
    assert synced == [(tmp_path / "durable.ckpt").stat().st_ino, tmp_path.stat().st_ino]


class ValidationEpochs(L.Callback):
    def __init__(self) -> None:
        self.epochs = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.epochs.append(trainer.current_epoch)


@pytest.mark.slow
def test_validation_runs_only_after_epochs_that_compute_metrics(tmp_path, classifier_checkpoint):
    def run(*extra: str) -> list[int]:
        seen = ValidationEpochs()
        ShortGANCLI(args=["fit", *TINY, "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "2",
                          "--trainer.default_root_dir", str(tmp_path), *extra],
                    subclass_mode_model=True, subclass_mode_data=True, trainer_defaults={"callbacks": [seen]})  # fmt: skip
        return seen.epochs

    # No classifier, no Inception FID: no metric, so no validation loop at all.
    assert run("--model.init_args.classifier_checkpoint", "null") == []
    # Metrics every 2 epochs and after the last: validation after epochs 2 and 3 (0-based 1 and 2).
    metrics = ["--model.init_args.classifier_checkpoint", str(classifier_checkpoint),
               "--model.init_args.eval_every_n_epochs", "2", "--model.init_args.num_eval_samples", "32"]  # fmt: skip
    assert run(*metrics) == [1, 2]
