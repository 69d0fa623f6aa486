"""Fails when a Lightning upgrade renames or removes a private name ShortGAN relies on
(shortgan/lightning_internals.py lists them and says why each is needed)."""

import inspect

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy

from shortgan.lightning_internals import find_unused_parameters, logger_writes_this_step


def test_ddp_is_told_to_look_for_unused_parameters():
    strategy = DDPStrategy()
    find_unused_parameters(strategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True


def test_the_logger_connector_says_which_batches_it_writes():
    trainer = L.Trainer(logger=False, log_every_n_steps=5, enable_progress_bar=False)
    assert isinstance(logger_writes_this_step(trainer), bool)


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
