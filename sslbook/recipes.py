"""A technique's whole recipe in one object: what to build, what to train it on, and how.

Every technique module of :mod:`sslbook.pretext` exports ``recipe(profile, seed=0, data=None,
**overrides) -> Recipe``. The chapter notebook and the comparison engine both call it, so there is
one place where a technique's set-up is written: its model and head, its task and the task's
settings, its optimiser settings, its adversary, and the images it pretrains on. A chapter that
deliberately departs from the headline setting says so as an override, for example
``rotation.recipe(cfg, seed, epochs=40)``.

Overrides are checked: each name is either a field of :class:`~sslbook.train.TrainConfig` or a
setting of the technique (its ``Settings`` dataclass); anything else is an error that lists both.

:meth:`Recipe.train` trains it, or loads the checkpoint of an identical earlier run: the
checkpoint is named by the :func:`~sslbook.fingerprint.fingerprint` of the technique, its
settings, the training configuration, the model, the data and the package source.
"""

from __future__ import annotations

import dataclasses
import functools
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslbook.checkpoint import cache_path
from sslbook.config import Profile
from sslbook.data import ImageSet, load_cifar10
from sslbook.fingerprint import data_digest, fingerprint, weights_digest
from sslbook.models import PretextModel, build_backbone
from sslbook.pretext.base import Adversary, SupervisedTask, Task
from sslbook.train import Augment, History, TrainConfig, train
from sslbook.transforms import random_crop_flip

TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "seed")


@dataclass
class Recipe:
    """What one technique trains, ready for :func:`sslbook.train.train`.

    Attributes:
        technique: the technique's name (as registered in :data:`sslbook.pretext.TECHNIQUES`).
        model: the network trained; ``model.backbone`` is the shared backbone that is probed.
        task: the pretext task (labels made from the images).
        config: optimiser settings.
        data: the unlabelled training set (frame order: videos made from it).
        adversary: the discriminator of a GAN chapter, else ``None``.
        settings: the technique's own settings (its ``Settings`` dataclass), as used.
        augment: the batched augmentation the loop applies before the task sees the images
            (default: random crops and flips; ``None`` for a task that makes its own views).
    """

    technique: str
    model: nn.Module
    task: Task
    config: TrainConfig
    data: ImageSet
    adversary: Adversary | None = None
    settings: Any = None
    augment: Augment | None = random_crop_flip
    _initial_weights: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        # The initial weights follow from the seed and the code, but a reader may edit the model
        # before training it: the key then sees the edit.
        self._initial_weights = weights_digest(self.model)

    @property
    def backbone(self) -> nn.Module:
        """The shared backbone inside ``model``: what the probes evaluate."""
        return self.model.backbone

    @functools.cached_property
    def fingerprint(self) -> str:
        """Key of this exact run: technique, settings, training configuration, the model's
        configuration and initial weights, the adversary, the data and the package source."""
        settings = dataclasses.asdict(self.settings) if self.settings is not None else None
        adversary = self.adversary.config() if self.adversary is not None else None
        model_config = self.model.config() if hasattr(self.model, "config") else None
        augment = None if self.augment is None else self.augment.__qualname__
        return fingerprint(
            self.technique, settings, self.config, model_config, self._initial_weights,
            adversary, augment, data_digest(self.data),
        )  # fmt: skip

    @property
    def checkpoint_path(self) -> Path:
        """Where :meth:`train` keeps the weights: ``<cache>/checkpoints/<technique>-<key>.pt``."""
        return cache_path("checkpoints", self.technique, self.fingerprint)

    def train(self, progress: bool = True, checkpoint: bool = True, **kwargs) -> History:
        """Train the recipe's model in place, or load an identical earlier run's checkpoint.

        Args:
            progress: show a progress bar.
            checkpoint: keep the weights in the cache (``False``: train every time).
            **kwargs: passed on to :func:`sslbook.train.train` (e.g. ``on_epoch_end``).
        """
        path = self.checkpoint_path if checkpoint else None
        return train(
            self.model, self.data, self.task, self.config, checkpoint=path, progress=progress,
            adversary=self.adversary, augment=self.augment, **kwargs,
        )  # fmt: skip


def resolve(
    technique: str, defaults, profile: Profile, seed: int, overrides: dict, **train_defaults
) -> tuple[Any, TrainConfig]:
    """Split a recipe's ``overrides`` into the technique's settings and its training settings.

    Args:
        technique: for error messages.
        defaults: an instance of the technique's ``Settings`` dataclass (the headline setting).
        profile: sizes the training (epochs, batch size, learning rate).
        seed: the run's seed.
        overrides: what the caller changes.
        **train_defaults: the technique's own departures from the profile's training settings
            (e.g. DeepCluster's constant learning rate); ``overrides`` win over them.

    Returns:
        ``(settings, config)``.

    Raises:
        ValueError: an override is neither a setting nor a training field (both are listed).
    """
    setting_names = {f.name for f in fields(defaults)}
    unknown = sorted(set(overrides) - setting_names - set(TRAIN_FIELDS))
    if unknown:
        raise ValueError(
            f"{technique}.recipe has no setting {', '.join(map(repr, unknown))}; its settings: "
            f"{', '.join(sorted(setting_names)) or '(none)'}; training settings: "
            f"{', '.join(TRAIN_FIELDS)}"
        )
    settings = replace(defaults, **{k: v for k, v in overrides.items() if k in setting_names})
    training = {**train_defaults, **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS}}
    return settings, profile.train_config(seed, **training)


def pretraining_images(profile: Profile, seed: int = 0) -> ImageSet:
    """The profile's unlabelled pretraining images: ``profile.n_unlabelled`` CIFAR-10 training
    images (class-balanced; their labels are never used to pretrain)."""
    return load_cifar10("train", n=profile.n_unlabelled, seed=seed)


def unlabelled(data: ImageSet | None, profile: Profile, seed: int) -> ImageSet:
    """``data`` if given (your own photos, the comparison's images), else the profile's
    :func:`pretraining_images`."""
    return pretraining_images(profile, seed) if data is None else data


def shared_backbone(profile: Profile, seed: int) -> nn.Module:
    """The book's backbone at the profile's size, initialised from ``seed``: the same initial
    network for every technique, the random-init baseline and the supervised one."""
    return build_backbone(**profile.backbone_settings(), seed=seed)


def backbone_with_head(profile: Profile, seed: int, task: Task) -> nn.Module:
    """A :class:`~sslbook.models.PretextModel`: the shared backbone and the task's head, the head
    initialised from ``seed`` too."""
    backbone = shared_backbone(profile, seed)
    with seeded(seed):
        return PretextModel(backbone, task.build_head(backbone.feature_dim))


@contextmanager
def seeded(seed: int):
    """Draw initial weights (heads, decoders, discriminators) from ``seed`` alone, whatever ran
    before: a recipe built twice is the same network, and its checkpoint key says so. The global
    random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class SupervisedSettings:
    """The supervised baseline has no settings of its own: its labels are the data's."""


def supervised(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides):
    """The ceiling of every chapter as a recipe: the shared backbone and a linear classifier
    trained with the labels of ``data`` (default: the profile's ``n_labelled`` images) for
    ``profile.supervised_epochs``. Its checkpoint is keyed like any recipe's, by the data among
    the rest, so a baseline trained on other images is never loaded by mistake."""
    if data is None:
        data = load_cifar10("train", n=profile.n_labelled, seed=seed)
    settings, config = resolve("supervised", SupervisedSettings(), profile, seed, overrides,
                               epochs=profile.supervised_epochs,
                               lr=profile.supervised_lr)  # fmt: skip
    task = SupervisedTask(len(data.classes))
    model = backbone_with_head(profile, seed, task)
    return Recipe("supervised", model, task, config, data, settings=settings)
