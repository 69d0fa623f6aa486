"""The adversarial system: pretraining epochs, then one D step and `g_steps` G steps per batch."""

import math
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from shortgan import losses
from shortgan.errors import UserError
from shortgan.evaluation import SampleQuality
from shortgan.generator_system import GeneratorSystem
from shortgan.pretraining import Pairing, pretraining_loss


class GAN(GeneratorSystem):
    """A generator and a discriminator trained with manual optimisation.

    Each batch of an adversarial epoch: (1) one D step on real images plus Gaussian noise (target
    `real_label`) and fakes (target `fake_label`), then (2) `g_steps` G steps on fresh noise, each
    asking D to call the fakes real. The first `pretrain_epochs` epochs instead train G alone with
    Smooth-L1 pretraining, so a single `fit` runs the whole recipe. A `step` in Lightning's counters
    is one optimizer step: an adversarial batch makes 1 + g_steps of them.

    Args:
        generator: noise (B, latent_dim) → images in [-1, 1]; its `latent_dim` sets the noise size.
        discriminator: images → logits (B,).
        generator_optimizer: optimizer factory for G's adversarial steps.
        discriminator_optimizer: optimizer factory for D.
        pretrain_optimizer: optimizer factory for G's pretraining steps.
        generator_scheduler: optional LR scheduler for G, stepped once per adversarial epoch.
        discriminator_scheduler: optional LR scheduler for D, stepped once per adversarial epoch.
        g_steps: G updates per D update.
        real_label: D's target for real images (0.9 = one-sided label smoothing).
        fake_label: D's target for generated images.
        instance_noise: std of the Gaussian noise added to images D sees (0 turns it off).
        noise_fakes: add that noise to generated images too, not only to real ones. Noise on real
            images alone lets D tell them apart by their noise instead of their content.
        pretrain_epochs: epochs of Smooth-L1 pretraining before adversarial training.
        pretrain_pairing: how pretraining pairs generated and real images (`nearest` or `random`).
        pretrain_candidates: noise vectors per real image for `nearest` pairing.
        pretrained_generator: a `GeneratorPretrainer` (or `GAN`) checkpoint whose generator weights
            start a fresh run.
        num_fixed_samples: images in the fixed-noise grid logged each epoch.
        fixed_noise_seed: seed of the fixed noise.
        classifier_checkpoint: a `Classifier` checkpoint (configs/classifier_*.yaml) for the domain
            metrics: val/domain_fid, coverage, class_kl, classifier_score, precision, recall.
        eval_every_n_epochs: compute the quality metrics every this many epochs (and at the last one).
        num_eval_samples: real test images, and as many generated ones, per evaluation (at most the
            test split); 10,000 for final numbers.
        inception_fid: also compute the standard InceptionV3 FID as val/fid (slow on a CPU).
        inception_weights: torch-fidelity's InceptionV3 weights file, for machines without internet.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        pretrain_optimizer: OptimizerCallable = torch.optim.Adam,
        generator_scheduler: Optional[LRSchedulerCallable] = None,
        discriminator_scheduler: Optional[LRSchedulerCallable] = None,
        g_steps: int = 2,
        real_label: float = 0.9,
        fake_label: float = 0.0,
        instance_noise: float = 0.1,
        noise_fakes: bool = True,
        pretrain_epochs: int = 0,
        pretrain_pairing: Pairing = "nearest",
        pretrain_candidates: int = 4,
        pretrained_generator: Optional[str] = None,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 0,
        classifier_checkpoint: Optional[str] = None,
        eval_every_n_epochs: int = 5,
        num_eval_samples: int = 2000,
        inception_fid: bool = False,
        inception_weights: Optional[str] = None,
    ) -> None:
        super().__init__(generator, num_fixed_samples, fixed_noise_seed)
        if g_steps < 1:
            raise UserError(f"model.g_steps must be at least 1, got {g_steps}")
        if instance_noise < 0:
            raise UserError(f"model.instance_noise must be >= 0, got {instance_noise}")
        # Networks and factories are not plain data; the CLI's config.yaml records them.
        self.save_hyperparameters(
            ignore=[
                "generator",
                "discriminator",
                "generator_optimizer",
                "discriminator_optimizer",
                "pretrain_optimizer",
                "generator_scheduler",
                "discriminator_scheduler",
            ]
        )
        self.discriminator = discriminator
        self.factories = dict(
            g=generator_optimizer, d=discriminator_optimizer, pre=pretrain_optimizer,
            g_sched=generator_scheduler, d_sched=discriminator_scheduler,
        )  # fmt: skip
        self.automatic_optimization = False
        if eval_every_n_epochs < 1 or num_eval_samples < 2:
            raise UserError("model.eval_every_n_epochs must be >= 1 and model.num_eval_samples >= 2")
        self.quality = SampleQuality(classifier_checkpoint, inception_fid, inception_weights)

    # ---- setup -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # Only a fresh run starts from the pretrained weights; a resumed one has its own.
        if stage == "fit" and self.hparams.pretrained_generator and self.trainer.ckpt_path is None:
            self.generator.load_state_dict(load_generator_weights(self.hparams.pretrained_generator))

    def configure_optimizers(self) -> tuple[list, list]:
        g, d, pre = (self.factories[k](p.parameters()) for k, p in
                     (("g", self.generator), ("d", self.discriminator), ("pre", self.generator)))  # fmt: skip
        schedulers = [
            {"scheduler": self.factories[k](opt), "interval": "epoch"}
            for k, opt in (("g_sched", g), ("d_sched", d))
            if self.factories[k] is not None
        ]
        return [g, d, pre], schedulers

    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.hparams.pretrain_epochs

    # ---- training ----------------------------------------------------------------------------

    def _noisy(self, images: torch.Tensor, fake: bool = False) -> torch.Tensor:
        std = self.hparams.instance_noise
        if std == 0 or (fake and not self.hparams.noise_fakes):
            return images
        return images + std * torch.randn_like(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real, _ = batch
        if self.pretraining:
            self._pretraining_step(real)
        else:
            self._adversarial_step(real)

    def _pretraining_step(self, real: torch.Tensor) -> None:
        opt = self.optimizers()[2]
        loss = pretraining_loss(self.generator, real, self.hparams.pretrain_pairing, self.hparams.pretrain_candidates)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("train/pretrain_loss", loss, prog_bar=True)

    def _adversarial_step(self, real: torch.Tensor) -> None:
        opt_g, opt_d, _ = self.optimizers()
        hp = self.hparams
        b, latent = real.size(0), self.generator.latent_dim

        # (1) update D: real (+ noise) → real_label, G(z) → fake_label.
        with self.toggled_optimizer(opt_d):
            fake = self.generator(torch.randn(b, latent, device=self.device))  # G is frozen: no graph
            # D has no BatchNorm, so two calls are safe; one call on real+fake would also mix the
            # two batches in the minibatch-stddev feature.
            real_logits = self.discriminator(self._noisy(real))
            fake_logits = self.discriminator(self._noisy(fake.detach(), fake=True))
            d_loss = losses.discriminator_bce(real_logits, fake_logits, hp.real_label, hp.fake_label)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()

        # (2) update G g_steps times on fresh noise: make D call the fakes real.
        with self.toggled_optimizer(opt_g):
            for _ in range(hp.g_steps):
                fake = self.generator(torch.randn(b, latent, device=self.device))
                g_loss = losses.generator_nonsaturating(self.discriminator(self._noisy(fake, fake=True)))
                opt_g.zero_grad()
                self.manual_backward(g_loss)
                opt_g.step()

        self.log_dict({"train/d_loss": d_loss, "train/g_loss": g_loss}, prog_bar=True)
        # Mean D probabilities, for monitoring only: D(x) near 1 and D(G(z)) near 0 means D is winning.
        self.log_dict(
            {"train/d_real": torch.sigmoid(real_logits.detach()).mean(),
             "train/d_fake": torch.sigmoid(fake_logits.detach()).mean()}
        )  # fmt: skip

    def on_train_epoch_end(self) -> None:
        opt_g, opt_d, opt_pre = self.optimizers()
        self.log_dict(
            {"lr/generator": opt_g.param_groups[0]["lr"], "lr/discriminator": opt_d.param_groups[0]["lr"],
             "lr/pretrain": opt_pre.param_groups[0]["lr"]}
        )  # fmt: skip
        # Manual optimisation: Lightning does not step schedulers, and pretraining epochs don't count.
        if self.pretraining:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    # ---- validation: sample quality ---------------------------------------------------------
    # Every `eval_every_n_epochs`, the test split's real images and as many generated ones feed
    # `self.quality` (shortgan/evaluation.py); the other validation epochs cost one loop over the
    # in-memory loader. `validate` and `test` always evaluate.

    def _evaluating(self) -> bool:
        if not self.quality or self.trainer.sanity_checking:
            return False
        if self.trainer.state.fn != "fit":
            return True
        epoch = self.current_epoch + 1
        return epoch % self.hparams.eval_every_n_epochs == 0 or epoch == self.trainer.max_epochs

    def _start_evaluation(self, split: str) -> None:
        self._evaluate = self._evaluating()
        if self._evaluate:
            self.quality.start(split, self.device)
            self._eval_left = math.ceil(self.hparams.num_eval_samples / self.trainer.world_size)
            # The same noise every evaluation: curves show the generator changing, not the draw.
            self._eval_rng = torch.Generator(device=self.device).manual_seed(self.global_rank)

    def _evaluation_step(self, real: torch.Tensor) -> None:
        real = real[: self._eval_left] if self._evaluate else real[:0]
        if len(real) == 0:
            return
        self._eval_left -= len(real)
        z = torch.randn(len(real), self.generator.latent_dim, device=self.device, generator=self._eval_rng)
        self.quality.update(real, self.sample(z))

    def _end_evaluation(self, split: str) -> None:
        if self._evaluate:
            # compute() already gathered every process's samples: sync_dist averages equal values.
            self.log_dict({f"{split}/{k}": v for k, v in self.quality.compute().items()}, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch[0])

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch[0])

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    # ---- checkpoints -------------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_weights(checkpoint, ("generator.", "discriminator."), "a GAN")


def require_weights(checkpoint: dict[str, Any], prefixes: tuple[str, ...], what: str) -> None:
    """Raise a UserError if the checkpoint holds no weights under one of `prefixes`."""
    keys = checkpoint.get("state_dict", {}).keys()
    missing = [p.rstrip(".") for p in prefixes if not any(k.startswith(p) for k in keys)]
    if missing:
        raise UserError(
            f"This checkpoint has no {', '.join(missing)} weights, so it was not written by {what}: "
            f"pass a checkpoint of the same kind of model as the config."
        )


def load_generator_weights(path: str) -> dict[str, torch.Tensor]:
    """The generator's state_dict from a GeneratorPretrainer or GAN checkpoint at `path`."""
    if not Path(path).is_file():
        raise UserError(f"model.pretrained_generator: no file at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"model.pretrained_generator: {path} is not a readable checkpoint ({err})") from err
    require_weights(checkpoint, ("generator.",), "a GeneratorPretrainer or GAN")
    prefix = "generator."
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
