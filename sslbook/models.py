"""The one backbone every chapter trains, and the small heads that sit on it.

Comparing pretext tasks is only fair on the same network, so the book uses a single compact
ResNet (He et al. 2015, arXiv 1512.03385) sized for 32x32 images: a 3x3 stem and three stages of
residual blocks, each halving the resolution of the one before. A profile turns three knobs:
``width`` scales every stage, ``depth`` is the number of blocks per stage, and ``stem_stride``
says whether the stem keeps the full resolution (1: stages at 32, 16 and 8 pixels, the usual
CIFAR ResNet) or halves it (2: stages at 16, 8 and 4 pixels). The strided stem costs a few points
of accuracy at equal training, but a quarter of the computation: on a 2-core CPU it trains about
three times as many images per second, which buys more than it costs (see ``benchmarks/``).
Heads are separate modules, so after pretraining the head is thrown away and the backbone is what
we evaluate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_NAMES = ("block1", "block2", "block3")
MIN_WIDTH = 8
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class Normalize(nn.Module):
    """Standardise [0, 1] images per channel, inside the model, so data stays plottable."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Compact ResNet: stem, then stages ``block1..block3`` with ``width * (1, 2, 4)`` channels.

    Args:
        width: channels of the first stage.
        depth: residual blocks per stage.
        in_channels: 3 for colour images, 1 for MNIST.
        mean, std: per-channel statistics used by the built-in :class:`Normalize`.
        stem_stride: 1 (stages at full, 1/2 and 1/4 resolution) or 2 (1/2, 1/4 and 1/8).

    Input ``(B, C, H, W)`` float images in [0, 1]; :meth:`forward` returns pooled features
    ``(B, feature_dim)``; :meth:`feature_maps` returns every stage's map.
    """

    def __init__(
        self,
        width: int = 16,
        depth: int = 2,
        in_channels: int = 3,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        if width < MIN_WIDTH:
            raise ValueError(
                f"width must be at least {MIN_WIDTH}, got {width}: narrower networks learn little, "
                "and oneDNN's AVX2 kernels (torch 2.14 on CPUs without AVX-512) can corrupt "
                "memory on 4-channel 1x1 convolutions"
            )
        if mean is None or std is None:
            mean, std = (CIFAR10_MEAN, CIFAR10_STD) if in_channels == 3 else (MNIST_MEAN, MNIST_STD)
        self._config = {
            "arch": "ResNet",
            "width": width,
            "depth": depth,
            "in_channels": in_channels,
            "stem_stride": stem_stride,
        }
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        #: How much each stage's map is smaller than the input (``block3``: 4 or 8).
        self.block_strides = {b: stem_stride * 2**i for i, b in enumerate(BLOCK_NAMES)}
        self.stride = self.block_strides[BLOCK_NAMES[-1]]
        channels = [width, 2 * width, 4 * width]
        self.stage_channels = dict(zip(BLOCK_NAMES, channels, strict=True))
        stages, previous = [], width
        for i, out in enumerate(channels):
            blocks = [
                BasicBlock(previous if j == 0 else out, out, 2 if (i and not j) else 1)
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            previous = out
        self.stages = nn.ModuleList(stages)
        self.feature_dim = channels[-1]

    def config(self) -> dict:
        """What a checkpoint must match to be loaded into this model."""
        return dict(self._config)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output: ``block1`` (B, w, H/s, W/s), ``block2`` (B, 2w, H/2s, W/2s),
        ``block3`` (B, 4w, H/4s, W/4s), ``s`` the stem's stride."""
        x = self.stem(self.normalize(x))
        maps = {}
        for name, stage in zip(BLOCK_NAMES, self.stages, strict=True):
            x = stage(x)
            maps[name] = x
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(-2, -1))  # (B, 4w): global average pool


def build_backbone(
    width: int = 16,
    depth: int = 2,
    in_channels: int = 3,
    seed: int | None = None,
    stem_stride: int = 1,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ResNet:
    """The book's backbone (see :class:`ResNet`).

    With ``seed``, the initial weights depend only on it: every method of a chapter (pretext,
    random init, supervised) then starts from the very same network.
    """

    def build() -> ResNet:
        return ResNet(width, depth, in_channels, mean, std, stem_stride)

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def linear_head(feature_dim: int, num_outputs: int) -> nn.Module:
    """A single linear layer: the head of classification pretext tasks and of probes."""
    return nn.Linear(feature_dim, num_outputs)


def mlp_head(feature_dim: int, hidden: int, num_outputs: int) -> nn.Module:
    """Linear → BN → ReLU → linear, for heads that combine several inputs' features."""
    return nn.Sequential(
        nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, num_outputs),
    )  # fmt: skip


class PretextModel(nn.Module):
    """Backbone + head. Inputs of shape ``(B, K, C, H, W)`` (K patches, tiles or frames per
    example) go through the backbone with shared weights, and the head sees their concatenated
    features ``(B, K * D)``: the siamese networks of jigsaw, context and frame-order tasks."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def config(self) -> dict:
        return {"backbone": self.backbone.config(), "head": type(self.head).__name__}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            b, k = x.shape[:2]
            features = self.backbone(x.flatten(0, 1))  # (B*K, D)
            return self.head(features.view(b, k * features.shape[-1]))  # (B, K*D) → head
        return self.head(self.backbone(x))
