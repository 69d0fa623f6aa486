"""The few places ShortGAN reaches into Lightning's private API, each with why no public one serves.

Lightning is pinned in requirements.txt; tests/test_lightning_internals.py fails if an upgrade renames
or removes any name used here or by the subclasses that override private hooks (`ShortGANCLI`'s
`_parse_ckpt_path` and `_instantiate_trainer`, `RunCheckpoint`'s checkpoint-saving methods).
"""

import lightning as L
from lightning.pytorch.strategies import DDPStrategy


def find_unused_parameters(strategy: L.pytorch.strategies.Strategy) -> None:
    """Make DDP look for parameters without gradients, before it wraps the model.

    Each D step leaves G's parameters without gradients and each G step D's, so DDP must be told, or
    it waits forever. The public switch is the strategy name `ddp_find_unused_parameters_true`,
    which a user would have to remember; this sets the same flag on whatever DDP strategy runs.
    """
    if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
        strategy._ddp_kwargs["find_unused_parameters"] = True


def logger_writes_this_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes this batch's logged values (every `log_every_n_steps` batches).

    `self.log` costs ~0.7 ms on a CPU, so GAN logs only on those batches; Lightning decides which
    ones by its batch counter, and exposes the decision only on its logger connector.
    """
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)


def count_optimizer_steps(optimizer: L.pytorch.core.optimizer.LightningOptimizer, steps: int) -> None:
    """Count `steps` optimizer steps that were made without `optimizer.step()` in Lightning's
    manual-optimisation progress, which `global_step` reads.

    The compiled iteration updates weights with Adam written as tensor maths inside its graph; without
    this, `global_step` would stand still and `ModelCheckpoint` (which saves only when `global_step`
    moved) would stop writing checkpoints. These are the two hooks `LightningOptimizer.step` calls
    around the real step (the manual loop sets them during `training_step`).
    """
    for _ in range(steps):
        optimizer._on_before_step()
        optimizer._on_after_step()
