"""The domain classifier behind val/domain_fid: trained once per dataset on first use, cached beside
the data, so a GAN run logs FID with no extra command; loaded from any classifier checkpoint."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shortgan import judge
from shortgan.cli import cli_main
from shortgan.errors import UserError
from shortgan.evaluation import inception_weights_present
from shortgan.judge import cached_classifier, load_classifier, train_classifier


def labelled(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g)


def test_the_classifier_is_trained_once_per_dataset_and_then_loaded(tmp_path, monkeypatch):
    data = labelled(64, seed=0)
    first = cached_classifier(tmp_path, "toy", data, data)
    assert [p.name.startswith("toy-") for p in tmp_path.iterdir()] == [True]

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(judge, "train_classifier", refuse)
    again = cached_classifier(tmp_path, "toy", data)
    x = data[0][:4]
    assert torch.equal(first(x), again(x))
    # Other data (a stand-in, another sample) under the same name is not judged by it.
    with pytest.raises(AssertionError, match="trained again"):
        cached_classifier(tmp_path, "toy", labelled(64, seed=1))
    # While the first process trains it, the others find none and wait (DDP).
    assert cached_classifier(tmp_path, "other", labelled(64, seed=2), train_here=False) is None


def test_training_the_classifier_leaves_the_caller_s_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    classifier = train_classifier(*labelled(64, seed=0), epochs=1)
    assert torch.equal(torch.rand(3), expected)
    assert not classifier.training


def test_it_learns_the_labels():
    # Two classes a classifier can tell apart: bright and dark images.
    images = torch.cat([torch.full((64, 1, 28, 28), 0.8), torch.full((64, 1, 28, 28), -0.8)]) + 0.1 * torch.randn(128, 1, 28, 28)
    labels = torch.cat([torch.zeros(64), torch.ones(64)]).long()
    assert judge.accuracy(train_classifier(images, labels, epochs=5), images, labels) == 1.0


def test_a_damaged_classifier_file_ends_in_one_clear_error(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="model.classifier_checkpoint: .* is not a readable checkpoint"):
        load_classifier(str(path))


def test_inception_weights_are_found_where_torch_fidelity_leaves_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert not inception_weights_present()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"")
    assert inception_weights_present()
    assert not inception_weights_present(str(tmp_path / "elsewhere.pth"))


@pytest.mark.slow
def test_a_gan_run_logs_domain_fid_to_tensorboard_out_of_the_box(tiny_idx_root, tmp_path):
    root = tiny_idx_root()
    args = ["fit", "--config", "configs/mnist.yaml", "--data.init_args.data_dir", str(root),
            "--data.init_args.download", "false", "--data.init_args.batch_size", "16",
            "--trainer.max_epochs", "2", "--model.init_args.pretrain_epochs", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs")]  # fmt: skip
    cli_main(args)
    assert [p.name.startswith("mnist-") for p in (root / "classifiers").iterdir()] == [True]
    events = EventAccumulator(str(tmp_path / "runs" / "mnist" / "version_0")).Reload()
    tags = events.Tags()["scalars"]
    for name in ("val/domain_fid", "val/precision", "val/recall", "val/coverage"):
        assert name in tags, name
    # The switch to turn it off.
    cli_main([*args, "--model.init_args.classifier_checkpoint", "null"])
    events = EventAccumulator(str(tmp_path / "runs" / "mnist" / "version_1")).Reload()
    assert "val/domain_fid" not in events.Tags()["scalars"]


def test_a_data_folder_it_cannot_write_to_still_gets_its_classifier(tmp_path):
    # Root may write into read-only folders; a path through a file fails for anyone.
    blocked = tmp_path / "a_file"
    blocked.write_bytes(b"")
    with pytest.warns(UserWarning, match="Could not cache the domain classifier"):
        classifier = cached_classifier(blocked / "classifiers", "toy", labelled(32, seed=0))
    assert classifier is not None and blocked.is_file()
