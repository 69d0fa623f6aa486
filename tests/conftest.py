import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic, dims, then raw uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.fixture
def tiny_idx_root(tmp_path):
    """A data_dir with a tiny MNIST-format dataset (32 train, 16 test images) under MNIST/raw/, gzipped."""

    def make(name: str = "MNIST", compress: bool = True) -> Path:
        raw = tmp_path / name / "raw"
        raw.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 32), ("t10k", 16)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), compress)
        return tmp_path

    return make


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
