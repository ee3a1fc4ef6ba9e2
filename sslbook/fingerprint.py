"""One fingerprint for every cache: checkpoints, evaluations, comparison results, render banks.

A cached artefact may be reused only if nothing that shaped it has changed. What shapes it is
the settings that went into it (a task's settings, the training configuration, the data) *and*
the code that turned them into the artefact. So every cache key is :func:`fingerprint` of the
settings, and :func:`fingerprint` always mixes in :func:`source_digest`, a hash of every source
file of the ``sslbook`` package: a reader who edits a setting or the package gets a new key and
retrains; a reader who changes nothing gets the same key and reuses.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

PACKAGE = Path(__file__).resolve().parent
DIGEST_LENGTH = 16  # hex characters kept in file names: 64 bits, no collision in any cache


@functools.cache
def source_digest() -> str:
    """SHA-256 of the package's source: every ``*.py`` file under ``sslbook/``, by relative path
    and content, in a fixed order. Computed once per process."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes (on the CPU, contiguous)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        t = tensor.detach().cpu()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():  # flattened first: a 1-D contiguous tensor can be viewed as bytes
            digest.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's class, parameter and buffer names and values."""
    state = module.state_dict()
    names = "|".join(state)
    return hashlib.sha256(
        f"{type(module).__name__}|{names}|{tensor_digest(*state.values())}".encode()
    ).hexdigest()


def data_digest(data) -> str:
    """SHA-256 of an :class:`~sslbook.data.ImageSet`'s images and labels.

    Kept on the object after the first call (hashing 50,000 images takes a fraction of a second,
    but every cache lookup asks): an ImageSet's tensors are not meant to be edited in place.
    """
    cached = getattr(data, "_digest", None)
    if cached is None:
        cached = tensor_digest(data.images, data.labels)
        object.__setattr__(data, "_digest", cached)
    return cached


def fingerprint(*parts, code: bool = True) -> str:
    """A short hex key for ``parts`` (settings: numbers, strings, dicts, lists, dataclasses,
    tensors, modules, image sets) and, with ``code``, the package source (:func:`source_digest`).

    Two calls give the same key exactly when the parts are equal and the code is the same.
    """
    blob = json.dumps([_encode(p) for p in parts], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode())
    if code:
        digest.update(source_digest().encode())
    return digest.hexdigest()[:DIGEST_LENGTH]


def _encode(value):
    """A JSON-ready stand-in for ``value`` that is equal exactly when the values are."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_encode(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_digest(value)}
    if isinstance(value, np.ndarray):
        return {"tensor": tensor_digest(torch.from_numpy(np.ascontiguousarray(value)))}
    if isinstance(value, nn.Module):
        return {"module": weights_digest(value)}
    if hasattr(value, "images") and hasattr(value, "labels"):  # an ImageSet (no import cycle)
        return {"images": data_digest(value), "n": len(value.images)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__name__: _encode(dataclasses.asdict(value))}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot fingerprint a {type(value).__name__}: pass its settings instead")
