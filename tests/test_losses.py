import math

import torch

from shortgan import losses


def _logit_grad(loss_fn, logits):
    logits = logits.clone().requires_grad_(True)
    loss_fn(logits).backward()
    return logits.grad


def test_bce_of_undecided_discriminator_is_two_ln2():
    zeros = torch.zeros(8)
    assert torch.isclose(losses.discriminator_bce(zeros, zeros), torch.tensor(2 * math.log(2)))


def test_minimax_saturates_where_nonsaturating_does_not():
    """When D confidently rejects fakes (logit −10), minimax gives G ~no gradient, non-saturating ~1 per sample."""
    rejected = torch.full((4,), -10.0)
    minimax = _logit_grad(losses.generator_minimax, rejected).abs().sum()
    nonsat = _logit_grad(losses.generator_nonsaturating, rejected).abs().sum()
    assert minimax < 1e-4
    assert torch.isclose(nonsat, torch.tensor(1.0), atol=1e-3)
    # Both push the fakes' logits up (a negative gradient) and are minimised at the same point.
    assert (_logit_grad(losses.generator_minimax, torch.zeros(4)) < 0).all()


def test_minimax_is_log_one_minus_d():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    expected = torch.log(1 - torch.sigmoid(logits)).mean()
    assert torch.isclose(losses.generator_minimax(logits), expected, atol=1e-6)


def test_lsgan_minimum_at_the_targets():
    """D's loss is 0 with reals at 1 and fakes at 0; G's is 0 with fakes at 1, and both grow away from them."""
    ones, zeros = torch.ones(5), torch.zeros(5)
    assert losses.discriminator_lsgan(ones, zeros) == 0
    assert losses.generator_lsgan(ones) == 0
    assert losses.discriminator_lsgan(ones + 0.1, zeros) > 0
    assert losses.discriminator_lsgan(ones, zeros - 0.1) > 0
    assert torch.isclose(losses.generator_lsgan(zeros), torch.tensor(0.5))


def test_hinge_is_zero_beyond_the_margin_and_linear_inside():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0])
    assert losses.discriminator_hinge(real, fake) == 0
    # No gradient beyond the margin: confident samples stop contributing.
    scores = torch.tensor([2.0, 0.5], requires_grad=True)
    losses.discriminator_hinge(scores, torch.tensor([-2.0])).backward()
    assert scores.grad.tolist() == [0.0, -0.5]
    assert torch.isclose(losses.discriminator_hinge(torch.zeros(3), torch.zeros(3)), torch.tensor(2.0))


def test_wasserstein_losses_are_score_gaps():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    assert losses.discriminator_wasserstein(real, fake) == -3.0
    assert losses.generator_wasserstein(fake) == 0.0
    assert losses.generator_hinge(torch.tensor([1.0, 3.0])) == -2.0


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    """A linear critic w·x with ‖w‖ = 1 is 1-Lipschitz with unit gradient everywhere: penalty 0."""
    w = torch.randn(1, 4, 4)
    w = w / w.norm()
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    penalty = losses.gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    assert penalty.abs() < 1e-10


def test_gradient_penalty_grows_with_the_gradient_norm_and_reaches_the_weights():
    critic = torch.nn.Linear(16, 1)
    with torch.no_grad():
        critic.weight.fill_(0.0)
        critic.weight[0, 0] = 3.0  # gradient norm 3 → penalty (3 − 1)² = 4
    real, fake = torch.randn(5, 16), torch.randn(5, 16)
    penalty = losses.gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    assert torch.isclose(penalty, torch.tensor(4.0))
    penalty.backward()
    assert critic.weight.grad is not None and critic.weight.grad[0, 0] > 0


def test_each_loss_name_pairs_its_own_discriminator_and_generator_losses():
    """The tables configs choose from: a swapped entry would train the wrong game with finite losses."""
    # bce and minimax share D's BCE (discriminator_bce, which takes the label targets): not in the table.
    assert losses.DISCRIMINATOR == {
        "lsgan": losses.discriminator_lsgan,
        "wgan": losses.discriminator_wasserstein,
        "wgan_gp": losses.discriminator_wasserstein,  # the gradient penalty is added by the GAN
        "hinge": losses.discriminator_hinge,
    }
    assert losses.GENERATOR == {
        "bce": losses.generator_nonsaturating,
        "minimax": losses.generator_minimax,
        "lsgan": losses.generator_lsgan,
        "wgan": losses.generator_wasserstein,
        "wgan_gp": losses.generator_wasserstein,
        "hinge": losses.generator_hinge,  # −E[D(G(z))], the same function as WGAN's
    }


def test_mode_seeking_is_large_for_one_image_and_small_for_distinct_ones():
    z = torch.randn(8, 16)
    same = losses.mode_seeking(torch.zeros(8, 1, 4, 4), z)
    distinct = losses.mode_seeking(torch.randn(8, 1, 4, 4), z)
    assert same > 1e4 and distinct < 2  # mean|z1 − z2| ≈ 1.13, mean|x1 − x2| ≈ 1.13: a ratio near 1
    # Its gradient pushes the two images of a pair apart (first half against second half).
    fake = (0.01 * torch.randn(8, 1, 4, 4)).requires_grad_()
    losses.mode_seeking(fake, z).backward()
    h = fake.detach()[:4] - fake.detach()[4:]
    assert ((fake.grad[:4] - fake.grad[4:]) * h).sum() < 0  # descent increases |x1 − x2|
