import pytest
import torch
from torch import nn

from shortgan.networks import MinibatchStdDev, ShortGANDiscriminator, ShortGANGenerator


def _has_spectral_norm(module: nn.Module) -> bool:
    return any(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in module.modules())


def test_generator_maps_noise_to_images_in_tanh_range():
    g = ShortGANGenerator()
    x = g(torch.randn(8, 128))
    assert x.shape == (8, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1


def test_generator_follows_the_recipe_layout():
    """Linear → 1×16×16 map → Conv2d+BatchNorm2d → ConvTranspose2d → Linear, with spectral norm."""
    g = ShortGANGenerator(spectral_norm=True)
    kinds = [type(m) for m in g.modules()]
    assert nn.Conv2d in kinds and nn.BatchNorm2d in kinds and nn.ConvTranspose2d in kinds
    assert g.project.in_features == 128 and g.project.out_features == 256
    assert g.convs[0].in_channels == 1  # the single-channel 16×16 map
    assert _has_spectral_norm(g)
    assert not _has_spectral_norm(ShortGANGenerator(spectral_norm=False))


def test_generator_rejects_a_non_square_hidden_size():
    with pytest.raises(ValueError, match="perfect square"):
        ShortGANGenerator(hidden_dim=200)


@pytest.mark.parametrize("minibatch_std", [True, False])
def test_discriminator_returns_one_logit_per_image_with_spectral_norm(minibatch_std):
    d = ShortGANDiscriminator(minibatch_std=minibatch_std)
    logits = d(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5,)
    assert _has_spectral_norm(d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())


@pytest.mark.parametrize("minibatch_std", [True, False])
def test_minibatch_std_makes_an_image_s_logit_depend_on_the_rest_of_its_batch_only_when_on(minibatch_std):
    d = ShortGANDiscriminator(minibatch_std=minibatch_std).eval()  # eval: spectral norm's vectors stay put
    assert any(isinstance(m, MinibatchStdDev) for m in d.modules()) == minibatch_std
    image, others = torch.randn(1, 1, 28, 28), torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        among_others = d(torch.cat([image, others]))[0]
        among_copies = d(image.repeat(5, 1, 1, 1))[0]  # a batch without spread, as from a collapsed G
    assert torch.isclose(among_others, among_copies, rtol=0, atol=1e-5) != minibatch_std


@pytest.mark.parametrize("by_class", [True, False])
def test_a_conditional_d_can_take_the_spread_within_each_class(by_class):
    d = ShortGANDiscriminator(num_classes=3, minibatch_std_by_class=by_class).eval()
    images, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        before = d(images, y)
        other_class = images.clone()
        other_class[2:] = torch.randn(4, 1, 28, 28)  # images of classes 1 and 2 change
        after = d(other_class, y)
    # By class, image 0's logit depends on its own class's images only; over the batch, on all.
    assert torch.isclose(before[0], after[0], rtol=0, atol=1e-6) == by_class
    assert not torch.isclose(before[2], after[2], rtol=0, atol=1e-6)


def test_the_spread_within_a_class_is_zero_for_a_class_drawn_as_one_image():
    h, y = torch.randn(6, 3, 5, 5), torch.tensor([0, 0, 0, 1, 1, 1])
    h[:3] = h[0]  # class 0: one image three times; class 1: three different ones
    spread = MinibatchStdDev(num_classes=2)(h, y)[:, -1, 0, 0]
    assert spread[:3].max() < 1e-3 and spread[3:].min() > 0.5


def test_by_class_needs_a_conditional_d_with_the_minibatch_std():
    with pytest.raises(ValueError, match="minibatch_std_by_class"):
        ShortGANDiscriminator(minibatch_std_by_class=True)
    with pytest.raises(ValueError, match="minibatch_std_by_class"):
        ShortGANDiscriminator(num_classes=3, minibatch_std=False, minibatch_std_by_class=True)


def test_minibatch_std_is_zero_for_identical_images_and_positive_otherwise():
    same = torch.ones(4, 3, 5, 5)
    assert MinibatchStdDev()(same)[:, -1].abs().max() == 0
    assert MinibatchStdDev()(torch.randn(4, 3, 5, 5))[:, -1].min() > 0


def test_generator_output_depends_on_the_noise():
    g = ShortGANGenerator().eval()
    x = g(torch.randn(16, 128))
    assert torch.cdist(x.flatten(1), x.flatten(1)).fill_diagonal_(1).min() > 0
