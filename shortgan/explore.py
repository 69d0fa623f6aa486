"""Look inside a trained generator: random samples, interpolations and planes through latent space.

    python -m shortgan.explore --ckpt runs/dcgan/version_0/checkpoints/last.ckpt --mode plane --out explore/

`--config` defaults to the run's `config.yaml` next to `checkpoints/`. Each mode writes one PNG
(`samples.png`, `interpolate.png`, `plane.png` or `classes.png`) into `--out`.

A class-conditional generator draws row r in class `--classes`[r mod k] (default: every class in
turn), so `interpolate` moves between two noise vectors within one class; `--mode classes` holds
each row's noise and changes the class along the row (the same "style", another character).

The fixed-noise timeline of a training run is written during `fit`, as `<run>/samples/timeline.png`.
"""

from pathlib import Path
from typing import Literal, Optional

import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn
from torchvision.utils import save_image

from shortgan.checkpoints import load_generator_weights
from shortgan.cli import exit_on_user_error
from shortgan.errors import UserError
from shortgan.generator_system import parse_classes

Mode = Literal["samples", "interpolate", "plane", "classes"]


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, spherical: bool = True) -> torch.Tensor:
    """`steps` noise vectors (steps, D) from z0 to z1, both ends included.

    Spherical interpolation (slerp) keeps the norm of Gaussian noise typical all the way; a straight
    line passes through short vectors near the origin that the generator rarely saw in training.
    """
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).unsqueeze(1)  # (steps, 1)
    if not spherical:
        return (1 - t) * z0 + t * z1
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def latent_plane(z: torch.Tensor, dims: tuple[int, int] = (0, 1), span: float = 3.0, steps: int = 9) -> torch.Tensor:
    """A steps×steps grid (steps², D) through z: coordinate dims[0] varies along a row, dims[1] down
    the columns, each over [-span, span]; every other coordinate stays as in z."""
    values = torch.linspace(-span, span, steps, dtype=z.dtype, device=z.device)
    grid = z.repeat(steps * steps, 1)
    grid[:, dims[0]] = values.repeat(steps)  # varies fastest: along each row
    grid[:, dims[1]] = values.repeat_interleave(steps)  # varies down the rows
    return grid


def load_generator(ckpt: str, config: Optional[str] = None) -> nn.Module:
    """The generator of a GAN or GeneratorPretrainer checkpoint, built from the run's config, in eval mode."""
    config_path = Path(config) if config else Path(ckpt).resolve().parent.parent / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"--config: no file at {config_path}; pass the YAML the checkpoint was trained with.")
    try:
        generator_config = yaml.safe_load(config_path.read_text())["model"]["init_args"]["generator"]
    except (KeyError, TypeError) as err:
        raise UserError(f"{config_path} has no model.init_args.generator section") from err
    parser = ArgumentParser()
    parser.add_argument("--generator", type=nn.Module)
    generator = parser.instantiate(parser.parse_object({"generator": generator_config})).generator
    try:
        generator.load_state_dict(load_generator_weights(ckpt))
    except RuntimeError as err:  # shape mismatch: the config is not the one the checkpoint came from
        raise UserError(f"{ckpt} does not fit the generator in {config_path}: {str(err).splitlines()[0]}") from err
    return generator.eval()


@torch.no_grad()
def explore(
    generator: nn.Module,
    mode: Mode,
    out: Path,
    steps: int = 9,
    rows: int = 8,
    span: float = 3.0,
    dims: tuple[int, int] = (0, 1),
    seed: int = 0,
    classes: Optional[list[int]] = None,
) -> Path:
    """Write `<out>/<mode>.png` and return its path; one row per interpolation, a steps×steps plane,
    or (`classes`, conditional generators) one row per noise vector with a column per class."""
    seeded = torch.Generator().manual_seed(seed)
    latent, num_classes = generator.latent_dim, getattr(generator, "num_classes", 0)
    if (mode == "classes" or classes) and not num_classes:
        raise UserError("--mode classes and --classes need a class-conditional generator (num_classes > 0)")
    classes = classes or list(range(num_classes))
    if mode == "classes":
        z = torch.randn(rows, latent, generator=seeded).repeat_interleave(len(classes), 0)
        labels, nrow = torch.tensor(classes).repeat(rows), len(classes)
    elif mode == "samples":
        z, nrow = torch.randn(rows * steps, latent, generator=seeded), steps
    elif mode == "interpolate":
        ends = torch.randn(rows, 2, latent, generator=seeded)
        z, nrow = torch.cat([interpolate(a, b, steps) for a, b in ends]), steps
    else:
        if max(dims) >= latent or min(dims) < 0 or dims[0] == dims[1]:
            raise UserError(f"--dims must be two different coordinates in [0, {latent}), got {list(dims)}")
        z, nrow = latent_plane(torch.randn(latent, generator=seeded), dims, span, steps), steps
    device = next(generator.parameters()).device
    if not num_classes:
        images = generator(z.to(device))  # (N, C, H, W) in [-1, 1]
    else:
        if mode == "plane":  # one class for the whole plane
            labels = torch.full((len(z),), classes[0])
        elif mode != "classes":  # row r in class classes[r mod k]
            labels = torch.tensor(classes).repeat(rows)[:rows].repeat_interleave(nrow)
        images = generator(z.to(device), labels.to(device))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{mode}.png"
    save_image(images.cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
    return path


def main(args: Optional[list[str]] = None) -> None:
    parser = ArgumentParser(prog="python -m shortgan.explore", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=str, required=True, help="GAN or GeneratorPretrainer checkpoint.")
    parser.add_argument("--config", type=Optional[str], default=None, help="The run's YAML (default: <run>/config.yaml)")
    parser.add_argument("--mode", type=Mode, default="interpolate", help="samples | interpolate | plane | classes.")
    parser.add_argument("--out", type=str, default="explore", help="Folder for the PNG.")
    parser.add_argument("--steps", type=int, default=9, help="Images per interpolation; plane is steps×steps.")
    parser.add_argument("--rows", type=int, default=8, help="Interpolations (or sample rows) in the picture.")
    parser.add_argument("--span", type=float, default=3.0, help="plane: each coordinate runs over [-span, span].")
    parser.add_argument("--dims", type=tuple[int, int], default=(0, 1), help="plane: the two coordinates varied.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the noise.")
    parser.add_argument("--classes", type=Optional[str], default=None,
                        help="Conditional generators: classes, e.g. 7 or 1,4,7 (default: all), one per row in turn; "
                             "with --mode classes, the columns.")  # fmt: skip
    cfg = parser.parse_args(args)
    with exit_on_user_error():
        generator = load_generator(cfg.ckpt, cfg.config)
        classes = parse_classes(cfg.classes, getattr(generator, "num_classes", 0))
        path = explore(generator, cfg.mode, Path(cfg.out), cfg.steps, cfg.rows, cfg.span, tuple(cfg.dims), cfg.seed,
                       classes)  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
