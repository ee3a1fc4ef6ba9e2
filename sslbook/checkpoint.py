"""Checkpoints that never lose work and never load the wrong thing.

Writes go to a temporary file in the same folder, then ``os.replace`` swaps it in: a run killed
mid-write leaves the previous checkpoint intact. Loading uses ``weights_only=True`` (no arbitrary
code from a pickle) and checks that the checkpoint was written by the same kind of model.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or belongs to a different model or training run."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically write ``state`` (tensors, numbers, strings, lists and dicts only) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, expect: dict | None = None) -> dict:
    """Load a checkpoint safely and check it matches what the caller is about to restore.

    Args:
        path: file written by :func:`save_checkpoint`.
        expect: entries that must be equal in the checkpoint (e.g. ``{"model_config": ...}``).

    Raises:
        CheckpointError: the file is corrupt, not a sslbook checkpoint, or does not match.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}). It may be "
            "truncated or corrupt: delete it and the notebook will train from scratch."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not a sslbook checkpoint (format {FORMAT_VERSION}); delete it or pass "
            "another path."
        )
    for key, wanted in (expect or {}).items():
        if state.get(key) != wanted:
            raise CheckpointError(
                f"{path} was written for a different {key.replace('_', ' ')}:\n"
                f"  checkpoint: {state.get(key)}\n  this run:   {wanted}\n"
                "Delete the file to train again, or point checkpoint= at another path."
            )
    return state


def default_path(name: str, **settings) -> Path:
    """Where a chapter keeps a model: ``<cache>/checkpoints/<name>-<hash of settings>.pt``.

    The hash covers every setting passed (profile, seed, ...) and the package version, so a
    changed setting trains a new model instead of loading a stale one. ``$SSLBOOK_CACHE`` moves
    the cache; delete the folder to retrain everything.
    """
    from sslbook import __version__
    from sslbook.data import cache_dir

    blob = json.dumps({**settings, "version": __version__}, sort_keys=True, default=repr)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return cache_dir() / "checkpoints" / f"{name}-{digest}.pt"
