"""Pretext tasks: how the labels are made, a small head, and a loss, each with its recipe.

Every technique module has the same shape, so a reader who knows one knows all:

- ``NAME``, ``TITLE`` and ``PAPER``: what it is called and where it comes from;
- ``make_pretext_batch(images, generator) -> (inputs, targets)``: a pure, seeded function from a
  batch of unlabelled ``(B, C, H, W)`` images in [0, 1] to what the network sees and must predict;
- ``build_head(feature_dim) -> nn.Module``: the small head on top of the shared backbone;
- ``loss(outputs, targets) -> Tensor``: the objective;
- ``Settings``: a dataclass of the technique's own settings, with the headline values;
- ``make_task(settings) -> Task``: the three above bundled for :func:`sslbook.train.train`;
- ``recipe(profile, seed=0, data=None, **overrides) -> Recipe``: everything the chapter and the
  comparison train (see :mod:`sslbook.recipes`).

:data:`TECHNIQUES` is the one registry: adding a technique is one new module here and one name
in it. Modules load when first used (``sb.pretext.rotation`` or :func:`technique`), so importing
this package does not import every technique.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sslbook.pretext.base import (
    Adversary,
    Batch,
    EpochPlan,
    PretextTask,
    SupervisedTask,
    Task,
)

#: Every technique of the book, in the book's order: the one registry.
TECHNIQUES = (
    "rotation", "colorization", "inpainting", "superres", "context", "jigsaw", "deepcluster",
    "synthetic", "frameorder", "simclr", "simsiam", "mim",
)  # fmt: skip


def technique(name: str) -> ModuleType:
    """The module of technique ``name`` (e.g. ``technique("rotation").recipe(cfg)``).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in TECHNIQUES:
        raise ValueError(f"unknown technique {name!r}; choose one of: {', '.join(TECHNIQUES)}")
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str) -> ModuleType:
    if name in TECHNIQUES:
        return technique(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *TECHNIQUES])


__all__ = [
    "TECHNIQUES", "Adversary", "Batch", "EpochPlan", "PretextTask", "SupervisedTask", "Task",
    "technique",
]  # fmt: skip
