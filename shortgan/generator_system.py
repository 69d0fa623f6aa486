"""What every system that owns a generator shares: fixed sampling noise, sampling and predict."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional, Sequence

import lightning as L
import torch
from torch import nn

from shortgan.errors import UserError


@contextmanager
def evaluating(network: nn.Module) -> Iterator[nn.Module]:
    """`network` in eval mode (BatchNorm running statistics, no dropout) inside the block, then back
    in the mode it was in."""
    was_training = network.training
    network.eval()
    try:
        yield network
    finally:
        network.train(was_training)


def parse_classes(text: Optional[str], num_classes: int) -> Optional[list[int]]:
    """`--classes` as a list of class indices: "7", "1,4,7" or "all" (every class); None if not given.

    Raises UserError for an unconditional model or a class outside [0, num_classes).
    """
    if text is None:
        return None
    if not num_classes:
        raise UserError("--classes needs a class-conditional model (networks with num_classes); this one is not")
    if str(text).strip().lower() == "all":
        return list(range(num_classes))
    try:
        classes = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--classes: expected a class number, a comma-separated list or 'all', got {text!r}") from None
    if not classes or any(not 0 <= c < num_classes for c in classes):
        raise UserError(f"--classes: every class must be in 0..{num_classes - 1}, got {text!r}")
    return classes


class GeneratorSystem(L.LightningModule):
    """A LightningModule with a `generator`, a fixed-noise buffer for progress grids, and `predict`.

    A generator with `num_classes` > 0 is class-conditional: it takes a class label per sample, the
    progress grid has one row per class (the same noise in each column), and every sample it is not
    told the class of takes one drawn by the training split's class frequencies (`draw_classes`,
    kept in the checkpoint), so a model of the whole dataset has the dataset's class mix; `predict`
    takes `predict_classes` (`--classes`) in turn instead where given, and returns the classes with the images.

    Args:
        generator: the network mapping noise (B, latent_dim) to images (B, C, H, W) in [-1, 1].
        num_fixed_samples: images in the fixed-noise grid logged during training (conditional: about
            this many, `num_fixed_samples // num_classes` per class).
        fixed_noise_seed: seed of that fixed noise, so grids of different runs are comparable.
    """

    def __init__(self, generator: nn.Module, num_fixed_samples: int = 64, fixed_noise_seed: int = 0) -> None:
        super().__init__()
        self.generator = generator
        seeded = torch.Generator().manual_seed(fixed_noise_seed)
        # A buffer: moves with the module and is saved in checkpoints, so a resumed run keeps it.
        self.register_buffer("fixed_noise", torch.randn(num_fixed_samples, generator.latent_dim, generator=seeded))
        self.predict_classes: Optional[Sequence[int]] = None
        if self.num_classes:
            # The training split's class frequencies, set when fit starts (uniform until then).
            self.register_buffer("class_frequencies", torch.full((self.num_classes,), 1.0 / self.num_classes))

    @property
    def num_classes(self) -> int:
        """Classes the generator is conditioned on; 0 for an unconditional one."""
        return getattr(self.generator, "num_classes", 0)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.generator(z) if y is None else self.generator(z, y)

    def on_train_start(self) -> None:
        # The training data's labels, where the loader's dataset holds them (ImageDataModule's does).
        labels = getattr(getattr(self.trainer.train_dataloader, "dataset", None), "labels", None)
        if self.num_classes and isinstance(labels, torch.Tensor) and len(labels):
            if int(labels.max()) >= self.num_classes:
                raise UserError(
                    f"The data have classes up to {int(labels.max())} but the networks' num_classes is "
                    f"{self.num_classes}: set num_classes on both networks to the data's number of classes."
                )
            counts = torch.bincount(labels.long().cpu(), minlength=self.num_classes).float()
            self.class_frequencies.copy_(counts / counts.sum())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before the class frequencies were kept: every class equally often.
        if self.num_classes:
            checkpoint.get("state_dict", {}).setdefault(
                "class_frequencies", torch.full((self.num_classes,), 1.0 / self.num_classes)
            )

    def draw_classes(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n classes drawn by the training split's class frequencies (on the model's device); `generator`
        seeds the draw."""
        device = generator.device if generator is not None else self.device
        y = torch.multinomial(self.class_frequencies.to(device), n, replacement=True, generator=generator)
        return y.to(self.device)

    def sampling_generator(self) -> nn.Module:
        """The network that draws samples (a subclass may keep an averaged copy of the generator)."""
        return self.generator

    @torch.no_grad()
    def sample(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images for noise z (and classes y, for a conditional generator), with the generator in
        eval mode (BatchNorm running statistics)."""
        with evaluating(self.sampling_generator()) as generator:
            return generator(z) if y is None else generator(z, y)

    @torch.no_grad()
    def draw(self, n: int, y: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n images as the model samples them (of classes y, for a conditional generator): what
        `predict` returns and the metrics judge. `generator` seeds the noise (drawn on its device)."""
        device = generator.device if generator is not None else self.device
        z = torch.randn(n, self.generator.latent_dim, generator=generator, device=device)
        return self.sample(z.to(self.device), y)

    def grid_columns(self) -> Optional[int]:
        """Samples per row of the progress grid: conditional, a row per class; else None (square)."""
        return max(1, len(self.fixed_noise) // self.num_classes) if self.num_classes else None

    def class_rows(self, z: torch.Tensor) -> torch.Tensor:
        """A conditional generator's images of every class for each noise vector in z (K, latent_dim),
        (num_classes·K, C, H, W) in rows of K: row c is class c, and column j uses z[j] in every row,
        so a column is one "style"."""
        y = torch.arange(self.num_classes, device=z.device).repeat_interleave(len(z))
        return self.sample(z.repeat(self.num_classes, 1), y)

    def fixed_samples(self) -> torch.Tensor:
        if not self.num_classes:
            return self.sample(self.fixed_noise)
        return self.class_rows(self.fixed_noise[: self.grid_columns()])

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images for a batch of sample indices; a conditional model returns (images, classes)."""
        if not self.num_classes:
            return self.draw(len(batch))
        if self.predict_classes:
            # Sample i gets the (i mod k)-th requested class: any count is as balanced as it can be.
            classes = torch.tensor(list(self.predict_classes), device=self.device)
            labels = classes[batch.to(self.device) % len(classes)]
        else:
            labels = self.draw_classes(len(batch))
        return self.draw(len(batch), labels), labels
