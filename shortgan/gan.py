"""The adversarial system: pretraining epochs, then adversarial iterations (shortgan/iteration.py:
one D step and, every `n_critic` iterations, `g_steps` G steps), with the loss chosen by name."""

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from shortgan.augment import Augmentation
from shortgan.averaging import ExponentialMovingAverage
from shortgan.checkpoints import load_discriminator_weights, load_generator_weights, require_gan, require_shapes
from shortgan.errors import UserError
from shortgan.evaluation import EvaluatedGeneratorSystem, SampleQuality
from shortgan.execution import Compile, CompileMode, Execution, choose_execution, compile_mode_for
from shortgan.functional import FunctionalIteration
from shortgan.generator_system import evaluating
from shortgan.iteration import AdversarialRecipe, EagerUpdates, Loss, adversarial_iteration, pretraining_iteration
from shortgan.lightning_internals import count_optimizer_steps, find_unused_parameters, logger_writes_this_step
from shortgan.pretraining import Pairing
from shortgan.rejection import CALIBRATION_SAMPLES, calibrate, check_quantile, rejection_sample
from shortgan.safety import seed_this_process
from shortgan.schedules import InstanceNoise, ProgressLR, adversarial_progress, training_clock


class GAN(EvaluatedGeneratorSystem):
    """A generator and a discriminator trained with manual optimisation.

    Each batch of an adversarial epoch is one adversarial iteration (shortgan/iteration.py): one D
    step on real images plus noise and fakes, then, every `n_critic`-th batch, `g_steps` G steps on
    fresh noise. The first `pretrain_epochs` epochs train G alone with Smooth-L1 pretraining, so one
    `fit` runs the whole recipe. Lightning's `global_step` counts optimizer steps, 1 + g_steps per
    iteration (1 without a G turn, g_steps with a frozen D; `iterations_per_batch` iterations per
    loaded batch), whichever way (`compile`) the iterations run.

    Class-conditional: give both networks the same `num_classes` (the dataset configs do;
    `configs/conditional.yaml` for the others). G then draws a given class, D scores (image,
    class) pairs, fakes take the real batch's classes, pretraining pairs within a class, and
    evaluations add `class_consistency` and `intra_fid`.

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
            training (1.0: 0 on the run's last batch, whether `max_epochs` or `max_time` ends it; 2.0:
            half the std then); None keeps it constant. Noise steadies the start but hides faint speckle from D.
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
            training split on first use (~10 s for the MNIST sample, ~40 s for 60,000 images on a
            2-core CPU) and cached in `<data_dir>/classifiers/`; a path: a `Classifier`
            checkpoint (configs/classifier_*.yaml); null: no domain metrics.
        eval_every_n_epochs: compute the quality metrics every this many epochs (and at the last one).
        num_eval_samples: real test images, and as many generated ones, per evaluation (at most the
            test split); 10,000 for final numbers.
        inception_fid: also compute the standard InceptionV3 FID as val/fid (minutes per evaluation
            on a CPU). null: yes when training on a GPU and InceptionV3's weights are on this machine
            (`inception_weights`, or torch-fidelity's download in torch hub's cache).
        inception_weights: torch-fidelity's InceptionV3 weights file, for machines without internet.
        ema_decay: keep an exponential moving average of G's weights (and BatchNorm statistics)
            with this decay per G update (per adversarial iteration with a G turn, and per
            pretraining step), e.g. 0.999, and draw every sample from it: grids, metrics, predict.
            None turns it off.
        iterations_per_batch: split each loaded batch into this many equal chunks and run one
            iteration (pretraining step, or D step + G steps) on each: with `data.batch_size` k × 64
            and k here, the math is that of batch 64, while Lightning's per-batch work (hooks,
            logging, progress bar) is paid once per k iterations. Worth it where an iteration is
            tiny, as on a GPU; `trainer.max_epochs` etc. are unchanged, `limit_train_batches` counts
            loaded batches.
        compile: how adversarial iterations run; every way runs the same `adversarial_iteration`
            (shortgan/iteration.py). `auto`: the compiled iteration where it pays, when the adversarial
            training is long enough to repay a cold compile (on a GPU, with CUDA graphs: ~2,500
            iterations and 1.5 minutes; on a CPU: ~10,000 iterations and 7 minutes;
            shortgan/execution.py), else the eager step.
            `iteration`: the whole iteration (D step, G steps, both Adam updates, noise, weight
            average) as one compiled function (shortgan/functional.py); needs Adam/AdamW, one
            process and float32, else the eager step runs with a warning. `networks`: G and D
            compiled each on its own, eager steps around them. `off`: the eager step. The run says
            in one line which it took and why.
        compile_mode: `torch.compile` mode (`default`, `reduce-overhead` = CUDA graphs on a GPU,
            `max-autotune`); None: `reduce-overhead` on a GPU, `default` elsewhere.
        compile_backend: `torch.compile` backend (`inductor`; `eager` or `aot_eager` to tell a
            compiler problem from a model one); null runs the chosen code uncompiled (with `compile:
            iteration`, the functional iteration eagerly, to check it against the eager step).
        rejection_quantile: discriminator rejection sampling (shortgan/rejection.py) for every
            sample the model draws — `predict`, the quality metrics, the comparison — but not the
            fixed-noise grid: a fake is kept with probability exp(D(x) − c), c this quantile of D's
            logits on fresh fakes (1: the paper's rule; lower keeps more). Costs extra G and D calls
            at sampling time only. null: plain samples of G.
        mode_seeking: weight of the mode-seeking term in G's loss (MSGAN, Mao et al. 2019;
            `losses.mode_seeking`): the two halves of each G batch are pairs, drawn for the same
            classes in a conditional GAN, and G is pushed to give distinct noise distinct images —
            recall, at some cost in precision. 0 turns it off.
        r1_gamma: weight γ of the R1 penalty in D's loss, γ·½·E‖∇D(x)‖² on the real images D sees
            (Mescheder et al. 2018, `losses.r1_penalty`): D may not slope steeply around the data.
            Costs a second differentiation in each D step. 0 turns it off.
        label_dropout: a conditional GAN's share of each batch trained without the class (label
            dropout): each real image is, with this probability, shown to D as class -1 (`NO_CLASS`,
            no projection term), and the fake drawn for it is drawn without a class (no class vector)
            — the unconditional task learnt in the same weights beside the conditional one. Samples
            are still drawn for their classes. 0 turns it off.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        pretrain_optimizer: OptimizerCallable = torch.optim.Adam,
        generator_scheduler: LRSchedulerCallable | None = None,
        discriminator_scheduler: LRSchedulerCallable | None = None,
        loss: Loss = "bce",
        g_steps: int = 2,
        n_critic: int = 1,
        clip_value: float | None = None,
        gp_weight: float = 10.0,
        real_label: float = 0.9,
        fake_label: float = 0.0,
        instance_noise: float = 0.1,
        instance_noise_fade: float | None = None,
        instance_noise_epochs: int | None = None,
        noise_fakes: bool = True,
        augment: tuple[Augmentation, ...] = (),
        pretrain_epochs: int = 0,
        pretrain_pairing: Pairing = "nearest",
        pretrain_candidates: int = 4,
        pretrained_generator: str | None = None,
        pretrained_discriminator: str | None = None,
        freeze_discriminator: bool = False,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 0,
        classifier_checkpoint: str | None = "auto",
        eval_every_n_epochs: int = 5,
        num_eval_samples: int = 2000,
        inception_fid: bool | None = None,
        inception_weights: str | None = None,
        ema_decay: float | None = None,
        iterations_per_batch: int = 1,
        compile: Compile = "auto",
        compile_mode: CompileMode | None = None,
        compile_backend: str | None = "inductor",
        rejection_quantile: float | None = None,
        mode_seeking: float = 0.0,
        r1_gamma: float = 0.0,
        label_dropout: float = 0.0,
    ) -> None:
        super().__init__(generator, num_fixed_samples, fixed_noise_seed)
        if getattr(discriminator, "num_classes", 0) != self.num_classes:
            raise UserError(
                f"The generator has num_classes {self.num_classes} but the discriminator "
                f"{getattr(discriminator, 'num_classes', 0)}: a conditional GAN needs both set to the dataset's "
                f"number of classes, an unconditional one neither."
            )
        if iterations_per_batch < 1:
            raise UserError(f"model.iterations_per_batch must be at least 1, got {iterations_per_batch}")
        if eval_every_n_epochs < 1 or num_eval_samples < 2:
            raise UserError("model.eval_every_n_epochs must be >= 1 and model.num_eval_samples >= 2")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise UserError(f"model.ema_decay must be between 0 and 1 (or null), got {ema_decay}")
        # The iteration's decisions and its schedule, checked on construction.
        noise = InstanceNoise(instance_noise, instance_noise_fade, instance_noise_epochs)
        self.recipe = AdversarialRecipe(loss, g_steps, clip_value, gp_weight, real_label, fake_label, noise_fakes,
                                        tuple(augment), freeze_discriminator, mode_seeking, r1_gamma, n_critic,
                                        noise, label_dropout)  # fmt: skip
        if label_dropout and not self.num_classes:
            raise UserError("model.label_dropout drops the class of a share of each batch: it needs class-conditional "
                            "networks (num_classes > 0); set it to 0 for an unconditional GAN")
        check_quantile(rejection_quantile)
        if rejection_quantile is not None and not self.recipe.bce:
            raise UserError(
                f"model.rejection_quantile: rejection sampling reads D's logits as log-density ratios, which only a "
                f"D trained with loss bce or minimax gives; this one uses {loss}. Set rejection_quantile to null."
            )
        # Networks and factories are not plain data; the CLI's config.yaml records them.
        self.save_hyperparameters(ignore=["generator", "discriminator", "generator_optimizer", "discriminator_optimizer",
                                          "pretrain_optimizer", "generator_scheduler", "discriminator_scheduler"])  # fmt: skip
        self.discriminator = discriminator
        self.factories = dict(
            g=generator_optimizer, d=discriminator_optimizer, pre=pretrain_optimizer,
            g_sched=generator_scheduler, d_sched=discriminator_scheduler,
        )  # fmt: skip
        self.automatic_optimization = False
        self.quality = SampleQuality(
            None if classifier_checkpoint == "auto" else classifier_checkpoint, bool(inception_fid), inception_weights
        )
        # The average is a submodule, so it is saved in checkpoints and moves with the model.
        self.generator_ema = ExponentialMovingAverage(generator, ema_decay) if ema_decay is not None else None
        self.execution = Execution("eager", "not training yet")
        self.iteration: FunctionalIteration | None = None  # the functional iteration, if it runs
        # The latest value of each training curve (detached), logged when the logger writes a step.
        self.latest: dict[str, torch.Tensor] = {}
        self.logged_batch = False
        self.progress = 0.0  # of the adversarial training, by the end of the current batch
        self.adversarial_started_at: float | None = None  # on the training clock (schedules.py)
        self._rejection_cutoff: tuple[int, torch.Tensor] | None = None  # (global_step, cut-off)

    def sampling_generator(self) -> nn.Module:
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def draw(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        quantile = self.hparams.rejection_quantile
        if quantile is None:
            return super().draw(n, y, generator)
        with evaluating(self.discriminator) as d:
            images, stats = rejection_sample(
                lambda k, labels: super(GAN, self).draw(k, labels, generator),
                lambda x, labels: d(x) if labels is None else d(x, labels),
                n, self.rejection_cutoff(), y, generator,
            )  # fmt: skip
        if stats["unfilled"]:
            rank_zero_warn(f"Rejection sampling kept {int(stats['unfilled'])} of {n} samples that D rejected (it accepted "
                           f"{stats['acceptance']:.2%} of the candidates): lower model.rejection_quantile.")  # fmt: skip
        return images

    def rejection_cutoff(self) -> torch.Tensor:
        """The logit above which rejection sampling keeps every fake: `rejection_quantile` of D's logits on
        CALIBRATION_SAMPLES fakes of fixed noise (classes drawn by the class frequencies). Calibrated once
        per state of the networks (a change of `global_step`), so every batch of an evaluation or a
        predict run uses the same cut-off, and costs its calibration once."""
        if self._rejection_cutoff is None or self._rejection_cutoff[0] != self.global_step:
            seeded = torch.Generator(device=self.device).manual_seed(0)
            y = self.draw_classes(CALIBRATION_SAMPLES, seeded) if self.num_classes else None
            fakes = super().draw(CALIBRATION_SAMPLES, y, seeded)
            with evaluating(self.discriminator) as d:
                logits = d(fakes) if y is None else d(fakes, y)
            self._rejection_cutoff = (self.global_step, calibrate(logits, self.hparams.rejection_quantile))
        return self._rejection_cutoff[1]

    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.hparams.pretrain_epochs

    # ---- setup -------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        data = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if stage == "fit" and data is not None and tuple(data.images.shape[1:]) != tuple(self.generator.image_shape):
            raise UserError(
                f"The data's images are {tuple(data.images.shape[1:])} but the generator makes "
                f"{tuple(self.generator.image_shape)}: set the networks' image_shape to the data's (C, H, W)."
            )
        # Before DDP wraps the model (after this hook): a D step leaves G without gradients, and back.
        find_unused_parameters(self.trainer.strategy)
        if stage in ("fit", "validate", "test"):
            self.add_default_metrics()
        # Only a fresh run starts from the pretrained weights; a resumed one has its own.
        fresh = stage == "fit" and self.trainer.ckpt_path is None
        if fresh and self.hparams.pretrained_generator:
            self.generator.load_state_dict(load_generator_weights(self.hparams.pretrained_generator))
        if fresh and self.hparams.pretrained_discriminator:
            self.discriminator.load_state_dict(load_discriminator_weights(self.hparams.pretrained_discriminator))

    def configure_model(self) -> None:
        hp = self.hparams
        if hp.compile == "networks" and hp.compile_backend is not None:
            mode = compile_mode_for(self.trainer, hp.compile_mode, hp.compile_backend)
            # Module.compile compiles in place: parameter names, and so checkpoints, stay as they are.
            for network in (self.generator, self.discriminator):
                network.compile(mode=mode, backend=hp.compile_backend)

    def configure_optimizers(self) -> tuple[list, list]:
        g, d, pre = (self.factories[k](p.parameters()) for k, p in
                     (("g", self.generator), ("d", self.discriminator), ("pre", self.generator)))  # fmt: skip
        schedulers = [
            {"scheduler": self.factories[k](opt), "interval": "epoch"}
            for k, opt in (("g_sched", g), ("d_sched", d))
            if self.factories[k] is not None
        ]
        return [g, d, pre], schedulers

    # ---- training ----------------------------------------------------------------------------

    def on_train_start(self) -> None:
        super().on_train_start()
        # Chosen here, after a resumed run has loaded its optimizer state and the model is on its device.
        hp = self.hparams
        self.execution = choose_execution(hp.compile, hp.compile_mode, hp.compile_backend, self.trainer,
                                          self.discriminator, self.recipe, hp.pretrain_epochs,
                                          hp.iterations_per_batch)  # fmt: skip
        if hp.compile == "iteration" and self.execution.path == "eager":
            rank_zero_warn(f"model.compile iteration: {self.execution.why}, so each iteration runs the eager step.")
        else:
            rank_zero_info(self.execution.describe())
        self.iteration = None
        if self.execution.path == "iteration":
            opt_g, opt_d, _ = self.trainer.optimizers
            self.iteration = FunctionalIteration(self.generator, self.discriminator, opt_g, opt_d, self.recipe,
                                                 self.generator_ema, self.execution.mode, self.execution.backend)  # fmt: skip

    def on_train_epoch_start(self) -> None:
        seed_this_process(self.trainer, self.current_epoch)
        self.latest = {}  # pretraining and adversarial epochs log different curves

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        clock = training_clock(self.trainer)
        if clock is not None and not self.pretraining and self.adversarial_started_at is None:
            self.adversarial_started_at = clock[0]
        self.progress = adversarial_progress(
            self.trainer, self.hparams.pretrain_epochs, batch_idx, clock, self.adversarial_started_at or 0.0
        )

    def schedule(self, iteration: int = 0) -> tuple[float, bool]:
        """(instance-noise std, whether G updates) for the `iteration`-th adversarial iteration of this
        epoch, at the current batch's progress (`AdversarialRecipe.schedule` decides)."""
        return self.recipe.schedule(iteration, self.progress, max(0, self.current_epoch - self.hparams.pretrain_epochs))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.recipe.freeze_discriminator:
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
        hp = self.hparams
        for j, (real, y) in enumerate(zip(batch[0].chunk(k), labels, strict=True)):
            if self.pretraining:
                self.latest.update(pretraining_iteration(self.generator, EagerUpdates(self), real, y,
                                                         hp.pretrain_pairing, hp.pretrain_candidates,
                                                         self.generator_ema))  # fmt: skip
            else:
                self.latest.update(self.adversarial_step(real, batch_idx * k + j, y))
        # Lightning writes step values to the logger only every `trainer.log_every_n_steps` batches, and
        # each `self.log` costs ~0.7 ms on a CPU (Lightning walks its result object field by field), a
        # tenth of a small batch's time: log on those batches only. The written curves are the same;
        # the progress bar's losses, and what DivergenceGuard reads, refresh at that rate.
        self.logged_batch = logger_writes_this_step(self.trainer)
        if self.logged_batch:
            self._log_latest()

    def adversarial_step(
        self, real: torch.Tensor, iteration: int = 0, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The `iteration`-th adversarial iteration of this epoch (from 0) on `real` (classes `labels`),
        run the chosen way; its curves."""
        noise_std, g_turn = self.schedule(iteration)
        if self.iteration is None:
            return adversarial_iteration(self.generator, self.discriminator, EagerUpdates(self), self.recipe, real,
                                         labels, noise_std, g_turn, self.generator_ema)  # fmt: skip
        curves, steps = self.iteration(real, noise_std, g_turn, labels)
        # Same bookkeeping as optimizer.step(): global_step, and so checkpoint cadence, counts these.
        count_optimizer_steps(self.optimizers()[0], steps)
        return curves

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A callback (max_time, early stopping) may have stopped the run after this batch: Lightning
        # then writes this batch's values too, so they must be this batch's, not an older one's.
        if self.trainer.should_stop and not self.logged_batch:
            self._log_latest()

    def _log_latest(self) -> None:
        for name, value in self.latest.items():
            # A copy: the functional iteration overwrites its curves in place every iteration.
            self.log(f"train/{name}", value.clone(), prog_bar=name in ("pretrain_loss", "d_loss", "g_loss"))

    def on_train_epoch_end(self) -> None:
        opt_g, opt_d, opt_pre = self.optimizers()
        self.log_dict(
            {"lr/generator": opt_g.param_groups[0]["lr"], "lr/discriminator": opt_d.param_groups[0]["lr"],
             "lr/pretrain": opt_pre.param_groups[0]["lr"], "train/instance_noise": self.schedule()[0]},
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

    # ---- checkpoints -------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Where the adversarial phase began on the training clock: time-keyed schedules go on from it.
        checkpoint["adversarial_started_at"] = self.adversarial_started_at
        if not self.pretraining and "optimizer_states" in checkpoint:
            # Pretraining is over and its optimizer never steps again: its moments (the size of G,
            # a third of the file) need not be written every epoch.
            checkpoint["optimizer_states"][2]["state"] = {}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_gan(checkpoint, self.num_classes)
        require_shapes(checkpoint, self.state_dict())
        super().on_load_checkpoint(checkpoint)
        self._rejection_cutoff = None  # other weights: calibrate again
        self.adversarial_started_at = checkpoint.get("adversarial_started_at")
