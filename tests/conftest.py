"""Shared fixtures: real data from $SSLBOOK_DATA (or ../shared/data beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import sslbook as sb

REPO = Path(__file__).resolve().parents[1]


def _default_data() -> Path | None:
    if os.environ.get("SSLBOOK_DATA"):
        return Path(os.environ["SSLBOOK_DATA"])
    beside = REPO.parent / "shared" / "data"
    return beside if beside.is_dir() else None


DATA = _default_data()
HAS_CIFAR = DATA is not None and any(
    (DATA / name).is_dir() for name in ("cifar10", "cifar-10-batches-py")
)
needs_data = pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 not found: set SSLBOOK_DATA")


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    """Never touch the user's cache or results; keep tests single-threaded-deterministic."""
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("SSLBOOK_RESULTS", str(tmp_path_factory.getbasetemp() / "results"))
    if DATA is not None:
        monkeypatch.setenv("SSLBOOK_DATA", str(DATA))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cifar_small() -> tuple[sb.ImageSet, sb.ImageSet]:
    """500 training and 500 test images of real CIFAR-10, class-balanced."""
    if DATA is None:
        pytest.skip("CIFAR-10 not found: set SSLBOOK_DATA")
    return (
        sb.load_cifar10("train", n=500, seed=0, root=DATA),
        sb.load_cifar10("test", n=500, seed=0, root=DATA),
    )


def locate_patch(patch: torch.Tensor, image: torch.Tensor) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the one window of ``image`` that, normalised per tile, equals
    ``patch``: proves where a jigsaw tile or a context patch was cut from."""
    from sslbook.patches import normalize_per_tile

    t = patch.shape[-1]
    windows = image.unfold(1, t, 1).unfold(2, t, 1).permute(1, 2, 0, 3, 4)  # (Y, X, C, t, t)
    close = (normalize_per_tile(windows) - patch).abs().flatten(2).amax(-1) < 1e-5  # (Y, X)
    (y, x), *others = torch.nonzero(close).tolist()
    assert not others, "the patch matches several places"
    return y, x


def assert_seeded(make_pretext_batch, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that ``make_pretext_batch(data, generator)`` is a pure function of the generator's
    seed: the same seed gives the same batch, another seed another one. Returns the first batch."""
    a = make_pretext_batch(data, torch.Generator().manual_seed(5))
    b = make_pretext_batch(data, torch.Generator().manual_seed(5))
    c = make_pretext_batch(data, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    return a


def losses_on_a_fixed_batch(model, loss, inputs, targets, optimizer, steps: int = 5) -> list[float]:
    """``steps`` optimiser steps of ``loss(model(inputs), targets)`` on one batch: the losses."""
    losses = []
    for _ in range(steps):
        value = loss(model(inputs), targets)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses
