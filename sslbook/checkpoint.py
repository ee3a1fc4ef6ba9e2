"""Checkpoints that never lose work and never load the wrong thing.

Writes go to a uniquely named temporary file in the same folder, then ``os.replace`` swaps it
in: a run killed mid-write leaves the previous checkpoint intact, and two runs writing the same
file never share a temporary file. Leftovers of killed writes are removed by the next write.
Loading uses ``weights_only=True`` (no arbitrary code from a pickle), turns every way a file can
be unreadable into one :class:`CheckpointError` that says what to do, and checks that the
checkpoint was written by the same kind of model and run.

Where a chapter keeps a model is :func:`cache_path`: the name of the technique and the
:func:`~sslbook.fingerprint.fingerprint` of everything that shaped the weights.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from sslbook.data import cache_dir

FORMAT_VERSION = 1
STALE_SECONDS = 600  # a temporary file this old belongs to a write that was killed


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or belongs to a different model or training run."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Create ``path`` atomically: ``write(file)`` fills a unique temporary file beside it, which
    then replaces ``path`` in one step. Readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: Path, older_than: float = STALE_SECONDS) -> int:
    """Delete temporary files of earlier, killed writes of ``path``; returns how many.

    Only files older than ``older_than`` seconds go: a younger one may belong to a write that is
    running right now in another process.
    """
    removed, now = 0, time.time()
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - leftover.stat().st_mtime > older_than:
                leftover.unlink()
                removed += 1
        except FileNotFoundError:  # another process cleaned it up first
            continue
    return removed


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically write ``state`` (tensors, numbers, strings, lists and dicts only) to ``path``."""
    return atomic_write(path, lambda f: torch.save({"format": FORMAT_VERSION, **state}, f))


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
    except Exception as error:  # truncated, garbage, a pickle with code: all mean the same here
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {str(error)[:200]}). "
            "It may be truncated or corrupt: delete it and the notebook will train from scratch."
        ) from None
    if not isinstance(state, dict) or not _equal(state.get("format"), FORMAT_VERSION):
        raise CheckpointError(
            f"{path} is not a sslbook checkpoint (format {FORMAT_VERSION}); delete it or pass "
            "another path."
        )
    for key, wanted in (expect or {}).items():
        if not _equal(state.get(key), wanted):
            raise CheckpointError(
                f"{path} was written for a different {key.replace('_', ' ')}:\n"
                f"  checkpoint: {state.get(key)}\n  this run:   {wanted}\n"
                "Delete the file to train again, or point checkpoint= at another path."
            )
    return state


def _equal(found, wanted) -> bool:
    """``found == wanted``, where ``found`` comes from a file that may be damaged: a tensor where
    a number was expected has no truth value, and comparing must say "different", not raise."""
    try:
        return bool(found == wanted)
    except Exception:
        return False


def cache_path(kind: str, name: str, key: str, suffix: str = ".pt") -> Path:
    """``<cache>/<kind>/<name>-<key><suffix>``: where a cached artefact lives.

    ``key`` is a :func:`~sslbook.fingerprint.fingerprint` of everything that shaped it, so a
    changed setting or package finds no file and recomputes. ``$SSLBOOK_CACHE`` moves the cache;
    delete the folder to recompute everything.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return cache_dir() / kind / f"{safe}-{key}{suffix}"
