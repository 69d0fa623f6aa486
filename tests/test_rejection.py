"""Discriminator rejection sampling (shortgan/rejection.py) and the GAN option that turns it on."""

import math

import pytest
import torch

from shortgan.errors import UserError
from shortgan.gan import GAN
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.rejection import CALIBRATION_SAMPLES, calibrate, rejection_sample


def uniform(k: int, y: torch.Tensor | None) -> torch.Tensor:
    """A "generator" of uniform numbers in [0, 1) (plus the class, if asked for one)."""
    x = torch.rand(k, 1)
    return x if y is None else x + y.unsqueeze(1).float()


def log_ratio(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    # What an optimal D would say if the data had density 2u on [0, 1): log(p_data / p_G) = log 2u.
    u = x[:, 0] if y is None else x[:, 0] - y.float()
    return torch.log(2 * u.clamp(min=1e-6))


def cutoff(quantile: float, labels: torch.Tensor | None = None) -> torch.Tensor:
    y = None if labels is None else labels.repeat(-(-CALIBRATION_SAMPLES // len(labels)))[:CALIBRATION_SAMPLES]
    return calibrate(log_ratio(uniform(CALIBRATION_SAMPLES, y), y), quantile)


def test_the_papers_rule_turns_the_generators_samples_into_the_datas():
    torch.manual_seed(0)
    kept, stats = rejection_sample(uniform, log_ratio, 4000, cutoff(1.0))
    # Uniform samples have mean 1/2; kept with probability ∝ u they follow 2u, whose mean is 2/3.
    assert kept.mean().item() == pytest.approx(2 / 3, abs=0.015)
    assert stats["unfilled"] == 0 and stats["acceptance"] == pytest.approx(0.5, abs=0.05)


def test_a_lower_quantile_keeps_more():
    torch.manual_seed(0)
    kept, stats = rejection_sample(uniform, log_ratio, 4000, cutoff(0.5))
    # Everything above the median (u > 1/2) is kept; below it, u / (1/2) of the time.
    assert stats["acceptance"] == pytest.approx(0.75, abs=0.05)
    assert 0.5 < kept.mean().item() < 2 / 3 - 0.03


def test_every_slot_keeps_its_class():
    torch.manual_seed(0)
    labels = torch.tensor([3, 0, 7, 7, 1] * 40)
    kept, _ = rejection_sample(uniform, log_ratio, len(labels), cutoff(1.0, labels), labels=labels)
    assert torch.equal(kept[:, 0].floor().long(), labels)
    assert (kept[:, 0] - labels).mean().item() == pytest.approx(2 / 3, abs=0.05)


def test_a_discriminator_that_rejects_everything_still_returns_n_samples():
    calls = []

    def hopeless(x, y):  # rates every candidate far below the cut-off
        calls.append(len(x))
        return torch.full((len(x),), -1e4)

    kept, stats = rejection_sample(uniform, hopeless, 10, torch.tensor(0.0))
    assert kept.shape == (10, 1) and stats["unfilled"] == 10 and stats["acceptance"] == 0
    assert len(calls) == 50  # every round


def test_no_samples_asked_is_no_samples():
    kept, stats = rejection_sample(uniform, log_ratio, 0, torch.tensor(0.0))
    assert kept.shape == (0, 1) and stats["unfilled"] == 0


def tiny_gan(**kwargs) -> GAN:
    return GAN(ShortGANGenerator(channels=4), ShortGANDiscriminator(channels=8), classifier_checkpoint=None, **kwargs)


def test_the_option_makes_draw_keep_what_d_rates_highly():
    torch.manual_seed(0)
    plain, choosy, modes = tiny_gan(), tiny_gan(rejection_quantile=0.5), []
    choosy.load_state_dict(plain.state_dict())
    # A stand-in D that rates an image by its mean brightness, steeply: only bright fakes pass.
    for model in (plain, choosy):
        model.discriminator.forward = lambda x, y=None, d=model.discriminator: (
            modes.append(d.training) or 1e5 * x.flatten(1).mean(1)  # means differ by ~1e-4
        )
    median = plain.draw(2000).flatten(1).mean(1).median()
    assert (plain.draw(500).flatten(1).mean(1) > median).float().mean() == pytest.approx(0.5, abs=0.08)
    assert (choosy.draw(500).flatten(1).mean(1) > median).float().mean() > 0.9
    assert modes and not any(modes)  # D scored every candidate in eval mode (DCGAN's D has BatchNorm)
    assert choosy.discriminator.training  # and was put back


def brightness_judged(model: GAN, calls: list | None = None) -> GAN:
    """`model` with a stand-in D that rates an image by its mean brightness, steeply (means differ by ~1e-4),
    recording the classes it is given."""
    model.discriminator.forward = lambda x, y=None: (calls.append(y if y is not None else x) if calls is not None
                                                     else None) or 1e5 * x.flatten(1).mean(1)  # fmt: skip
    return model


def test_predict_draws_through_rejection():
    torch.manual_seed(0)
    plain = tiny_gan()
    choosy = brightness_judged(tiny_gan(rejection_quantile=0.5))
    choosy.load_state_dict(plain.state_dict())
    median = plain.draw(2000).flatten(1).mean(1).median()
    images = choosy.predict_step(torch.arange(300), 0)
    assert images.shape == (300, 1, 28, 28)
    assert (images.flatten(1).mean(1) > median).float().mean() > 0.9  # what D rated highly, not plain samples


def test_a_conditional_model_keeps_every_requested_class_and_calibrates_on_its_class_mix():
    torch.manual_seed(0)
    model = GAN(ShortGANGenerator(channels=4, num_classes=10), ShortGANDiscriminator(channels=8, num_classes=10),
                classifier_checkpoint=None, rejection_quantile=0.5)  # fmt: skip
    with torch.no_grad():
        model.class_frequencies.zero_()
        model.class_frequencies[[2, 6]] = 0.5
    calls = []
    brightness_judged(model, calls)
    asked = torch.tensor([1, 1, 9, 4] * 10)
    given = []
    forward = model.generator.forward
    model.generator.forward = lambda z, y: given.append(y) or forward(z, y)
    model.draw(len(asked), asked)
    assert set(calls[0].tolist()) == {2, 6} and len(calls[0]) == CALIBRATION_SAMPLES  # the calibration's classes
    # Every later candidate was drawn, and scored, for its slot's class.
    assert all(set(y.tolist()) <= {1, 4, 9} for y in given[1:]) and all(torch.equal(a, b) for a, b in zip(given[1:], calls[1:]))


def test_the_cut_off_is_calibrated_once_per_state_of_the_networks():
    model = brightness_judged(tiny_gan(rejection_quantile=0.9), calls := [])
    first = model.draw(64, generator=torch.Generator().manual_seed(1))
    sizes = [len(x) for x in calls]
    calls.clear()
    again = model.draw(64, generator=torch.Generator().manual_seed(1))
    assert CALIBRATION_SAMPLES in sizes and CALIBRATION_SAMPLES not in [len(x) for x in calls]
    assert torch.equal(first, again)  # the same cut-off and noise: the same samples
    model._rejection_cutoff = (model._rejection_cutoff[0] - 1, model._rejection_cutoff[1])  # as after a step
    calls.clear()
    model.draw(8)
    assert len(calls[0]) == CALIBRATION_SAMPLES


@pytest.mark.parametrize("loss", ["hinge", "wgan_gp", "lsgan"])
def test_rejection_is_refused_where_d_s_logits_are_not_log_density_ratios(loss):
    with pytest.raises(UserError, match="only a D trained with loss bce or minimax"):
        tiny_gan(rejection_quantile=0.9, loss=loss)


@pytest.mark.parametrize("quantile", [-0.1, 1.5, math.nan])
def test_a_quantile_outside_0_1_is_a_user_error(quantile):
    with pytest.raises(UserError, match="rejection_quantile"):
        tiny_gan(rejection_quantile=quantile)


def test_the_metrics_and_the_comparison_judge_what_the_model_draws(monkeypatch):
    # Validation and shortgan.compare both take their fakes from `draw`, so an option of how the model
    # samples (rejection here) is what they judge: the very images it returned, no others.
    from types import SimpleNamespace

    from shortgan import compare
    from shortgan.networks import DigitClassifier

    model, drawn = tiny_gan(rejection_quantile=0.5), []
    original = model.draw

    def draw(n, y=None, generator=None):
        drawn.append((n, generator, original(n, y, generator)))
        return drawn[-1][2]

    model.draw = draw
    model._evaluate, model._eval_left, model._eval_rng = True, 4, torch.Generator().manual_seed(0)
    judged = []
    model.quality = SimpleNamespace(update=lambda real, fake, *labels: judged.append(fake))
    model._evaluation_step((torch.zeros(6, 1, 28, 28), torch.zeros(6, dtype=torch.long)))
    assert [(n, g) for n, g, _ in drawn] == [(4, model._eval_rng)]
    assert len(judged) == 1 and torch.equal(judged[0], drawn[0][2])

    classifier = DigitClassifier(channels=4, feature_dim=16).eval()
    reals = torch.rand(20, 1, 28, 28) * 2 - 1
    evaluation = compare.TimedEvaluation(classifier, reals, seconds=1, points=1, num_samples=20)
    evaluation.real, evaluation.batches = compare.judge(classifier, reals), 0
    judge, judged = compare.judge, []
    monkeypatch.setattr(compare, "judge", lambda net, images: judged.append(images) or judge(net, images))
    evaluation.evaluate(SimpleNamespace(current_epoch=0), model, 0.0)
    assert drawn[1][0] == 20 and isinstance(drawn[1][1], torch.Generator) and len(evaluation.rows) == 1
    assert len(judged) == 1 and torch.equal(judged[0], drawn[1][2])
