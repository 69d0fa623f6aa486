"""Does the compiled iteration compute what the eager step does, on this machine's accelerator?

    python -m benchmarks.iteration_check --accelerator gpu --compile_mode reduce-overhead   # CUDA graphs
    python -m benchmarks.iteration_check --accelerator cpu --compile_mode default --variants n_critic-2
    python -m benchmarks.iteration_check --accelerator cpu --backend none                 # uncompiled, a look

tests/test_iteration.py checks this on a CPU; CI has no GPU, so this is the same lockstep check for
the session that is lent one: from identical weights, Adam states and random state, one compiled
iteration and one eager iteration, six times, for each loss variant. Prints the largest difference
per variant, and the first tensor (in state_dict order, then Adam's states) and iteration where the
two differ by more than `--tolerance`; exits 1 if any variant does. Inductor is told to draw random
numbers with PyTorch's generator (`fallback_random`), else the two paths would draw different noise,
and TF32 is off for matmuls and cuDNN convolutions alike (cuDNN's is on by default in PyTorch).
"""

import argparse
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests are no package
from test_iteration import IMAGES, LABELS, VARIANTS, gan, loader, tensors, trainer  # noqa: E402


class Lockstep(L.Callback):
    """The comparison, run where training left the model: on the accelerator, before Lightning's teardown."""

    def on_train_end(self, trainer: L.Trainer, model) -> None:
        assert model.iteration is not None, "the functional iteration fell back to the eager step"
        with torch.enable_grad():
            self.worst = largest_difference(model)


def largest_difference(model) -> tuple[float, str, str]:
    """Over six iterations: the largest difference and where, and the first tensor over the tolerance."""
    names = [*model.state_dict(), *(f"{kind}'s Adam {key} of parameter {n}" for kind, opt in zip("GD", model.trainer.optimizers)
                                    for n, s in enumerate(opt.state.values()) for key in s)]  # fmt: skip
    images, labels, worst, first = IMAGES.to(model.device), LABELS.to(model.device), (0.0, ""), ""
    compiled = model.iteration
    if model.hparams.freeze_discriminator:
        model.discriminator.eval()
    for i in range(6):
        real = images[8 * i : 8 * i + 8]
        y = labels[8 * i : 8 * i + 8] if model.num_classes else None
        before = [t.detach().clone() for t in tensors(model)]
        rng = torch.random.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        model.iteration = compiled
        model.adversarial_step(real, i, y)
        functional = [t.detach().clone() for t in tensors(model)]
        with torch.no_grad():
            for t, saved in zip(tensors(model), before, strict=True):
                t.copy_(saved)
        torch.random.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
        model.iteration = None
        model.adversarial_step(real, i, y)
        moved = max((a.float() - b.float()).abs().max().item() for a, b in zip(tensors(model), before))
        assert moved > 0, "the eager step changed nothing"
        for name, eager, other in zip(names, tensors(model), functional, strict=True):
            difference = (eager.float() - other.float()).abs().max().item()
            scale = eager.float().abs().max().item()
            if difference > TOLERANCE and not first:
                first = f"iteration {i}, {name}: {difference:.1e} (largest value there {scale:.1e})"
            if difference > worst[0]:
                worst = difference, f"iteration {i}, {name} (largest value there {scale:.1e})"
    return (*worst, first)


TOLERANCE = 1e-5


def run(accelerator: str, compile_mode: str | None, backend: str | None, kwargs: dict) -> tuple[float, str, str]:
    L.seed_everything(0)
    model = gan(pretrain_epochs=0, compile="iteration", compile_mode=compile_mode, compile_backend=backend, **kwargs)
    lockstep = Lockstep()
    trainer(1, limit_train_batches=1, accelerator=accelerator, devices=1, callbacks=[lockstep]).fit(model, loader())
    return lockstep.worst


def main() -> int:
    global TOLERANCE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--compile_mode", default=None, help="default, reduce-overhead, ...; unset: the GAN's choice")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend; none: uncompiled")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    TOLERANCE = args.tolerance
    # Matrix units in reduced precision would make both paths differ from float32 and from each other.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    failed = False
    print("| variant | largest difference, compiled vs eager | where | first over the tolerance |\n|---|---|---|---|")
    for name in args.variants:
        torch._dynamo.reset()
        with torch._inductor.config.patch(fallback_random=True):
            worst, where, first = run(args.accelerator, args.compile_mode, None if args.backend == "none" else args.backend,
                                      VARIANTS[name])  # fmt: skip
        failed |= not worst <= args.tolerance
        print(f"| {name} | {worst:.2e}{'' if worst <= args.tolerance else ' OVER'} | {where} | {first or '-'} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
