"""sslbook: self-supervised visual representation learning, by doing it.

A notebook needs one import line, ``import sslbook as sb``; the pieces live in small modules,
from the bottom up:

- data and its keys: :mod:`~sslbook.data` (datasets as uint8 tensors), :mod:`~sslbook.fingerprint`
  (one key for every cache), :mod:`~sslbook.checkpoint`, :mod:`~sslbook.device`;
- networks and what runs them: :mod:`~sslbook.transforms`, :mod:`~sslbook.models` (the shared
  backbone), :mod:`~sslbook.decoders`, :mod:`~sslbook.adversarial`, :mod:`~sslbook.metrics`,
  :mod:`~sslbook.inference`, :mod:`~sslbook.patches`, :mod:`~sslbook.render`,
  :mod:`~sslbook.video`;
- training: :mod:`~sslbook.train` (the one loop), :mod:`~sslbook.config` (profiles),
  :mod:`~sslbook.recipes` and :mod:`~sslbook.pretext` (every technique, with its recipe);
- measuring and showing: :mod:`~sslbook.evaluate` (the probes), :mod:`~sslbook.compare` (every
  technique on one budget), :mod:`~sslbook.references` (published results, quoted),
  :mod:`~sslbook.results`, :mod:`~sslbook.plot`,
  :mod:`~sslbook.widgets` (interactive figures that work without a kernel, on the static book).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sslbook")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0.0.0"

from sslbook import (
    adversarial,
    checkpoint,
    colab,
    compare,
    config,
    data,
    decoders,
    device,
    evaluate,
    fingerprint,
    inference,
    metrics,
    models,
    patches,
    plot,
    pretext,
    recipes,
    references,
    render,
    results,
    transforms,
    video,
    widgets,
)  # fmt: skip
from sslbook.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sslbook.config import PROFILES, Profile, get_profile
from sslbook.data import ImageSet, load_cifar10, load_image_folder, load_mnist
from sslbook.device import pick_device
from sslbook.models import PretextModel, build_backbone
from sslbook.recipes import Recipe
from sslbook.train import History, TrainConfig, seed_everything, train

__all__ = [
    "PROFILES", "CheckpointError", "History", "ImageSet", "PretextModel", "Profile", "Recipe",
    "TrainConfig", "__version__", "adversarial", "build_backbone", "checkpoint", "colab", "compare",
    "config", "data", "decoders", "device", "evaluate", "fingerprint", "get_profile",
    "inference", "load_checkpoint", "load_cifar10", "load_image_folder", "load_mnist", "metrics",
    "models", "patches", "pick_device", "plot", "pretext", "recipes", "references", "render",
    "results", "save_checkpoint", "seed_everything", "train", "transforms", "video", "widgets",
]  # fmt: skip
