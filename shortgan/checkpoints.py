"""Reading weights out of Lightning checkpoints: a pretrained generator or discriminator to start a
run from, with one clear error for a missing, unreadable or foreign file."""

from pathlib import Path
from typing import Any

import torch

from shortgan.errors import UserError


def require_weights(checkpoint: dict[str, Any], prefixes: tuple[str, ...], what: str) -> None:
    """Raise a UserError if the checkpoint holds no weights under one of `prefixes`."""
    keys = checkpoint.get("state_dict", {}).keys()
    missing = [p.rstrip(".") for p in prefixes if not any(k.startswith(p) for k in keys)]
    if missing:
        raise UserError(
            f"This checkpoint has no {', '.join(missing)} weights, so it was not written by {what}: "
            f"pass a checkpoint of the same kind of model as the config."
        )


def read_checkpoint(path: str, argument: str) -> dict[str, Any]:
    """The checkpoint at `path` (tensors and plain data only), or one UserError naming `argument`."""
    if not Path(path).is_file():
        raise UserError(f"{argument}: no file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{argument}: {path} is not a readable checkpoint ({err})") from err


def _strip(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_weights(path: str, prefix: str, argument: str, what: str) -> dict[str, torch.Tensor]:
    """The weights under `prefix` (e.g. "generator.") of the Lightning checkpoint at `path`, prefix removed."""
    checkpoint = read_checkpoint(path, argument)
    require_weights(checkpoint, (prefix,), what)
    return _strip(checkpoint["state_dict"], prefix)


def load_generator_weights(path: str) -> dict[str, torch.Tensor]:
    """The generator's state_dict from a GeneratorPretrainer or GAN checkpoint at `path`."""
    checkpoint = read_checkpoint(path, "model.pretrained_generator")
    require_weights(checkpoint, ("generator.",), "a GeneratorPretrainer or GAN")
    return generator_state_dict(checkpoint)


def generator_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state_dict of the generator that draws a checkpoint's samples."""
    state = checkpoint["state_dict"]
    # A run with ema_decay drew its samples from the weight average: that is its generator.
    return _strip(state, "generator_ema.module.") or _strip(state, "generator.")


def load_discriminator_weights(path: str) -> dict[str, torch.Tensor]:
    """The discriminator's state_dict from a GAN checkpoint at `path`."""
    return load_weights(path, "discriminator.", "model.pretrained_discriminator", "a GAN")


def require_gan(checkpoint: dict[str, Any], num_classes: int) -> None:
    """Refuse, in one line, a checkpoint that is no GAN or whose conditioning differs from the config's."""
    require_weights(checkpoint, ("generator.", "discriminator."), "a GAN")
    # A conditional generator's per-class parameters are its `class_*` ones (ShortGAN, DCGAN).
    conditional = any(key.startswith("generator.class_") for key in checkpoint["state_dict"])
    if conditional != bool(num_classes):
        raise UserError(
            f"The checkpoint holds a{' class-conditional' if conditional else 'n unconditional'} GAN, the "
            f"config a{' class-conditional' if num_classes else 'n unconditional'} one: "
            + ("add --config configs/conditional.yaml or drop configs/unconditional.yaml (or pass the run's "
               "config.yaml)" if conditional else
               "drop configs/conditional.yaml or add --config configs/unconditional.yaml (or pass the run's config.yaml)")
        )  # fmt: skip
    if conditional:
        # Every per-class parameter is (num_classes, …): the class bias, map or BatchNorm scales.
        trained = next(v.shape[0] for k, v in sorted(checkpoint["state_dict"].items()) if k.startswith("generator.class_"))
        if trained != num_classes:
            raise UserError(
                f"The checkpoint's GAN was trained on {trained} classes, this run's data have {num_classes} (the "
                f"networks take the data's number): resume or sample with the data the run trained on."
            )


def require_shapes(checkpoint: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse, in one line, a checkpoint whose weights have other shapes than the model's (another image
    shape, other network widths)."""
    for key, value in checkpoint.get("state_dict", {}).items():
        if key in state_dict and tuple(value.shape) != tuple(state_dict[key].shape):
            raise UserError(
                f"The checkpoint's {key} is {tuple(value.shape)}, this model's {tuple(state_dict[key].shape)}: it "
                f"was trained with other network settings or another data.image_shape. Pass the run's config.yaml "
                f"(--config runs/<run_name>/version_N/config.yaml) with the data it trained on."
            )
