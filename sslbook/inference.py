"""Running a trained network over many images: outputs, probabilities, features, accuracy.

Every function works in eval mode, in batches, on the network's own device, restores the
network's training mode afterwards, and returns float32 tensors on the CPU. Low in the package:
the chapters, the probes and the DeepCluster task all call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.data import ImageSet
from sslbook.device import pick_device
from sslbook.models import BLOCK_NAMES
from sslbook.transforms import to_float


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model``'s outputs for ``inputs`` ``(N, ...)`` (uint8 or float images): ``(N, ...)``."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    outputs = [
        model(to_float(inputs[i : i + batch_size]).to(device)).float().cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    model.train(was_training)
    return torch.cat(outputs)


def predict_proba(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax outputs of ``model`` for ``inputs`` ``(N, ...)``: ``(N, classes)``."""
    return predict(model, inputs, batch_size).softmax(-1)


@torch.no_grad()
def classify_accuracy(model: nn.Module, data: ImageSet, batch_size: int = 256) -> float:
    """Accuracy of a classifier ``model`` (images → logits) on labelled ``data``."""
    predicted = predict(model, data.images, batch_size).argmax(1)
    return (predicted == data.labels).float().mean().item()


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    data: ImageSet | torch.Tensor,
    blocks: Sequence[str] = BLOCK_NAMES,
    pool: int = 2,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Frozen features of every image at every block.

    Each block's map is average-pooled to ``pool x pool`` and flattened, keeping a little spatial
    layout (a common choice for probing intermediate layers).

    Args:
        backbone: a :class:`~sslbook.models.ResNet` (anything with ``feature_maps``).
        data: images (uint8 ``ImageSet`` or ``(N, C, H, W)`` tensor).
        blocks: which blocks to return.
        pool: output side of the adaptive average pooling.
        device: where to compute; the backbone is moved there (default: the fastest available).

    Returns:
        ``{block: (N, channels * pool * pool)}`` float32 CPU tensors.
    """
    images = data.images if isinstance(data, ImageSet) else data
    device = pick_device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    out: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    for start in range(0, len(images), batch_size):
        maps = backbone.feature_maps(to_float(images[start : start + batch_size].to(device)))
        for b in blocks:
            out[b].append(F.adaptive_avg_pool2d(maps[b].float(), pool).flatten(1).cpu())
    backbone.train(was_training)
    return {b: torch.cat(v) for b, v in out.items()}
