"""Long-run stability: train a config for N minutes and sample memory and step time every minute.

    python -m benchmarks.soak --minutes 30 --config configs/quickstart.yaml --threads 1

Leaks show as growth: resident memory (RSS), live tensors, or training step time rising minute by
minute. The run evaluates the domain metrics every `--eval_every` epochs (a classifier is trained
first unless `--classifier` names one), so accumulating metric state would show too. Prints one
row per minute and writes them as CSV to `--out`.
"""

import argparse
import csv
import gc
import resource
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from shortgan.cli import build_cli


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


class ResourceSampler(L.Callback):
    """Every `period` seconds: RSS, live tensors, and the mean training-step time since the last row."""

    def __init__(self, period: float) -> None:
        self.period, self.rows = period, []
        self.start = self.last = None
        self.step_time = self.steps = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.last = time.perf_counter()
        self._sample(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.step_time += now - self.t0
        self.steps += 1
        if now - self.last >= self.period:
            self._sample(trainer)

    def _sample(self, trainer) -> None:
        now = time.perf_counter()
        row = {
            "minute": round((now - self.start) / 60, 2),
            "epoch": trainer.current_epoch,
            "rss_mib": round(rss_mib(), 1),
            "live_tensors": live_tensors(),
            "ms_per_batch": round(1000 * self.step_time / self.steps, 2) if self.steps else "",
        }
        self.rows.append(row)
        print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        self.last, self.step_time, self.steps = time.perf_counter(), 0.0, 0


def train_classifier(root: str) -> str:
    cli = build_cli(
        ["fit", "--config", "configs/classifier_quickstart.yaml", "--trainer.default_root_dir", root,
              "--trainer.enable_progress_bar", "false"],
    )  # fmt: skip
    return cli.trainer.checkpoint_callback.last_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--period", type=float, default=60, help="seconds between rows")
    parser.add_argument("--eval_every", type=int, default=5)
    parser.add_argument("--classifier", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="soak.csv")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sampler = ResourceSampler(args.period)
    with tempfile.TemporaryDirectory() as root:
        classifier = args.classifier or train_classifier(root)
        seconds = int(args.minutes * 60)
        build_cli(
            ["fit", "--config", args.config, "--trainer.default_root_dir", root,
             "--trainer.max_epochs", "-1", "--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}",
             "--trainer.enable_progress_bar", "false",
             "--model.init_args.classifier_checkpoint", classifier,
             "--model.init_args.eval_every_n_epochs", str(args.eval_every)],
            trainer_defaults={"callbacks": [sampler]},
        )  # fmt: skip
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sampler.rows[0]))
        writer.writeheader()
        writer.writerows(sampler.rows)
    first, last = sampler.rows[1], sampler.rows[-1]  # row 0 is before the first batch
    print(f"\nRSS {first['rss_mib']} → {last['rss_mib']} MiB, live tensors {first['live_tensors']} → "
          f"{last['live_tensors']}, ms/batch {first['ms_per_batch']} → {last['ms_per_batch']}")  # fmt: skip
    print(f"rows: {args.out}")


if __name__ == "__main__":
    main()
