from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shortgan import GAN
from shortgan.cli import cli_main
from shortgan.errors import UserError
from shortgan.networks import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    MPGANDiscriminator,
    MPGANGenerator,
)

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

# Every config that trains a GAN (classifier, pretraining and overlay configs are tested in test_cli.py).
CONFIGS = [c for c in sorted(Path(__file__).parents[1].glob("configs/*.yaml")) if "shortgan.GAN" in c.read_text()]
RECIPE_CONFIGS = [c for c in CONFIGS if c.name != "quickstart.yaml"]

ARCHITECTURES = {
    "mlp": (lambda: MLPGenerator(), lambda: MLPDiscriminator()),
    "mlp_bn": (
        lambda: MLPGenerator(100, (128, 256, 512), "leaky_relu", batch_norm=True),
        lambda: MLPDiscriminator(hidden_dims=(512, 256)),
    ),
    "dcgan": (lambda: DCGANGenerator(), lambda: DCGANDiscriminator()),
    "dcgan_no_bn": (lambda: DCGANGenerator(latent_dim=16, channels=8), lambda: DCGANDiscriminator(8, batch_norm=False)),
    "mpgan": (lambda: MPGANGenerator(), lambda: MPGANDiscriminator()),
}


# ---- networks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_generator_maps_noise_to_images_in_range_and_discriminator_to_logits(name):
    make_g, make_d = ARCHITECTURES[name]
    generator, discriminator = make_g(), make_d()
    z = 3 * torch.randn(5, generator.latent_dim)  # large noise still lands in [-1, 1] (Tanh)
    images = generator(z)
    assert images.shape == (5, *generator.image_shape) == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0
    logits = discriminator(images)
    assert logits.shape == (5,)
    logits.sum().backward()
    assert all(p.grad is not None for p in generator.parameters())


def test_mlp_batchnorm_uses_default_eps():
    """The tutorial's BatchNorm1d(n, 0.8) sets eps=0.8 by accident; ours keeps the default."""
    generator = MLPGenerator(batch_norm=True, hidden_dims=(8, 8, 8))
    bns = [m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 2 and all(bn.eps == 1e-5 and bn.momentum == 0.1 for bn in bns)


# ---- GAN options, on tiny networks and random images ---------------------------------------------


def tiny_gan(**kwargs) -> GAN:
    kwargs.setdefault("instance_noise", 0.0)
    generator = MLPGenerator(latent_dim=8, hidden_dims=(16,))
    return GAN(generator, DCGANDiscriminator(channels=4), num_fixed_samples=4, **kwargs)


def fit(model: GAN, tmp_path, batches: int = 2, epochs: int = 1, callbacks=()) -> L.Trainer:
    images = torch.rand(8 * batches, 1, 28, 28) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.zeros(len(images), dtype=torch.long)), batch_size=8)
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(model, loader)
    return trainer


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


@pytest.mark.parametrize("loss", ["bce", "minimax", "lsgan", "wgan", "wgan_gp", "hinge"])
def test_every_loss_trains_and_logs_finite_losses(loss, tmp_path):
    trainer = fit(tiny_gan(loss=loss), tmp_path)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/d_loss"]) and torch.isfinite(metrics["train/g_loss"])
    gauge = "train/d_real" if loss in ("bce", "minimax") else "train/critic_gap"
    assert gauge in metrics


def test_n_critic_updates_d_every_batch_and_g_every_n_critic_batches(tmp_path):
    model = tiny_gan(n_critic=2, g_steps=1)
    trainer = fit(model, tmp_path, batches=4)
    opt_g, opt_d, _ = trainer.optimizers
    assert adam_steps(opt_d) == 4
    assert adam_steps(opt_g) == 2


def test_clip_value_keeps_every_discriminator_weight_in_range(tmp_path):
    model = tiny_gan(loss="wgan", clip_value=0.01, discriminator_optimizer=lambda p: torch.optim.SGD(p, lr=10.0))
    fit(model, tmp_path)
    weights = torch.cat([p.flatten() for p in model.discriminator.parameters()])
    assert weights.abs().max() <= 0.01 + 1e-7
    assert weights.abs().max() > 0.009  # lr 10 pushes weights to the clip bound


def test_freeze_discriminator_leaves_weights_and_statistics_unchanged(tmp_path):
    model = tiny_gan(freeze_discriminator=True)
    d_before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    g_before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    fit(model, tmp_path)
    for k, v in model.discriminator.state_dict().items():
        assert torch.equal(v, d_before[k]), k  # BatchNorm running stats included
    assert any(not torch.equal(v, g_before[k]) for k, v in model.generator.state_dict().items())


class _SnapshotAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.discriminator = {k: v.clone() for k, v in pl_module.discriminator.state_dict().items()}


def test_pretrained_discriminator_copies_weights_from_a_gan_checkpoint(tmp_path):
    source = tiny_gan()
    trainer = fit(source, tmp_path / "source")
    ckpt = tmp_path / "source.ckpt"
    trainer.save_checkpoint(ckpt)

    snapshot = _SnapshotAtStart()
    target = tiny_gan(pretrained_discriminator=str(ckpt))
    assert not torch.equal(target.discriminator.net[0].weight, source.discriminator.net[0].weight)
    fit(target, tmp_path / "target", callbacks=[snapshot])
    for k, v in source.discriminator.state_dict().items():
        assert torch.equal(snapshot.discriminator[k], v), k
    # …and with freezing, D is still the checkpoint's at the end.
    frozen = tiny_gan(pretrained_discriminator=str(ckpt), freeze_discriminator=True)
    fit(frozen, tmp_path / "frozen")
    for k, v in source.discriminator.state_dict().items():
        assert torch.equal(frozen.discriminator.state_dict()[k], v), k


def test_pretrained_discriminator_errors_are_one_clear_message(tmp_path):
    with pytest.raises(UserError, match="pretrained_discriminator: no file at"):
        fit(tiny_gan(pretrained_discriminator=str(tmp_path / "missing.ckpt")), tmp_path)
    no_d = tmp_path / "generator_only.ckpt"
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}}, no_d)
    with pytest.raises(UserError, match="no discriminator weights"):
        fit(tiny_gan(pretrained_discriminator=str(no_d)), tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"n_critic": 0}, "n_critic must be at least 1"), ({"clip_value": -0.1}, "clip_value must be > 0")],
)
def test_bad_options_raise_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        tiny_gan(**kwargs)


# ---- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_gan_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert f"run_name: {config.stem}" in printed or config.name == "quickstart.yaml"
    assert "class_path: shortgan.GAN" in printed


def test_recipe_configs_start_with_a_comment_and_the_command():
    for config in RECIPE_CONFIGS:
        text = config.read_text()
        assert text.startswith("# "), config.name
        assert f"python main.py fit --config configs/{config.name}" in text, config.name


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_runs_a_few_batches(config, tmp_path):
    cli = cli_main([
        "fit", "--config", str(config), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--data.init_args.dataset", "mnist_sample", "--model.init_args.pretrain_epochs", "0",
        "--trainer.log_every_n_steps", "1", "--model.init_args.classifier_checkpoint", "null",
    ])  # fmt: skip
    run = Path(cli.trainer.log_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "samples" / "final.png").is_file()
    assert torch.isfinite(cli.trainer.callback_metrics["train/d_loss"])


@pytest.mark.slow
def test_exponential_lr_decay_from_yaml_multiplies_lr_by_gamma_each_epoch(tmp_path):
    cli = cli_main([
        "fit", "--config", "configs/mpgan_sgd.yaml", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--model.init_args.classifier_checkpoint", "null",
    ])  # fmt: skip
    opt_g, opt_d, _ = cli.trainer.optimizers
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.01 * 0.9**2)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.01 * 0.9**2)
