import math

import pytest

from benchmarks import mnist_epochs


@pytest.mark.slow
def test_mnist_epochs_times_the_epochs_it_asks_for_on_a_stand_in(capsys):
    # 256 stand-in digits, loaded 2 × 32 at a time: 4 loaded batches = 8 iterations per epoch.
    result = mnist_epochs.main(["--accelerator", "cpu", "--epochs", "2", "--train_images", "256", "--batch_size", "32",
                                "--iterations_per_batch", "2", "--warmup", "2"])  # fmt: skip
    assert result["iterations"] == 2 * 8
    assert 0 < result["epoch_seconds"] < result["command_seconds"]
    assert math.isfinite(result["iterations_per_s"]) and result["iterations_per_s"] > 0
    out = capsys.readouterr().out
    assert "stand-in: 256 digits" in out and "| 2 | 16 (32) | 2 |" in out


@pytest.mark.slow
def test_mnist_epochs_uses_the_mnist_files_when_they_are_there(tiny_idx_root, capsys):
    root = tiny_idx_root("MNIST")  # 32 training images
    result = mnist_epochs.main(["--accelerator", "cpu", "--epochs", "1", "--batch_size", "16", "--warmup", "1",
                                "--data_dir", str(root)])  # fmt: skip
    assert result["iterations"] == 2
    assert "data: MNIST;" in capsys.readouterr().out


def test_the_stand_in_is_the_offline_sample_tiled(tmp_path):
    from shortgan.data import load_mnist_sample, load_torchvision

    mnist_epochs.stand_in_mnist(tmp_path, train_images=12_000, test_images=100)
    images, labels = load_torchvision("mnist", str(tmp_path), train=True, download=False)
    sample, sample_labels = load_mnist_sample()
    assert images.shape == (12_000, 28, 28)
    assert (images[5_000:10_000] == sample).all() and (labels[:5_000] == sample_labels).all()
    assert load_torchvision("mnist", str(tmp_path), train=False, download=False)[0].shape == (100, 28, 28)


@pytest.mark.slow
def test_epoch_cost_times_each_gap_between_epochs(capsys):
    from benchmarks import epoch_cost

    # 4 epochs: the gap after the first is shown apart, the other 2 give median and max. No domain
    # metrics (their classifier would be cached in data/).
    results = epoch_cost.main(["--epochs", "4", "--batches", "1", "--no-breakdown",
                               "--set", "--model.init_args.classifier_checkpoint", "null"])  # fmt: skip
    row = results["as configured"]
    assert row["epochs"] == 2 and 0 < row["median_ms"] <= row["max_ms"]
    assert "| as configured | 2 |" in capsys.readouterr().out


@pytest.mark.slow
def test_lightning_overhead_runs_a_conditional_dataset_config_and_says_what_ran_on_each_side(tiny_idx_root, capsys):
    from benchmarks import lightning_overhead

    root = tiny_idx_root("KMNIST")  # 32 training images: one batch of kmnist.yaml's 32 an epoch
    results = lightning_overhead.main(["--config", "configs/kmnist.yaml", "--data_dir", str(root), "--paths", "eager",
                                       "--batches", "3", "--warmup", "1", "--repeats", "1"])  # fmt: skip
    assert results["eager"]["plain"] > 0 and results["eager"]["lightning"] > 0
    out = capsys.readouterr().out
    assert "| eager | plain PyTorch |" in out and "adversarial_iteration through PlainUpdates" in out
    assert "| eager | Lightning |" in out and "compile: off → " in out
