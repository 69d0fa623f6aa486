"""Lightning's cost per adversarial batch: the GAN's Lightning loop vs a plain PyTorch loop doing
the same math (1 D step + g_steps G steps, the same networks, data, batch and optimizers).

    python -m benchmarks.lightning_overhead --config configs/quickstart.yaml --batches 300

Both loops run the adversarial step only (no pretraining) on the config's data, after a warm-up;
they alternate `--repeats` times and the best rate of each is reported (the least disturbed).
"""

import argparse
import copy
import tempfile
import time

import torch

from benchmarks.recipe_speed import BatchClock
from shortgan import losses
from shortgan.averaging import ExponentialMovingAverage
from shortgan.cli import build_cli


def plain_loop(model, loader, batches: int, warmup: int) -> float:
    """The GAN's adversarial step written out in plain PyTorch; batches per second."""
    g, d = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    # The config's own optimizer factories, as the Lightning run uses them.
    opt_g, opt_d = model.factories["g"](g.parameters()), model.factories["d"](d.parameters())
    hp = model.hparams
    # The same weight average of G as the Lightning run, when the config keeps one.
    ema = None
    if model.generator_ema is not None:
        ema = ExponentialMovingAverage(g, hp.ema_decay)

    def noisy(x):
        return x + hp.instance_noise * torch.randn_like(x)

    seen, start = 0, None
    while True:
        for real, _ in loader:
            z = torch.randn(real.size(0), g.latent_dim)
            for p in g.parameters():
                p.requires_grad_(False)
            fake = g(z)
            d_loss = losses.discriminator_bce(d(noisy(real)), d(noisy(fake)), hp.real_label, hp.fake_label)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            for p in g.parameters():
                p.requires_grad_(True)
            for p in d.parameters():
                p.requires_grad_(False)
            for _ in range(hp.g_steps):
                g_loss = losses.generator_nonsaturating(d(noisy(g(torch.randn(real.size(0), g.latent_dim)))))
                opt_g.zero_grad()
                g_loss.backward()
                opt_g.step()
            for p in d.parameters():
                p.requires_grad_(True)
            if ema is not None:
                ema.update_parameters(g)
            seen += 1
            if seen == warmup:
                start = time.perf_counter()
            if seen == warmup + batches:
                return batches / (time.perf_counter() - start)


def lightning_loop(config: str, batches: int, warmup: int, extra: list[str]) -> float:
    # As many epochs as it takes (an epoch of the MNIST sample is 125 batches of 32); the clock stops the run.
    clock = BatchClock(warmup, batches)
    with tempfile.TemporaryDirectory() as root:
        build_cli(
            ["fit", "--config", config, "--model.init_args.pretrain_epochs", "0", "--trainer.max_epochs", "-1",
             "--trainer.accelerator", "cpu", "--trainer.default_root_dir", root,
             "--trainer.limit_val_batches", "0", "--trainer.enable_model_summary", "false", *extra],
            trainer_defaults={"callbacks": [clock]},
        )  # fmt: skip
    return clock.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lightning_args", nargs="*", default=[], help="extra CLI arguments for the Lightning run")
    args = parser.parse_args()
    cli = build_cli(["--config", args.config], run=False)
    cli.datamodule.setup("fit")
    loader = cli.datamodule.train_dataloader()
    plain, lightning = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(cli.model, loader, args.batches, args.warmup))
        lightning.append(lightning_loop(args.config, args.batches, args.warmup, args.lightning_args))
    p, l = max(plain), max(lightning)
    # A shared machine's speed drifts over minutes; each pair ran back to back, so its ratio is the
    # steadier estimate.
    ratios = sorted(a / b for a, b in zip(plain, lightning))
    print(f"\ntorch threads: {torch.get_num_threads()}, {args.batches} timed batches, best of {args.repeats}")
    print("| loop | batches/s | ms/batch |\n|---|---:|---:|")
    print(f"| plain PyTorch | {p:.1f} | {1000 / p:.1f} |")
    print(f"| Lightning (GAN module) {' '.join(args.lightning_args)} | {l:.1f} | {1000 / l:.1f} |")
    print(f"\nLightning overhead: {100 * (p / l - 1):+.1f}% time per batch (best rates); "
          f"median of the {len(ratios)} back-to-back pairs {100 * (ratios[len(ratios) // 2] - 1):+.1f}% "
          f"(pairs: {', '.join(f'{100 * (r - 1):+.1f}%' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
