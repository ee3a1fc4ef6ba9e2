"""Rotation prediction (RotNet).

Gidaris, Singh & Komodakis (2018). *Unsupervised Representation Learning by Predicting Image
Rotations.* ICLR 2018, arXiv 1803.07728.

The seed idea: what if we prepared pairs of (rotated image, angle)? To say which way is up, a
network has to find the objects in the picture and know how they usually stand. Every image of a
batch appears at all four rotations (0, 90, 180, 270 degrees), which the paper found better than
one random rotation per image. Rotations by multiples of 90 degrees are exact (transposes and
flips), so no interpolation artefact gives the answer away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.models import linear_head
from sslbook.pretext.base import PretextTask
from sslbook.transforms import rotate90

ANGLES = (0, 90, 180, 270)


def make_pretext_batch(
    images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image at every rotation.

    Args:
        images: ``(B, C, H, W)`` square images.
        generator: unused (the task is deterministic); kept for the common interface.

    Returns:
        inputs ``(4B, C, H, W)``: all images at 0°, then all at 90°, 180°, 270° (counter-clockwise);
        targets ``(4B,)``: the rotation index 0..3.
    """
    del generator
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    b = images.shape[0]
    inputs = torch.cat([rotate90(images, k) for k in range(4)])  # (4B, C, H, W)
    targets = torch.arange(4, device=images.device).repeat_interleave(b)  # (4B,)
    return inputs, targets


def build_head(feature_dim: int) -> nn.Module:
    """A linear 4-way classifier on the pooled backbone features."""
    return linear_head(feature_dim, len(ANGLES))


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the four angles."""
    return F.cross_entropy(outputs, targets)


task = PretextTask(
    "rotation", make_pretext_batch, build_head, loss, metric_name="rotation accuracy"
)
