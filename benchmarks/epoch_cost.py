"""What an epoch costs beyond its iterations: milliseconds from an epoch's last training batch to
the next epoch's first, with the user's CLI.

    python -m benchmarks.epoch_cost                                   # configs/quickstart.yaml, with a breakdown
    python -m benchmarks.epoch_cost --config configs/mnist.yaml       # 10,000 validation images
    python -m benchmarks.epoch_cost --no-breakdown --set --checkpoint.save_last true

Runs `main.py fit --config CONFIG` for `--epochs` adversarial epochs (pretraining off) of `--batches`
batches each and times every gap between epochs: epoch-end hooks, the validation loop, checkpoint
writes, sample grids, logging, and fetching the next epoch's first batch. The gap after the first
epoch (one-time set-up: folders, the first validation loop) is shown apart; median and max are over
the others. `--breakdown` repeats the run with each of those parts switched off, so the differences
say where the time goes. For `configs/mnist.yaml` without the MNIST files in `data/MNIST/raw/` it
uses benchmarks.mnist_epochs' stand-in (10,000 test images, as MNIST has). Prints a table; asserts
nothing.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import yaml

from benchmarks.mnist_epochs import stand_in_mnist
from benchmarks.recipe_speed import read_clock
from shortgan.cli import build_cli
from shortgan.data import has_raw_files

# What each breakdown row switches off, as CLI arguments.
PARTS = {
    "no checkpoints": ["--trainer.enable_checkpointing", "false"],
    "no sample grids": ["--sample_grids.every_n_epochs", "1000000"],
    "no validation loop": ["--trainer.limit_val_batches", "0"],
    "no logger, no progress bar": ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"],
}


class EpochGapClock(L.Callback):
    """Seconds from the end of each epoch's last training batch to the start of the next epoch's first."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._end = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            self._end = read_clock(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0 and self._end is not None:
            self.gaps.append(read_clock(pl_module) - self._end)
            self._end = None


def data_arguments(config: str, root: Path) -> tuple[list[str], str]:
    """CLI arguments that point the config at data this machine has, and a line that says which."""
    dataset = yaml.safe_load(Path(config).read_text())["data"]["init_args"].get("dataset", "mnist_sample")
    if dataset != "mnist" or has_raw_files("mnist", "data"):
        return [], dataset
    stand_in_mnist(root, train_images=2_000)
    what = "MNIST stand-in (benchmarks.mnist_epochs: the offline sample tiled; 10,000 test images)"
    return ["--data.init_args.data_dir", str(root), "--data.init_args.download", "false"], what


def epoch_gaps(config: str, epochs: int, batches: int, accelerator: str, extra: list[str], root: Path) -> list[float]:
    """The gaps between `epochs` epochs of `batches` batches, in seconds, of one run of the CLI."""
    clock = EpochGapClock()
    # The progress bar draws as in any run, into /dev/null instead of over this script's table.
    with tempfile.TemporaryDirectory(dir=root) as runs, open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        build_cli(
            ["fit", "--config", config, "--model.init_args.pretrain_epochs", "0",
             "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", str(batches),
             "--trainer.accelerator", accelerator, "--trainer.default_root_dir", runs,
             "--trainer.enable_model_summary", "false", *extra],
            trainer_defaults={"callbacks": [clock]},
        )  # fmt: skip
    return clock.gaps


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="training batches per epoch")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="also run with checkpoints, grids, validation, logging switched off in turn")  # fmt: skip
    parser.add_argument("--set", nargs=argparse.REMAINDER, default=[], help="more CLI arguments, e.g. --set --a 1")
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs must be at least 3: the first gap is timed apart")
    # This script passes LightningCLI its own args while sys.argv holds the script's: expected here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    rows = {"as configured": []}
    if args.breakdown:
        rows |= PARTS | {"none of these": [a for part in PARTS.values() for a in part]}
    results = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        data, what = data_arguments(args.config, Path(root))
        for name, switches in rows.items():
            gaps = epoch_gaps(args.config, args.epochs, args.batches, args.accelerator,
                              [*data, *args.set, *switches], Path(root))  # fmt: skip
            ms = [1000 * g for g in gaps]
            results[name] = {"first_ms": ms[0], "median_ms": statistics.median(ms[1:]), "max_ms": max(ms[1:]),
                             "epochs": len(ms) - 1}  # fmt: skip
    extra = " ".join(args.set) or "none"
    print(f"\nconfig: {args.config}; data: {what}; accelerator: {args.accelerator}; {args.batches} batches per epoch; "
          f"extra arguments: {extra}; {time.perf_counter() - began:.0f} s\n")  # fmt: skip
    print("| run | epochs timed | median ms/epoch | max ms/epoch | after the first epoch, ms |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['epochs']} | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['first_ms']:.1f} |")
    return results


if __name__ == "__main__":
    main()
