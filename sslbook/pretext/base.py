"""What the training loop needs from a task, and nothing more.

The loop (:func:`sslbook.train.train`) calls ``task.make_batch(images, labels, generator)`` and
``task.loss(outputs, targets)``. A pretext task ignores the labels: that is the whole point.
The supervised baseline is the same interface with the labels used, so both train through one loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BatchFn = Callable[[torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the target class."""
    return (outputs.argmax(dim=-1) == targets).float().mean().item()


@dataclass(frozen=True)
class PretextTask:
    """A pretext task: labels made from the images themselves.

    Attributes:
        name: short name used in results and plots.
        make_pretext_batch: ``(images, generator) -> (inputs, targets)``.
        build_head: ``feature_dim -> nn.Module``.
        loss: ``(outputs, targets) -> scalar``.
        metric: ``(outputs, targets) -> float``, reported per epoch (``None`` for none).
        metric_name: what ``metric`` measures.
        on_epoch_start: optional hook ``(model, data, epoch) -> ImageSet | None`` run before
            every epoch, for tasks that relabel data as they go (DeepCluster); a returned
            ``ImageSet`` is what that epoch trains on.
    """

    name: str
    make_pretext_batch: BatchFn
    build_head: Callable[[int], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = accuracy
    metric_name: str = "accuracy"
    on_epoch_start: Callable | None = None

    def make_batch(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        del labels  # self-supervised: the labels are never looked at
        return self.make_pretext_batch(images, generator)


@dataclass(frozen=True)
class SupervisedTask:
    """Plain classification with the true labels: the book's upper baseline."""

    num_classes: int
    name: str = "supervised"
    metric_name: str = "accuracy"
    on_epoch_start: Callable | None = None

    def make_batch(self, images, labels, generator):
        return images, labels

    def build_head(self, feature_dim: int) -> nn.Module:
        return nn.Linear(feature_dim, self.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return accuracy(outputs, targets)
