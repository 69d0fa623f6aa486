"""Training speed of each recipe config: adversarial batches per second after a warm-up.

    python -m benchmarks.recipe_speed --threads 1 configs/*.yaml
    python -m benchmarks.recipe_speed configs/quickstart.yaml --set --model.init_args.compile iteration

Each config trains `--batches` batches (pretraining epochs skipped) on the offline MNIST sample;
the first `--warmup` batches are not timed. `--set` passes further CLI arguments to every config.
Prints one markdown row per config; an iteration is one D step and its G steps, so with
`model.iterations_per_batch: k` a loaded batch holds k iterations.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from shortgan.cli import build_cli


def read_clock(module: L.LightningModule) -> float:
    """Seconds, once the device has done the work queued so far (the clock must see it, not its launch)."""
    if module.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class BatchClock(L.Callback):
    """Batches per second after `warmup` batches; stops training after `warmup + batches` if given.

    The device is waited for only where the clock is read, at the warm-up's end and at the last batch
    (or the run's end): a wait per batch would keep the host from queueing GPU work ahead.
    """

    def __init__(self, warmup: int, batches: int | None = None) -> None:
        self.warmup, self.batches, self.seen, self.start, self.rate = warmup, batches, 0, None, None

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            self.start = read_clock(pl_module)
        if self.batches is not None and self.seen == self.warmup + self.batches:
            self._stop(pl_module)
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self.rate is None:
            self._stop(pl_module)

    def _stop(self, pl_module: L.LightningModule) -> None:
        if self.start is not None and self.seen > self.warmup:
            self.rate = (self.seen - self.warmup) / (read_clock(pl_module) - self.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--plot", default=None, help="also write a bar chart of iterations/s to this PNG")
    parser.add_argument("--set", nargs=argparse.REMAINDER, default=[], help="more CLI arguments, e.g. --set --a 1")
    args = parser.parse_args()
    # This script passes LightningCLI its own args while sys.argv holds the script's: expected here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, accelerator: {args.accelerator}\n")
    print(f"extra arguments: {' '.join(args.set) or 'none'}\n")
    print("| config | batch size | batches/s | iterations/s | images/s |\n|---|---:|---:|---:|---:|")
    rates = {}
    for config in args.configs:
        # The clock stops the run, however many epochs that takes; no validation inside the timing.
        clock = BatchClock(args.warmup, args.batches)
        with tempfile.TemporaryDirectory() as root:
            cli = build_cli(
                args=["fit", "--config", config, "--data.init_args.dataset", "mnist_sample",
                      "--model.init_args.pretrain_epochs", "0", "--trainer.limit_val_batches", "0",
                      "--trainer.max_epochs", "-1", "--trainer.accelerator", args.accelerator,
                      "--trainer.default_root_dir", root, "--trainer.enable_progress_bar", "false",
                      "--trainer.enable_model_summary", "false", *args.set],
                trainer_defaults={"callbacks": [clock]},
            )  # fmt: skip
        batch = cli.datamodule.hparams.batch_size
        k = cli.model.hparams.get("iterations_per_batch", 1)
        print(f"| {config} | {batch} | {clock.rate:.1f} | {clock.rate * k:.1f} | {clock.rate * batch:.0f} |", flush=True)
        rates[Path(config).stem] = clock.rate * k
    if args.plot:
        plot(rates, f"{args.accelerator}, {torch.get_num_threads()} torch threads", args.plot)


def plot(rates: dict[str, float], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rates) + 1))
    ax.barh(list(rates), list(rates.values()))
    ax.invert_yaxis()
    ax.set_xlabel("iterations/s (1 D step + its G steps)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
