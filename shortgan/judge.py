"""The domain classifier that judges generated images: loaded from a checkpoint, or trained once per
dataset on first use and cached beside the dataset, so every GAN run logs FID with no extra command."""

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from shortgan.errors import UserError
from shortgan.networks import DigitClassifier

# Bump when the training recipe below changes: cached classifiers of another version are retrained.
RECIPE_VERSION = 1


def load_classifier(path: str, argument: str = "model.classifier_checkpoint") -> DigitClassifier:
    """A DigitClassifier from its state_dict, or from a checkpoint whose keys start with `network.`
    (a `Classifier` run's, or a cached one of `cached_classifier`).

    The layer sizes are read from the weights, so any `channels`/`feature_dim`/`num_classes` loads.
    `argument` names the option in error messages.
    """
    if not Path(path).is_file():
        raise UserError(f"{argument}: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{argument}: {path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = {k[len("network.") :]: v for k, v in state["state_dict"].items() if k.startswith("network.")}
    if not isinstance(state, dict) or "body.0.weight" not in state or "head.1.weight" not in state:
        raise UserError(
            f"{argument}: {path} holds no DigitClassifier weights (a state_dict, or a checkpoint of "
            f"`python main.py fit --config configs/classifier_<dataset>.yaml`)"
        )
    num_classes, feature_dim = state["head.1.weight"].shape
    classifier = DigitClassifier(num_classes, channels=state["body.0.weight"].size(0), feature_dim=feature_dim)
    classifier.load_state_dict(state)
    return classifier.eval()


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int = 5, max_steps: int = 600, batch_size: int = 128,
    seed: int = 0,
) -> DigitClassifier:
    """A DigitClassifier trained on images (N, 1, 28, 28) in [-1, 1] with labels (N,): Adam 1e-3 for
    `epochs` passes or `max_steps` batches, whichever is fewer (5 epochs of the MNIST sample, ~10 s
    on a 2-core CPU; 600 batches, ~1.3 epochs, of a 60,000-image set, ~40 s). Its random
    numbers come from its own stream: the caller's are left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = DigitClassifier(num_classes=int(labels.max()) + 1)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        classifier.train()
        batches = [b for _ in range(epochs) for b in torch.randperm(len(images)).split(batch_size) if len(b) > 1]
        for batch in batches[:max_steps]:  # (BatchNorm needs two images a batch)
            loss = F.cross_entropy(classifier(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return classifier.eval()


def judge_view(images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] as the judge reads them: grayscale (ITU-R 601 luma), 28×28."""
    if images.size(1) == 3:
        images = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(images.shape[-2:]) != (28, 28):
        images = F.interpolate(images, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return images


def rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by 0, 90, 180 and 270 degrees (4N, C, H, W), labelled 0–3: a task that needs no
    labels and whose solution must know the images' shapes (RotNet, Gidaris et al. 2018), so a classifier
    trained on it gives unlabelled data feature-space metrics."""
    turned = [torch.rot90(images, k, dims=(-2, -1)) for k in range(4)]
    labels = torch.arange(4).repeat_interleave(len(images))
    return torch.cat(turned), labels


@torch.no_grad()
def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([classifier(x).argmax(1) for x in images.split(1000)])
    return (predictions == labels).float().mean().item()


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A short hash of a labelled dataset: a cached classifier belongs to exactly this data."""
    digest = hashlib.sha1()
    digest.update(f"v{RECIPE_VERSION}:{tuple(images.shape)}".encode())
    # The arrays' own buffers: no copy of a 188 MB training set just to hash it.
    digest.update(images.cpu().contiguous().numpy())
    digest.update(labels.cpu().contiguous().numpy())
    return digest.hexdigest()[:12]


def cached_classifier(
    folder: Path,
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    train_here: bool = True,
) -> Optional[DigitClassifier]:
    """The classifier for dataset `name` cached in `folder`, trained on `train` first if none is.

    The file is `<folder>/<name>-<fingerprint>.ckpt`, the fingerprint hashing the training images and
    labels, so another copy of the data (a stand-in, a different sample) gets its own. With
    `train_here` False (the other processes under DDP, while rank 0 trains) a missing file gives None.
    """
    images, labels = (t.cpu() for t in train)
    path = Path(folder) / f"{name}-{fingerprint(images, labels)}.ckpt"
    if path.is_file():
        return load_classifier(str(path), "the cached domain classifier")
    if not train_here:
        return None
    classifier = train_classifier(images, labels)
    note = ""
    if test is not None:
        note = f", {accuracy(classifier, test[0].cpu(), test[1].cpu()):.1%} accuracy on the test split"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two runs at once each write their own
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {f"network.{k}": v for k, v in classifier.state_dict().items()}}, tmp)
        tmp.replace(path)
    except OSError as err:
        # A read-only data folder: judge this run anyway, and say how to keep the classifier.
        rank_zero_warn(f"Could not cache the domain classifier at {path} ({err.strerror or err}): it is trained "
                       f"again next run; pass one with --model.init_args.classifier_checkpoint to avoid that.")  # fmt: skip
        return classifier
    rank_zero_info(f"Trained the domain classifier for {name} on {len(images):,} images{note}; cached at {path}.")
    return classifier
