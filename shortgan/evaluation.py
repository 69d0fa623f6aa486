"""Sample-quality metrics accumulated over validation batches: domain metrics from a trained
classifier, and the standard Inception FID. torchmetrics keeps the state and syncs it across processes."""

import math
import socket
from functools import partial
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from shortgan import metrics
from shortgan.errors import UserError
from shortgan.data import ImageDataModule
from shortgan.generator_system import GeneratorSystem
from shortgan.judge import cached_classifier, judge_view, load_classifier, rotations

# What torchmetrics (through torch-fidelity) downloads when no weights path is given.
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


class DomainQuality(Metric):
    """Judges generated images with a classifier trained on the same dataset.

    `update(images, real)` stores the classifier's penultimate features and logits; `compute()`
    returns `domain_fid` (Fréchet distance of the features), `coverage` (classes holding ≥ 1% of the
    generated images), `class_kl` (KL of the generated class histogram from the real one),
    `classifier_score` (Inception Score with this classifier), and `precision` / `recall`
    (k-nearest-neighbour manifolds in feature space, Kynkäänniemi et al. 2019). Given `labels` (the
    real images' classes, and the classes a conditional generator was asked for), also
    `class_consistency` (the classifier agrees with the requested class) and `intra_fid` (mean
    per-class FID).

    Args:
        classifier: a trained network with `features(x)` → (B, D) and `head(features)` → logits
            (`shortgan.networks.DigitClassifier`); it is frozen here.
        k: neighbours defining the manifolds for precision and recall.
        reset_real_features: also forget the real images on `reset()`. Off by default: the test split
            does not change between validation epochs, so its features are computed once.
        class_metrics: report the numbers about the classifier's classes (coverage, class_kl,
            classifier_score); off for a judge of unlabelled data, whose classes are rotations.
    """

    full_state_update = False

    def __init__(
        self, classifier: nn.Module, k: int = 3, reset_real_features: bool = False, class_metrics: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier.eval().requires_grad_(False)
        self.k = k
        self.reset_real_features = reset_real_features
        self.class_metrics = class_metrics
        # List states concatenated across processes: precision/recall needs every feature vector.
        for name in ("real_features", "real_logits", "real_labels", "fake_features", "fake_logits", "fake_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool, labels: Optional[torch.Tensor] = None) -> None:
        features = self.classifier.features(judge_view(images))  # (B, D)
        logits = self.classifier.head(features)  # (B, num_classes)
        side = "real" if real else "fake"
        getattr(self, f"{side}_features").append(features.float())
        getattr(self, f"{side}_logits").append(logits.float())
        if labels is not None:
            getattr(self, f"{side}_labels").append(labels.long())

    def compute(self) -> dict[str, torch.Tensor]:
        real_f, real_l, fake_f, fake_l = (
            dim_zero_cat(s) for s in (self.real_features, self.real_logits, self.fake_features, self.fake_logits)
        )
        labelled = len(self.real_labels) > 0 and len(self.fake_labels) > 0
        real_y, fake_y = (dim_zero_cat(self.real_labels), dim_zero_cat(self.fake_labels)) if labelled else (None, None)
        out = metrics.domain_quality(real_f, real_l, fake_f, fake_l, self.k, real_y, fake_y)
        if not self.class_metrics:
            out = {key: out[key] for key in ("domain_fid", "precision", "recall")}
        return out

    def reset(self) -> None:
        # Metric.reset() clears lists in place
        real = (list(self.real_features), list(self.real_logits), list(self.real_labels))
        super().reset()
        if not self.reset_real_features:
            self.real_features, self.real_logits, self.real_labels = real


def inception_fid_metric(weights: Optional[str] = None, feature: Optional[nn.Module] = None) -> Optional[Metric]:
    """torchmetrics' Inception FID that keeps the real statistics across resets, or None after one
    warning that says how to provide the weights.

    Resizing to 299×299 uses `antialias=False`: torch-fidelity's TensorFlow-compatible bilinear
    resize, as in the original FID code, so scores compare with FIDs computed that way.

    Args:
        weights: torch-fidelity's InceptionV3 weights file; None downloads them if there is internet.
        feature: a network to use instead of InceptionV3 (images (B, 3, 28, 28) in [0, 1] → (B, D)).
    """
    if feature is not None:
        return FrechetInceptionDistance(feature, reset_real_features=False, normalize=True, input_img_size=(3, 28, 28))
    if weights is not None and not Path(weights).is_file():
        raise UserError(f"model.inception_weights: no file at {weights}")
    how = (
        f"download {INCEPTION_WEIGHTS_URL} on a machine with internet, `pip install torch-fidelity`, and pass "
        f"--model.init_args.inception_weights <file>"
    )
    previous = socket.getdefaulttimeout()
    # torch.hub downloads without a timeout: behind a firewall that drops packets the run would hang.
    socket.setdefaulttimeout(20)
    try:
        return FrechetInceptionDistance(
            2048, reset_real_features=False, normalize=True, antialias=False, feature_extractor_weights_path=weights
        )
    except Exception as err:
        if weights is not None:
            raise UserError(f"model.inception_weights: cannot load {weights} ({type(err).__name__}: {err}); {how}")
        rank_zero_warn(f"val/fid is off: InceptionV3 is unavailable ({type(err).__name__}: {err}). To get it, {how}.")
        return None
    finally:
        socket.setdefaulttimeout(previous)


def to_inception_range(images: torch.Tensor) -> torch.Tensor:
    """Generator images (B, 1, H, W) in [-1, 1] → (B, 3, H, W) in [0, 1], as Inception FID expects."""
    return ((images + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1)


def inception_weights_present(weights: Optional[str] = None) -> bool:
    """Whether InceptionV3's weights are on this machine: the given file, or torch-fidelity's download
    in torch hub's cache (where a run with internet leaves them)."""
    if weights is not None:
        return Path(weights).is_file()
    return Path(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_URL.rsplit("/", 1)[1]).is_file()


class SampleQuality:
    """The metrics a generator system logs at validation and test.

    `DomainQuality` when a classifier checkpoint is given (or one is added with `add_domain`),
    Inception FID when asked for. Real-image statistics are computed on the first evaluation of a
    split and reused on later ones. A plain object, not an `nn.Module`: the frozen networks stay out
    of the system's checkpoints and summary.

    Args:
        classifier_checkpoint: a `Classifier` checkpoint; None leaves the domain metrics off.
        inception_fid: compute the standard Inception FID too.
        inception_weights: InceptionV3 weights file for it (see `inception_fid_metric`).
        inception_feature: a stand-in network for InceptionV3 (tests).
    """

    def __init__(
        self,
        classifier_checkpoint: Optional[str] = None,
        inception_fid: bool = False,
        inception_weights: Optional[str] = None,
        inception_feature: Optional[nn.Module] = None,
    ) -> None:
        self.metrics: dict[str, Metric] = {}
        if classifier_checkpoint:
            self.add_domain(load_classifier(classifier_checkpoint))
        if inception_fid:
            self.add_inception(inception_weights, inception_feature)
        self.real_split: Optional[str] = None  # whose real statistics the metrics hold
        self.collect_real = True

    def add_domain(self, classifier: nn.Module, class_metrics: bool = True) -> None:
        """Judge samples with this trained classifier too (val/domain_fid, coverage, precision, recall…)."""
        self.metrics["domain"] = DomainQuality(classifier, class_metrics=class_metrics)

    def add_inception(self, weights: Optional[str] = None, feature: Optional[nn.Module] = None) -> None:
        """Compute the standard Inception FID too (val/fid), if InceptionV3 can be had."""
        fid = inception_fid_metric(weights, feature)
        if fid is not None:
            self.metrics["fid"] = fid

    def __bool__(self) -> bool:
        return bool(self.metrics)

    def start(self, split: str, device: torch.device) -> None:
        """Begin an evaluation on `split`; real images are collected only the first time."""
        self.collect_real = split != self.real_split
        for metric in self.metrics.values():
            metric.to(device)
            keep = metric.reset_real_features
            metric.reset_real_features = self.collect_real
            metric.reset()
            metric.reset_real_features = keep
        self.real_split = split

    def update(
        self, real: torch.Tensor, fake: torch.Tensor, real_labels: Optional[torch.Tensor] = None,
        fake_labels: Optional[torch.Tensor] = None,
    ) -> None:  # fmt: skip
        """Add a batch of real images and generated ones; with the real images' classes and those a
        conditional generator drew its fakes for, the domain metrics judge classes too."""
        for name, metric in self.metrics.items():
            if name == "fid":
                if self.collect_real:
                    metric.update(to_inception_range(real), real=True)
                metric.update(to_inception_range(fake), real=False)
                continue
            if self.collect_real:
                metric.update(real, real=True, labels=real_labels)
            metric.update(fake, real=False, labels=fake_labels)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        if "domain" in self.metrics:
            out.update(self.metrics["domain"].compute())
        if "fid" in self.metrics:
            out["fid"] = self.metrics["fid"].compute()
        return out


class EvaluatedGeneratorSystem(GeneratorSystem):
    """A `GeneratorSystem` whose validation and test judge its samples with `SampleQuality`.

    Every `eval_every_n_epochs` epochs (and after the last), validation feeds the test split's real
    images and as many generated ones (`num_eval_samples` at most, the same noise every time, so
    curves show the generator changing, not the draw) to the metrics and logs `val/...`; the other
    validation epochs compute nothing (`SkipIdleValidation` skips their loop). `validate` and `test`
    always evaluate. A subclass sets `self.quality` and has `eval_every_n_epochs`, `num_eval_samples`,
    `classifier_checkpoint`, `inception_fid` and `inception_weights` among its hyperparameters.
    """

    quality: SampleQuality

    def add_default_metrics(self) -> None:
        """The metrics chosen by `auto` / None settings, once the trainer and the data are known."""
        hp, trainer = self.hparams, self.trainer
        data = getattr(trainer, "datamodule", None)
        if hp.classifier_checkpoint == "auto" and "domain" not in self.quality.metrics:
            if isinstance(data, ImageDataModule):
                train = data.train_set or data.load_split(train=True)
                test = data.test_set or data.load_split(train=False)
                train, test = (judge_view(train.images), train.labels), (judge_view(test.images), test.labels)
                name, labelled = data.hparams.dataset, data.num_classes >= 2
                if not labelled:
                    # No classes to learn: the judge learns which way up each image is.
                    name, train, test = f"{name}-rotation", rotations(train[0]), rotations(test[0])
                    rank_zero_info("The data have no classes: domain FID, precision and recall come from a "
                                   "classifier trained to tell each image's rotation (docs/metrics.md).")  # fmt: skip
                find = partial(cached_classifier, data.classifier_dir, name, train, test)
                # Under DDP the first process trains and caches it while the others wait, then load it.
                classifier = find(train_here=trainer.is_global_zero)
                trainer.strategy.barrier()
                self.quality.add_domain(classifier or find(), class_metrics=labelled)
            else:
                rank_zero_info("Domain metrics are off: classifier_checkpoint auto needs the labelled ImageDataModule.")
        if hp.inception_fid is None and "fid" not in self.quality.metrics:
            on_gpu = trainer.strategy.root_device.type == "cuda"
            if on_gpu and inception_weights_present(hp.inception_weights):
                self.quality.add_inception(hp.inception_weights)

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
            self._eval_rng = torch.Generator(device=self.device).manual_seed(self.global_rank)

    def _evaluation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        n = min(len(batch[0]), self._eval_left) if self._evaluate else 0
        if n == 0:
            return
        real = batch[0][:n]
        self._eval_left -= n
        if not self.num_classes:
            self.quality.update(real, self.draw(n, None, self._eval_rng))
            return
        # Conditional: the fakes' classes drawn as every sample's are (the training split's class
        # frequencies), from the evaluation's own seeded stream, so every evaluation asks for the same ones.
        fake_labels = self.draw_classes(n, self._eval_rng)
        self.quality.update(real, self.draw(n, fake_labels, self._eval_rng), batch[1][:n], fake_labels)

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
