"""Differentiable augmentation of what D sees (DiffAugment)."""

import torch

from shortgan.augment import augment, cutout, translation
from test_gan import RecordingDiscriminator, fit, small_gan


def test_translation_shifts_whole_images_and_fills_with_background():
    images = torch.full((64, 1, 28, 28), -1.0)
    images[:, :, 10:18, 10:18] = 1.0  # a bright square in the middle of each image
    torch.manual_seed(0)
    moved = translation(images)
    assert moved.shape == images.shape
    # The square moves (by at most 4 pixels each way, 1/8 of 28) but keeps its size: only shifted, never cut.
    assert (moved == 1).flatten(1).sum(1).eq(64).all()
    rows = (moved == 1).any(dim=3).squeeze(1).float().argmax(1)
    assert rows.min() >= 6 and rows.max() <= 14 and len(rows.unique()) > 1
    assert set(moved.unique().tolist()) == {-1.0, 1.0}


def test_cutout_blanks_a_square_of_half_the_size_in_each_image():
    torch.manual_seed(0)
    out = cutout(torch.ones(16, 1, 28, 28))
    assert out.eq(-1).flatten(1).sum(1).eq(14 * 14).all()


def test_gradients_reach_the_generator_through_the_augmentations():
    fake = torch.rand(8, 1, 28, 28, requires_grad=True)
    augment(fake, ("translation", "cutout")).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_d_sees_augmented_real_and_generated_images():
    d = RecordingDiscriminator()
    fit(small_gan(discriminator=d, g_steps=1, instance_noise=0.0, augment=("cutout",)), torch.ones(16, 1, 28, 28))
    for seen in d.seen[-3:]:  # the D step's real and fake batches, the G step's fakes
        assert seen.eq(-1).flatten(1).sum(1).ge(14 * 14).all()
    plain = RecordingDiscriminator()
    fit(small_gan(discriminator=plain, g_steps=1, instance_noise=0.0), torch.ones(16, 1, 28, 28))
    assert not plain.seen[-3].eq(-1).any()  # without it, the real images reach D untouched
