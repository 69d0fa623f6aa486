"""A digest of a short unconditional training run, for checking that class-conditioning (issue 17)
left the unconditional path as it was.

    python tests/unconditional_reference.py   # writes tests/unconditional_reference.json

The JSON in the repository was written by the code before conditioning existed (commit 043a628; 60bef0a wrote the same);
tests/test_conditional.py recomputes the digest with today's code and compares. It uses only what
both versions have: no labels reach the GAN, the batches carry them as always.

The run is in float64. In float32 the digest drifted with the CPU: rounding depends on the vector
kernels, and a few Adam steps turn a last-bit difference into ~1e-4, so CI failed whenever it moved to
another CPU (2026-12-05, 2026-12-06). In float64 the same drift should be ~1e-13 (last bits ~1e-16,
grown ~1e3-fold as in float32), far inside the test's tolerance (1e-9), while any change to what the
unconditional path computes moves the sums by orders more (a real label of 0.9001 fails it).
The JSON was written by 043a628's code with this file copied in (today's code agrees to 2e-15):

    git worktree add /tmp/before 043a628 && cp tests/unconditional_reference.py /tmp/before/tests/
    (cd /tmp/before && PYTHONPATH=. python tests/unconditional_reference.py)
    cp /tmp/before/tests/unconditional_reference.json tests/
"""

import json
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from shortgan.data import InMemoryImages, _batch_as_is
from shortgan.gan import GAN
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator

REFERENCE = Path(__file__).with_suffix(".json")


def digest() -> dict[str, list[float]]:
    """Per state_dict tensor, its sum and sum of absolute values after 1 pretraining and 1 adversarial
    epoch of 4 batches, all in float64; then the fixed-noise samples', a predict batch's, and the next
    random numbers (which see every draw training made)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _digest()
    finally:
        torch.set_default_dtype(previous)


def _digest() -> dict[str, list[float]]:
    L.seed_everything(0)
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.arange(64) % 10
    loader = DataLoader(InMemoryImages(images, labels), batch_size=16, shuffle=True, collate_fn=_batch_as_is)
    model = GAN(ShortGANGenerator(channels=4), ShortGANDiscriminator(channels=8, num_layers=3), pretrain_epochs=1,
                ema_decay=0.9, classifier_checkpoint=None)  # fmt: skip
    L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, loader)  # fmt: skip
    out = {k: [v.double().sum().item(), v.double().abs().sum().item()] for k, v in model.state_dict().items()}
    out["fixed_samples"] = [model.fixed_samples().double().sum().item()]
    out["predict"] = [model.predict_step(torch.arange(8), 0).double().sum().item()]
    out["next_random"] = torch.rand(3).tolist()
    return out


if __name__ == "__main__":
    REFERENCE.write_text(json.dumps(digest(), indent=1) + "\n")
    print(REFERENCE)
