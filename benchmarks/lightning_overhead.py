"""Lightning's cost per adversarial batch: the GAN's Lightning loop against a plain PyTorch loop that
runs the very same `adversarial_iteration` (shortgan/iteration.py), eager against eager and compiled
against compiled.

    python -m benchmarks.lightning_overhead --config configs/quickstart.yaml --batches 300
    python -m benchmarks.lightning_overhead --config configs/kmnist.yaml --data_dir DIR --paths eager

The plain side is a `for real, labels in loader` loop: eagerly, the iteration through `PlainUpdates`
(zero_grad, backward, step: the pytorch/examples DCGAN loop); compiled, the same `FunctionalIteration`
the GAN compiles, called directly. The Lightning side is `python main.py fit` of the config with
`compile: off` or `compile: iteration`. Both run the adversarial iterations only (no pretraining), on
the config's data, networks, optimizers, loss, labels (conditional configs) and weight average, after a
warm-up that also absorbs the compile; they alternate `--repeats` times and the best rate of each is
reported (the least disturbed). Each side's execution path is printed beside its rate.
"""

import argparse
import copy
import tempfile
import time

import torch

from benchmarks.recipe_speed import BatchClock
from shortgan.averaging import ExponentialMovingAverage
from shortgan.cli import build_cli
from shortgan.functional import FunctionalIteration
from shortgan.iteration import PlainUpdates, adversarial_iteration

LIGHTNING_COMPILE = {"eager": "off", "compiled": "iteration"}


def plain_loop(model, loader, batches: int, warmup: int, path: str) -> tuple[float, str]:
    """The config's adversarial iterations in a plain loop; (batches per second, what ran)."""
    g, d = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    # The config's own optimizer factories and weight average, as the Lightning run uses them.
    opt_g, opt_d = model.factories["g"](g.parameters()), model.factories["d"](d.parameters())
    ema = ExponentialMovingAverage(g, model.hparams.ema_decay) if model.generator_ema is not None else None
    if path == "compiled":
        iteration = FunctionalIteration(g, d, opt_g, opt_d, model.recipe, ema, "default", "inductor")
        step = lambda real, y, std, g_turn: iteration(real, std, g_turn, y)  # noqa: E731
        what = "FunctionalIteration (torch.compile inductor, mode default), called in a for loop"
    else:
        updates = PlainUpdates(g, d, opt_g, opt_d)
        step = lambda real, y, std, g_turn: adversarial_iteration(g, d, updates, model.recipe, real, y, std, g_turn, ema)  # noqa: E731
        what = "adversarial_iteration through PlainUpdates (zero_grad, backward, step), eager"
    conditional = bool(model.num_classes)
    seen, start = 0, None
    while True:
        for real, labels in loader:
            # The run has no end, so the noise schedule stays at its start (progress 0).
            step(real, labels if conditional else None, *model.recipe.schedule(seen, 0.0, 0))
            seen += 1
            if seen == warmup:
                start = time.perf_counter()
            if seen == warmup + batches:
                return batches / (time.perf_counter() - start), what


def lightning_loop(config: list[str], batches: int, warmup: int, path: str, extra: list[str]) -> tuple[float, str]:
    """`fit` of the config for warmup + batches adversarial batches; (batches per second, what ran)."""
    clock = BatchClock(warmup, batches)
    with tempfile.TemporaryDirectory() as root:
        cli = build_cli(
            ["fit", *config, "--model.init_args.pretrain_epochs", "0", "--trainer.max_epochs", "-1",
             "--trainer.accelerator", "cpu", "--trainer.default_root_dir", root, "--trainer.limit_val_batches", "0",
             "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
             "--model.init_args.classifier_checkpoint", "null",
             "--model.init_args.compile", LIGHTNING_COMPILE[path], *extra],
            trainer_defaults={"callbacks": [clock]},
        )  # fmt: skip
    return clock.rate, f"Lightning fit, compile: {LIGHTNING_COMPILE[path]} → {cli.model.execution.describe()}"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--data_dir", default=None, help="where the config's dataset lives (data.init_args.data_dir)")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches; a compiled side compiles in them")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paths", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    parser.add_argument("--lightning_args", nargs="*", default=[], help="extra CLI arguments for both sides' config")
    args = parser.parse_args(argv)
    config = ["--config", args.config, *(["--data.init_args.data_dir", args.data_dir] if args.data_dir else []),
              *args.lightning_args]  # fmt: skip
    cli = build_cli(config, run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    loader = cli.datamodule.train_dataloader()
    print(f"config: {args.config}; torch threads: {torch.get_num_threads()}; batch {cli.datamodule.hparams.batch_size}; "
          f"{args.batches} timed batches after {args.warmup}, best of {args.repeats}")  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    lines = ["| path | loop | batches/s | ms/batch | what ran |", "|---|---|---:|---:|---|"]
    summary = []
    for path in args.paths:
        plain, lightning = [], []
        for _ in range(args.repeats):
            plain.append(plain_loop(cli.model, loader, args.batches, args.warmup, path))
            lightning.append(lightning_loop(config, args.batches, args.warmup, path, []))
        p, l = max(r for r, _ in plain), max(r for r, _ in lightning)
        # A shared machine's speed drifts over minutes; each pair ran back to back, so its ratio is steadier.
        ratios = sorted(a[0] / b[0] for a, b in zip(plain, lightning))
        lines += [f"| {path} | plain PyTorch | {p:.1f} | {1000 / p:.1f} | {plain[0][1]} |",
                  f"| {path} | Lightning | {l:.1f} | {1000 / l:.1f} | {lightning[0][1]} |"]  # fmt: skip
        median = ratios[len(ratios) // 2]
        summary.append(f"{path}: Lightning overhead {100 * (p / l - 1):+.1f}% time per batch (best rates); median "
                       f"of {len(ratios)} back-to-back pairs {100 * (median - 1):+.1f}%")  # fmt: skip
        results[path] = {"plain": p, "lightning": l, "overhead": p / l - 1, "median_pair_overhead": median - 1}
    print("\n" + "\n".join(lines) + "\n\n" + "\n".join(summary))
    return results


if __name__ == "__main__":
    main()
