"""Pretext tasks: how the labels are made, a small head, and a loss.

Every technique module has the same shape, so a reader who knows one knows all:

- ``make_pretext_batch(images, generator) -> (inputs, targets)``: a pure, seeded function from a
  batch of unlabelled ``(B, C, H, W)`` images in [0, 1] to what the network sees and must predict;
- ``build_head(feature_dim) -> nn.Module``: the small head on top of the shared backbone;
- ``loss(outputs, targets) -> Tensor``: the objective;
- ``task``: the three bundled as a :class:`~sslbook.pretext.base.PretextTask` for
  :func:`sslbook.train.train`.
"""

from sslbook.pretext import (
    colorization,
    context,
    deepcluster,
    frameorder,
    inpainting,
    jigsaw,
    rotation,
    superres,
    synthetic,
)
from sslbook.pretext.base import PretextTask, SupervisedTask, accuracy

__all__ = [
    "PretextTask", "SupervisedTask", "accuracy", "colorization", "context", "deepcluster",
    "frameorder", "inpainting", "jigsaw", "rotation", "superres", "synthetic",
]  # fmt: skip
