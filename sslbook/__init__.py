"""sslbook: self-supervised visual representation learning, by doing it.

A notebook needs one import line, ``import sslbook as sb``; the pieces live in small modules:
:mod:`~sslbook.data`, :mod:`~sslbook.transforms`, :mod:`~sslbook.models`,
:mod:`~sslbook.pretext`, :mod:`~sslbook.train`, :mod:`~sslbook.evaluate`, :mod:`~sslbook.plot`,
:mod:`~sslbook.config` and :mod:`~sslbook.results`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sslbook")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0.0.0"

from sslbook import data, evaluate, models, pretext, plot, results, transforms  # noqa: E402
from sslbook.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from sslbook.config import PROFILES, Profile, get_profile  # noqa: E402
from sslbook.data import ImageSet, load_cifar10, load_image_folder, load_mnist  # noqa: E402
from sslbook.models import PretextModel, build_backbone  # noqa: E402
from sslbook.train import History, TrainConfig, pick_device, train  # noqa: E402

__all__ = [
    "PROFILES", "CheckpointError", "History", "ImageSet", "PretextModel", "Profile",
    "TrainConfig", "__version__", "build_backbone", "data", "evaluate", "get_profile",
    "load_checkpoint", "load_cifar10", "load_image_folder", "load_mnist", "models", "pick_device",
    "plot", "pretext", "results", "save_checkpoint", "train", "transforms",
]  # fmt: skip
