"""Wall time of N epochs of full MNIST with the default recipe, and its iterations/s.

    python -m benchmarks.mnist_epochs --accelerator gpu                       # as configured (compile: auto)
    python -m benchmarks.mnist_epochs --accelerator gpu --iterations_per_batch 8 \\
        --set --data.init_args.on_device true                                 # one CUDA graph per iteration
    python -m benchmarks.mnist_epochs --accelerator gpu --set --model.init_args.compile off   # eager
    python -m benchmarks.mnist_epochs --accelerator cpu --epochs 1            # a look on a CPU

This is issue #5's GPU target (≥ 2,000 iterations/s of batch 64 on an H100, 100 epochs of MNIST in
under a minute) as one command. It runs what a user runs, `main.py fit --config configs/mnist.yaml`,
for `--epochs` adversarial epochs (pretraining off) with iterations of `--batch_size` images,
`--iterations_per_batch` of them per loaded batch; checkpoints, sample grids and logging stay as in
any run (which skips the metric-free validation loops). Without the MNIST files in `--data_dir` (a machine
without internet) it trains on a stand-in of as many images: the offline sample tiled, which costs
the same per iteration. Prints the seconds of the training epochs, iterations/s after `--warmup`
loaded batches (compiling and CUDA-graph capture happen there), and the whole command's seconds.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.recipe_speed import BatchClock, read_clock
from shortgan.cli import build_cli
from shortgan.data import has_raw_files, load_mnist_sample, write_idx


class EpochClock(BatchClock):
    """Times the training epochs, and (as BatchClock) the loaded batches after `warmup` of them."""

    def __init__(self, warmup: int) -> None:
        super().__init__(warmup)
        self.begin = self.end = None

    def on_train_start(self, trainer, module) -> None:
        self.begin = read_clock(module)

    def on_train_end(self, trainer, module) -> None:
        super().on_train_end(trainer, module)
        self.end = read_clock(module)


def stand_in_mnist(root: Path, train_images: int, test_images: int = 10_000) -> None:
    """MNIST-format files under `root/MNIST/raw/`: the offline sample's digits, tiled to the sizes asked."""
    images, labels = (t.numpy() for t in load_mnist_sample())
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", train_images), ("t10k", test_images)):
        picks = np.arange(n) % len(images)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[picks])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[picks])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/mnist.yaml")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64, help="images per iteration (1 D step + its G steps)")
    parser.add_argument("--iterations_per_batch", type=int, default=1, help="iterations per loaded batch")
    parser.add_argument("--warmup", type=int, default=20, help="loaded batches before the iterations/s clock starts (nan if the run has no more)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--data_dir", default="data", help="where MNIST/raw/ is; without it, a stand-in is used")
    parser.add_argument("--train_images", type=int, default=60_000, help="size of the stand-in's training split")
    parser.add_argument("--set", nargs=argparse.REMAINDER, default=[], help="more CLI arguments, e.g. --set --a 1")
    args = parser.parse_args(argv)
    # This script passes LightningCLI its own args while sys.argv holds the script's: expected here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    k = args.iterations_per_batch
    with tempfile.TemporaryDirectory() as root:
        data_dir, data = args.data_dir, "MNIST"
        if not has_raw_files("mnist", data_dir):
            data_dir, data = root, f"stand-in: {args.train_images:,} digits of the offline sample, tiled"
            stand_in_mnist(Path(root), args.train_images)
        clock = EpochClock(args.warmup)
        began = time.perf_counter()
        build_cli(
            ["fit", "--config", args.config, "--data.init_args.dataset", "mnist",
             "--data.init_args.data_dir", data_dir, "--data.init_args.download", "false",
             "--data.init_args.batch_size", str(args.batch_size * k),
             "--model.init_args.iterations_per_batch", str(k), "--model.init_args.pretrain_epochs", "0",
             "--trainer.max_epochs", str(args.epochs), "--trainer.accelerator", args.accelerator,
             "--trainer.default_root_dir", str(Path(root, "runs")), "--trainer.enable_progress_bar", "false",
             *args.set],
            trainer_defaults={"callbacks": [clock]},
        )  # fmt: skip
        whole = time.perf_counter() - began
    iterations = clock.seen * k
    rate = clock.rate * k if clock.rate is not None else float("nan")
    result = {"iterations": iterations, "epoch_seconds": clock.end - clock.begin, "iterations_per_s": rate,
              "command_seconds": whole}  # fmt: skip
    print(f"\ndata: {data}; accelerator: {args.accelerator}; extra arguments: {' '.join(args.set) or 'none'}\n")
    print("| epochs | iterations (batch) | per loaded batch | training epochs, s | iterations/s after warm-up | whole command, s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.epochs} | {iterations:,} ({args.batch_size}) | {k} | {result['epoch_seconds']:.1f} | {rate:.1f} | {whole:.1f} |")
    return result


if __name__ == "__main__":
    main()
