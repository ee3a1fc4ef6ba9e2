"""What the training loop needs from a task and from an adversary, and nothing more.

A pretext task is *how the labels are made* + a small head + a loss (VISSL's view). The one
training loop (:func:`sslbook.train.train`) draws a :class:`Batch` of augmented images, asks the
task to turn it into ``(inputs, targets)``, runs the model on the inputs and minimises the task's
loss. Every task of the book satisfies :class:`Task`: the pretext tasks (as a :class:`PretextTask`
or, for DeepCluster, a small stateful class) and the supervised baseline
(:class:`SupervisedTask`), which is the same interface with the labels used.

Targets and outputs are whatever the task needs: a tensor of class ids, images, or a small
dataclass when a task needs several tensors (inpainting's images and hole masks, the geometry of
a rendered scene). Only the task's own ``loss`` and ``metric`` look inside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.data import ImageSet
from sslbook.metrics import accuracy

BatchFn = Callable[[torch.Tensor, torch.Generator | None], tuple[Any, Any]]


@dataclass
class Batch:
    """One step's images, as the loop hands them to a task.

    Attributes:
        images: ``(B, C, H, W)`` float images in [0, 1], already augmented.
        labels: ``(B,)`` the true labels (``-1``: none). Only the supervised baseline reads them.
        index: ``(B,)`` positions of the images in the training set, for a task that keeps
            something per image (DeepCluster's pseudo-labels).
    """

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


@dataclass
class EpochPlan:
    """What a task's ``on_epoch_start`` hook tells the loop about the coming epoch.

    Attributes:
        order: ``(M,)`` indices into the training set, the images of this epoch in the order they
            are drawn (``None``: a fresh shuffle of all of them). It must hold at least
            ``len(data)`` indices, so every epoch has the same number of steps.
        fresh_parameters: parameters the hook re-initialised; the loop drops their optimiser
            state (momentum), so they start as new parameters would.
    """

    order: torch.Tensor | None = None
    fresh_parameters: Sequence[nn.Parameter] = ()


@runtime_checkable
class Task(Protocol):
    """The interface of every task the loop trains.

    Attributes:
        name: short name used in progress bars, results and plots.
        metric_name: what ``metric`` measures.
        metric: ``(outputs, targets) -> float`` reported per epoch, or ``None``.
        on_epoch_start: ``(model, data, epoch) -> EpochPlan | None`` run before every epoch, or
            ``None``; for tasks whose labels depend on the whole data set (DeepCluster).

    A task that keeps state across epochs may also define ``state_dict()`` and
    ``load_state_dict(state)``: the loop saves that state in its checkpoints and restores it.
    """

    name: str
    metric_name: str
    metric: Callable[[Any, Any], float] | None
    on_epoch_start: Callable[[nn.Module, ImageSet, int], EpochPlan | None] | None

    def make_batch(self, batch: Batch, generator: torch.Generator | None) -> tuple[Any, Any]:
        """``(inputs, targets)`` for one step: what the network sees and what it must predict."""
        ...

    def build_head(self, feature_dim: int) -> nn.Module:
        """The small head that sits on the shared backbone's ``feature_dim`` features."""
        ...

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The scalar objective."""
        ...


@runtime_checkable
class Adversary(Protocol):
    """The interface of a GAN opponent for the loop (see :class:`sslbook.adversarial.Adversary`).

    It is an ``nn.Module`` (the loop moves it, switches its train/eval mode, freezes it during
    the generator's step and saves its ``state_dict``) with these members besides.

    Attributes:
        lr: peak learning rate of its optimiser; it follows the generator's schedule.
    """

    lr: float

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimiser over the discriminator's parameters."""
        ...

    def discriminator_step_loss(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, float]:
        """``(loss, accuracy)`` of the discriminator on detached generator ``outputs``."""
        ...

    def generator_loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """What the generator adds to the task's loss."""
        ...

    def config(self) -> dict:
        """Settings that identify it in checkpoints."""
        ...

    def check(self, history) -> str | None:
        """A warning to raise after training when the game went wrong, else ``None``."""
        ...


@dataclass(frozen=True)
class PretextTask:
    """A pretext task: labels made from the images themselves.

    Attributes:
        name: short name used in results and plots.
        make_pretext_batch: ``(images, generator) -> (inputs, targets)``, pure and seeded.
        build_head: ``feature_dim -> nn.Module``.
        loss: ``(outputs, targets) -> scalar``.
        metric: ``(outputs, targets) -> float``, reported per epoch (``None`` for none).
        metric_name: what ``metric`` measures.
        on_epoch_start: never set for these tasks (their labels depend on one image only).
    """

    name: str
    make_pretext_batch: BatchFn
    build_head: Callable[[int], nn.Module]
    loss: Callable[[Any, Any], torch.Tensor]
    metric: Callable[[Any, Any], float] | None = accuracy
    metric_name: str = "accuracy"
    on_epoch_start: None = field(default=None, repr=False)

    def make_batch(self, batch: Batch, generator: torch.Generator | None) -> tuple[Any, Any]:
        """The pretext pair of the batch's images; the labels are never looked at."""
        return self.make_pretext_batch(batch.images, generator)


@dataclass(frozen=True)
class SupervisedTask:
    """Plain classification with the true labels: the book's upper baseline."""

    num_classes: int
    name: str = "supervised"
    metric_name: str = "accuracy"
    on_epoch_start: None = field(default=None, repr=False)

    def make_batch(self, batch: Batch, generator: torch.Generator | None):
        del generator
        return batch.images, batch.labels

    def build_head(self, feature_dim: int) -> nn.Module:
        return nn.Linear(feature_dim, self.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return accuracy(outputs, targets)
