"""Profiles: how big a run is, in one named bundle.

- ``smoke``: CI's profile. Every notebook runs end to end in well under a minute on 2 CPU cores;
  the numbers mean nothing, the code paths are all exercised.
- ``cpu``: the published book. A few minutes per chapter on 2 CPU cores, with real learning.
- ``gpu``: full CIFAR-10 and longer training, for a GPU or Colab.

Self-supervision's premise is that unlabelled images are plentiful and labels are not: every
profile pretrains on ``n_unlabelled`` images and gives the probes and the supervised baseline the
labels of only ``n_labelled`` of them.

A notebook's ``parameters`` cell holds ``profile = None``; ``None`` means ``$SSLBOOK_PROFILE`` if
set (so a whole book build can switch profile), else ``"cpu"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from sslbook.train import TrainConfig

PROFILE_ENV = "SSLBOOK_PROFILE"
DEFAULT_PROFILE = "cpu"


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets shared by every chapter.

    Attributes:
        name: ``smoke``, ``cpu`` or ``gpu``.
        n_unlabelled: CIFAR-10 training images for pretraining (their labels are never used).
        n_labelled: training images whose labels the probes and the supervised baseline use
            (a class-balanced subset of the unlabelled ones).
        n_test: held-out labelled images every evaluation is measured on.
        width: backbone width (channels of its first stage).
        depth: residual blocks per backbone stage.
        stem_stride: 1 or 2, whether the backbone's stem halves the resolution (see
            :class:`sslbook.models.ResNet`).
        epochs: pretraining epochs (passes over the ``n_unlabelled`` images).
        supervised_epochs: epochs of the supervised baseline (over the ``n_labelled`` images).
        supervised_lr: its peak learning rate.
        batch_size: images per batch (a pretext task may expand each image into several inputs).
        lr: peak learning rate of SGD.
        finetune_epochs: epochs of few-label fine-tuning.
        finetune_labels: labelled images per class used for fine-tuning curves.
        probe_labels: labelled images per class for label-efficiency curves of the linear probe.
    """

    name: str
    n_unlabelled: int
    n_labelled: int
    n_test: int
    width: int
    depth: int
    stem_stride: int
    epochs: int
    supervised_epochs: int
    supervised_lr: float
    batch_size: int
    lr: float
    finetune_epochs: int
    finetune_labels: tuple[int, ...]
    probe_labels: tuple[int, ...]

    def train_config(self, seed: int = 0, **overrides) -> TrainConfig:
        """Pretraining settings of this profile (any :class:`TrainConfig` field overridable)."""
        base = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed)
        return replace(base, **overrides)

    def backbone_settings(self) -> dict:
        """The arguments of :func:`sslbook.models.build_backbone` this profile fixes."""
        return {"width": self.width, "depth": self.depth, "stem_stride": self.stem_stride}

    def finetune_config(self, seed: int = 0) -> TrainConfig:
        """Settings for few-label fine-tuning (small batches: there are few images)."""
        return self.train_config(seed, epochs=self.finetune_epochs, batch_size=32, lr=0.02)


PROFILES = {
    "smoke": Profile(
        name="smoke", n_unlabelled=256, n_labelled=256, n_test=200, width=8, depth=1,
        stem_stride=1, epochs=1, supervised_epochs=1, supervised_lr=0.05, batch_size=64,
        lr=0.05, finetune_epochs=2, finetune_labels=(5, 10), probe_labels=(2, 5, 20),
    ),
    "cpu": Profile(
        name="cpu", n_unlabelled=50_000, n_labelled=5000, n_test=2000, width=16, depth=1,
        stem_stride=2, epochs=1, supervised_epochs=60, supervised_lr=0.1, batch_size=128,
        lr=0.2, finetune_epochs=12, finetune_labels=(50, 250, 500),
        probe_labels=(2, 5, 10, 50, 100, 500),
    ),
    "gpu": Profile(
        name="gpu", n_unlabelled=50_000, n_labelled=50_000, n_test=10_000, width=64, depth=2,
        stem_stride=1, epochs=60, supervised_epochs=60, supervised_lr=0.1, batch_size=256,
        lr=0.1, finetune_epochs=30, finetune_labels=(10, 100, 1000, 5000),
        probe_labels=(1, 10, 100, 1000, 5000),
    ),
}  # fmt: skip


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile called ``name`` (``None``: ``$SSLBOOK_PROFILE`` or ``"cpu"``), with any
    field overridden by keyword.

    Raises:
        ValueError: unknown profile or unknown field, naming the valid ones.
    """
    name = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if name not in PROFILES:
        source = f" (from ${PROFILE_ENV})" if os.environ.get(PROFILE_ENV) == name else ""
        raise ValueError(f"unknown profile {name!r}{source}; choose one of: {', '.join(PROFILES)}")
    valid = {f.name for f in fields(Profile)} - {"name"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"unknown profile setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
