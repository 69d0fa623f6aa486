"""Quality metrics on real digits (the offline MNIST sample): the numbers behave as documented."""

import socket

import pytest
import torch
from torch import nn

from shortgan.data import load_mnist_sample, to_unit_range
from shortgan.errors import UserError
from shortgan.evaluation import DomainQuality, SampleQuality, inception_fid_metric


class CentroidClassifier(nn.Module):
    """A training-free stand-in for DigitClassifier: 7×7 average-pooled pixels as features, logits
    that pick the nearest class mean (about 77% accurate on the sample)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        f = self.features(images)
        means = torch.stack([f[labels == c].mean(0) for c in range(10)])  # (10, 49)
        # argmax of 2·f·m − |m|² is the nearest mean.
        self.head = nn.Linear(49, 10)
        self.head.weight.data, self.head.bias.data = 2 * means, -means.square().sum(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x).flatten(1)  # (B, 49)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist_sample()
    x = to_unit_range(images)
    test = torch.arange(len(x)) % 5 == 4  # the data module's test split: 100 per class
    return dict(train=x[~test], train_labels=labels[~test], test=x[test], test_labels=labels[test])


@pytest.fixture(scope="module")
def classifier(digits):
    return CentroidClassifier(digits["train"], digits["train_labels"])


def quality(classifier, real, fake, **kwargs) -> dict[str, float]:
    metric = DomainQuality(classifier, **kwargs)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return {k: float(v) for k, v in metric.compute().items()}


def test_domain_fid_is_zero_for_the_same_set_and_large_for_noise(digits, classifier):
    real = digits["test"]
    same = quality(classifier, real, real)
    noise = quality(classifier, real, torch.rand_like(real) * 2 - 1)
    halves = quality(classifier, real[::2], real[1::2])
    assert abs(same["domain_fid"]) < 1e-3
    assert same["precision"] == same["recall"] == 1.0 and same["class_kl"] < 1e-6
    assert halves["domain_fid"] < 0.5
    assert noise["domain_fid"] > 20 * halves["domain_fid"]
    assert noise["precision"] < 0.05 and noise["recall"] < 0.05


def test_two_halves_of_real_data_have_high_precision_recall_and_full_coverage(digits, classifier):
    halves = quality(classifier, digits["test"][::2], digits["test"][1::2])
    assert halves["precision"] > 0.8 and halves["recall"] > 0.8
    assert halves["coverage"] == 10 and halves["class_kl"] < 0.05
    assert halves["classifier_score"] > 3


def test_a_generator_that_emits_one_digit_covers_one_class_and_has_no_recall(digits, classifier):
    collapsed = digits["test"][:1].expand(1000, -1, -1, -1)  # one real image, over and over
    numbers = quality(classifier, digits["test"], collapsed)
    assert numbers["coverage"] == 1
    assert numbers["recall"] == pytest.approx(1 / 1000)  # only the copied image itself lies in the fake manifold
    assert numbers["precision"] == 1.0  # it is a perfectly good digit
    assert numbers["classifier_score"] == pytest.approx(1.0)
    assert numbers["class_kl"] > 2


def test_a_generator_of_ones_only_scores_low_recall_and_high_class_kl(digits, classifier):
    ones = digits["train"][digits["train_labels"] == 1]  # 400 varied 1s
    numbers = quality(classifier, digits["test"], ones)
    halves = quality(classifier, digits["test"][::2], digits["test"][1::2])
    assert numbers["recall"] < 0.4 < halves["recall"]
    assert numbers["precision"] > 0.8
    assert numbers["class_kl"] > 0.5 > halves["class_kl"]
    assert numbers["classifier_score"] < 1.5


def test_real_features_survive_reset_unless_asked(digits, classifier):
    real, fake = digits["test"][:200], digits["test"][200:400]
    kept = DomainQuality(classifier)
    kept.update(real, real=True)
    kept.update(fake, real=False)
    first = kept.compute()["domain_fid"]
    kept.reset()
    kept.update(fake, real=False)  # no real images this time
    assert torch.allclose(kept.compute()["domain_fid"], first)

    forgetful = DomainQuality(classifier, reset_real_features=True)
    forgetful.update(real, real=True)
    forgetful.reset()
    assert len(forgetful.real_features) == 0


def test_state_is_gathered_across_processes(digits, classifier):
    """With two (simulated) processes holding the same images, compute() sees both copies."""
    real, fake = digits["test"][:300], digits["test"][300:600]
    two = DomainQuality(
        classifier, dist_sync_fn=lambda t, group=None: [t, t], distributed_available_fn=lambda: True
    )
    two.update(real, real=True)
    two.update(fake, real=False)
    one = DomainQuality(classifier)
    one.update(torch.cat([real, real]), real=True)
    one.update(torch.cat([fake, fake]), real=False)
    synced, single = two.compute(), one.compute()
    assert torch.allclose(synced["domain_fid"], single["domain_fid"])
    assert len(two.real_features) == 1  # local state is back after the sync


class StandInInception(nn.Module):
    """A small fixed network in place of InceptionV3: images (B, 3, 28, 28) in [0, 1] → (B, 48)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 3, 3), nn.AdaptiveAvgPool2d(4), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_inception_fid_path_with_a_stand_in_network(digits):
    quality = SampleQuality(inception_fid=True, inception_feature=StandInInception())
    real = digits["test"]
    quality.start("val", torch.device("cpu"))
    quality.update(real[::2], real[1::2])
    halves = float(quality.compute()["fid"])
    quality.start("val", torch.device("cpu"))  # real statistics are kept: only fakes go in
    assert not quality.collect_real
    quality.update(real[::2], torch.rand_like(real[1::2]) * 2 - 1)
    noise = float(quality.compute()["fid"])
    assert 0 <= halves < 0.1 * noise


def test_inception_fid_without_weights_or_network_warns_once_and_continues(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights

    def offline(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    with pytest.warns(UserWarning, match="val/fid is off.*inception_weights") as record:
        quality = SampleQuality(inception_fid=True)
    assert len([w for w in record if "val/fid" in str(w.message)]) == 1
    assert "fid" not in quality.metrics and not quality
    assert socket.getdefaulttimeout() is None  # the download timeout was put back


def test_a_missing_inception_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="inception_weights: no file at"):
        inception_fid_metric(str(tmp_path / "nope.pth"))


def test_a_missing_or_wrong_classifier_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="classifier_checkpoint: no file at"):
        SampleQuality(str(tmp_path / "nope.ckpt"))
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(UserError, match="holds no DigitClassifier weights"):
        SampleQuality(str(bogus))
