"""Scratch experiment (issue 22): top-k generator updates (Sinha et al., NeurIPS 2020).

G learns only from the k fakes of each G step that D rates most real; k falls linearly from the
whole batch to `top_k` of it over the run's progress (the clock the noise fade uses). Lost on the
Kuzushiji-MNIST sample (experiments/README.md), so it is not a `GAN` option; run with
PYTHONPATH=experiments and experiments/results/issue22/topk50.yaml.
"""

import math

import torch

from shortgan.gan import GAN


class TopKGAN(GAN):
    def __init__(self, *args, top_k: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        gan = self

        class TopKRecipe(type(self.recipe)):
            def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
                keep = 1.0 - gan.progress * (1.0 - top_k)
                k = max(1, math.ceil(keep * fake_logits.numel()))
                return super().generator_loss(fake_logits.topk(k).values)

        fields = {name: getattr(self.recipe, name) for name in self.recipe.__dataclass_fields__}
        self.recipe = TopKRecipe(**fields)
