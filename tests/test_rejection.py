"""Discriminator rejection sampling (shortgan/rejection.py) and the GAN option that turns it on."""

import math

import pytest
import torch

from shortgan.errors import UserError
from shortgan.gan import GAN
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.rejection import rejection_sample


def uniform(k: int, y: torch.Tensor | None) -> torch.Tensor:
    """A "generator" of uniform numbers in [0, 1) (plus the class, if asked for one)."""
    x = torch.rand(k, 1)
    return x if y is None else x + y.unsqueeze(1).float()


def log_ratio(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    # What an optimal D would say if the data had density 2u on [0, 1): log(p_data / p_G) = log 2u.
    u = x[:, 0] if y is None else x[:, 0] - y.float()
    return torch.log(2 * u.clamp(min=1e-6))


def test_the_papers_rule_turns_the_generators_samples_into_the_datas():
    torch.manual_seed(0)
    kept, stats = rejection_sample(uniform, log_ratio, 4000, quantile=1.0)
    # Uniform samples have mean 1/2; kept with probability ∝ u they follow 2u, whose mean is 2/3.
    assert kept.mean().item() == pytest.approx(2 / 3, abs=0.015)
    assert stats["unfilled"] == 0 and stats["acceptance"] == pytest.approx(0.5, abs=0.05)


def test_a_lower_quantile_keeps_more():
    torch.manual_seed(0)
    kept, stats = rejection_sample(uniform, log_ratio, 4000, quantile=0.5)
    # Everything above the median (u > 1/2) is kept; below it, u / (1/2) of the time.
    assert stats["acceptance"] == pytest.approx(0.75, abs=0.05)
    assert 0.5 < kept.mean().item() < 2 / 3 - 0.03


def test_every_slot_keeps_its_class():
    torch.manual_seed(0)
    labels = torch.tensor([3, 0, 7, 7, 1] * 40)
    kept, _ = rejection_sample(uniform, log_ratio, len(labels), quantile=1.0, labels=labels)
    assert torch.equal(kept[:, 0].floor().long(), labels)
    assert (kept[:, 0] - labels).mean().item() == pytest.approx(2 / 3, abs=0.05)


def test_a_discriminator_that_rejects_everything_still_returns_n_samples():
    calls = []

    def hopeless(x, y):  # rates the calibration fakes 0, and every later candidate far below them
        calls.append(len(x))
        return torch.full((len(x),), 0.0 if len(calls) == 1 else -1e4)

    kept, stats = rejection_sample(uniform, hopeless, 10, quantile=1.0)
    assert kept.shape == (10, 1) and stats["unfilled"] == 10 and stats["acceptance"] == 0
    assert len(calls) == 1 + 50  # the calibration, then every round


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


def test_predict_draws_through_rejection():
    torch.manual_seed(0)
    model = tiny_gan(rejection_quantile=0.5)
    calls = []
    original = model.discriminator.forward
    model.discriminator.forward = lambda x, y=None: calls.append(len(x)) or original(x)
    images = model.predict_step(torch.arange(16), 0)
    assert images.shape == (16, 1, 28, 28) and calls  # D scored the candidates


@pytest.mark.parametrize("quantile", [-0.1, 1.5, math.nan])
def test_a_quantile_outside_0_1_is_a_user_error(quantile):
    with pytest.raises(UserError, match="rejection_quantile"):
        tiny_gan(rejection_quantile=quantile)


def test_the_metrics_and_the_comparison_judge_what_the_model_draws():
    # Validation and shortgan.compare both take their fakes from `draw`, so an option of how the model
    # samples (rejection here) is what they judge.
    from types import SimpleNamespace

    from shortgan.compare import TimedEvaluation, judge
    from shortgan.networks import DigitClassifier

    model, drawn = tiny_gan(rejection_quantile=0.5), []
    original = model.draw
    model.draw = lambda n, y=None, generator=None: drawn.append((n, generator)) or original(n, y, generator)

    model._evaluate, model._eval_left, model._eval_rng = True, 4, torch.Generator().manual_seed(0)
    judged = []
    model.quality = SimpleNamespace(update=lambda real, fake, labels: judged.append(fake))
    model._evaluation_step((torch.zeros(6, 1, 28, 28), torch.zeros(6, dtype=torch.long)))
    assert drawn == [(4, model._eval_rng)] and judged[0].shape == (4, 1, 28, 28)

    classifier = DigitClassifier(channels=4, feature_dim=16).eval()
    reals = torch.rand(20, 1, 28, 28) * 2 - 1
    evaluation = TimedEvaluation(classifier, reals, seconds=1, points=1, num_samples=20)
    evaluation.real, evaluation.batches = judge(classifier, reals), 0
    evaluation.evaluate(SimpleNamespace(current_epoch=0), model, 0.0)
    assert drawn[1][0] == 20 and isinstance(drawn[1][1], torch.Generator) and len(evaluation.rows) == 1
