"""The ShortGAN generator and discriminator: plain PyTorch, no Lightning."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from shortgan.networks.conditioning import NO_CLASS, ClassBatchNorm2d, class_labels, embed_class


def _maybe_sn(layer: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(layer) if enabled else layer


class ShortGANGenerator(nn.Module):
    """Noise → Linear+ReLU → 1×s×s map → Conv2d+BatchNorm2d blocks → ConvTranspose2d ×2 → Linear → Tanh.

    Args:
        latent_dim: size of the noise vector z.
        hidden_dim: width of the first Linear layer; must be a square (256 → a 1×16×16 map).
        channels: channels of the Conv2d blocks that run on the s×s map.
        num_conv_blocks: how many Conv2d+BatchNorm2d+ReLU blocks run before upsampling.
        up_channels: channels of the 2s×2s map after the ConvTranspose2d upsampling.
        image_shape: (C, H, W) of the images produced.
        spectral_norm: wrap the Linear layers in spectral normalisation. Off by default: with it,
            adversarial training pulled all samples to one image (see docs/recipe.md).
        num_classes: 0 for an unconditional generator; else it also takes a class label per sample,
            `forward(z, y)`, as a learned vector added to the first Linear layer's output (what
            concatenating a one-hot class to z does), so the whole 16×16 map depends on the class.
            A label of -1 (`NO_CLASS`) draws without a class, as the unconditional G would.
        class_batchnorm: a conditional generator's BatchNorm layers scale and shift each class's
            feature maps with parameters of their own (`ClassBatchNorm2d`), so the class enters at
            every block, not only through the first layer.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden_dim: int = 256,
        channels: int = 16,
        num_conv_blocks: int = 2,
        up_channels: int = 1,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        spectral_norm: bool = False,
        num_classes: int = 0,
        class_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: unconditional), got {num_classes}")
        if class_batchnorm and not num_classes:
            raise ValueError("class_batchnorm needs a conditional generator (num_classes > 0)")
        side = math.isqrt(hidden_dim)
        if side * side != hidden_dim:
            raise ValueError(f"hidden_dim must be a perfect square (e.g. 256 → 16×16), got {hidden_dim}")
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.side = side
        self.num_classes = num_classes
        self.project = _maybe_sn(nn.Linear(latent_dim, hidden_dim), spectral_norm)
        # Only a conditional G has this parameter, so unconditional checkpoints are unchanged.
        self.class_bias = nn.Embedding(num_classes, hidden_dim) if num_classes else None
        if self.class_bias is not None:
            nn.init.zeros_(self.class_bias.weight)  # starts as the unconditional G: the class is learnt

        def norm(c: int) -> nn.Module:
            return ClassBatchNorm2d(c, num_classes) if class_batchnorm else nn.BatchNorm2d(c)

        blocks = []
        for i in range(num_conv_blocks):
            # No conv bias: BatchNorm's shift makes it redundant.
            blocks += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1, bias=False), norm(channels),
                       nn.ReLU(inplace=True)]  # fmt: skip
        self.convs = nn.Sequential(*blocks)
        conv_out = channels if num_conv_blocks else 1
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(conv_out, up_channels, 4, stride=2, padding=1, bias=False),
            norm(up_channels),
            nn.ReLU(inplace=True),
        )
        self.to_pixels = _maybe_sn(nn.Linear(up_channels * (2 * side) ** 2, math.prod(self.image_shape)), spectral_norm)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        b = z.size(0)
        y = class_labels(y, b) if self.num_classes else None  # the class of each sample
        h = self.project(z)  # (B, 256)
        if self.class_bias is not None:
            h = h + embed_class(self.class_bias, y)
        h = torch.relu(h).view(b, 1, self.side, self.side)  # (B, 1, 16, 16)
        h = self._run(self.convs, h, y)  # (B, C, 16, 16)
        h = self._run(self.upsample, h, y)  # (B, C_up, 32, 32)
        x = torch.tanh(self.to_pixels(h.flatten(1)))  # (B, C*H*W) in [-1, 1]
        return x.view(b, *self.image_shape)

    @staticmethod
    def _run(layers: nn.Sequential, h: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        for layer in layers:  # class-conditional BatchNorm takes the classes too
            h = layer(h, y) if isinstance(layer, ClassBatchNorm2d) else layer(h)
        return h


class MinibatchStdDev(nn.Module):
    """Appends the batch's mean feature standard deviation as one extra channel (Karras et al. 2018).

    A batch of identical fakes has zero spread while real batches do not, so D can see mode
    collapse and G is pushed to vary its output. Given classes y, each image gets the spread of the
    images of its own class in the batch instead: over a batch of ten classes the whole-batch spread
    is mostly the spread between classes, and would not show a conditional G that draws one image
    per class (fakes take the real batch's classes, so both batches have the same class counts).
    The images of `NO_CLASS` (-1) are one more group of their own.
    """

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, h: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if y is None:
            std = h.std(dim=0, unbiased=False).mean().expand(h.size(0))  # one spread for the batch
        else:
            flat = h.flatten(1)
            group = y - NO_CLASS  # 0: no class, k + 1: class k
            members = F.one_hot(group, self.num_classes + 1).to(flat.dtype)  # (B, K + 1)
            count = members.sum(0).clamp(min=1).unsqueeze(1)  # (K + 1, 1)
            mean = members.t() @ flat / count  # (K + 1, F): each group's mean image features
            var = members.t() @ (flat - mean[group]).square() / count  # (K + 1, F)
            std = (var + 1e-8).sqrt().mean(1)[group]  # (B,): the spread of each image's group
        return torch.cat([h, std.view(-1, 1, 1, 1).expand(-1, 1, *h.shape[2:])], dim=1)


class ShortGANDiscriminator(nn.Module):
    """Strided Conv2d+LeakyReLU layers → Linear → one logit per image; spectral norm, no BatchNorm.

    Without BatchNorm, D can score real and fake batches in separate calls (and under DDP) safely.

    Args:
        image_shape: (C, H, W) of the images scored.
        channels: channels of the first conv; each further conv doubles them.
        num_layers: how many stride-2 convs.
        minibatch_std: add a minibatch-standard-deviation channel before the last conv.
        minibatch_std_by_class: a conditional D's minibatch-stddev channel is the spread within each
            image's class in the batch, not over the whole batch (`MinibatchStdDev`).
        spectral_norm: wrap every conv and the Linear in spectral normalisation.
        num_classes: 0 for an unconditional D; else `forward(x, y)` is a projection discriminator
            (Miyato & Koyama 2018): the logit adds the inner product of the image's features with a
            learned embedding of its class, so D judges "is this a real image of class y". A label of
            -1 (`NO_CLASS`) drops the projection: D judges "is this a real image" alone.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        channels: int = 32,
        num_layers: int = 2,
        minibatch_std: bool = True,
        spectral_norm: bool = True,
        num_classes: int = 0,
        minibatch_std_by_class: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: unconditional), got {num_classes}")
        if minibatch_std_by_class and not (minibatch_std and num_classes):
            raise ValueError("minibatch_std_by_class needs minibatch_std and a conditional D (num_classes > 0)")
        self.num_classes = num_classes
        self.minibatch_std_by_class = minibatch_std_by_class
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for i in range(num_layers):
            out = channels * 2**i
            if minibatch_std and i == num_layers - 1:
                layers.append(MinibatchStdDev(num_classes))
                c += 1
            layers += [_maybe_sn(nn.Conv2d(c, out, 4, stride=2, padding=1), spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
            c, h, w = out, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.to_logit = _maybe_sn(nn.Linear(c * h * w, 1), spectral_norm)
        self.class_embedding = _maybe_sn(nn.Embedding(num_classes, c * h * w), spectral_norm) if num_classes else None

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        classes = class_labels(y, x.size(0)) if self.num_classes else None
        spread_by = classes if self.minibatch_std_by_class else None
        h = x
        for layer in self.features:
            h = layer(h, spread_by) if isinstance(layer, MinibatchStdDev) else layer(h)
        h = h.flatten(1)  # (B, C·2^(L-1) · H/2^L · W/2^L)
        logits = self.to_logit(h).squeeze(1)  # (B,)
        if self.class_embedding is not None:
            logits = logits + (embed_class(self.class_embedding, classes) * h).sum(1)  # projection
        return logits
