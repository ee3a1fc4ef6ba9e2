"""Machine-readable results: every chapter's summary and the comparison's table.

Every technique notebook ends with :func:`write_summary`, producing
``<results dir>/<technique>-<profile>-seed<seed>.json``; the comparison chapter keeps one file per
method and seed under ``<results dir>/comparison/`` (reused by a later build of the same code)
and its table in ``comparison-<profile>-seed<seed>.json``. The results directory is
``$SSLBOOK_RESULTS`` if set, else ``_build/results`` at the root of the book (the folder holding
``_config.yml``), else a ``results`` folder in the user cache.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from sslbook.checkpoint import atomic_write
from sslbook.data import cache_dir
from sslbook.fingerprint import source_digest

RESULTS_ENV = "SSLBOOK_RESULTS"
REQUIRED_KEYS = (
    "technique", "profile", "seed", "pretext_metric", "linear_probe", "knn",
    "random_init", "supervised", "pretrain_seconds", "images_per_second",
)  # fmt: skip


def book_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) that holds ``_config.yml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").exists():
            return folder
    return None


def results_dir() -> Path:
    """Where summaries are written (see the module docstring)."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    root = book_root()
    return root / "_build" / "results" if root else cache_dir() / "results"


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    from sslbook import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def write_summary(summary: dict, directory: str | os.PathLike | None = None) -> Path:
    """Validate and atomically write a chapter's summary as JSON; returns the file's path.

    ``summary`` must hold :data:`REQUIRED_KEYS`; accuracies must be in [0, 1]. The code version,
    device and time are added.

    Raises:
        ValueError: a key is missing or a value is not a finite number where one is expected.
    """
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing}; it needs all of {list(REQUIRED_KEYS)}")
    for key in ("linear_probe", "knn"):
        value = summary[key]
        if not (isinstance(value, float | int) and 0.0 <= value <= 1.0):
            raise ValueError(f"summary[{key!r}] must be an accuracy in [0, 1], got {value!r}")
    folder = Path(directory) if directory is not None else results_dir()
    path = folder / f"{summary['technique']}-{summary['profile']}-seed{summary['seed']}.json"
    return write_json(path, {**summary, **provenance()})


def write_comparison(comparison: dict, directory: str | os.PathLike | None = None) -> Path:
    """Atomically write the comparison chapter's table (``profile``, ``seed`` and ``summary``
    required) as ``comparison-<profile>-seed<seed>.json``; returns the file's path."""
    missing = [k for k in ("profile", "seed", "summary") if k not in comparison]
    if missing:
        raise ValueError(f"the comparison lacks {missing}")
    folder = Path(directory) if directory is not None else results_dir()
    path = folder / f"comparison-{comparison['profile']}-seed{comparison['seed']}.json"
    return write_json(path, {"technique": "comparison", **comparison, **provenance()})


def provenance() -> dict:
    """What produced a result: code version, torch, machine, device and time."""
    return {
        "code_version": code_version(),
        "source_digest": source_digest()[:16],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (a uniquely named temporary file, then a
    rename), so an interrupted run never leaves half a file for a later build to read, and two
    runs writing the same file never tear each other's writes."""
    text = json.dumps(data, indent=2, default=_jsonable) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def read_summaries(directory: str | os.PathLike | None = None) -> list[dict]:
    """Every chapter summary in the results directory, sorted by file name (the comparison's
    own table is not a chapter summary and is left out).

    Raises:
        ValueError: a summary file is damaged; the message names it and says what to do.
    """
    folder = Path(directory) if directory is not None else results_dir()
    files = [p for p in sorted(folder.glob("*.json")) if not p.name.startswith("comparison-")]
    summaries = []
    for path in files:
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{path} is not a readable summary ({error}); delete it and re-run its chapter"
            ) from None
    return summaries


def _jsonable(value):
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def chapter_summary(
    technique: str,
    profile,
    seed: int,
    pretext_metric: tuple[str, float],
    evaluations: dict,
    history,
    method: str | None = None,
    **extra,
) -> dict:
    """The summary every chapter writes, built from its evaluations.

    Args:
        technique: chapter name (file name of the summary).
        profile: the :class:`~sslbook.config.Profile` used.
        seed: the run's seed.
        pretext_metric: ``(name, value)`` of the pretext task's own score on held-out data.
        evaluations: ``{name: Evaluation}`` with ``"random init"``, ``"supervised"`` and the
            method (``method``, default ``technique``).
        history: the pretraining :class:`~sslbook.train.History`.
        **extra: chapter-specific entries (JSON-serialisable).
    """
    learned = evaluations[method or technique]
    return {
        "technique": technique,
        "profile": profile.name,
        "seed": seed,
        "pretext_metric": {"name": pretext_metric[0], "value": float(pretext_metric[1])},
        **learned.summary(),
        "random_init": evaluations["random init"].summary(),
        "supervised": evaluations["supervised"].summary(),
        "pretrain_seconds": history.seconds,
        "images_per_second": history.images_per_second,
        "n_unlabelled": profile.n_unlabelled,
        "n_labelled": profile.n_labelled,
        "n_test": profile.n_test,
        **extra,
    }
