"""A callback the DDP test adds to a 2-process run: each process saves what it ended with."""

from pathlib import Path

import lightning as L
import torch


class Probe(L.Callback):
    """Writes `<out_dir>/rank<N>.pt`: the module's parameters and buffers, the RNG state and the
    sum of the first real batch of the last epoch, and the `val/` metrics this process logged."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.batch_sum = float(batch[0].sum())
            self.rng = torch.get_rng_state()

    def on_train_end(self, trainer, pl_module) -> None:
        tensors = [*pl_module.named_parameters(), *pl_module.named_buffers()]
        state = {name: t.detach().cpu().clone() for name, t in tensors}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        out = Path(self.out_dir, f"rank{trainer.global_rank}.pt")
        torch.save({"state": state, "rng": self.rng, "batch_sum": self.batch_sum, "metrics": metrics}, out)
