"""Take the generator away: one small file holding the generator that draws a run's samples (its
weight average, if the run kept one) and the settings that rebuild it, loadable without Lightning.

    python -m shortgan.export runs/kmnist/version_0/checkpoints/last.ckpt kmnist_generator.pt

and then, wherever torch and this package are installed (Lightning is not imported):

    import torch
    from shortgan.export import load_generator

    g = load_generator("kmnist_generator.pt")        # in eval mode, as `predict` samples
    z = torch.randn(16, g.latent_dim)
    sevens = g(z, torch.full((16,), 7))              # images in [-1, 1], (16, 1, 28, 28)
    # an unconditional generator: g(z)

The settings come from the run's `config.yaml` (written by `fit` beside `checkpoints/`), or from
`--config`. The file is a plain dict (`format`, `class_path`, `init_args`, `state_dict`) that
`torch.load(..., weights_only=True)` reads.
"""

import argparse
import importlib
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch import nn

from shortgan.checkpoints import generator_state_dict, read_checkpoint, require_weights
from shortgan.errors import UserError

FORMAT = "shortgan-generator/1"


def generator_settings(config: Path) -> tuple[str, dict[str, Any]]:
    """(class_path, init_args) of the generator in a run's `config.yaml`."""
    if not config.is_file():
        raise UserError(f"No config.yaml at {config}: pass the run's config with --config RUN_FOLDER/config.yaml")
    generator = ((yaml.safe_load(config.read_text()) or {}).get("model") or {}).get("init_args", {}).get("generator")
    if not isinstance(generator, dict) or "class_path" not in generator:
        raise UserError(f"{config} has no model.init_args.generator: pass the config.yaml of a GAN run")
    return generator["class_path"], dict(generator.get("init_args") or {})


def build(class_path: str, init_args: dict[str, Any]) -> nn.Module:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**init_args)


def export_generator(checkpoint: str, out: str, config: Optional[str] = None) -> Path:
    """Write the generator of the GAN checkpoint at `checkpoint` to `out`; returns its path."""
    state = read_checkpoint(checkpoint, "shortgan.export")
    require_weights(state, ("generator.", "discriminator."), "a GAN")
    weights = generator_state_dict(state)
    config_path = Path(config) if config else Path(checkpoint).resolve().parent.parent / "config.yaml"
    class_path, init_args = generator_settings(config_path)
    generator = build(class_path, init_args)
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(
            f"The checkpoint's generator does not fit the {class_path} of {config_path} "
            f"({str(err).splitlines()[0]}): pass the config.yaml of the run that wrote the checkpoint"
        ) from err
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "class_path": class_path, "init_args": init_args, "state_dict": weights}, path)
    return path


def load_generator(path: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The generator in a file written by `export_generator`, in eval mode."""
    saved = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise UserError(f"{path} is not a generator written by shortgan.export")
    generator = build(saved["class_path"], saved["init_args"])
    generator.load_state_dict(saved["state_dict"])
    return generator.to(map_location).eval()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shortgan.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a GAN checkpoint (e.g. runs/NAME/version_0/checkpoints/last.ckpt)")
    parser.add_argument("out", help="the file to write, e.g. generator.pt")
    parser.add_argument("--config", default=None, help="the run's config.yaml (default: the one beside checkpoints/)")
    args = parser.parse_args(argv)
    from shortgan.cli import exit_on_user_error  # the CLI's, which imports Lightning: exporting is a training-side step

    with exit_on_user_error():
        path = export_generator(args.checkpoint, args.out, args.config)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
