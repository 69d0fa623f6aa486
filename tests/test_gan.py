import copy
import csv
import lightning as L
import pytest
import torch
from functools import partial
from torch import nn
from torch.nn import functional as F

from shortgan import losses
from torch.utils.data import DataLoader

from shortgan.data import InMemoryImages, _batch_as_is
from shortgan.errors import UserError
from shortgan.checkpoints import load_generator_weights
from shortgan.gan import GAN
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.pretraining import GeneratorPretrainer, pretraining_loss
from conftest import needs_compiler


class RecordingDiscriminator(nn.Module):
    """Wraps a discriminator and keeps every batch it scores."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ShortGANDiscriminator(channels=8)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


class FixedBatch(L.LightningDataModule):
    def __init__(self, images: torch.Tensor, batches: int = 1) -> None:
        super().__init__()
        self.images, self.batches = images, batches

    def train_dataloader(self):
        n = len(self.images)
        data = InMemoryImages(self.images.repeat(self.batches, 1, 1, 1), torch.zeros(n * self.batches))
        return DataLoader(data, batch_size=n, collate_fn=_batch_as_is)


def small_gan(**kwargs) -> GAN:
    kwargs.setdefault("discriminator", ShortGANDiscriminator(channels=8))
    return GAN(generator=ShortGANGenerator(channels=4, up_channels=1), **kwargs)


def fit(model: L.LightningModule, images: torch.Tensor, epochs: int = 1, batches: int = 1, **trainer_kwargs) -> L.Trainer:
    trainer_kwargs.setdefault("logger", False)
    trainer = L.Trainer(
        max_epochs=epochs, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(model, FixedBatch(images, batches))
    return trainer


def adam_steps(opt: torch.optim.Optimizer) -> int:
    p = opt.param_groups[0]["params"][0]
    return int(opt.state[p]["step"]) if p in opt.state else 0


@pytest.mark.parametrize("g_steps", [1, 2, 3])
def test_one_batch_updates_d_once_and_g_g_steps_times(g_steps):
    model = small_gan(g_steps=g_steps)
    trainer = fit(model, torch.rand(16, 1, 28, 28) * 2 - 1)
    opt_g, opt_d, opt_pre = trainer.optimizers
    assert adam_steps(opt_d) == 1
    assert adam_steps(opt_g) == g_steps
    assert adam_steps(opt_pre) == 0
    # Lightning's global_step counts optimizer steps, not batches.
    assert trainer.global_step == 1 + g_steps


def test_pretraining_epochs_come_first_and_touch_only_g():
    model = small_gan(pretrain_epochs=1)
    d_before = [p.clone() for p in model.discriminator.parameters()]
    trainer = fit(model, torch.rand(16, 1, 28, 28) * 2 - 1, epochs=1, batches=3, log_every_n_steps=1)
    opt_g, opt_d, opt_pre = trainer.optimizers
    assert adam_steps(opt_pre) == 3 and adam_steps(opt_d) == 0 and adam_steps(opt_g) == 0
    assert all(torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert "train/pretrain_loss" in trainer.callback_metrics


class RecordLosses(L.Callback):
    """Keeps each batch's d_loss as the module computed it, and can stop the run after a batch."""

    def __init__(self, stop_after_batch: int = -1) -> None:
        self.d_loss: list[float] = []
        self.stop_after_batch = stop_after_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.d_loss.append(float(pl_module.latest["d_loss"]))
        trainer.should_stop = batch_idx == self.stop_after_batch


def logged_d_loss(log_dir) -> dict[int, float]:
    with open(next(log_dir.rglob("metrics.csv"))) as f:
        return {int(r["step"]): float(r["train/d_loss"]) for r in csv.DictReader(f) if r.get("train/d_loss")}


@pytest.mark.parametrize("stop_after_batch", [-1, 4])
def test_the_logger_gets_each_written_step_s_own_losses(tmp_path, stop_after_batch):
    # Losses are logged only on the batches whose values Lightning writes (every log_every_n_steps,
    # and the batch a callback stops the run after): the written curve must be the true one.
    record = RecordLosses(stop_after_batch)
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    fit(small_gan(g_steps=1), torch.rand(8, 1, 28, 28) * 2 - 1, batches=9, logger=logger, log_every_n_steps=3,
        callbacks=[record])  # fmt: skip
    expected_steps = [2, 5, 8] if stop_after_batch < 0 else [2, 4]
    assert logged_d_loss(tmp_path) == {s: pytest.approx(record.d_loss[s]) for s in expected_steps}


def test_discriminator_sees_noisy_reals_and_clean_fakes_unless_asked():
    d = RecordingDiscriminator()
    real = torch.zeros(32, 1, 28, 28)
    fit(small_gan(discriminator=d, g_steps=1, instance_noise=0.1, noise_fakes=False), real)
    real_seen, fake_seen, g_seen = d.seen[-3:]
    assert real_seen.std() == pytest.approx(0.1, rel=0.05)  # zeros + N(0, 0.1²)
    assert fake_seen.abs().max() <= 1  # no noise on fakes: still in Tanh range
    assert g_seen.abs().max() <= 1


def test_instance_noise_on_fakes_when_asked():
    d = RecordingDiscriminator()
    fit(small_gan(discriminator=d, g_steps=1, instance_noise=0.5, noise_fakes=True), torch.zeros(32, 1, 28, 28))
    assert d.seen[-2].abs().max() > 1  # Tanh output plus noise leaves [-1, 1]


def test_instance_noise_falls_linearly_to_zero_over_the_adversarial_epochs():
    d = RecordingDiscriminator()
    # 1 pretraining epoch, then adversarial epochs 0..4 with the std falling over 4 of them.
    model = small_gan(discriminator=d, g_steps=1, instance_noise=0.4, instance_noise_epochs=4, noise_fakes=False,
                      pretrain_epochs=1)  # fmt: skip
    stds = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            stds.append(d.seen[-3].std().item() if d.seen else None)  # the real batch of the D step

    fit(model, torch.zeros(32, 1, 28, 28), epochs=6, callbacks=[Record()])
    assert stds[0] is None  # pretraining: D not called
    assert stds[1:] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0], abs=0.02)


def test_label_smoothing_sets_the_optimum_of_d_on_reals():
    logits = torch.linspace(-5, 5, 1001)
    loss = torch.stack([losses.discriminator_bce(l.view(1), torch.tensor([-30.0]), real_label=0.9) for l in logits])
    best = torch.sigmoid(logits[loss.argmin()])
    assert best == pytest.approx(0.9, abs=0.01)
    assert losses.discriminator_bce(torch.zeros(4), torch.zeros(4)) == pytest.approx(2 * torch.log(torch.tensor(2.0)))


def test_generator_loss_is_the_non_saturating_one_that_pushes_d_towards_real():
    # −log σ(D(G(z))): its gradient −σ(−logit)/n raises every logit, and stays large where D rejects
    # the fake (logit −10) — unlike minimax's (saturates), lsgan's or the Wasserstein one's (constant).
    logits = torch.tensor([-10.0, 0.0, 10.0], requires_grad=True)
    loss = losses.generator_nonsaturating(logits)
    loss.backward()
    assert loss.item() == pytest.approx(F.softplus(-logits.detach()).mean().item())
    torch.testing.assert_close(logits.grad, -torch.sigmoid(-logits.detach()) / 3)


def test_nearest_pairing_pulls_the_closest_sample():
    g = ShortGANGenerator(channels=4, up_channels=1)
    real = torch.rand(6, 1, 28, 28) * 2 - 1
    loss = pretraining_loss(g, real, "nearest", candidates=8)
    loss.backward()
    assert loss > 0 and all(p.grad is not None for p in g.parameters() if p.requires_grad)
    # The nearest of many candidates is closer than a random sample, on average.
    torch.manual_seed(1)
    nearest = pretraining_loss(g, real, "nearest", candidates=32).item()
    torch.manual_seed(1)
    random = pretraining_loss(g, real, "random").item()
    assert nearest < random


@pytest.mark.parametrize(("pairing", "candidates", "batch_sizes"), [("nearest", 3, [24, 8]), ("nearest", 5, [40, 8]),
                                                                   ("random", 3, [8])])  # fmt: skip
def test_pretraining_pairs_as_the_pretrain_options_say(pairing, candidates, batch_sizes):
    # nearest: G draws `candidates` samples per real image, then the chosen ones again (with gradient);
    # random: one sample per real image.
    model = small_gan(pretrain_epochs=1, pretrain_pairing=pairing, pretrain_candidates=candidates)
    sizes = []
    model.generator.register_forward_hook(lambda module, args, out: sizes.append(len(out)))
    fit(model, torch.rand(8, 1, 28, 28) * 2 - 1)
    assert sizes == batch_sizes


def test_fixed_noise_is_a_buffer_saved_in_the_state_dict():
    model = small_gan(num_fixed_samples=10, fixed_noise_seed=3)
    assert "fixed_noise" in model.state_dict() and model.fixed_noise.shape == (10, 128)
    assert torch.equal(small_gan(num_fixed_samples=10, fixed_noise_seed=3).fixed_noise, model.fixed_noise)
    assert model.fixed_samples().shape == (10, 1, 28, 28)


def test_pretrained_generator_weights_start_the_gan(tmp_path):
    """A GeneratorPretrainer checkpoint passed as `pretrained_generator` is G's state when the GAN's fit begins."""
    pre = GeneratorPretrainer(ShortGANGenerator(channels=4, up_channels=1))
    trainer = fit(pre, torch.rand(8, 1, 28, 28) * 2 - 1, default_root_dir=tmp_path)
    path = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(path)
    pretrained = pre.generator.state_dict()
    gan = small_gan(pretrained_generator=str(path))
    assert not all(torch.equal(v, pretrained[k]) for k, v in gan.generator.state_dict().items())
    at_start = []

    class AtStart(L.Callback):
        def on_train_start(self, trainer, module):
            at_start.append({k: v.clone() for k, v in module.generator.state_dict().items()})

    fit(gan, torch.rand(8, 1, 28, 28) * 2 - 1, callbacks=[AtStart()])
    assert at_start[0].keys() == pretrained.keys()
    assert all(torch.equal(at_start[0][k], v) for k, v in pretrained.items())


def test_pretrained_generator_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="no file"):
        load_generator_weights(str(tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_generator_weights(str(bad))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"network.weight": torch.zeros(1)}}, other)
    with pytest.raises(UserError, match="no generator weights"):
        load_generator_weights(str(other))


def test_bad_knobs_fail_early():
    with pytest.raises(UserError, match="g_steps"):
        small_gan(g_steps=0)
    with pytest.raises(UserError, match="instance_noise"):
        small_gan(instance_noise=-1)
    with pytest.raises(UserError, match="instance_noise_epochs"):
        small_gan(instance_noise_epochs=0)


def test_scheduler_is_stepped_once_per_adversarial_epoch():
    model = small_gan(
        generator_optimizer=partial(torch.optim.SGD, lr=1.0),
        generator_scheduler=partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5),
        pretrain_epochs=1,
    )
    trainer = fit(model, torch.rand(8, 1, 28, 28) * 2 - 1, epochs=3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)


class GeneratorSnapshots(L.Callback):
    """G's parameters after every training batch."""

    def __init__(self) -> None:
        self.states: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.states.append([p.detach().clone() for p in module.generator.parameters()])


@pytest.mark.parametrize("n_critic", [1, 2])
def test_ema_generator_averages_weights_once_per_g_update_and_draws_the_samples(tmp_path, n_critic):
    model = small_gan(ema_decay=0.5, g_steps=1, n_critic=n_critic)
    snapshots = GeneratorSnapshots()
    trainer = fit(model, torch.rand(16, 1, 28, 28) * 2 - 1, batches=4, default_root_dir=tmp_path, callbacks=[snapshots])
    # The average of G after each G update (every n_critic-th batch): a copy first, then halfway each time.
    updates = snapshots.states[n_critic - 1 :: n_critic]
    expected = [t.clone() for t in updates[0]]
    for state in updates[1:]:
        expected = [0.5 * e + 0.5 * t for e, t in zip(expected, state)]
    assert int(model.generator_ema.n_averaged) == len(updates) == 4 // n_critic
    for e, a in zip(expected, model.generator_ema.module.parameters(), strict=True):
        torch.testing.assert_close(a, e)
    live, averaged = model.generator.state_dict(), model.generator_ema.module.state_dict()
    z = torch.randn(4, 128)
    torch.testing.assert_close(model.sample(z), model.generator_ema.module.eval()(z))
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_generator_weights(str(path))
    assert all(torch.equal(loaded[k], averaged[k]) for k in averaged)
    with pytest.raises(UserError, match="ema_decay"):
        small_gan(ema_decay=1.5)


def test_a_training_batch_reads_nothing_back_from_the_device(forbid_host_reads):
    # No host-device sync per step: the whole batch (Lightning's loop, D and G steps, fused Adam, the
    # weight average) must queue GPU work without waiting for it. Batches the logger writes may read.
    class ForbidFromThirdBatch(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 2:
                forbid_host_reads()

    adam = partial(torch.optim.Adam, fused=True)
    model = small_gan(ema_decay=0.9, generator_optimizer=adam, discriminator_optimizer=adam)
    trainer = fit(model, torch.rand(8, 1, 28, 28) * 2 - 1, batches=12, log_every_n_steps=1000,
                  callbacks=[ForbidFromThirdBatch()])  # fmt: skip
    assert trainer.fit_loop.epoch_loop.batch_progress.current.completed == 12


def test_an_image_size_the_networks_do_not_make_is_refused(tmp_path):
    from shortgan.data import ImageDataModule

    model = GAN(ShortGANGenerator(image_shape=(1, 32, 32)), ShortGANDiscriminator(image_shape=(1, 32, 32)))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(UserError, match=r"images are \(1, 28, 28\) but the generator makes \(1, 32, 32\)"):
        trainer.fit(model, ImageDataModule(dataset="mnist_sample"))


@pytest.mark.parametrize("n_critic", [1, 2])
def test_several_iterations_per_batch_do_the_same_math_as_one(n_critic):
    images = torch.rand(128, 1, 28, 28) * 2 - 1

    def train(batch_size: int, iterations: int) -> GAN:
        L.seed_everything(0)
        model = small_gan(pretrain_epochs=1, n_critic=n_critic, iterations_per_batch=iterations, ema_decay=0.9)
        loader = DataLoader(InMemoryImages(images, torch.zeros(128)), batch_size=batch_size, shuffle=True,
                            drop_last=True, collate_fn=_batch_as_is)  # fmt: skip
        trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)  # fmt: skip
        trainer.fit(model, loader)
        return model

    one, four = train(16, 1), train(64, 4)
    # Same shuffled order (the sampler's permutation does not depend on the batch size), same noise draws.
    assert [adam_steps(o) for o in one.optimizers()] == [adam_steps(o) for o in four.optimizers()]
    for (name, a), b in zip(one.state_dict().items(), four.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_fused_adam_does_the_same_math_as_the_default():
    # The configs ask for PyTorch's fused Adam, a faster kernel for the same update. Compared over the
    # first updates (one pretraining batch, one adversarial batch: 1 + 1 + 2 Adam steps): later on,
    # Adam's normalised step turns rounding-sized gradient differences into steps of size lr, as any
    # change of summation order would.
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def train(**adam) -> GAN:
        L.seed_everything(0)
        opt = partial(torch.optim.Adam, lr=4e-4, betas=(0.5, 0.999), **adam)
        model = small_gan(pretrain_epochs=1, generator_optimizer=opt, discriminator_optimizer=opt, pretrain_optimizer=opt)
        fit(model, images, epochs=2)
        return model

    default, fused = train(), train(fused=True)
    assert fused.optimizers()[0].defaults["fused"] and not default.optimizers()[0].defaults["fused"]
    assert [adam_steps(o) for o in fused.optimizers()] == [2, 1, 1]
    for (name, a), b in zip(default.state_dict().items(), fused.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), (name, (a.float() - b.float()).abs().max())


def test_bf16_mixed_precision_computes_what_float32_does_up_to_bf16_rounding():
    # Unlike the other speed switches, bf16-mixed cannot keep the math bit for bit: autocast runs
    # matmuls and convs in bfloat16 (8 mantissa bits, ~0.4% rounding). What it must keep: float32
    # weights and optimizer state, float32 losses, and the same gradients up to that rounding.
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    for net, x in ((ShortGANGenerator(channels=4, up_channels=1), torch.randn(64, 128)), (ShortGANDiscriminator(channels=8), images)):
        # A copy: a training-mode forward moves BatchNorm statistics and the spectral-norm vectors.
        mixed = copy.deepcopy(net)
        reference = net(x)
        reference.square().mean().backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = mixed(x)
        assert out.dtype == torch.bfloat16
        assert (out.float() - reference).abs().max() < 0.03 * reference.abs().max()
        out.float().square().mean().backward()
        for (name, p), q in zip(net.named_parameters(), mixed.parameters()):
            assert F.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0) > 0.99, name

    def train(precision: str) -> tuple[GAN, dict[str, torch.Tensor]]:
        L.seed_everything(0)
        model = small_gan(pretrain_epochs=1)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        fit(model, images, epochs=2, precision=precision)
        return model, start

    (full, start), (mixed, _) = train("32-true"), train("bf16-mixed")
    assert all(v.dtype == start[k].dtype for k, v in mixed.state_dict().items())
    assert all(s["exp_avg"].dtype == torch.float32 for o in mixed.optimizers() for s in o.state.values())
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert mixed.latest[name].dtype == torch.float32, name
        assert torch.allclose(mixed.latest[name], full.latest[name], rtol=1e-2), name
    # Adam's first steps are ±lr whatever a gradient's size, so weights are compared by the
    # direction of the whole update: bf16 rounding flips the sign of only near-zero gradients.
    def update(model: GAN) -> torch.Tensor:
        return torch.cat([(p.detach() - start[k]).flatten() for k, p in model.named_parameters()])

    assert F.cosine_similarity(update(full), update(mixed), dim=0) > 0.95


@pytest.mark.slow
@needs_compiler
def test_compiled_networks_compute_what_eager_ones_do_and_train():
    images = torch.rand(16, 1, 28, 28) * 2 - 1
    for eager in (ShortGANGenerator(channels=4, up_channels=1), ShortGANDiscriminator(channels=8)):
        compiled = copy.deepcopy(eager)
        compiled.compile()
        x = torch.randn(16, eager.latent_dim) if isinstance(eager, ShortGANGenerator) else images
        outputs = [net(x) for net in (eager, compiled)]
        for out in outputs:
            out.square().mean().backward()
        # The compiler may fuse and reorder float operations: equal up to rounding, not bit for bit.
        assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
        for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name

    model = small_gan(pretrain_epochs=1, compile="networks", compile_mode="default")
    keys = list(model.state_dict())
    loader = DataLoader(InMemoryImages(images, torch.zeros(16)), batch_size=8, collate_fn=_batch_as_is)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(model, loader)
    assert trainer.global_step == 2 + 2 * 3  # 2 pretraining steps, then 2 × (1 D + 2 G)
    assert list(model.state_dict()) == keys  # compiled in place: checkpoints stay interchangeable
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
