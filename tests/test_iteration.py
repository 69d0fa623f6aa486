"""The adversarial iteration, written once (shortgan/iteration.py) and run two ways: eagerly, and as
the functional iteration that `compile: iteration` compiles (shortgan/functional.py). Same maths for
every option, one graph when compiled, the same bookkeeping (steps, checkpoints, resume), a clear
fallback."""

import copy
import signal
import subprocess
import sys
import time
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from shortgan.cli import cli_main
from shortgan.data import InMemoryImages, _batch_as_is
from shortgan.functional import AdamMaths, FunctionalIteration
from shortgan.gan import GAN
from shortgan.iteration import AdversarialRecipe, PlainUpdates, adversarial_iteration
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.safety import RNGState
from conftest import needs_compiler

IMAGES = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
LABELS = torch.arange(64) % 10
# Autograd and torch.func sum gradients in different orders (differences ~1e-9). Adam divides by
# sqrt(v) + eps, so where a gradient is itself ~1e-9 (many of G's last-layer weights) a rounding
# difference moves the step by up to lr * 1e-9 / eps: eps 1e-6 instead of 1e-8 keeps that below 1e-6.
ADAM = partial(torch.optim.Adam, lr=4e-4, betas=(0.5, 0.999), eps=1e-6, fused=True)
TOLERANCE = 1e-5


def gan(num_classes: int = 0, minibatch_std_by_class: bool = False, class_batchnorm: bool = False, **kwargs) -> GAN:
    kwargs = {"generator_optimizer": ADAM, "discriminator_optimizer": ADAM, "pretrain_epochs": 1, "ema_decay": 0.9,
              "classifier_checkpoint": None, "compile": "off", **kwargs}  # fmt: skip
    return GAN(ShortGANGenerator(channels=4, num_classes=num_classes, class_batchnorm=class_batchnorm),
               ShortGANDiscriminator(channels=8, num_layers=3, num_classes=num_classes,
                                     minibatch_std_by_class=minibatch_std_by_class), **kwargs)  # fmt: skip


# The functional iteration uncompiled: the code `compile: iteration` hands to torch.compile.
FUNCTIONAL = {"compile": "iteration", "compile_backend": None}


def loader() -> DataLoader:
    # 2 loaded batches an epoch: few iterations, so that rounding differences stay rounding-sized
    # (over many, GAN training amplifies them, as it would any change of summation order).
    return DataLoader(InMemoryImages(IMAGES, LABELS), batch_size=32, shuffle=True, collate_fn=_batch_as_is)


def trainer(epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)  # fmt: skip


def train(epochs: int = 3, **kwargs) -> tuple[GAN, dict[str, torch.Tensor]]:
    L.seed_everything(0)
    model = gan(**kwargs)
    start = copy.deepcopy(model.state_dict())
    trainer(epochs).fit(model, loader())
    return model, start


def updates(model: GAN, start: dict[str, torch.Tensor]) -> torch.Tensor:
    """All that training changed in the float weights and buffers (the weight average too), as one vector."""
    return torch.cat([(v.float() - start[k].float()).flatten() for k, v in model.state_dict().items()
                      if v.is_floating_point()])  # fmt: skip


def assert_same_training(a: GAN, b: GAN, start: dict[str, torch.Tensor]) -> None:
    """Two runs from the same start made the same updates, up to rounding that training amplified.

    Lockstep, an iteration of each path agrees to ~1e-7 (test above); over a run, Adam's normalised
    steps turn rounding-sized gradient differences into steps of size lr wherever a gradient is near
    zero, as any change of summation order would (eager fused vs per-tensor Adam does it too). So
    runs are compared by their whole update: a wrong loss, a missed step, a stale learning rate or a
    skipped average changes it by far more than 1%.
    """
    assert a.state_dict().keys() == b.state_dict().keys()
    for name, value in a.state_dict().items():
        if not value.is_floating_point():
            assert torch.equal(value, b.state_dict()[name]), name  # counters: BatchNorm's, the average's
    update_a, update_b = updates(a, start), updates(b, start)
    assert (update_a - update_b).norm() < 0.01 * update_a.norm()
    for opt_a, opt_b in zip(a.optimizers()[:2], b.optimizers()[:2]):
        assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
        steps = [[int(s["step"]) for s in opt.optimizer.state.values()] for opt in (opt_a, opt_b)]
        assert steps[0] == steps[1]  # (a frozen D's optimizer holds no state on either path)
    assert a.trainer.global_step == b.trainer.global_step > 0


VARIANTS = {
    "default": {},
    "n_critic-2": {"n_critic": 2, "g_steps": 1},
    "hinge": {"loss": "hinge", "ema_decay": None},
    "minimax": {"loss": "minimax", "real_label": 1.0},
    "lsgan": {"loss": "lsgan"},
    "wgan-clipped": {"loss": "wgan", "clip_value": 0.05, "noise_fakes": False},
    "wgan-gp": {"loss": "wgan_gp", "n_critic": 2, "g_steps": 1},
    "augment": {"augment": ("translation", "cutout")},
    "frozen-d": {"freeze_discriminator": True},
    "conditional": {"num_classes": 10},
    "mode-seeking": {"mode_seeking": 1.0, "num_classes": 10},
    "class-spread": {"num_classes": 10, "minibatch_std_by_class": True},
    "r1": {"num_classes": 10, "minibatch_std_by_class": True, "r1_gamma": 1.0},
    "class-batchnorm": {"num_classes": 10, "class_batchnorm": True},
    "label-dropout": {"num_classes": 10, "minibatch_std_by_class": True, "label_dropout": 0.5},
}


def tensors(model: GAN) -> list[torch.Tensor]:
    """Every tensor an iteration may change: weights, buffers (the weight average too), Adam states."""
    states = [t for opt in model.trainer.optimizers[:2] for s in opt.state.values() for t in s.values()]
    return [*model.state_dict(keep_vars=True).values(), *states]


@pytest.mark.parametrize("kwargs", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_functional_iteration_computes_what_the_eager_step_does(kwargs):
    # Lockstep: from the same weights, optimizer states and random state, one eager iteration and one
    # functional iteration must agree up to float rounding; training goes on from the eager result.
    model = gan(pretrain_epochs=0, **FUNCTIONAL, **kwargs)
    trainer(1, limit_train_batches=1).fit(model, loader())  # attaches the optimizers, builds the iteration
    functional = model.iteration
    assert functional is not None
    if model.hparams.freeze_discriminator:
        model.discriminator.eval()  # as training_step leaves it
    if model.generator_ema is not None:
        model.generator_ema.n_averaged.zero_()  # the first iteration checks the average's first update (a copy)
    for i in range(6):
        real, g_turn = IMAGES[8 * i : 8 * i + 8], (i + 1) % model.hparams.n_critic == 0
        labels = LABELS[8 * i : 8 * i + 8] if model.num_classes else None
        before, rng = [t.detach().clone() for t in tensors(model)], torch.get_rng_state()
        model.iteration = functional
        functional_curves = {k: v.clone() for k, v in model.adversarial_step(real, i, labels).items()}
        after_functional = [t.detach().clone() for t in tensors(model)]
        with torch.no_grad():
            for t, saved in zip(tensors(model), before, strict=True):
                t.copy_(saved)
        torch.set_rng_state(rng)
        model.iteration = None
        eager_curves = model.adversarial_step(real, i, labels)
        for j, (eager, other) in enumerate(zip(tensors(model), after_functional, strict=True)):
            assert torch.allclose(eager.float(), other.float(), atol=1e-6, rtol=1e-5), (i, j)
        assert eager_curves.keys() == functional_curves.keys()
        for name, value in eager_curves.items():
            assert torch.allclose(value, functional_curves[name], atol=1e-5, rtol=1e-4), name
        # Not vacuous: D moved unless frozen, G and its weight average exactly on G's turns.
        names = list(model.state_dict())
        moved = {name for name, a, b in zip(names, tensors(model), before) if not torch.equal(a, b)}
        assert ("discriminator.features.0.bias" in moved) != model.hparams.freeze_discriminator
        assert ("generator.to_pixels.bias" in moved) == g_turn
        if model.generator_ema is not None:
            assert ("generator_ema.n_averaged" in moved) == g_turn


def test_the_first_update_of_the_weight_average_copies_g_on_both_paths():
    # With pretrain_epochs 0 the average's first update is an adversarial iteration's.
    for path in ({"compile": "off"}, FUNCTIONAL):
        L.seed_everything(0)
        model = gan(pretrain_epochs=0, **path)
        with torch.no_grad():
            for p in model.generator_ema.module.parameters():
                p.fill_(7.0)  # what a copy must overwrite, and an average would not
        trainer(1, limit_train_batches=1).fit(model, loader())
        assert int(model.generator_ema.n_averaged) == 1
        # One update with decay 0.9 from 7.0 would leave 0.7 + 0.9 * 7 = 6.3 + ...: far from G.
        for a, g in zip(model.generator_ema.module.parameters(), model.generator.parameters()):
            assert torch.equal(a, g)


@pytest.mark.parametrize("kwargs", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_run_with_the_functional_iteration_trains_as_the_eager_one(kwargs):
    # Through Lightning: pretraining epoch, scheduler steps between epochs, several iterations per
    # loaded batch, the G turns of n_critic, the first update of the weight average.
    kwargs = {**kwargs, "iterations_per_batch": 2,
              "generator_scheduler": partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)}  # fmt: skip
    (eager, start), (functional, _) = train(**kwargs), train(**FUNCTIONAL, **kwargs)
    assert functional.iteration is not None and eager.iteration is None
    assert functional.optimizers()[0].param_groups[0]["lr"] == 1e-4  # two adversarial epochs of StepLR
    assert_same_training(eager, functional, start)
    assert eager.latest.keys() == functional.latest.keys()
    for name, value in eager.latest.items():
        assert torch.allclose(value, functional.latest[name], rtol=0.01), name


def test_checkpoints_resume_across_the_two_paths(tmp_path):
    # 2 epochs on one path, a checkpoint, 1 more epoch on the other = 3 epochs on the eager path.
    def run(epochs: int, path: dict, resume: str | None = None, save: str | None = None) -> GAN:
        L.seed_everything(0)
        model = gan(**path)
        t = trainer(epochs, callbacks=[RNGState()])
        t.fit(model, loader(), ckpt_path=resume)
        if save:
            t.save_checkpoint(save)
        return model

    L.seed_everything(0)
    start = gan().state_dict()
    eager = {"compile": "off"}
    straight = run(3, eager)
    for first, then in ((eager, FUNCTIONAL), (FUNCTIONAL, eager)):
        path = str(tmp_path / f"{first['compile']}.ckpt")
        run(2, first, save=path)
        resumed = run(3, then, resume=path)
        assert_same_training(straight, resumed, start)
        assert resumed.trainer.global_step == straight.trainer.global_step


def test_the_functional_iteration_reads_nothing_back_from_the_device(forbid_host_reads):
    class ForbidFromThirdBatch(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 2:
                forbid_host_reads()

    model = gan(pretrain_epochs=0, **FUNCTIONAL)
    batches = DataLoader(InMemoryImages(IMAGES, torch.zeros(64)), batch_size=8, collate_fn=_batch_as_is)
    trainer(1, log_every_n_steps=1000, callbacks=[ForbidFromThirdBatch()]).fit(model, batches)
    assert model.iteration is not None and model.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 8


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"discriminator_optimizer": torch.optim.SGD}, "discriminator's optimizer: SGD is not Adam"),
        ({"generator_optimizer": partial(torch.optim.Adam, amsgrad=True)}, "generator's optimizer: .* amsgrad"),
    ],
)
def test_where_the_functional_iteration_cannot_serve_the_eager_step_runs_and_says_why(kwargs, reason):
    L.seed_everything(0)
    model = gan(**FUNCTIONAL, **kwargs)
    before = copy.deepcopy(model.generator.state_dict())
    with pytest.warns(UserWarning, match=f"compile iteration: .*{reason}"):
        trainer(2).fit(model, loader())
    assert model.iteration is None
    assert any(not torch.equal(v, model.generator.state_dict()[k]) for k, v in before.items())  # it trained


ADAM_FORMS = {
    "adam-fused": partial(torch.optim.Adam, fused=True),
    "adam-l2-decay": partial(torch.optim.Adam, weight_decay=0.1),
    "adamw": partial(torch.optim.AdamW, weight_decay=0.1),
    "adam-decoupled-weight-decay": partial(torch.optim.Adam, weight_decay=0.1, decoupled_weight_decay=True),
}


@pytest.mark.parametrize("optimizer", ADAM_FORMS.values(), ids=ADAM_FORMS.keys())
def test_adam_maths_is_torch_s_adam_in_every_form_with_a_changing_learning_rate(optimizer):
    torch.manual_seed(0)
    net = torch.nn.Linear(20, 10)
    ours_net = copy.deepcopy(net)
    theirs = optimizer(net.parameters(), lr=1e-2, betas=(0.5, 0.999))
    ours = AdamMaths(optimizer(ours_net.parameters(), lr=1e-2, betas=(0.5, 0.999)), dict(ours_net.named_parameters()))
    ours.init_state()
    for i in range(5):
        for opt in (theirs, ours.optimizer):  # as a scheduler would change it
            opt.param_groups[0]["lr"] = 1e-2 * (5 - i)
        ours.sync_lr()
        grads = {k: torch.randn_like(p) for k, p in net.named_parameters()}
        for name, p in net.named_parameters():
            p.grad = grads[name].clone()
        theirs.step()
        ours.step(grads)
    for a, b in zip(net.parameters(), ours_net.parameters()):
        # float32 rounding at learning rates up to 5e-2 reaches ~1e-6; L2 instead of decoupled decay
        # (or the reverse) moves weights by ~lr·weight_decay·|w| ≈ 1e-3, far above this.
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert int(theirs.state[a]["step"]) == int(ours.optimizer.state[b]["step"]) == 5


def test_a_frozen_parameter_is_left_as_torch_s_adam_leaves_it_on_both_paths():
    # A user freezes G's last bias: eagerly it gets no gradient and torch's Adam skips it (no step, no
    # state, weight decay included); the functional iteration must do the same.
    adam_l2 = partial(torch.optim.Adam, lr=1e-2, weight_decay=0.1)
    results = {}
    for path in ({"compile": "off"}, FUNCTIONAL):
        L.seed_everything(0)
        model = gan(pretrain_epochs=0, generator_optimizer=adam_l2, **path)
        model.generator.to_pixels.bias.requires_grad_(False)
        frozen = model.generator.to_pixels.bias.detach().clone()
        trainer(1, limit_train_batches=2).fit(model, loader())
        assert (model.iteration is not None) == (path is FUNCTIONAL)
        opt_g = model.optimizers()[0].optimizer
        assert torch.equal(model.generator.to_pixels.bias, frozen)
        assert model.generator.to_pixels.bias not in opt_g.state
        assert int(opt_g.state[model.generator.to_pixels.weight]["step"]) == 4  # the others stepped (2 × g_steps)
        results[path["compile"]] = opt_g.state_dict()["state"].keys()
    assert results["off"] == results["iteration"]


def test_a_scheduler_on_the_functional_path_sees_the_optimizer_step():
    import warnings

    model = gan(pretrain_epochs=0)
    opt_g, opt_d = (torch.optim.Adam(net.parameters()) for net in (model.generator, model.discriminator))
    iteration = FunctionalIteration(model.generator, model.discriminator, opt_g, opt_d, AdversarialRecipe(),
                                    compile_backend=None)  # fmt: skip
    schedulers = [torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5) for opt in (opt_g, opt_d)]
    iteration(IMAGES[:8], 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
        for scheduler in schedulers:
            scheduler.step()
    assert opt_g.param_groups[0]["lr"] == 0.5e-3


def test_a_replaced_optimizer_state_is_prepared_again_and_updated():
    # A divergence rollback loads optimizer states from a checkpoint: new tensors, which must be brought
    # into the iteration's form (step on the device, static addresses for CUDA graphs) and used.
    model = gan(pretrain_epochs=0)
    opt_g, opt_d = (torch.optim.Adam(net.parameters()) for net in (model.generator, model.discriminator))
    iteration = FunctionalIteration(model.generator, model.discriminator, opt_g, opt_d, AdversarialRecipe(),
                                    compile_backend=None)  # fmt: skip
    prepared, prepare = [], iteration.prepare
    iteration.prepare = lambda: prepared.append(True) or prepare()
    iteration(IMAGES[:8], 0.1)
    saved = [copy.deepcopy(opt.state_dict()) for opt in (opt_g, opt_d)]
    iteration(IMAGES[:8], 0.1)
    assert len(prepared) == 1
    for opt, state in zip((opt_g, opt_d), saved):
        opt.load_state_dict(state)
    opt_d.param_groups[0]["lr"] = 0.0  # as a rollback scales the learning rate
    before = [p.clone() for p in model.discriminator.parameters()]
    iteration(IMAGES[:8], 0.1)
    assert len(prepared) == 2
    # From the saved states (after one iteration), one more: 2 D steps, 2 × g_steps G steps.
    assert all(int(s["step"]) == 2 for s in opt_d.state.values())
    assert all(int(s["step"]) == 2 * AdversarialRecipe().g_steps for s in opt_g.state.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))


def test_the_iteration_is_one_graph_without_breaks_or_recompiles():
    from torch._dynamo.testing import CompileCounter

    for n_critic, graphs in ((1, 1), (2, 2)):
        torch._dynamo.reset()
        counter = CompileCounter()
        model = gan(pretrain_epochs=0, n_critic=n_critic, g_steps=1, **FUNCTIONAL)
        L.seed_everything(0)
        t = trainer(1, limit_train_batches=1)
        t.fit(model, loader())
        iteration = model.iteration
        # fullgraph=True: dynamo raises on any graph break instead of splitting the function.
        iteration.run = torch.compile(iteration._iteration, fullgraph=True, backend=counter)
        for i in range(4):
            _, steps = iteration(IMAGES[:16], 0.1 / (i + 1), g_turn=(i + 1) % n_critic == 0)  # a moving noise std
            assert steps == (2 if (i + 1) % n_critic == 0 else 1)  # the step count survives compilation
        assert counter.frame_count == graphs  # one per kind of iteration (with and without a G turn)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for i in range(4):
                iteration(IMAGES[:16], 0.05, g_turn=(i + 1) % n_critic == 0)
        assert counter.frame_count == graphs


@pytest.mark.slow
@needs_compiler
def test_the_compiled_iteration_trains_as_the_eager_step_does():
    # Inductor draws random numbers its own way unless told to use PyTorch's generator.
    with torch._inductor.config.patch(fallback_random=True):
        (eager, start), (compiled, _) = train(), train(compile="iteration")
    assert compiled.execution.backend == "inductor" and compiled.iteration is not None
    assert_same_training(eager, compiled, start)
    assert compiled.trainer.global_step == eager.trainer.global_step


QUICK = ["--config", "configs/quickstart.yaml", "--trainer.enable_progress_bar", "false",
         "--model.init_args.pretrain_epochs", "1", "--model.init_args.classifier_checkpoint", "null",
         "--trainer.limit_train_batches", "10", "--data.init_args.batch_size", "16"]  # fmt: skip


def test_global_step_and_checkpoints_move_on_the_functional_path(tmp_path):
    """ModelCheckpoint saves only when global_step moved: the functional path must count its steps."""
    cli_main(["fit", *QUICK, "--model.init_args.compile", "iteration", "--model.init_args.compile_backend", "null",
              "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    folder = tmp_path / "quickstart" / "version_0" / "checkpoints"
    last = torch.load(folder / "last.ckpt", weights_only=True)
    # 10 pretraining steps, then 10 batches × (1 D + 2 G) in each of 2 adversarial epochs.
    assert (last["epoch"], last["global_step"]) == (2, 10 + 2 * 10 * 3)
    assert (folder / "epoch=2-step=70.ckpt").exists()


@pytest.mark.slow
def test_a_compiled_run_killed_in_adversarial_training_resumes_from_an_adversarial_epoch(tmp_path):
    # compile_backend eager: torch.compile captures the iteration as for inductor (the same wrapper,
    # the same step counting through dynamo) without minutes of C++ compilation on a CPU.
    args = [*QUICK, "--model.init_args.compile", "iteration", "--model.init_args.compile_backend", "eager",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    run = subprocess.Popen([sys.executable, "main.py", "fit", *args, "--trainer.max_epochs", "1000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    last = tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 240
        while not (last.exists() and torch.load(last, weights_only=True)["epoch"] >= 3):
            assert run.poll() is None, run.stderr.read()
            assert time.time() < deadline, "no adversarial checkpoint in 4 minutes"
            time.sleep(0.5)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        run.kill()
    assert run.returncode == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] >= 3 and saved["global_step"] == 10 + saved["epoch"] * 10 * 3
    # The checkpoint closes epoch `epoch`: two more epochs run to max_epochs epoch + 3.
    cli = cli_main(["fit", *args, "--trainer.max_epochs", str(saved["epoch"] + 3), "--ckpt_path", "last"])
    assert cli.model.iteration is not None  # resumed on the compiled path
    assert cli.trainer.global_step == saved["global_step"] + 10 * 3 * 2



@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 10, "minibatch_std_by_class": True}], ids=["default", "conditional"])
def test_the_plain_pytorch_reference_computes_what_the_lightning_step_does(kwargs):
    # PlainUpdates (zero_grad, backward, step, no Lightning) is the reference the overhead benchmark
    # times: from the same weights, fresh optimizers and random state, its iterations must leave what
    # the GAN's own eager step leaves.
    model = gan(pretrain_epochs=0, **kwargs)
    trainer(1, limit_train_batches=0).fit(model, loader())  # attaches the optimizers; no step yet
    assert all(not opt.optimizer.state for opt in model.optimizers()[:2])
    g, d = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    plain = PlainUpdates(g, d, ADAM(g.parameters()), ADAM(d.parameters()))
    average = copy.deepcopy(model.generator_ema)
    std, _ = model.schedule()
    for i in range(3):
        real, labels = IMAGES[8 * i : 8 * i + 8], LABELS[8 * i : 8 * i + 8] if model.num_classes else None
        rng = torch.get_rng_state()
        plain_curves = adversarial_iteration(g, d, plain, model.recipe, real, labels, std, True, average)
        torch.set_rng_state(rng)
        curves = model.adversarial_step(real, i, labels)
        for name, value in curves.items():
            torch.testing.assert_close(plain_curves[name], value, atol=TOLERANCE, rtol=TOLERANCE)
    ours = (*g.parameters(), *d.parameters(), *average.parameters())
    theirs = (*model.generator.parameters(), *model.discriminator.parameters(), *model.generator_ema.parameters())
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=TOLERANCE)
