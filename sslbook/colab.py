"""Pick a profile that fits the machine, and tell the reader what was found.

Two readers lose an afternoon without a word of warning: one who opens a chapter on Colab and
forgets to switch to a GPU runtime (training then takes many times longer), and one who has a GPU
but leaves ``profile = None`` and so trains the small ``cpu`` profile. :func:`setup` is the one
call a notebook's set-up cell makes: it looks at the process (:func:`detect`), decides
(:func:`choose_profile`, a pure function, so every case is tested without a GPU or Colab), prints
one or two lines about it and returns the profile name to use.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from sslbook.config import DEFAULT_PROFILE, PROFILE_ENV, PROFILES

GPU_PROFILE = "gpu"
COLAB_GPU_STEPS = "Runtime → Change runtime type → T4 GPU"


@dataclass(frozen=True)
class Environment:
    """What the choice of a profile depends on.

    Attributes:
        colab: running inside Google Colab.
        gpu: the CUDA device's name, or ``None`` without CUDA.
        profile_env: the value of ``$SSLBOOK_PROFILE`` (``None`` when unset or empty).
        device: one line naming where this process computes (see
            :func:`sslbook.device.describe`); only used in messages.
    """

    colab: bool = False
    gpu: str | None = None
    profile_env: str | None = None
    device: str = "CPU"


@dataclass(frozen=True)
class Choice:
    """The profile to use and what to tell the reader about it.

    Attributes:
        profile: a name of :data:`sslbook.config.PROFILES`.
        message: what to print (one or a few lines).
        warning: the message is a warning (the run will be much slower than it needs to be).
    """

    profile: str
    message: str
    warning: bool = False


def detect() -> Environment:
    """The :class:`Environment` of this process: Colab (its module is already imported in a
    Colab kernel; importing it here would fail elsewhere), CUDA and ``$SSLBOOK_PROFILE``."""
    import torch

    from sslbook.device import describe

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return Environment(
        colab="google.colab" in sys.modules,
        gpu=gpu,
        profile_env=os.environ.get(PROFILE_ENV) or None,
        device=describe(),
    )


def choose_profile(requested: str | None, env: Environment) -> Choice:
    """Which profile to train, and why, for a notebook's ``profile`` parameter ``requested``.

    An explicit profile (the notebook's, else ``$SSLBOOK_PROFILE``) always wins, with a warning
    when it is ``"gpu"`` on a machine without one. Otherwise a GPU means ``"gpu"``; no GPU means
    ``"cpu"``, and on Colab a hint how to get a GPU runtime.

    Raises:
        ValueError: ``requested`` (or ``$SSLBOOK_PROFILE``) is not a profile's name.
    """
    if requested or env.profile_env:
        source = "the notebook's profile" if requested else f"${PROFILE_ENV}"
        return _explicit(requested or env.profile_env, source, env)
    if env.gpu is not None:
        return Choice(GPU_PROFILE, _gpu_found(env))
    if env.colab:
        return Choice(DEFAULT_PROFILE, _colab_without_gpu(env), warning=True)
    return Choice(DEFAULT_PROFILE, f"profile {DEFAULT_PROFILE!r} on {env.device}")


def setup(profile: str | None = None) -> str:
    """Choose the profile for this machine (:func:`choose_profile`), print why, and return its
    name: the first lines of a chapter, e.g. ``profile = sb.colab.setup(profile)``."""
    choice = choose_profile(profile, detect())
    print(choice.message, file=sys.stderr if choice.warning else sys.stdout)
    return choice.profile


def _explicit(name: str, source: str, env: Environment) -> Choice:
    """The profile the reader (or the book build) asked for, warned about if it needs a GPU
    that is not there."""
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} ({source}); choose one of: {', '.join(PROFILES)}"
        )
    if name == GPU_PROFILE and env.gpu is None:
        hint = f" On Colab: {COLAB_GPU_STEPS}, then run the notebook again." if env.colab else ""
        return Choice(
            name,
            f"warning: profile {name!r} ({source}) but no GPU was found, only {env.device}: "
            f"training will take many times longer than on a GPU.{hint} "
            f"Or set profile = {DEFAULT_PROFILE!r} in the parameters cell.",
            warning=True,
        )
    return Choice(name, f"profile {name!r} ({source}) on {env.device}")


def _gpu_found(env: Environment) -> str:
    gpu = PROFILES[GPU_PROFILE]
    return (
        f"GPU found ({env.gpu}): using profile {GPU_PROFILE!r} ({gpu.n_unlabelled:,} images, "
        f"{gpu.epochs} epochs, backbone width {gpu.width}). For another one, set profile = "
        f"{DEFAULT_PROFILE!r} (or 'smoke') in the parameters cell."
    )


def _colab_without_gpu(env: Environment) -> str:
    return (
        f"This Colab runtime has no GPU ({env.device}): using profile {DEFAULT_PROFILE!r}, "
        "which takes a few minutes per chapter on 2 CPU cores; Colab's free CPU runtime is of "
        f"that order. For the full {GPU_PROFILE!r} profile, switch to a GPU: {COLAB_GPU_STEPS}, "
        "then run the notebook again from the top (the runtime restarts)."
    )
