import json

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision.io import decode_png

from shortgan import GAN
from shortgan.compare import TimedEvaluation, main, sample_quality
from shortgan.judge import load_classifier
from shortgan.data import ImageDataModule, write_idx
from shortgan.errors import UserError
from shortgan.networks import DCGANDiscriminator, DigitClassifier, MLPGenerator

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")


def test_load_classifier_reads_a_state_dict_or_a_network_checkpoint_of_any_size(tmp_path):
    classifier = DigitClassifier(num_classes=5, channels=4, feature_dim=16).eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    torch.save(classifier.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {f"network.{k}": v for k, v in classifier.state_dict().items()}}, tmp_path / "lit.ckpt")
    for name in ("plain.pt", "lit.ckpt"):
        loaded = load_classifier(str(tmp_path / name))
        assert torch.equal(loaded(x), classifier(x))
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}}, tmp_path / "gan.ckpt")
    with pytest.raises(UserError, match="holds no DigitClassifier weights"):
        load_classifier(str(tmp_path / "gan.ckpt"))
    with pytest.raises(UserError, match="--classifier: no file at"):
        load_classifier(str(tmp_path / "missing.pt"), "--classifier")


def test_sample_quality_of_reals_against_themselves_is_perfect():
    features = torch.randn(200, 8)
    logits = F.one_hot(torch.arange(200) % 10, 10).float() * 30
    quality = sample_quality((features, logits), (features, logits))
    assert abs(quality["fid"]) < 1e-3
    assert quality["precision"] == quality["recall"] == 1.0
    assert quality["coverage"] == 10 and quality["class_kl"] < 1e-6
    assert quality["classifier_score"] == pytest.approx(10, rel=1e-3)


def test_timed_evaluation_evaluates_at_zero_and_stops_once_the_budget_is_spent(tmp_path):
    classifier = DigitClassifier(channels=4, feature_dim=16).eval()
    evaluation = TimedEvaluation(classifier, torch.rand(40, 1, 28, 28) * 2 - 1, seconds=0.5, points=2, num_samples=40)
    model = GAN(MLPGenerator(latent_dim=8, hidden_dims=(16,)), DCGANDiscriminator(channels=4), num_fixed_samples=4)
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    trainer = L.Trainer(
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[evaluation], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(images, torch.zeros(64)), batch_size=8))
    rows = evaluation.rows
    assert rows[0]["seconds"] == 0 and rows[0]["batches"] == 0
    assert rows[-1]["seconds"] >= 0.5 and 2 <= len(rows) <= 3
    assert all(r["batches"] > 0 for r in rows[1:]) and all(r["fid"] >= 0 for r in rows)


@pytest.fixture(scope="module")
def digit_classifier(tmp_path_factory):
    """A small DigitClassifier trained for one epoch on the offline MNIST sample (plain loop, seconds)."""
    data = ImageDataModule("mnist_sample")
    data.setup("fit")
    torch.manual_seed(0)
    classifier = DigitClassifier(channels=8, feature_dim=32)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    images, labels = data.train_set.images, data.train_set.labels
    for idx in torch.randperm(len(images)).split(100):
        loss = F.cross_entropy(classifier(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier.eval()
    with torch.no_grad():
        accuracy = (classifier(data.test_set.images).argmax(1) == data.test_set.labels).float().mean()
    assert accuracy > 0.8
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    torch.save(classifier.state_dict(), path)
    return path


@pytest.mark.slow
def test_compare_writes_table_plot_and_sample_grids(digit_classifier, tmp_path):
    main([
        "--configs", "configs/mlp_gan.yaml", "configs/mlp_bn_gan.yaml", "--seconds", "3", "--points", "2",
        "--num_samples", "200", "--classifier", str(digit_classifier), "--out", str(tmp_path), "--accelerator", "cpu",
    ])  # fmt: skip
    table = (tmp_path / "comparison.md").read_text()
    assert "| mlp_gan | `configs/mlp_gan.yaml` |" in table and "| mlp_bn_gan |" in table
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("mlp_gan", "mlp_bn_gan"):
        rows = results[name]["rows"]
        assert rows[0]["seconds"] == 0 and rows[-1]["seconds"] >= 3 and rows[-1]["batches"] > 0
        png = (tmp_path / "samples" / f"{name}.png").read_bytes()
        grid = decode_png(torch.frombuffer(bytearray(png), dtype=torch.uint8))
        assert grid.shape[1:] == (242, 242)  # 8×8 cells of 28 px + 2 px padding
        assert (tmp_path / "runs" / name / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "fid_vs_time.png").stat().st_size > 10_000


@pytest.mark.slow
def test_compare_trains_every_recipe_on_the_data_folder_it_is_given(digit_classifier, tmp_path):
    root = tmp_path / "elsewhere"  # a small MNIST under <root>/MNIST/raw/, nowhere else
    (root / "MNIST" / "raw").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 256), ("t10k", 16)):  # enough for two batches of the recipe's 100
        write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    main(["--configs", "configs/mlp_gan.yaml", "--seconds", "1", "--points", "1", "--num_samples", "16",
          "--dataset", "mnist", "--data_dir", str(root), "--classifier", str(digit_classifier),
          "--out", str(tmp_path / "out"), "--accelerator", "cpu"])  # fmt: skip
    config = (tmp_path / "out" / "runs" / "mlp_gan" / "version_0" / "config.yaml").read_text()
    assert f"data_dir: {root}" in config
    # The comparison judges the recipes itself: the runs compute no metrics of their own.
    assert "classifier_checkpoint: null" in config
