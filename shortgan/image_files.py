"""A user's own images: a folder of image files (class subfolders give labels) or an `.npz` of arrays,
read into uint8 tensors (N, C, H, W) of the shape the networks draw."""

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from shortgan.errors import UserError

# (C, H, W) of the images the networks take.
Shape = tuple[int, int, int]


def _class_order(name: str) -> tuple[int, int, str]:
    # Numeric folder names sort as numbers (0, 1, …, 10, …, 46), so class i is folder "i".
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def folder_layout(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names (sorted subfolders holding images; [] for a flat folder) and every image file
    with its class (0 for a flat folder). ImageFolder's layout: `root/<class>/**/<image>`."""
    if not root.is_dir():
        raise UserError(f"--data.data_dir {root}: no such folder (for --data.dataset folder, a folder of images)")
    subfolders = sorted((p for p in root.iterdir() if p.is_dir() and _image_files(p)), key=lambda p: _class_order(p.name))
    if not subfolders:
        files = _image_files(root)
        if not files:
            raise UserError(
                f"--data.data_dir {root}: no image files ({', '.join(IMG_EXTENSIONS)}) in it or its subfolders"
            )
        return [], [(f, 0) for f in files]
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS]
    if loose:
        rank_zero_info(
            f"{len(loose)} image files directly in {root} are not used: with class subfolders, every image "
            f"belongs in its class's folder."
        )
    classes = [p.name for p in subfolders]
    return classes, [(f, c) for c, folder in enumerate(subfolders) for f in _image_files(folder)]


def read_image(path: Path, shape: Shape) -> np.ndarray:
    """One image file as uint8 (H, W, C) of `shape`: converted to grayscale or RGB, resized if needed."""
    c, h, w = shape
    with Image.open(path) as image:
        image = image.convert("L" if c == 1 else "RGB")
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.asarray(image).reshape(h, w, c)


def load_folder(root: str, shape: Shape) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every readable image under `root` as uint8 (N, C, H, W), their classes (N,) and the class names.

    Unreadable or corrupt files are skipped and counted in one line; a folder with none readable stops.
    """
    check_shape(shape)
    classes, files = folder_layout(Path(root))
    images, labels, skipped = [], [], []
    for path, label in files:
        try:
            images.append(read_image(path, shape))
            labels.append(label)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            skipped.append(f"{path.name}: {type(err).__name__}")
    if skipped:
        rank_zero_info(f"Skipped {len(skipped)} unreadable image files in {root} (e.g. {skipped[0]}).")
    if not images:
        raise UserError(f"--data.data_dir {root}: none of its {len(files)} image files could be read")
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    return pixels, torch.tensor(labels, dtype=torch.int64), classes


def _open_npz(path: str) -> np.lib.npyio.NpzFile:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--data.data_dir {path}: no file there (for --data.dataset arrays, an .npz with x and optional y)")
    try:
        arrays = np.load(file, allow_pickle=False)
        keys = arrays.files
    except Exception as err:
        raise UserError(f"--data.data_dir {path}: not a readable .npz file ({type(err).__name__}: {err})") from err
    if "x" not in keys:
        raise UserError(f"--data.data_dir {path}: the .npz has no array `x` (the images); it has {sorted(keys) or 'none'}")
    return arrays


def array_labels(path: str) -> Optional[torch.Tensor]:
    """`y` of an `.npz` (N,) as class indices, or None if it has none."""
    arrays = _open_npz(path)
    if "y" not in arrays.files:
        return None
    y = torch.from_numpy(np.asarray(arrays["y"]).astype(np.int64).reshape(-1))
    if len(y) and y.min() < 0:
        raise UserError(f"--data.data_dir {path}: y must hold class indices 0, 1, …; it has {int(y.min())}")
    return y


def load_arrays(path: str, shape: Shape) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`x` of an `.npz` file (N, H, W[, C], uint8, or floats in [0, 1]) as uint8 (N, C, H, W) of `shape`,
    and its `y` (N,) class indices if it has one."""
    check_shape(shape)
    x = _open_npz(path)["x"]
    if x.ndim not in (3, 4) or len(x) == 0:
        raise UserError(f"--data.data_dir {path}: x must be images (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating) or x.min() < 0 or x.max() > 1:
            raise UserError(f"--data.data_dir {path}: x must be uint8 pixels or floats in [0, 1], got {x.dtype}")
        x = np.round(x * 255).astype(np.uint8)
    pixels = torch.from_numpy(x if x.ndim == 4 else x[..., None]).permute(0, 3, 1, 2)  # (N, C, H, W)
    y = array_labels(path)
    if y is not None and len(y) != len(x):
        raise UserError(f"--data.data_dir {path}: y has {len(y)} labels for {len(x)} images in x")
    return convert(pixels, shape, path), y


def convert(pixels: torch.Tensor, shape: Shape, source: str) -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, *shape): grayscale ↔ RGB (an alpha channel dropped), then resized."""
    c = shape[0]
    have = pixels.size(1)
    if have == 4:
        pixels, have = pixels[:, :3], 3
    if have not in (1, 3):
        raise UserError(f"{source}: images with {have} channels; ShortGAN reads 1 (grayscale), 3 (RGB) or 4 (RGBA)")
    if have == 3 and c == 1:
        # ITU-R 601 luma, as PIL's convert("L") computes it for files.
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        pixels = (pixels.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    elif have == 1 and c == 3:
        pixels = pixels.expand(-1, 3, -1, -1)
    if tuple(pixels.shape[2:]) != tuple(shape[1:]):
        resized = F.interpolate(pixels.float(), size=shape[1:], mode="bilinear", antialias=True, align_corners=False)
        pixels = resized.round().clamp(0, 255).to(torch.uint8)
    return pixels.contiguous()


def check_shape(shape: Shape) -> None:
    c, h, w = shape
    if c not in (1, 3) or h < 8 or w < 8:
        raise UserError(f"data.image_shape must be (1 or 3 channels, height ≥ 8, width ≥ 8), got {list(shape)}")


def held_out(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """A deterministic, per-class held-out mask: every k-th image of each class in file order
    (k = round(1 / fraction)), so each class keeps its share in both splits and a rerun picks the same."""
    period = max(2, round(1 / fraction))
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        mask[members[period - 1 :: period]] = True
    if not mask.any():  # fewer than k images in every class: hold out the last one
        mask[-1] = True
    return mask
