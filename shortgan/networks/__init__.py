"""Plain PyTorch networks; nothing here imports Lightning."""

from shortgan.networks.classifier import DigitClassifier
from shortgan.networks.shortgan import MinibatchStdDev, ShortGANDiscriminator, ShortGANGenerator

__all__ = ["DigitClassifier", "MinibatchStdDev", "ShortGANDiscriminator", "ShortGANGenerator"]
