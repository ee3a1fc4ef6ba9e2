"""Same seed, same profile, same numbers: what the published book promises its readers.

On a CPU every random choice follows from the seed (``sb.seed_everything`` and per-epoch
generators) and PyTorch's CPU kernels are deterministic for a fixed thread count, so two runs
agree to float rounding at most. Accuracies are multiples of 1 / (test images), so any real
difference is far above :data:`TOLERANCE`.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import sslbook as sb
from sslbook.models import PretextModel
from sslbook.notebooks import run_notebook
from sslbook.pretext import rotation
from sslbook.results import read_summaries

from .conftest import REPO, needs_data
from .test_notebooks import SMOKE_PARAMETERS

# Absolute tolerance on every metric of two CPU runs with the same seed (fixed seeds,
# deterministic CPU kernels: in practice they are bitwise equal). book/how_to_run.md states it.
TOLERANCE = 1e-6
# Entries that legitimately differ between two identical runs: timings and run metadata.
NOT_METRICS = re.compile(r".*(seconds|per_second).*|written|code_version|torch|machine|device")
REFERENCE_NOTEBOOK = REPO / "notebooks" / "rotation.ipynb"


def _metrics(summary, prefix: str = "") -> dict[str, object]:
    """Flatten a summary to ``{"supervised.knn": 0.22, ...}``, leaving out :data:`NOT_METRICS`."""
    if isinstance(summary, dict):
        items = summary.items()
    elif isinstance(summary, list):
        items = enumerate(summary)
    else:
        return {prefix: summary}
    flat = {}
    for key, value in items:
        if not NOT_METRICS.fullmatch(str(key)):
            flat |= _metrics(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _differences(a: dict, b: dict) -> list[str]:
    """Every metric that is missing from one run or differs by more than :data:`TOLERANCE`."""
    ma, mb = _metrics(a), _metrics(b)
    if ma.keys() != mb.keys():
        return [f"entries differ: {sorted(ma.keys() ^ mb.keys())}"]
    return [f"{key}: {ma[key]!r} != {mb[key]!r}" for key in ma if not _agree(ma[key], mb[key])]


def _agree(x, y) -> bool:
    numbers = (int, float)
    if isinstance(x, numbers) and isinstance(y, numbers) and not isinstance(x, bool):
        return math.isclose(x, y, rel_tol=0.0, abs_tol=TOLERANCE)
    return x == y


def test_metric_comparison_ignores_timings_and_catches_a_changed_accuracy():
    run = {"knn": 0.25, "pretrain_seconds": 2.0, "written": "now", "supervised": {"knn": [0.5]}}
    rerun = run | {"pretrain_seconds": 3.0, "written": "later", "knn": 0.25 + TOLERANCE / 2}
    assert _differences(run, rerun) == []
    assert _differences(run, rerun | {"supervised": {"knn": [0.505]}}) == [
        "supervised.knn.0: 0.5 != 0.505"
    ]


def _train_tiny(seed: int) -> tuple[sb.History, dict[str, torch.Tensor]]:
    """Seed, build a tiny rotation model and train it on random images, as a chapter does."""
    sb.seed_everything(seed)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    data = sb.ImageSet(images, torch.zeros(64, dtype=torch.long), ("noise",))
    backbone = sb.build_backbone(width=8, depth=1)
    model = PretextModel(backbone, rotation.build_head(backbone.feature_dim))
    config = sb.TrainConfig(epochs=2, batch_size=16, seed=seed, precision="fp32")
    history = sb.train(model, data, rotation.make_task(), config, device="cpu", progress=False)
    return history, model.state_dict()


def test_same_seed_trains_bitwise_the_same_model():
    history, weights = _train_tiny(seed=1)
    again, weights_again = _train_tiny(seed=1)
    assert again.step_loss == history.step_loss
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)
    other, _ = _train_tiny(seed=2)
    assert other.step_loss != history.step_loss, "the seed must matter, or the test proves nothing"


def _run_chapter(tmp_path, monkeypatch, name: str) -> dict:
    """Execute the reference chapter with an empty cache (nothing reused) and its own results."""
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path / name / "cache"))
    monkeypatch.setenv("SSLBOOK_RESULTS", str(tmp_path / name / "results"))
    run_notebook(REFERENCE_NOTEBOOK, tmp_path / name / "out.ipynb", SMOKE_PARAMETERS, timeout=600)
    (summary,) = read_summaries(tmp_path / name / "results")
    return summary


@needs_data
@pytest.mark.notebook
def test_building_twice_with_the_same_seed_gives_the_same_metrics(tmp_path, monkeypatch):
    first = _run_chapter(tmp_path, monkeypatch, "first")
    second = _run_chapter(tmp_path, monkeypatch, "second")
    assert first["profile"] == "smoke" and first["seed"] == SMOKE_PARAMETERS["seed"]
    assert _differences(first, second) == []
