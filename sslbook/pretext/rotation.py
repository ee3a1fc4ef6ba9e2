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

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.models import linear_head
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, backbone_with_head, resolve, unlabelled
from sslbook.transforms import rotate90

NAME = "rotation"
TITLE = "Rotation prediction"
PAPER = "Gidaris, Singh & Komodakis (2018), arXiv 1803.07728"

ANGLES = (0, 90, 180, 270)


@dataclass(frozen=True)
class Settings:
    """The rotation recipe's own settings.

    Attributes:
        all_rotations: every image at all four angles in its batch (the paper's choice); else
            one random angle per image.
    """

    all_rotations: bool = True


def make_pretext_batch(
    images: torch.Tensor, generator: torch.Generator | None = None, all_rotations: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image at every rotation (or, with ``all_rotations=False``, at one random angle).

    Args:
        images: ``(B, C, H, W)`` square images.
        generator: draws the angles when ``all_rotations`` is off.
        all_rotations: the paper's four rotations per image.

    Returns:
        inputs ``(4B, C, H, W)``: all images at 0°, then all at 90°, 180°, 270° (counter-clockwise)
        (``(B, C, H, W)`` with one angle each); targets ``(4B,)``: the rotation index 0..3.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    b = images.shape[0]
    if not all_rotations:
        targets = torch.randint(len(ANGLES), (b,), generator=generator).to(images.device)
        rotated = torch.stack([rotate90(images, k) for k in range(4)])  # (4, B, C, H, W)
        return rotated[targets, torch.arange(b, device=images.device)], targets
    inputs = torch.cat([rotate90(images, k) for k in range(4)])  # (4B, C, H, W)
    targets = torch.arange(4, device=images.device).repeat_interleave(b)  # (4B,)
    return inputs, targets


def build_head(feature_dim: int) -> nn.Module:
    """A linear 4-way classifier on the pooled backbone features."""
    return linear_head(feature_dim, len(ANGLES))


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the four angles."""
    return F.cross_entropy(outputs, targets)


def make_task(settings: Settings = Settings()) -> PretextTask:
    """The rotation task for the training loop."""
    batch = partial(make_pretext_batch, all_rotations=settings.all_rotations)
    return PretextTask(NAME, batch, build_head, loss, metric_name="rotation accuracy")


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: four rotations per image, at the profile's learning rate.
    Each image enters the batch four times, so the linear scaling rule would suggest a larger
    step, but the profiles' rates are already large ones (in the ``cpu`` profile, 0.2 trained
    features no worse than 0.1: ``benchmarks/README.md``), so the recipe keeps them.

    Args:
        profile: sizes the run.
        seed: initial weights and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    task = make_task(settings)
    model = backbone_with_head(profile, seed, task)
    return Recipe(NAME, model, task, config, unlabelled(data, profile, seed), settings=settings)
