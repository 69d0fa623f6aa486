"""Which code runs the adversarial iterations, and why: the eager step, the functional iteration
compiled whole (shortgan/functional.py), or the eager step around compiled networks.

All of them run the one `adversarial_iteration` (shortgan/iteration.py); they differ in speed only.
`compile: auto` picks the compiled iteration where it measured faster, wall clock including a cold
compile (docs/performance.md): on a GPU or a CPU, once the run's adversarial training is long enough
to repay the compile.
"""

import os
import shutil
from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch

from shortgan.functional import unsupported_network, unsupported_optimizer
from shortgan.iteration import AdversarialRecipe
from shortgan.schedules import training_clock

Compile = Literal["auto", "off", "iteration", "networks"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]

# Measured on the 2-core development CPU (docs/performance.md, "compile: auto"): the compiled iteration
# runs 1.28x the eager step's iterations per second (26.3 vs 20.5 /s, quickstart), and inductor's
# compile costs ~90 s cold, ~12 s with its cache warm. A cold compile is repaid after ~8,400
# iterations, or ~7 minutes of adversarial training: below these `auto` stays eager on a CPU.
CPU_MIN_ITERATIONS = 10_000
CPU_MIN_SECONDS = 420.0
# Measured on one H200 (torch 2.11, configs/mnist.yaml, batch 64; issue 30): the compiled iteration with
# CUDA graphs ran 155.7 iterations/s against 26.2 eager, after ~68 s of compiling and capture (cold;
# ~20 s warm). A one-minute run spent its minute compiling and learned nothing. Cold, the compile is
# repaid after ~2,150 iterations or ~82 s of adversarial training: below these `auto` stays eager.
GPU_MIN_ITERATIONS = 2_500
GPU_MIN_SECONDS = 90.0


@dataclass(frozen=True)
class Execution:
    """The chosen way to run adversarial iterations: `path` (`eager`, `iteration` or `networks`), the
    `torch.compile` `mode` and `backend` (None: uncompiled), and `why`, for the run's one line."""

    path: Literal["eager", "iteration", "networks"]
    why: str
    mode: str | None = None
    backend: str | None = None

    def describe(self) -> str:
        if self.path == "eager":
            return f"Adversarial iterations run eagerly: {self.why}."
        how = "uncompiled" if self.backend is None else f"torch.compile {self.backend}, mode {self.mode or 'default'}"
        what = "the functional iteration" if self.path == "iteration" else "compiled networks"
        return f"Adversarial iterations run as {what} ({how}): {self.why}."


def functional_iteration_limit(
    trainer: L.Trainer, discriminator: torch.nn.Module, recipe: AdversarialRecipe
) -> str | None:
    """Why the functional iteration cannot run this training (an engine limit), or None."""
    network = unsupported_network(discriminator, recipe)
    if network is not None:
        return network
    if trainer.world_size > 1:
        return "DDP reduces gradients in backward(), which the functional iteration does not call"
    if trainer.precision not in ("32-true", "32"):
        return f"precision {trainer.precision} is not supported by the functional iteration (float32 only)"
    for name, optimizer in zip(("generator", "discriminator"), trainer.optimizers[:2]):
        problem = unsupported_optimizer(optimizer)
        if problem:
            return f"the {name}'s optimizer: {problem} (the functional iteration writes only Adam and AdamW)"
    return None


def has_cpp_compiler() -> bool:
    """Whether inductor can build CPU kernels here (it needs a C++ compiler)."""
    return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))


def expected_adversarial_work(
    trainer: L.Trainer, pretrain_epochs: int, iterations_per_batch: int
) -> tuple[float | None, float | None]:
    """(iterations, seconds) of adversarial training left in this run, each None if unbounded."""
    iterations = None
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and batches not in (0, float("inf")):
        epochs = trainer.max_epochs - max(trainer.current_epoch, pretrain_epochs)
        iterations = max(0, epochs) * batches * iterations_per_batch
    clock = training_clock(trainer)
    seconds = None if clock is None else max(0.0, clock[1] - clock[0])
    return iterations, seconds


def compile_mode_for(trainer: L.Trainer, mode: str | None, backend: str | None) -> str | None:
    """The `torch.compile` mode: as given, else `reduce-overhead` (CUDA graphs) on a GPU and `default`
    elsewhere; None for backends other than inductor, whose modes these are."""
    if backend != "inductor":
        return None
    return mode or ("reduce-overhead" if trainer.strategy.root_device.type == "cuda" else "default")


def choose_execution(
    choice: Compile,
    mode: str | None,
    backend: str | None,
    trainer: L.Trainer,
    discriminator: torch.nn.Module,
    recipe: AdversarialRecipe,
    pretrain_epochs: int,
    iterations_per_batch: int,
) -> Execution:
    """The way `compile: choice` runs on this trainer (see `GAN`'s `compile` argument)."""
    on_gpu = trainer.strategy.root_device.type == "cuda"
    mode = compile_mode_for(trainer, mode, backend)
    if choice == "off":
        return Execution("eager", "compile is off")
    if choice == "networks":
        return Execution("networks", "compile networks", mode, backend)
    limit = functional_iteration_limit(trainer, discriminator, recipe)
    if limit is not None:
        return Execution("eager", limit)
    if choice == "iteration":
        return Execution("iteration", "compile iteration", mode, backend)
    # auto
    if backend is None:
        return Execution("iteration", "compile_backend is null", mode, None)
    if on_gpu:
        device, compile_cost, min_iterations, min_seconds = "a GPU", "~70 s", GPU_MIN_ITERATIONS, GPU_MIN_SECONDS
        gain = " (one CUDA graph per iteration, ~6x the eager step)"
    elif trainer.strategy.root_device.type == "cpu":
        if backend == "inductor" and not has_cpp_compiler():
            return Execution("eager", "no C++ compiler found (g++ or clang++), which torch.compile needs on a CPU")
        device, compile_cost, min_iterations, min_seconds = "a CPU", "~90 s", CPU_MIN_ITERATIONS, CPU_MIN_SECONDS
        gain = ""
    else:
        return Execution("eager", f"compile auto compiles on a CPU or GPU, not {trainer.strategy.root_device.type}")
    iterations, seconds = expected_adversarial_work(trainer, pretrain_epochs, iterations_per_batch)
    short = []  # the bounds that end this run's adversarial training too soon to repay a compile
    if iterations is not None and iterations < min_iterations:
        short.append(f"~{iterations:,} iterations")
    if seconds is not None and seconds < min_seconds:
        short.append(f"{seconds:.0f} s")
    if short:
        return Execution(
            "eager",
            f"on {device} a cold compile ({compile_cost}) is repaid after ~{min_iterations:,} iterations or "
            f"{min_seconds / 60:g} minutes, and this run's adversarial training is {' / '.join(short)} "
            f"(compile: iteration compiles anyway)",
        )
    return Execution("iteration", f"on {device} a run this long repays the compile{gain}", mode, backend)
