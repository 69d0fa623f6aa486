"""ShortGAN: GANs for 28×28 handwritten characters that reach good samples fast."""

import importlib
from typing import Any

# Imported on first use, so that `shortgan.networks` and `shortgan.export` load without Lightning.
_PUBLIC = {
    "GAN": "shortgan.gan",
    "Classifier": "shortgan.classifier",
    "GeneratorPretrainer": "shortgan.pretraining",
    "ImageDataModule": "shortgan.data",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'shortgan' has no attribute {name!r}")
