from pathlib import Path

import numpy as np
import pytest
import torch

from shortgan.cli import cli_main
from shortgan.data import write_idx
from shortgan.execution import has_cpp_compiler


# torch.compile's inductor builds C++ on a CPU. Without a compiler these tests skip, and the summary
# says so in a banner (pytest_terminal_summary): a green run without them has not tested the compiled path.
NO_COMPILER = "torch.compile on a CPU needs a C++ compiler (g++, c++ or clang++)"
# The same test `compile: auto` makes before it compiles on a CPU.
needs_compiler = pytest.mark.skipif(not has_cpp_compiler(), reason=NO_COMPILER)


def pytest_terminal_summary(terminalreporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if NO_COMPILER in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep(
            "!", f"THE COMPILED PATH WAS NOT TESTED: {len(skipped)} test(s) skipped, {NO_COMPILER}. Install g++ "
            "(Debian: apt-get install g++) and run them again", red=True, bold=True,
        )  # fmt: skip


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


@pytest.fixture
def forbid_host_reads(monkeypatch):
    """Call it to make every read of a tensor's value into Python fail from then on (to the test's end).

    On a GPU each such read (`bool(t)`, `t.item()`, `int(t)`…) makes the host wait for all queued work;
    on a CPU the same calls run, so the test sees them."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("a tensor's value was read back to the host")

    def forbid() -> None:
        for name in ("__bool__", "item", "__int__", "__float__", "__index__", "tolist"):
            monkeypatch.setattr(torch.Tensor, name, refuse)

    return forbid


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def classifier_checkpoint(tmp_path_factory) -> Path:
    """A small domain classifier trained on the offline MNIST sample (15 batches: enough to drive the metrics in tests)."""
    root = tmp_path_factory.mktemp("runs")
    cli_main(["fit", "--config", "configs/classifier_quickstart.yaml", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "15", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(root)])  # fmt: skip
    return root / "classifier_quickstart" / "version_0" / "checkpoints" / "best.ckpt"
