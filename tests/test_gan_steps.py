"""The GAN's own D and G steps, run as training runs them: what each updates, and which settings reach
the losses. (Each test fails if the behaviour in its name is removed from shortgan/gan.py.)"""

import copy

import lightning as L
import pytest
import torch

from shortgan import losses
from shortgan.checkpoints import load_generator_weights
from test_gan import FixedBatch, fit, small_gan

REAL = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


def attached(**kwargs):
    """A GAN after one adversarial batch through Lightning: its optimizers exist, steps can be called."""
    model = small_gan(pretrain_epochs=0, **kwargs)
    fit(model, REAL)
    return model


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_the_d_step_changes_d_and_gives_g_no_gradient():
    model = attached(n_critic=2)
    for p in model.generator.parameters():
        p.grad = None
    g_before, d_before = params(model.generator), params(model.discriminator)
    model.adversarial_step(REAL[:8], iteration=0)  # the D step alone: G's turn is every 2nd iteration
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))


def test_the_d_step_runs_g_with_grad_mode_off_and_the_g_step_with_it_on():
    # Grad mode, not only G's frozen parameters: a compiled G is told apart from the G-step graph by
    # grad mode (torch.compile does not always guard parameters' requires_grad; on a GPU with CUDA
    # graphs it reused the D step's G graph in the G step, which then had no gradient).
    model, modes = attached(), []
    model.generator.register_forward_hook(lambda *_: modes.append(torch.is_grad_enabled()))
    model.adversarial_step(REAL[:8], iteration=0)
    assert modes == [False, True, True]  # the D step's fakes, then the two G steps


def test_the_g_steps_change_g_and_leave_d_alone():
    model = attached(g_steps=2)
    opt_d = model.optimizers()[1].optimizer
    seen: list[list[torch.Tensor]] = []
    step = opt_d.step

    def recording_step(*args, **kwargs):  # D's weights and gradients right after its own step
        out = step(*args, **kwargs)
        seen.append([*params(model.discriminator), *(p.grad.clone() for p in model.discriminator.parameters())])
        return out

    opt_d.step = recording_step
    g_before = params(model.generator)
    model.adversarial_step(REAL[:8], iteration=0)
    assert len(seen) == 1  # D stepped once, for its own step only
    after = [*params(model.discriminator), *(p.grad for p in model.discriminator.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(seen[0], after))  # no G step moved D or added to its gradients
    assert all(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))


def test_real_and_fake_labels_reach_d_s_loss(monkeypatch):
    calls, bce = [], losses.discriminator_bce

    def recording_bce(real_logits, fake_logits, real_label=1.0, fake_label=0.0):
        calls.append((real_label, fake_label))
        return bce(real_logits, fake_logits, real_label, fake_label)

    monkeypatch.setattr(losses, "discriminator_bce", recording_bce)
    fit(small_gan(real_label=0.7, fake_label=0.2), REAL)
    assert calls and set(calls) == {(0.7, 0.2)}


def test_the_gradient_penalty_is_added_to_the_critic_s_loss(monkeypatch):
    penalty = torch.tensor(1.5, requires_grad=True)
    monkeypatch.setattr(losses, "gradient_penalty", lambda critic, real, fake, gradient: penalty * 1)
    model = small_gan(loss="wgan_gp", gp_weight=4.0, g_steps=1)
    fit(model, REAL)
    # d_loss = E[D(fake)] − E[D(real)] + gp_weight · penalty, and critic_gap = E[D(real)] − E[D(fake)].
    assert model.latest["d_loss"] + model.latest["critic_gap"] == pytest.approx(4.0 * 1.5, abs=1e-5)


@pytest.mark.parametrize("loss", ["bce", "minimax", "lsgan", "wgan", "wgan_gp", "hinge"])
def test_each_loss_name_runs_its_own_pair_of_losses(loss, monkeypatch):
    # A swapped entry in the loss tables would train the wrong game, with finite losses all the same.
    used = set()

    def recorder(kind, fn):
        def record(*args, **kwargs):
            used.add((kind, fn.__name__))
            return fn(*args, **kwargs)

        return record

    for kind, table in (("G", losses.GENERATOR), ("D", losses.DISCRIMINATOR)):
        for name, fn in list(table.items()):
            monkeypatch.setitem(table, name, recorder(kind, fn))
    monkeypatch.setattr(losses, "discriminator_bce", recorder("D", losses.discriminator_bce))
    fit(small_gan(loss=loss, g_steps=1), REAL)
    expected = {
        "bce": {("D", "discriminator_bce"), ("G", "generator_nonsaturating")},
        "minimax": {("D", "discriminator_bce"), ("G", "generator_minimax")},
        "lsgan": {("D", "discriminator_lsgan"), ("G", "generator_lsgan")},
        "wgan": {("D", "discriminator_wasserstein"), ("G", "generator_wasserstein")},
        "wgan_gp": {("D", "discriminator_wasserstein"), ("G", "generator_wasserstein")},  # + the penalty
        "hinge": {("D", "discriminator_hinge"), ("G", "generator_wasserstein")},  # G's hinge loss is −E[D(G(z))]
    }
    assert used == expected[loss]


def test_a_pretrained_generator_starts_a_fresh_run_but_not_a_resumed_one(tmp_path):
    trainer = fit(small_gan(pretrain_epochs=1), REAL)
    path = tmp_path / "pretrained.ckpt"
    trainer.save_checkpoint(path)
    pretrained = load_generator_weights(str(path))
    starts = []

    class AtStart(L.Callback):
        def on_train_start(self, trainer, module):
            starts.append(copy.deepcopy(module.generator.state_dict()))

    # A fresh run (GAN.setup, as any fit runs it) starts from the pretrained weights …
    trainer = fit(small_gan(pretrain_epochs=0, pretrained_generator=str(path)), REAL, callbacks=[AtStart()])
    assert all(torch.equal(starts[0][k], v) for k, v in pretrained.items())
    own = tmp_path / "own.ckpt"
    trainer.save_checkpoint(own)
    mine = {k[len("generator."):]: v for k, v in torch.load(own, weights_only=True)["state_dict"].items()
            if k.startswith("generator.")}  # fmt: skip
    assert any(not torch.equal(mine[k], v) for k, v in pretrained.items())  # it trained away from them
    # … and a resumed one goes on from its own, not the pretrained ones again.
    resumed = small_gan(pretrain_epochs=0, pretrained_generator=str(path))
    L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[AtStart()]).fit(resumed, FixedBatch(REAL), ckpt_path=str(own))  # fmt: skip
    assert all(torch.equal(starts[1][k], v) for k, v in mine.items())
