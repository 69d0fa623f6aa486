"""Fails when a Lightning upgrade renames or removes a private name ShortGAN relies on
(shortgan/lightning_internals.py lists them and says why each is needed)."""

import inspect

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from shortgan.lightning_internals import count_optimizer_steps, find_unused_parameters, logger_writes_this_step


def test_ddp_is_told_to_look_for_unused_parameters():
    strategy = DDPStrategy()
    find_unused_parameters(strategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True


def test_the_logger_connector_says_which_batches_it_writes(tmp_path):
    """True on every `log_every_n_steps`-th batch (the ones Lightning writes), False on the others."""
    answers = []

    class Ask(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            answers.append(logger_writes_this_step(trainer))

    trainer = L.Trainer(max_epochs=1, limit_train_batches=9, log_every_n_steps=3, logger=CSVLogger(tmp_path),
                        callbacks=[Ask()], enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(BoringModel())
    assert [i for i, writes in enumerate(answers) if writes] == [2, 5, 8]


def test_the_private_hooks_the_project_overrides_still_exist_with_their_signatures():
    # ShortGANCLI overrides these two; RunCheckpoint (shortgan/safety.py) these and reads the attributes.
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    assert list(inspect.signature(LightningCLI._instantiate_trainer).parameters) == ["self", "config", "callbacks"]
    for name, params in {
        "_save_topk_checkpoint": ["self", "trainer", "monitor_candidates"],
        "_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
        "_link_checkpoint": ["trainer", "filepath", "linkpath"],
        "_should_skip_saving_checkpoint": ["self", "trainer"],
        "_monitor_candidates": ["self", "trainer"],
    }.items():
        assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == params, name
    checkpoint = ModelCheckpoint(train_time_interval=None)
    for attribute in ("_train_time_interval", "_last_time_checked", "_defer_save_until_validation"):
        assert hasattr(checkpoint, attribute), attribute


def test_steps_made_without_optimizer_step_move_global_step():
    """The compiled iteration's Adam maths never calls optimizer.step(); global_step must count them."""

    class StepsBySideDoor(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            count_optimizer_steps(self.optimizers(), 3)

    trainer = L.Trainer(max_epochs=1, limit_train_batches=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(StepsBySideDoor())
    assert trainer.global_step == 12
