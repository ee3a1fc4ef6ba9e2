"""sslbook: self-supervised visual representation learning, by doing it.

A notebook needs one import line, ``import sslbook as sb``; the pieces live in small modules:
:mod:`~sslbook.data`, :mod:`~sslbook.transforms`, :mod:`~sslbook.models`,
:mod:`~sslbook.pretext`, :mod:`~sslbook.train`, :mod:`~sslbook.evaluate`, :mod:`~sslbook.plot`,
:mod:`~sslbook.config`, :mod:`~sslbook.results`, :mod:`~sslbook.render` (synthetic scenes) and
:mod:`~sslbook.video` (moving digits); :mod:`~sslbook.compare` runs every technique on one budget.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sslbook")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0.0.0"

from sslbook import (
    compare,
    data,
    evaluate,
    models,
    plot,
    pretext,
    render,
    results,
    transforms,
    video,
)  # fmt: skip
from sslbook.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sslbook.config import PROFILES, Profile, get_profile
from sslbook.data import ImageSet, load_cifar10, load_image_folder, load_mnist
from sslbook.models import PretextModel, build_backbone
from sslbook.train import History, TrainConfig, pick_device, seed_everything, train

__all__ = [
    "PROFILES", "CheckpointError", "History", "ImageSet", "PretextModel", "Profile",
    "TrainConfig", "__version__", "build_backbone", "compare", "data", "evaluate", "get_profile",
    "load_checkpoint", "load_cifar10", "load_image_folder", "load_mnist", "models", "pick_device",
    "plot", "pretext", "render", "results", "save_checkpoint", "seed_everything", "train",
    "transforms", "video",
]  # fmt: skip
