"""Callbacks for generator runs: progress grids, predicted samples, and no idle validation loops."""

import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torchvision.io import ImageReadMode, decode_png
from torchvision.utils import make_grid, save_image


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run: the logger's version folder, else the trainer's root folder.

    Under DDP this is a collective call (rank 0's folder is broadcast): every process must make it,
    so callbacks resolve it in `setup`, never inside a rank-zero-only hook.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def _grid(images: torch.Tensor, nrow: Optional[int] = None) -> torch.Tensor:
    # Images are in [-1, 1]; grids are in [0, 1].
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)


def _png(grid: torch.Tensor, gray: bool) -> bytes:
    """A grid (3, H, W) in [0, 1] as PNG bytes, one channel if `gray` (a third of the encoding time)."""
    pixels = grid[:1] if gray else grid
    pixels = pixels.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).squeeze(2).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class SampleGrids(Callback):
    """Each epoch, logs the fixed-noise samples to TensorBoard and saves them as a PNG; at the end of
    `fit`, writes `final.png` and `timeline.png` (one row of fixed-noise samples per saved epoch).

    Files go to `<run folder>/samples/`.

    Args:
        every_n_epochs: save a grid every this many epochs (the last epoch is always saved).
        timeline_rows: at most this many epochs, evenly spaced, in the timeline.
        timeline_columns: samples per timeline row.
    """

    def __init__(self, every_n_epochs: int = 1, timeline_rows: int = 12, timeline_columns: int = 16) -> None:
        self.every_n_epochs = every_n_epochs
        self.timeline_rows = timeline_rows
        self.timeline_columns = timeline_columns

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_dir(trainer) / "samples"

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "fixed_samples"):  # a Classifier run: nothing to draw
            return
        epoch = trainer.current_epoch
        # max_epochs is -1 (or None) for runs bounded by time: then no epoch is known to be the last.
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        samples = pl_module.fixed_samples()
        grid = _grid(samples, pl_module.grid_columns())  # conditional: a row per class
        # Encoded once, for the file and for TensorBoard (add_image would encode it again, in colour).
        png = _png(grid, gray=samples.size(1) == 1)
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"epoch_{epoch:04d}.png").write_bytes(png)
        image = Summary.Image(height=grid.size(1), width=grid.size(2), colorspace=1 if samples.size(1) == 1 else 3,
                              encoded_image_string=png)  # fmt: skip
        for logger in trainer.loggers:
            # Keyed on the epoch, not global_step: manual optimisation makes several steps a batch.
            writer = getattr(logger.experiment, "file_writer", None)  # a TensorBoard SummaryWriter's
            if hasattr(writer, "add_summary"):  # (fast_dev_run's dummy logger answers any name with a function)
                writer.add_summary(Summary(value=[Summary.Value(tag="samples/fixed_noise", image=image)]), epoch)
            elif hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image("samples/fixed_noise", grid, global_step=epoch)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "fixed_samples"):
            return
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        save_image(_grid(pl_module.fixed_samples(), pl_module.grid_columns()), folder / "final.png")
        epochs = sorted(folder.glob("epoch_*.png"))
        if epochs:
            self.write_timeline(epochs, folder / "timeline.png")

    def write_timeline(self, epoch_pngs: Sequence[Path], path: Path) -> None:
        """One row per epoch (evenly spaced, at most `timeline_rows`): the first fixed-noise samples."""
        picks = torch.linspace(0, len(epoch_pngs) - 1, min(self.timeline_rows, len(epoch_pngs))).round().long()
        rows = []
        for i in picks.unique().tolist():
            # RGB: grids of grayscale images are saved with one channel (and were with three before).
            png = torch.frombuffer(bytearray(epoch_pngs[i].read_bytes()), dtype=torch.uint8)
            grid = decode_png(png, ImageReadMode.RGB)
            rows.append(_first_cells(grid, self.timeline_columns))
        save_image(torch.cat(rows, dim=1).float() / 255, path)


class SkipIdleValidation(Callback):
    """Skips the validation loop after training epochs whose validation would compute nothing.

    `GAN` computes its metrics every `eval_every_n_epochs` epochs and after the last one, and never
    without a classifier checkpoint or Inception FID; on the other epochs its validation loop would
    only walk the loader (313 batches of MNIST's test split: ~70 ms on a 2-core CPU). A model
    without that schedule (no `evaluates_this_epoch`) validates as Lightning says. Checkpoints must then be
    saved at the training epoch's end (`save_on_train_epoch_end`), as the CLI does.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.limit = trainer.limit_val_batches

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluating = getattr(pl_module, "evaluates_this_epoch", None)
        if evaluating is not None:
            # Lightning runs no validation loop while limit_val_batches is 0 (Trainer.enable_validation).
            trainer.limit_val_batches = self.limit if evaluating() else 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.limit_val_batches = self.limit


def _first_cells(grid: torch.Tensor, count: int, cell: int = 30, pad: int = 2) -> torch.Tensor:
    """Cut the first `count` cells (left to right, top to bottom) out of a make_grid image (3, H, W)."""
    per_row = (grid.size(2) - pad) // cell
    cells = []
    for i in range(min(count, per_row * ((grid.size(1) - pad) // cell))):
        r, c = divmod(i, per_row)
        cells.append(grid[:, r * cell : r * cell + cell + pad, c * cell : c * cell + cell + pad])
    return torch.cat(cells, dim=2)


class SampleWriter(BasePredictionWriter):
    """Writes `predict` output: `samples.pt` (N×C×H×W floats in [-1, 1]), `samples.npz` (`x`: the
    same images as N×H×W×C uint8, the pixels of the PNGs, as FID tools read them), `grid.png` (the
    first 100) and `images/000000.png`, one PNG per sample. From a class-conditional model also
    `labels.pt` and `y` in the npz (N class indices, the class each sample was drawn for), and
    `grid.png` has one row per class (its first 10 samples).

    Args:
        output_dir: the folder to write into; by default `<run folder>/predictions`.
    """

    def __init__(self, output_dir: Optional[str] = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions"

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        if not trainer.is_global_zero:
            return
        labelled = isinstance(predictions[0], (tuple, list))
        samples = torch.cat([(p[0] if labelled else p).cpu() for p in predictions]).float()
        out = self.folder
        (out / "images").mkdir(parents=True, exist_ok=True)
        torch.save(samples, out / "samples.pt")
        # [-1, 1] → 0…255 as save_image rounds it for the PNGs below.
        pixels = ((samples + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
        arrays = {"x": pixels.permute(0, 2, 3, 1).numpy()}
        if labelled:
            labels = torch.cat([p[1].cpu() for p in predictions])
            torch.save(labels, out / "labels.pt")
            arrays["y"] = labels.numpy()
            rows = [samples[labels == c][:10] for c in dict.fromkeys(labels.tolist())]  # in the order asked
            rows = [torch.cat([r, torch.full((10 - len(r), *r.shape[1:]), -1.0)]) for r in rows]  # pad short rows
            save_image(_grid(torch.cat(rows), nrow=10), out / "grid.png")
        else:
            save_image(_grid(samples[:100]), out / "grid.png")
        np.savez_compressed(out / "samples.npz", **arrays)
        width = max(6, len(str(len(samples) - 1)))
        for i, image in enumerate(samples):
            save_image(image, out / "images" / f"{i:0{width}d}.png", normalize=True, value_range=(-1, 1))
