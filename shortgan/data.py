"""Datasets of 28×28 grayscale characters, held in memory as tensors in [-1, 1]."""

import gzip
import importlib.resources
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

from shortgan.errors import UserError
from shortgan.image_files import array_labels, convert, folder_layout, held_out, load_arrays, load_folder

DatasetName = Literal[
    "mnist", "kmnist", "fashion_mnist", "mnist_sample", "emnist_letters", "emnist_balanced", "qmnist", "folder", "arrays"
]


@dataclass(frozen=True)
class Builtin:
    """A torchvision dataset as ShortGAN reads it from `<data_dir>/<folder>/raw/`."""

    cls: type
    files: tuple[str, ...]  # the raw files torchvision reads (each may also be there as .gz)
    num_classes: int
    kwargs: Callable[[bool], dict] = lambda train: {"train": train}
    # EMNIST stores each character transposed, and its letters as classes 1–26.
    transposed: bool = False
    first_class: int = 0

    @property
    def folder(self) -> str:
        return self.cls.__name__


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _emnist(split: str, num_classes: int, first_class: int) -> Builtin:
    files = tuple(f"emnist-{split}-{part}" for part in
                  ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "test-images-idx3-ubyte", "test-labels-idx1-ubyte"))  # fmt: skip
    return Builtin(datasets.EMNIST, files, num_classes, lambda train: {"split": split, "train": train}, True, first_class)


BUILTIN = {
    "mnist": Builtin(datasets.MNIST, _MNIST_FILES, 10),
    "kmnist": Builtin(datasets.KMNIST, _MNIST_FILES, 10),
    "fashion_mnist": Builtin(datasets.FashionMNIST, _MNIST_FILES, 10),
    "emnist_letters": _emnist("letters", 26, 1),
    "emnist_balanced": _emnist("balanced", 47, 0),
    # The test split is QMNIST's first 10,000 test digits: MNIST's own test set, reconstructed.
    "qmnist": Builtin(
        datasets.QMNIST,
        ("qmnist-train-images-idx3-ubyte", "qmnist-train-labels-idx2-int", "qmnist-test-images-idx3-ubyte",
         "qmnist-test-labels-idx2-int"),
        10,
        lambda train: {"what": "train" if train else "test10k"},
    ),  # fmt: skip
}
# The offline sample is sorted by label: every 5th digit goes to the test split, 100 per class.
_SAMPLE_TEST_EVERY = 5
_SAMPLE_FILE = "resources/mnist_sample.npz"


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
    """uint8 pixels (N, H, W) or (N, C, H, W) → float (N, C, H, W) in [-1, 1], matching the generator's Tanh."""
    x = pixels.float().div(127.5) - 1.0
    return x.unsqueeze(1) if x.ndim == 3 else x


def load_mnist_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits shipped in the package: uint8 images (N, 28, 28) and labels (N,)."""
    with importlib.resources.as_file(importlib.resources.files("shortgan") / _SAMPLE_FILE) as path:
        arrays = np.load(path)
        return torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"].astype(np.int64))


def write_idx(path: Path, array: np.ndarray, compress: bool = False, int32: bool = False) -> None:
    """Write an IDX file (the MNIST format: magic, dims, then raw uint8 data, or big-endian int32 as in
    QMNIST's label files); `compress` adds .gz."""
    code, dtype = (0x0C, ">i4") if int32 else (0x08, np.uint8)
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(dtype).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _raw_dir(name: str, data_dir: str) -> Path:
    return Path(data_dir) / BUILTIN[name].folder / "raw"


def _unpack_gz(name: str, raw_dir: Path) -> None:
    # torchvision reads only uncompressed files, and re-downloads when only .gz files are there.
    for file in BUILTIN[name].files:
        plain, packed = raw_dir / file, raw_dir / f"{file}.gz"
        if not plain.exists() and packed.exists():
            with gzip.open(packed, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)


def has_raw_files(name: str, data_dir: str) -> bool:
    """Whether `<data_dir>/<Class>/raw/` holds the dataset's raw files (plain, or .gz: unpacked then)."""
    raw_dir = _raw_dir(name, data_dir)
    _unpack_gz(name, raw_dir)
    return all((raw_dir / f).exists() for f in BUILTIN[name].files)


def load_torchvision(name: str, data_dir: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision dataset's uint8 images (N, 28, 28), upright, and class indices from 0, read from
    `<data_dir>/<Class>/raw/` or downloaded there."""
    spec = BUILTIN[name]
    raw_dir = _raw_dir(name, data_dir)
    have_files = has_raw_files(name, data_dir)
    try:
        ds = spec.cls(data_dir, download=download and not have_files, **spec.kwargs(train))
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError… depending on what failed
        if have_files:
            raise UserError(
                f"The {name} files in {raw_dir}/ could not be read ({_first_line(err)}): they are truncated or "
                f"not IDX files. Replace them, or delete them to download them again."
            ) from err
        needed = ", ".join(f"{f}.gz" for f in spec.files)
        raise UserError(
            f"The {name} dataset is not in {raw_dir}/ and could not be downloaded ({_first_line(err)}). "
            f"Put the files {needed} (plain or .gz) in {raw_dir}/, or use --data.dataset mnist_sample "
            f"for the offline sample."
        ) from err
    images, labels = ds.data, ds.targets
    if labels.ndim == 2:  # QMNIST's targets carry extra columns (writer, index…); the class is the first
        labels = labels[:, 0]
    if spec.transposed:
        images = images.transpose(1, 2)
    return images.contiguous(), labels.long() - spec.first_class


def dataset_classes(dataset: str, data_dir: str) -> int:
    """How many classes the dataset's labels name: 0 for unlabelled images (a flat folder, arrays without y)."""
    if dataset in BUILTIN:
        return BUILTIN[dataset].num_classes
    if dataset == "mnist_sample":
        return 10
    if dataset == "folder":
        return len(folder_layout(Path(data_dir))[0])
    labels = array_labels(data_dir)
    return 0 if labels is None or not len(labels) else int(labels.max()) + 1


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


class ImageDataModule(L.LightningDataModule):
    """Character datasets, or your own images, as in-memory tensors in [-1, 1].

    Training batches are (images (B, C, H, W), labels (B,)). Validation and test use the dataset's
    test split. Prediction batches are just sample indices: the model draws the noise.

    Args:
        dataset: which dataset. `mnist_sample` is 5,000 real MNIST digits shipped with ShortGAN (4,000
            train, 1,000 test); `emnist_letters` (26 classes), `emnist_balanced` (47) and `qmnist` come
            from torchvision like mnist, kmnist and fashion_mnist. Your own: `folder` (a folder of
            image files; class subfolders give the labels, sorted by name, numeric names as numbers) or
            `arrays` (an .npz with `x`: (N, H, W[, C]) uint8, and optionally `y`: the classes).
        data_dir: where torchvision datasets live (`<data_dir>/<Name>/raw/` holds the raw files); for
            `folder`, the folder of images; for `arrays`, the .npz file.
        batch_size: images per training batch.
        num_workers: DataLoader worker processes; 0 is fastest for in-memory data.
        download: try to download a missing dataset.
        num_samples: how many images `predict` generates.
        on_device: keep the images on the training device (all of MNIST is 188 MB as float32), so
            a batch is one indexing kernel there instead of a host-to-device copy every step. For
            GPUs, where a small GAN's step is shorter than that copy; needs `num_workers: 0`.
        image_shape: (C, H, W) the images are converted to: 1 (grayscale) or 3 (RGB) channels, resized
            to H×W. The command line gives the GAN's networks this shape and the data's number of classes.
        test_fraction: `folder` and `arrays`: the share of each class held out for the metrics (every
            k-th image in file order, k = 1 / test_fraction; the same split every run).
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
        image_shape: tuple[int, int, int] = (1, 28, 28),
        test_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, got {batch_size}")
        if on_device and num_workers > 0:
            raise UserError("data.on_device needs data.num_workers: 0 (worker processes cannot index device memory)")
        if not 0 < test_fraction <= 0.5:
            raise UserError(f"data.test_fraction must be in (0, 0.5], got {test_fraction}")
        self.save_hyperparameters()
        self.train_set: Optional[InMemoryImages] = None
        self.test_set: Optional[InMemoryImages] = None
        self._own: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def num_classes(self) -> int:
        """How many classes the labels name; 0 for unlabelled images (a flat folder, arrays without y)."""
        return dataset_classes(self.hparams.dataset, self.hparams.data_dir)

    @property
    def classifier_dir(self) -> Path:
        """Where the automatic domain classifier is cached: `<data_dir>/classifiers/`, or beside your
        own folder or .npz (never inside a folder of images)."""
        if self.hparams.dataset in ("folder", "arrays"):
            return Path(self.hparams.data_dir).resolve().parent / "classifiers"
        return Path(self.hparams.data_dir, "classifiers")

    def _own_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        # A folder is read once (decoding thousands of files takes seconds), then split in memory.
        if self._own is None:
            hp, shape = self.hparams, tuple(self.hparams.image_shape)
            if hp.dataset == "folder":
                images, labels, _ = load_folder(hp.data_dir, shape)
            else:
                images, labels = load_arrays(hp.data_dir, shape)
                labels = torch.zeros(len(images), dtype=torch.int64) if labels is None else labels
            if len(images) < 2:
                raise UserError(f"--data.data_dir {hp.data_dir}: one image is not a dataset (training and held-out "
                                f"images are needed); add more")  # fmt: skip
            self._own = images, labels
        return self._own

    def load_split(self, train: bool) -> InMemoryImages:
        """The training or test split, loaded from disk (images in [-1, 1], labels)."""
        hp = self.hparams
        if hp.dataset in ("folder", "arrays"):
            images, labels = self._own_images()
            keep = ~held_out(labels, hp.test_fraction) if train else held_out(labels, hp.test_fraction)
            # A fixed shuffle: files come sorted by class, and validation judges the first
            # num_eval_samples held-out images, which must hold every class.
            order = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(0))
            images, labels = images[keep][order], labels[keep][order]
        elif hp.dataset == "mnist_sample":
            images, labels = load_mnist_sample()
            is_test = torch.arange(len(images)) % _SAMPLE_TEST_EVERY == _SAMPLE_TEST_EVERY - 1
            keep = ~is_test if train else is_test
            images, labels = images[keep], labels[keep]
        else:
            images, labels = load_torchvision(hp.dataset, hp.data_dir, train, hp.download)
        if images.ndim == 3:
            images = images.unsqueeze(1)  # (N, 1, H, W)
        images = convert(images, tuple(hp.image_shape), hp.dataset)
        return InMemoryImages(to_unit_range(images), labels)

    def prepare_data(self) -> None:
        # Runs once per node before setup(): the place to download.
        if self.hparams.dataset in BUILTIN:
            load_torchvision(self.hparams.dataset, self.hparams.data_dir, True, self.hparams.download)
            load_torchvision(self.hparams.dataset, self.hparams.data_dir, False, self.hparams.download)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self.load_split(train=True)
            if len(self.train_set) < self.hparams.batch_size:
                raise UserError(
                    f"The training split has {len(self.train_set)} images, fewer than one batch "
                    f"(data.batch_size {self.hparams.batch_size}): lower --data.batch_size or add images."
                )
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
