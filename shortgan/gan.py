"""The adversarial system: pretraining epochs, then per batch one D step and (every `n_critic` batches)
`g_steps` G steps, with the loss chosen by name."""

import math
import os
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from shortgan import losses
from shortgan.augment import Augmentation, augment
from shortgan.averaging import ExponentialMovingAverage
from shortgan.checkpoints import load_discriminator_weights, load_generator_weights, require_weights
from shortgan.data import ImageDataModule
from shortgan.errors import UserError
from shortgan.evaluation import SampleQuality, inception_weights_present
from shortgan.generator_system import GeneratorSystem
from shortgan.iteration import AdversarialIteration, unsupported_optimizer
from shortgan.judge import cached_classifier
from shortgan.lightning_internals import find_unused_parameters, logger_writes_this_step
from shortgan.pretraining import Pairing, pretraining_loss
from shortgan.schedules import ProgressLR, adversarial_progress, training_clock

Loss = Literal["bce", "minimax", "lsgan", "wgan", "wgan_gp", "hinge"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
CompileScope = Literal["networks", "iteration"]


class GAN(GeneratorSystem):
    """A generator and a discriminator trained with manual optimisation.

    Each batch of an adversarial epoch: (1) one D step on real images plus Gaussian noise and fakes,
    then, on every `n_critic`-th batch, (2) `g_steps` G steps on fresh noise, each asking D to call
    the fakes real. `loss` picks the pair of D and G losses. The first `pretrain_epochs` epochs
    instead train G alone with Smooth-L1 pretraining, so a single `fit` runs the whole recipe. A
    `step` in Lightning's counters is one optimizer step: an adversarial batch makes 1 + g_steps
    of them (1 on batches without a G update).

    Class-conditional training: give both networks the same `num_classes` (e.g.
    `--model.init_args.generator.init_args.num_classes 10` and the same for the discriminator, or
    `configs/conditional.yaml`). G then draws an image of a given class, D scores (image, class)
    pairs, every step uses the batch's labels (fakes take the real batch's classes, so the class mix
    is the data's), pretraining pairs within a class, and evaluations add `class_consistency` and
    `intra_fid`.

    Args:
        generator: noise (B, latent_dim) → images in [-1, 1]; its `latent_dim` sets the noise size;
            with `num_classes` > 0, `generator(z, y)` for classes y (B,).
        discriminator: images → logits (B,); with `num_classes` > 0, `discriminator(x, y)`.
        generator_optimizer: optimizer factory for G's adversarial steps.
        discriminator_optimizer: optimizer factory for D.
        pretrain_optimizer: optimizer factory for G's pretraining steps.
        generator_scheduler: optional LR scheduler for G, stepped once per adversarial epoch.
        discriminator_scheduler: optional LR scheduler for D, stepped once per adversarial epoch.
        loss: `bce` (non-saturating), `minimax` (the original log(1 − D(G(z)))), `lsgan` (least
            squares), `wgan` (Wasserstein; pair with `clip_value` and `n_critic`), `wgan_gp`
            (Wasserstein with gradient penalty) or `hinge`.
        g_steps: G updates per G turn.
        n_critic: D steps per G turn: G updates on every n_critic-th batch, so each D step sees a
            fresh real batch (WGAN uses 5).
        clip_value: after each D step, clip D's weights to [-clip_value, clip_value] (WGAN's way
            to keep the critic Lipschitz); None turns it off.
        gp_weight: weight of the gradient penalty with `loss: wgan_gp`.
        real_label: D's target for real images with `bce`/`minimax` (0.9 = one-sided label smoothing).
        fake_label: D's target for generated images with `bce`/`minimax`.
        instance_noise: std of the Gaussian noise added to images D sees (0 turns it off).
        instance_noise_fade: let that std fall linearly to 0 over this fraction of the adversarial
            training (1.0: it reaches 0 on the run's last batch, whether `trainer.max_epochs` or
            `trainer.max_time` ends the run, whichever comes first); None keeps it constant. Noise
            steadies the start, but it also hides speckle fainter than itself from D, so G never
            removes it.
        instance_noise_epochs: the older, epoch-counted form of `instance_noise_fade`: the std falls
            to 0 over this many adversarial epochs, however long the run is.
        noise_fakes: add that noise to generated images too, not only to real ones. Noise on real
            images alone lets D tell them apart by their noise instead of their content.
        augment: differentiable augmentations of every image D sees, real and generated alike, in
            D's and G's steps (`translation`, `cutout`; DiffAugment): D sees more varied images,
            and gradients reach G through them. Empty: none.
        pretrain_epochs: epochs of Smooth-L1 pretraining before adversarial training.
        pretrain_pairing: how pretraining pairs generated and real images (`nearest` or `random`).
        pretrain_candidates: noise vectors per real image for `nearest` pairing.
        pretrained_generator: a `GeneratorPretrainer` (or `GAN`) checkpoint whose generator weights
            start a fresh run.
        pretrained_discriminator: a `GAN` checkpoint whose discriminator weights start a fresh run.
        freeze_discriminator: never update D (it runs in eval mode: fixed BatchNorm statistics,
            no dropout); with `pretrained_discriminator`, G learns against a fixed judge.
        num_fixed_samples: images in the fixed-noise grid logged each epoch.
        fixed_noise_seed: seed of the fixed noise.
        classifier_checkpoint: the classifier behind the domain metrics (val/domain_fid, coverage,
            class_kl, classifier_score, precision, recall). `auto`: one trained on the dataset's
            training split on first use (~15 s for the MNIST sample, under a minute for 60,000
            images on a CPU) and cached in `<data_dir>/classifiers/`; a path: a `Classifier`
            checkpoint (configs/classifier_*.yaml); null: no domain metrics.
        eval_every_n_epochs: compute the quality metrics every this many epochs (and at the last one).
        num_eval_samples: real test images, and as many generated ones, per evaluation (at most the
            test split); 10,000 for final numbers.
        inception_fid: also compute the standard InceptionV3 FID as val/fid (minutes per evaluation
            on a CPU). null: yes when training on a GPU and InceptionV3's weights are on this machine
            (`inception_weights`, or torch-fidelity's download in torch hub's cache).
        inception_weights: torch-fidelity's InceptionV3 weights file, for machines without internet.
        ema_decay: keep an exponential moving average of G's weights (and BatchNorm statistics)
            with this decay, e.g. 0.999, and draw every sample from it: grids, metrics, predict.
            None turns it off.
        iterations_per_batch: split each loaded batch into this many equal chunks and run one
            iteration (pretraining step, or D step + G steps) on each: with `data.batch_size` k × 64
            and k here, the math is that of batch 64, while Lightning's per-batch work (hooks,
            logging, progress bar) is paid once per k iterations. Worth it where an iteration is
            tiny, as on a GPU; `trainer.max_epochs` etc. are unchanged, `limit_train_batches` counts
            loaded batches.
        compile_mode: compile with `torch.compile` in this mode (`default`, `reduce-overhead` = also
            CUDA graphs on a GPU, `max-autotune`); None runs eagerly. The first batches are slow
            while it compiles; weights and checkpoints are unchanged.
        compile_scope: what `compile_mode` compiles. `networks`: G and D, each on its own.
            `iteration`: each adversarial iteration whole (D step, G steps, both Adam updates, the
            noise draws and the weight average) as one function (shortgan/iteration.py), so on a
            GPU with `reduce-overhead` an iteration is one CUDA-graph launch; without compile_mode
            that function runs eagerly (to check it). Needs Adam/AdamW and one process; with the
            gradient penalty, a frozen D, DDP or mixed precision the usual step runs (with a warning).
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
        loss: Loss = "bce",
        g_steps: int = 2,
        n_critic: int = 1,
        clip_value: Optional[float] = None,
        gp_weight: float = 10.0,
        real_label: float = 0.9,
        fake_label: float = 0.0,
        instance_noise: float = 0.1,
        instance_noise_fade: Optional[float] = None,
        instance_noise_epochs: Optional[int] = None,
        noise_fakes: bool = True,
        augment: tuple[Augmentation, ...] = (),
        pretrain_epochs: int = 0,
        pretrain_pairing: Pairing = "nearest",
        pretrain_candidates: int = 4,
        pretrained_generator: Optional[str] = None,
        pretrained_discriminator: Optional[str] = None,
        freeze_discriminator: bool = False,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 0,
        classifier_checkpoint: Optional[str] = "auto",
        eval_every_n_epochs: int = 5,
        num_eval_samples: int = 2000,
        inception_fid: Optional[bool] = None,
        inception_weights: Optional[str] = None,
        ema_decay: Optional[float] = None,
        iterations_per_batch: int = 1,
        compile_mode: Optional[CompileMode] = None,
        compile_scope: CompileScope = "networks",
    ) -> None:
        super().__init__(generator, num_fixed_samples, fixed_noise_seed)
        if getattr(discriminator, "num_classes", 0) != self.num_classes:
            raise UserError(
                f"The generator has num_classes {self.num_classes} but the discriminator "
                f"{getattr(discriminator, 'num_classes', 0)}: a conditional GAN needs both set to the dataset's "
                f"number of classes, an unconditional one neither."
            )
        if g_steps < 1:
            raise UserError(f"model.g_steps must be at least 1, got {g_steps}")
        if n_critic < 1:
            raise UserError(f"model.n_critic must be at least 1, got {n_critic}")
        if clip_value is not None and clip_value <= 0:
            raise UserError(f"model.clip_value must be > 0 (or null to turn clipping off), got {clip_value}")
        if iterations_per_batch < 1:
            raise UserError(f"model.iterations_per_batch must be at least 1, got {iterations_per_batch}")
        if instance_noise < 0:
            raise UserError(f"model.instance_noise must be >= 0, got {instance_noise}")
        if instance_noise_epochs is not None and instance_noise_epochs < 1:
            raise UserError(f"model.instance_noise_epochs must be at least 1 (or null), got {instance_noise_epochs}")
        if instance_noise_fade is not None and not 0 < instance_noise_fade <= 1:
            raise UserError(f"model.instance_noise_fade must be in (0, 1] (or null), got {instance_noise_fade}")
        if instance_noise_fade is not None and instance_noise_epochs is not None:
            raise UserError("model.instance_noise_fade and model.instance_noise_epochs both set: keep one")
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
        # The latest value of each training curve (detached), logged when the logger writes a step.
        self.latest: dict[str, torch.Tensor] = {}
        self.logged_batch = False
        if eval_every_n_epochs < 1 or num_eval_samples < 2:
            raise UserError("model.eval_every_n_epochs must be >= 1 and model.num_eval_samples >= 2")
        self.quality = SampleQuality(
            None if classifier_checkpoint == "auto" else classifier_checkpoint, bool(inception_fid), inception_weights
        )
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise UserError(f"model.ema_decay must be between 0 and 1 (or null), got {ema_decay}")
        # The average is a submodule, so it is saved in checkpoints and moves with the model.
        self.generator_ema = ExponentialMovingAverage(generator, ema_decay) if ema_decay is not None else None
        self.iteration: Optional[AdversarialIteration] = None  # built in on_train_start, if asked for
        self.progress = 0.0  # of the adversarial training, by the end of the current batch
        self.adversarial_started_at: Optional[float] = None  # on the training clock (schedules.py)

    def sampling_generator(self) -> nn.Module:
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    # ---- setup -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # Only a fresh run starts from the pretrained weights; a resumed one has its own.
        data = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if stage == "fit" and data is not None and tuple(data.images.shape[1:]) != tuple(self.generator.image_shape):
            raise UserError(
                f"The data's images are {tuple(data.images.shape[1:])} but the generator makes "
                f"{tuple(self.generator.image_shape)}: set the networks' image_shape to the data's (C, H, W)."
            )
        # Before DDP wraps the model (after this hook): a D step leaves G without gradients, and back.
        find_unused_parameters(self.trainer.strategy)
        if stage in ("fit", "validate", "test"):
            self._add_default_metrics()
        fresh = stage == "fit" and self.trainer.ckpt_path is None
        if fresh and self.hparams.pretrained_generator:
            self.generator.load_state_dict(load_generator_weights(self.hparams.pretrained_generator))
        if fresh and self.hparams.pretrained_discriminator:
            self.discriminator.load_state_dict(load_discriminator_weights(self.hparams.pretrained_discriminator))

    def _add_default_metrics(self) -> None:
        hp, trainer = self.hparams, self.trainer
        data = getattr(trainer, "datamodule", None)
        if hp.classifier_checkpoint == "auto" and "domain" not in self.quality.metrics:
            if isinstance(data, ImageDataModule):
                train = data.train_set or data.load_split(train=True)
                test = data.test_set or data.load_split(train=False)
                find = partial(cached_classifier, Path(data.hparams.data_dir, "classifiers"), data.hparams.dataset,
                               (train.images, train.labels), (test.images, test.labels))  # fmt: skip
                # Under DDP the first process trains and caches it while the others wait, then load it.
                classifier = find(train_here=trainer.is_global_zero)
                trainer.strategy.barrier()
                self.quality.add_domain(classifier or find())
            else:
                rank_zero_info("Domain metrics are off: classifier_checkpoint auto needs the labelled ImageDataModule.")
        if hp.inception_fid is None and "fid" not in self.quality.metrics:
            on_gpu = trainer.strategy.root_device.type == "cuda"
            if on_gpu and inception_weights_present(hp.inception_weights):
                self.quality.add_inception(hp.inception_weights)

    def configure_model(self) -> None:
        if self.hparams.compile_mode is not None and self.hparams.compile_scope == "networks":
            # Module.compile compiles in place: parameter names, and so checkpoints, stay as they are.
            self.generator.compile(mode=self.hparams.compile_mode)
            self.discriminator.compile(mode=self.hparams.compile_mode)

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

    def on_train_start(self) -> None:
        # Built here, after a resumed run has loaded its optimizer state and the model is on its device.
        self.iteration = None
        if self.hparams.compile_scope != "iteration":
            return
        reason = self._why_no_functional_iteration()
        if reason is not None:
            rank_zero_warn(f"model.compile_scope iteration: {reason}, so each iteration runs the usual eager step.")
            return
        opt_g, opt_d, _ = self.trainer.optimizers
        hp = self.hparams
        self.iteration = AdversarialIteration(
            self.generator, self.discriminator, opt_g, opt_d,
            discriminator_loss=self._discriminator_loss, generator_loss=losses.GENERATOR[hp.loss],
            g_steps=hp.g_steps, clip_value=hp.clip_value, noise_fakes=hp.noise_fakes,
            ema=self.generator_ema, compile_mode=hp.compile_mode,
        )  # fmt: skip

    def _why_no_functional_iteration(self) -> Optional[str]:
        hp = self.hparams
        if hp.loss == "wgan_gp":
            return "the gradient penalty is not written functionally"
        if hp.freeze_discriminator:
            return "freeze_discriminator is set"
        if hp.augment:
            return "augment is not written functionally"
        if self.trainer.world_size > 1:
            return "DDP reduces gradients in backward(), which the functional iteration does not call"
        if self.trainer.precision not in ("32-true", "32"):
            return f"precision {self.trainer.precision} is not supported (float32 only)"
        for name, opt in zip(("generator", "discriminator"), self.trainer.optimizers[:2]):
            problem = unsupported_optimizer(opt)
            if problem:
                return f"the {name}'s optimizer: {problem}"
        return None

    def on_train_epoch_start(self) -> None:
        if self.trainer.world_size > 1:
            # seed_everything gives every process the same seed, so all would draw the same noise and
            # the same fakes. Each process gets its own stream per epoch, derived from the global
            # seed, the epoch and its rank: reproducible, and a resumed run draws as an unbroken one.
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            stream = np.random.SeedSequence([seed, self.current_epoch, self.global_rank])
            torch.manual_seed(int(stream.generate_state(1)[0]))
        self.latest = {}  # pretraining and adversarial epochs log different curves

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        clock = training_clock(self.trainer)
        if clock is not None and not self.pretraining and self.adversarial_started_at is None:
            self.adversarial_started_at = clock[0]
        self.progress = adversarial_progress(
            self.trainer, self.hparams.pretrain_epochs, batch_idx, clock, self.adversarial_started_at or 0.0
        )

    def instance_noise_std(self) -> float:
        """The std of the noise on D's inputs in the current batch."""
        hp = self.hparams
        if hp.instance_noise_fade is not None:
            return hp.instance_noise * max(0.0, 1.0 - self.progress / hp.instance_noise_fade)
        if hp.instance_noise_epochs is not None:
            adversarial_epoch = max(0, self.current_epoch - hp.pretrain_epochs)
            return hp.instance_noise * max(0.0, 1.0 - adversarial_epoch / hp.instance_noise_epochs)
        return hp.instance_noise

    def _noisy(self, images: torch.Tensor, fake: bool = False) -> torch.Tensor:
        """What D sees of `images`: with instance noise, then the augmentations."""
        std = self.instance_noise_std()
        if std > 0 and (not fake or self.hparams.noise_fakes):
            images = images + std * torch.randn_like(images)
        return augment(images, tuple(self.hparams.augment)) if self.hparams.augment else images

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.hparams.freeze_discriminator:
            # Lightning puts the whole module in train mode; a frozen D must stay a fixed function.
            self.discriminator.eval()
        k = self.hparams.iterations_per_batch
        if len(batch[0]) % k:
            raise UserError(
                f"model.iterations_per_batch ({k}) must divide the batch size ({len(batch[0])}): "
                f"set data.batch_size to a multiple of it"
            )
        # Conditional: each chunk's labels; the networks are given them only then.
        labels = batch[1].chunk(k) if self.num_classes else [None] * k
        for j, (real, y) in enumerate(zip(batch[0].chunk(k), labels, strict=True)):
            g_turn = (batch_idx * k + j + 1) % self.hparams.n_critic == 0
            if self.pretraining:
                self._pretraining_step(real, y)
            elif self.iteration is not None:
                self._functional_step(real, g_turn, y)
                continue  # the weight average is part of the iteration
            else:
                self._adversarial_step(real, g_turn, y)
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
        # Lightning writes step values to the logger only every `trainer.log_every_n_steps` batches, and
        # each `self.log` costs ~0.7 ms on a CPU (Lightning walks its result object field by field), a
        # tenth of a small batch's time: log on those batches only. The written curves are the same;
        # the progress bar's losses, and what DivergenceGuard reads, refresh at that rate.
        self.logged_batch = logger_writes_this_step(self.trainer)
        if self.logged_batch:
            self._log_latest()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A callback (max_time, early stopping) may have stopped the run after this batch: Lightning
        # then writes this batch's values too, so they must be this batch's, not an older one's.
        if self.trainer.should_stop and not self.logged_batch:
            self._log_latest()

    def _log_latest(self) -> None:
        for name, value in self.latest.items():
            # A copy: the functional iteration overwrites its curves in place every iteration.
            self.log(f"train/{name}", value.clone(), prog_bar=name in ("pretrain_loss", "d_loss", "g_loss"))

    def _pretraining_step(self, real: torch.Tensor, labels: Optional[torch.Tensor] = None) -> None:
        opt = self.optimizers()[2]
        hp = self.hparams
        loss = pretraining_loss(self.generator, real, hp.pretrain_pairing, hp.pretrain_candidates, labels)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.latest["pretrain_loss"] = loss.detach()

    def _discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        if hp.loss in ("bce", "minimax"):
            return losses.discriminator_bce(real_logits, fake_logits, hp.real_label, hp.fake_label)
        return losses.DISCRIMINATOR[hp.loss](real_logits, fake_logits)

    def _adversarial_step(self, real: torch.Tensor, g_turn: bool = True, labels: Optional[torch.Tensor] = None) -> None:
        opt_g, opt_d, _ = self.optimizers()
        hp = self.hparams
        b, latent = real.size(0), self.generator.latent_dim
        # Conditional: the class of every real image, and of every fake (the same classes).
        cond = () if labels is None else (labels,)

        # (1) update D: real (+ noise) → "real", G(z) → "fake".
        with self.toggled_optimizer(opt_d), torch.set_grad_enabled(not hp.freeze_discriminator):
            # No graph through G here, and said with no_grad rather than only G's frozen parameters:
            # a compiled G (compile_scope networks) is told apart from the G-step graph by grad mode;
            # torch.compile does not always guard parameters' requires_grad (pytorch/pytorch#139476),
            # and on a GPU with reduce-overhead it reused this graph in the G step (no gradient).
            with torch.no_grad():
                fake = self.generator(torch.randn(b, latent, device=self.device), *cond)
            real_in, fake_in = self._noisy(real), self._noisy(fake.detach(), fake=True)
            # Two calls, not one on real+fake: batch statistics (BatchNorm, minibatch stddev) must
            # not mix the two batches, as in the DCGAN reference implementation.
            real_logits = self.discriminator(real_in, *cond)
            fake_logits = self.discriminator(fake_in, *cond)
            d_loss = self._discriminator_loss(real_logits, fake_logits)
            if hp.loss == "wgan_gp" and not hp.freeze_discriminator:
                critic = partial(self.discriminator, y=labels) if cond else self.discriminator
                d_loss = d_loss + hp.gp_weight * losses.gradient_penalty(critic, real_in, fake_in)
            if not hp.freeze_discriminator:
                opt_d.zero_grad()
                self.manual_backward(d_loss)
                opt_d.step()
                if hp.clip_value is not None:
                    with torch.no_grad():
                        for p in self.discriminator.parameters():
                            p.clamp_(-hp.clip_value, hp.clip_value)
        self.latest["d_loss"] = d_loss.detach()
        if hp.loss in ("bce", "minimax"):
            # Mean D probabilities, for monitoring only: D(x) near 1 and D(G(z)) near 0 means D is winning.
            # float(): under bf16 autocast the logits are bfloat16, and curves should not carry its rounding.
            self.latest["d_real"] = torch.sigmoid(real_logits.detach().float()).mean()
            self.latest["d_fake"] = torch.sigmoid(fake_logits.detach().float()).mean()
        else:
            # For WGAN this gap estimates the Wasserstein distance: it should shrink as G improves.
            self.latest["critic_gap"] = (real_logits.float().mean() - fake_logits.float().mean()).detach()
        if not g_turn:
            return

        # (2) update G g_steps times on fresh noise: make D call the fakes real.
        with self.toggled_optimizer(opt_g):
            for _ in range(hp.g_steps):
                fake = self.generator(torch.randn(b, latent, device=self.device), *cond)
                g_loss = losses.GENERATOR[hp.loss](self.discriminator(self._noisy(fake, fake=True), *cond))
                opt_g.zero_grad()
                self.manual_backward(g_loss)
                opt_g.step()
        self.latest["g_loss"] = g_loss.detach()

    def _functional_step(self, real: torch.Tensor, g_turn: bool, labels: Optional[torch.Tensor] = None) -> None:
        curves = self.iteration(real, self.instance_noise_std(), g_turn, labels)
        names = ("d_loss", "d_real", "d_fake") if self.hparams.loss in ("bce", "minimax") else ("d_loss", "critic_gap")
        self.latest.update({name: curves[name] for name in names})
        if g_turn:
            self.latest["g_loss"] = curves["g_loss"]

    def on_train_epoch_end(self) -> None:
        opt_g, opt_d, opt_pre = self.optimizers()
        self.log_dict(
            {"lr/generator": opt_g.param_groups[0]["lr"], "lr/discriminator": opt_d.param_groups[0]["lr"],
             "lr/pretrain": opt_pre.param_groups[0]["lr"], "train/instance_noise": self.instance_noise_std()},
            sync_dist=True,  # equal on every process; syncing just keeps Lightning's DDP check quiet
        )  # fmt: skip
        # Manual optimisation: Lightning does not step schedulers, and pretraining epochs don't count.
        if self.pretraining:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            if isinstance(scheduler, ProgressLR):
                scheduler.progress = self.progress
            scheduler.step()

    # ---- validation: sample quality ---------------------------------------------------------
    # Every `eval_every_n_epochs`, the test split's real images and as many generated ones feed
    # `self.quality` (shortgan/evaluation.py); the other validation epochs cost one loop over the
    # in-memory loader. `validate` and `test` always evaluate.

    def evaluates_this_epoch(self) -> bool:
        """Whether this epoch's validation (or this validate/test run) computes the quality metrics."""
        if not self.quality or self.trainer.sanity_checking:
            return False
        if self.trainer.state.fn != "fit":
            return True
        epoch = self.current_epoch + 1
        return epoch % self.hparams.eval_every_n_epochs == 0 or epoch == self.trainer.max_epochs

    def _start_evaluation(self, split: str) -> None:
        self._evaluate = self.evaluates_this_epoch()
        if self._evaluate:
            self.quality.start(split, self.device)
            self._eval_left = math.ceil(self.hparams.num_eval_samples / self.trainer.world_size)
            # The same noise every evaluation: curves show the generator changing, not the draw.
            self._eval_rng = torch.Generator(device=self.device).manual_seed(self.global_rank)

    def _evaluation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        n = min(len(batch[0]), self._eval_left) if self._evaluate else 0
        if n == 0:
            return
        real, labels = batch[0][:n], batch[1][:n] if self.num_classes else None
        self._eval_left -= n
        z = torch.randn(n, self.generator.latent_dim, device=self.device, generator=self._eval_rng)
        # Conditional: one fake per real image, of its class, so classes are judged against their own.
        self.quality.update(real, self.sample(z, labels), labels)

    def _end_evaluation(self, split: str) -> None:
        if self._evaluate:
            # compute() already gathered every process's samples: sync_dist averages equal values.
            self.log_dict({f"{split}/{k}": v for k, v in self.quality.compute().items()}, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    # ---- checkpoints -------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Where the adversarial phase began on the training clock: time-keyed schedules go on from it.
        checkpoint["adversarial_started_at"] = self.adversarial_started_at
        if not self.pretraining and "optimizer_states" in checkpoint:
            # Pretraining is over and its optimizer never steps again: its moments (the size of G,
            # a third of the file) need not be written every epoch.
            checkpoint["optimizer_states"][2]["state"] = {}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_weights(checkpoint, ("generator.", "discriminator."), "a GAN")
        # A conditional generator's per-class parameters are its `class_*` ones (ShortGAN, DCGAN).
        conditional = any(key.startswith("generator.class_") for key in checkpoint["state_dict"])
        if conditional != bool(self.num_classes):
            raise UserError(
                f"The checkpoint holds a{' class-conditional' if conditional else 'n unconditional'} GAN, the "
                f"config a{' class-conditional' if self.num_classes else 'n unconditional'} one: "
                + ("add --config configs/conditional.yaml (or pass the run's config.yaml)" if conditional else
                   "drop configs/conditional.yaml (or pass the run's config.yaml)")
            )  # fmt: skip
        self.adversarial_started_at = checkpoint.get("adversarial_started_at")
