"""ShortGAN: GANs for 28×28 handwritten characters that reach good samples fast."""

from shortgan.classifier import Classifier
from shortgan.data import ImageDataModule
from shortgan.gan import GAN
from shortgan.pretraining import GeneratorPretrainer

__all__ = ["GAN", "Classifier", "GeneratorPretrainer", "ImageDataModule"]
