"""The functional adversarial iteration (`compile_scope: iteration`): same maths as the eager step,
one graph when compiled, checkpoints interchangeable with the eager path, and a clear fallback."""

import copy
import shutil
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from shortgan import losses
from shortgan.data import InMemoryImages, _batch_as_is
from shortgan.gan import GAN
from shortgan.iteration import AdamMaths, AdversarialIteration
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.safety import RNGState

IMAGES = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
# Autograd and torch.func sum gradients in different orders (differences ~1e-9). Adam divides by
# sqrt(v) + eps, so where a gradient is itself ~1e-9 (many of G's last-layer weights) a rounding
# difference moves the step by up to lr * 1e-9 / eps: eps 1e-6 instead of 1e-8 keeps that below 1e-6.
ADAM = partial(torch.optim.Adam, lr=4e-4, betas=(0.5, 0.999), eps=1e-6, fused=True)
TOLERANCE = 1e-5


def gan(**kwargs) -> GAN:
    kwargs = {"generator_optimizer": ADAM, "discriminator_optimizer": ADAM, "pretrain_epochs": 1, "ema_decay": 0.9,
              **kwargs}  # fmt: skip
    return GAN(ShortGANGenerator(channels=4), ShortGANDiscriminator(channels=8, num_layers=3), **kwargs)


def loader() -> DataLoader:
    # 2 loaded batches an epoch: few iterations, so that rounding differences stay rounding-sized
    # (over many, GAN training amplifies them, as it would any change of summation order).
    return DataLoader(InMemoryImages(IMAGES, torch.zeros(64)), batch_size=32, shuffle=True, collate_fn=_batch_as_is)


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
        assert steps[0] == steps[1] and steps[0]


VARIANTS = {
    "default": {},
    "n_critic-2": {"n_critic": 2, "g_steps": 1},
    "hinge": {"loss": "hinge", "ema_decay": None},
    "wgan-clipped": {"loss": "wgan", "clip_value": 0.05, "noise_fakes": False},
}


def tensors(model: GAN) -> list[torch.Tensor]:
    """Every tensor an iteration may change: weights, buffers (the weight average too), Adam states."""
    states = [t for opt in model.trainer.optimizers[:2] for s in opt.state.values() for t in s.values()]
    return [*model.state_dict(keep_vars=True).values(), *states]


@pytest.mark.parametrize("kwargs", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_functional_iteration_computes_what_the_eager_step_does(kwargs):
    # Lockstep: from the same weights, optimizer states and random state, one eager iteration and one
    # functional iteration must agree up to float rounding; training goes on from the eager result.
    model = gan(pretrain_epochs=0, compile_scope="iteration", **kwargs)
    trainer(1, limit_train_batches=1).fit(model, loader())  # attaches the optimizers, builds the iteration
    assert model.iteration is not None
    for i in range(6):
        real, g_turn = IMAGES[8 * i : 8 * i + 8], (i + 1) % model.hparams.n_critic == 0
        before, rng = [t.detach().clone() for t in tensors(model)], torch.get_rng_state()
        model._functional_step(real, g_turn)
        functional = [t.detach().clone() for t in tensors(model)]
        with torch.no_grad():
            for t, saved in zip(tensors(model), before, strict=True):
                t.copy_(saved)
        torch.set_rng_state(rng)
        model._adversarial_step(real, g_turn)
        if model.generator_ema is not None:
            model.generator_ema.update_parameters(model.generator)
        for j, (eager, other) in enumerate(zip(tensors(model), functional, strict=True)):
            assert torch.allclose(eager.float(), other.float(), atol=1e-6, rtol=1e-5), (i, j)
        # Not vacuous: D moved, and G exactly on its turns.
        names = list(model.state_dict())
        moved = {name for name, a, b in zip(names, tensors(model), before) if not torch.equal(a, b)}
        assert "discriminator.features.0.bias" in moved
        assert ("generator.to_pixels.bias" in moved) == g_turn


@pytest.mark.parametrize("kwargs", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_run_with_the_functional_iteration_trains_as_the_eager_one(kwargs):
    # Through Lightning: pretraining epoch, scheduler steps between epochs, several iterations per
    # loaded batch, the G turns of n_critic, the first update of the weight average.
    kwargs = {**kwargs, "iterations_per_batch": 2,
              "generator_scheduler": partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)}  # fmt: skip
    (eager, start), (functional, _) = train(**kwargs), train(compile_scope="iteration", **kwargs)
    assert functional.iteration is not None and eager.iteration is None
    assert functional.optimizers()[0].param_groups[0]["lr"] == 1e-4  # two adversarial epochs of StepLR
    assert_same_training(eager, functional, start)
    assert eager.latest.keys() == functional.latest.keys()
    for name, value in eager.latest.items():
        assert torch.allclose(value, functional.latest[name], rtol=0.01), name


def test_checkpoints_resume_across_the_two_paths(tmp_path):
    # 2 epochs on one path, a checkpoint, 1 more epoch on the other = 3 epochs on the eager path.
    def run(epochs: int, scope: str, resume: str | None = None, save: str | None = None) -> GAN:
        L.seed_everything(0)
        model = gan(compile_scope=scope)
        t = trainer(epochs, callbacks=[RNGState()])
        t.fit(model, loader(), ckpt_path=resume)
        if save:
            t.save_checkpoint(save)
        return model

    L.seed_everything(0)
    start = gan().state_dict()
    straight = run(3, "networks")
    for first, then in (("networks", "iteration"), ("iteration", "networks")):
        path = str(tmp_path / f"{first}.ckpt")
        run(2, first, save=path)
        assert_same_training(straight, run(3, then, resume=path), start)


def test_the_functional_iteration_reads_nothing_back_from_the_device(forbid_host_reads):
    class ForbidFromThirdBatch(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 2:
                forbid_host_reads()

    model = gan(pretrain_epochs=0, compile_scope="iteration")
    batches = DataLoader(InMemoryImages(IMAGES, torch.zeros(64)), batch_size=8, collate_fn=_batch_as_is)
    trainer(1, log_every_n_steps=1000, callbacks=[ForbidFromThirdBatch()]).fit(model, batches)
    assert model.iteration is not None and model.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 8


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"loss": "wgan_gp"}, "gradient penalty"),
        ({"freeze_discriminator": True}, "freeze_discriminator"),
        ({"discriminator_optimizer": torch.optim.SGD}, "discriminator's optimizer: SGD is not Adam"),
        ({"generator_optimizer": partial(torch.optim.Adam, amsgrad=True)}, "generator's optimizer: .* amsgrad"),
    ],
)
def test_where_the_functional_iteration_cannot_serve_the_eager_step_runs_and_says_why(kwargs, reason):
    L.seed_everything(0)
    model = gan(compile_scope="iteration", **kwargs)
    before = copy.deepcopy(model.generator.state_dict())
    with pytest.warns(UserWarning, match=f"compile_scope iteration: .*{reason}"):
        trainer(2).fit(model, loader())
    assert model.iteration is None
    assert any(not torch.equal(v, model.generator.state_dict()[k]) for k, v in before.items())  # it trained


def test_adam_maths_is_torch_s_adam_and_adamw():
    torch.manual_seed(0)
    for optimizer in (partial(torch.optim.Adam, fused=True), partial(torch.optim.Adam, weight_decay=0.01),
                      partial(torch.optim.AdamW, weight_decay=0.01)):  # fmt: skip
        net = torch.nn.Linear(20, 10)
        ours_net = copy.deepcopy(net)
        theirs = optimizer(net.parameters(), lr=1e-2, betas=(0.5, 0.999))
        ours = AdamMaths(optimizer(ours_net.parameters(), lr=1e-2, betas=(0.5, 0.999)), dict(ours_net.named_parameters()))
        ours.init_state()
        for _ in range(5):
            grads = {k: torch.randn_like(p) for k, p in net.named_parameters()}
            for name, p in net.named_parameters():
                p.grad = grads[name].clone()
            theirs.step()
            ours.step(grads)
        for a, b in zip(net.parameters(), ours_net.parameters()):
            assert torch.allclose(a, b, atol=1e-6)
            assert int(theirs.state[a]["step"]) == int(ours.optimizer.state[b]["step"]) == 5


def test_a_replaced_optimizer_state_is_the_one_updated():
    # A divergence rollback loads optimizer states from a checkpoint: new tensors, which must be used.
    model = gan(pretrain_epochs=0)
    opt_g, opt_d = (torch.optim.Adam(net.parameters()) for net in (model.generator, model.discriminator))
    iteration = AdversarialIteration(model.generator, model.discriminator, opt_g, opt_d,
                                     partial(losses.discriminator_bce, real_label=0.9), losses.generator_nonsaturating)  # fmt: skip
    iteration(IMAGES[:8], 0.1)
    saved = copy.deepcopy(opt_d.state_dict())
    iteration(IMAGES[:8], 0.1)
    opt_d.load_state_dict(saved)
    opt_d.param_groups[0]["lr"] = 0.0  # as a rollback scales the learning rate
    before = [p.clone() for p in model.discriminator.parameters()]
    iteration(IMAGES[:8], 0.1)
    assert all(int(s["step"]) == 2 for s in opt_d.state.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))


def test_the_iteration_is_one_graph_without_breaks_or_recompiles():
    from torch._dynamo.testing import CompileCounter

    for n_critic, graphs in ((1, 1), (2, 2)):
        torch._dynamo.reset()
        counter = CompileCounter()
        model = gan(pretrain_epochs=0, n_critic=n_critic, g_steps=1, compile_scope="iteration")
        L.seed_everything(0)
        t = trainer(1, limit_train_batches=1)
        t.fit(model, loader())
        iteration = model.iteration
        # fullgraph=True: dynamo raises on any graph break instead of splitting the function.
        iteration.run = torch.compile(iteration._iteration, fullgraph=True, backend=counter)
        for i in range(4):
            iteration(IMAGES[:16], 0.1 / (i + 1), g_turn=(i + 1) % n_critic == 0)  # a moving noise std, as in training
        assert counter.frame_count == graphs  # one per kind of iteration (with and without a G turn)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for i in range(4):
                iteration(IMAGES[:16], 0.05, g_turn=(i + 1) % n_critic == 0)
        assert counter.frame_count == graphs


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler")
def test_the_compiled_iteration_trains_as_the_eager_step_does():
    # Inductor draws random numbers its own way unless told to use PyTorch's generator.
    with torch._inductor.config.patch(fallback_random=True):
        (eager, start), (compiled, _) = train(), train(compile_scope="iteration", compile_mode="default")
    assert_same_training(eager, compiled, start)
