"""Plain PyTorch networks; nothing here imports Lightning."""

from shortgan.networks.classifier import DigitClassifier
from shortgan.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from shortgan.networks.mlp import MLPDiscriminator, MLPGenerator
from shortgan.networks.mpgan import MPGANDiscriminator, MPGANGenerator
from shortgan.networks.shortgan import MinibatchStdDev, ShortGANDiscriminator, ShortGANGenerator

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DigitClassifier",
    "MLPDiscriminator",
    "MLPGenerator",
    "MPGANDiscriminator",
    "MPGANGenerator",
    "MinibatchStdDev",
    "ShortGANDiscriminator",
    "ShortGANGenerator",
]
