"""A digit classifier trained through the same CLI; its features and logits judge generated images."""

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn


class Classifier(L.LightningModule):
    """Trains a classifier on a dataset's labelled images; `GAN(classifier_checkpoint=...)` then uses
    its penultimate features and class logits for domain FID, class coverage and precision/recall.

    Args:
        network: images (B, 1, 28, 28) in [-1, 1] → logits (B, num_classes), with a `features(x)`
            method giving the penultimate embedding and a `head` mapping it to logits
            (`shortgan.networks.DigitClassifier`).
        optimizer: optimizer factory for the network.
    """

    def __init__(self, network: nn.Module, optimizer: OptimizerCallable = torch.optim.Adam) -> None:
        super().__init__()
        # Under the CLI, hparams record the network's class_path and init_args, which is what lets
        # `Classifier.load_from_checkpoint` (and so `GAN(classifier_checkpoint=...)`) rebuild it.
        self.save_hyperparameters(ignore=["optimizer"])
        self.network = network
        self.optimizer_factory = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self.network(images)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/acc": acc}, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.network.parameters())
