"""The domain classifier: trains through the same CLI, and its checkpoint drives the GAN's metrics."""

from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shortgan import Classifier, ImageDataModule
from shortgan.cli import cli_main
from shortgan.networks import DigitClassifier


def test_logged_accuracy_is_the_share_of_correct_labels(tiny_idx_root):
    data = ImageDataModule(dataset="mnist", data_dir=str(tiny_idx_root()), batch_size=8, download=False)
    model = Classifier(DigitClassifier(channels=4, feature_dim=8))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    images, labels = data.test_set.images, data.test_set.labels
    model.eval()
    with torch.no_grad():
        expected = (model(images).argmax(1) == labels).float().mean()
    assert trainer.callback_metrics["test/acc"] == pytest.approx(float(expected))
    assert torch.isfinite(trainer.callback_metrics["test/loss"])


@pytest.mark.parametrize("config", sorted(Path("configs").glob("classifier_*.yaml")), ids=lambda p: p.stem)
def test_classifier_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    assert "shortgan.networks.DigitClassifier" in capsys.readouterr().out


@pytest.mark.slow
def test_classifier_trains_on_the_offline_sample(classifier_checkpoint, tmp_path):
    cli = cli_main(["test", "--config", "configs/classifier_quickstart.yaml", "--ckpt_path", str(classifier_checkpoint),
                    "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert cli.trainer.callback_metrics["test/acc"] > 0.8


@pytest.mark.slow
def test_gan_logs_quality_at_the_configured_epochs_and_validate_reports_it(classifier_checkpoint, tmp_path):
    common = ["--config", "configs/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false",
              "--model.init_args.classifier_checkpoint", str(classifier_checkpoint),
              "--model.init_args.num_eval_samples", "300"]  # fmt: skip
    fit = cli_main(["fit", *common, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "3",
                    "--model.init_args.pretrain_epochs", "1", "--model.init_args.eval_every_n_epochs", "2",
                    "--checkpoint.monitor", "val/domain_fid", "--checkpoint.mode", "min",
                    "--checkpoint.every_n_epochs", "2", "--checkpoint.save_top_k", "1"])  # fmt: skip
    run = tmp_path / "quickstart" / "version_0"
    events = EventAccumulator(str(run))
    events.Reload()
    fids = events.Scalars("val/domain_fid")
    # Epochs 2 (every 2nd) and 3 (the last); not epoch 1, and not the sanity check.
    assert len(fids) == 2 and all(f.value > 0 for f in fids)
    for name in ("coverage", "class_kl", "classifier_score", "precision", "recall"):
        assert len(events.Scalars(f"val/{name}")) == 2
    # Checkpoints every 2 epochs (a multiple of eval_every_n_epochs) can monitor the domain FID.
    assert float(fit.trainer.checkpoint_callback.best_model_score) == pytest.approx(fids[0].value)

    best = fit.trainer.checkpoint_callback.best_model_path
    validate = cli_main(["validate", *common, "--ckpt_path", best])
    # The same generator and the same evaluation noise give the number logged at that epoch.
    assert float(validate.trainer.callback_metrics["val/domain_fid"]) == pytest.approx(fids[0].value, rel=1e-4)
    test = cli_main(["test", *common, "--ckpt_path", best])
    assert 1 <= float(test.trainer.callback_metrics["test/coverage"]) <= 10
