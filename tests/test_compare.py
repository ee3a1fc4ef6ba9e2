"""The comparison engine: every recipe trains, results are aggregated honestly and reused."""

from __future__ import annotations

import math

import pytest
import torch

import sslbook as sb
from sslbook import compare

from .conftest import needs_data

TINY = sb.get_profile("smoke", width=8, probe_labels=(2, 5))
STILL_IMAGE_TECHNIQUES = [t for t in sb.pretext.TECHNIQUES if t != "frameorder"]


def random_images(n: int = 64, seed: int = 0) -> sb.ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return sb.ImageSet(images, labels, tuple(f"class {i}" for i in range(10)), "random")


def test_an_unknown_technique_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="rotation"):
        compare.recipe("rotatoin", TINY)


@pytest.mark.parametrize("technique", STILL_IMAGE_TECHNIQUES)
def test_every_recipe_pretrains_the_shared_backbone(technique):
    data = random_images()
    pretrained = compare.pretrain(
        technique, TINY, epochs=1, data=data, checkpoint=False, progress=False
    )
    features = pretrained.backbone(sb.transforms.to_float(data.images[:2]))
    assert features.shape == (2, pretrained.backbone.feature_dim)
    assert pretrained.history.images_per_second > 0
    initial = sb.build_backbone(TINY.width, TINY.depth, seed=0)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(initial.parameters(), pretrained.backbone.parameters(), strict=False)
    ]
    assert any(moved), "pretraining left the backbone untouched"


@needs_data
def test_frame_order_pretrains_on_as_many_videos_as_there_are_images():
    plan = compare.recipe("frameorder", TINY, epochs=1, data=random_images(32))
    assert len(plan.data) == 32 and plan.data.images.ndim == 4  # (N, T, H, W) grey videos
    assert plan.data.name.startswith("Moving MNIST")


def test_every_technique_sees_the_same_number_of_images():
    data = random_images()
    epochs = {
        t: compare.recipe(t, TINY, epochs=3, data=data).config.epochs
        for t in STILL_IMAGE_TECHNIQUES
    }
    assert set(epochs.values()) == {3}


def test_fine_tuning_gives_every_label_fraction_the_same_compute(monkeypatch):
    seen = []

    def fake_fine_tune(backbone, subset, test_set, config, every_epoch=True):
        seen.append(len(subset) * config.epochs)
        return sb.evaluate.FineTuneResult(0.5, [])

    monkeypatch.setattr(compare, "fine_tune", fake_fine_tune)
    data = random_images(1000)
    scores = compare.fine_tune_at(None, data, data, TINY, fractions=(0.01, 0.1, 1.0))
    assert list(scores) == ["1%", "10%", "100%"]
    assert seen == [1000, 1000, 1000]  # images seen: 10 x 100, 100 x 10, 1000 x 1


def rows_for(method, probes, seconds=None):
    return [
        {"method": method, "seed": s, "linear_probe": p, "knn": p / 2, "pretrain_seconds": seconds,
         "images_per_second": None if seconds is None else 100.0, "probe_curve": [p / 2, p],
         "fine_tune": {"1%": p / 3, "100%": p}}
        for s, p in enumerate(probes)
    ]  # fmt: skip


def test_aggregate_reports_mean_and_sample_spread_over_seeds():
    summary = compare.aggregate(rows_for("rotation", [0.50, 0.54], seconds=10.0))
    mean, spread = summary["rotation"]["linear_probe"]
    assert mean == pytest.approx(0.52) and spread == pytest.approx(0.02 * math.sqrt(2))
    assert summary["rotation"]["probe_curve"] == pytest.approx([0.26, 0.52])
    assert summary["rotation"]["fine_tune 100%"][0] == pytest.approx(0.52)


def test_verdict_calls_a_gap_real_only_beyond_the_spreads():
    rows = rows_for("random init", [0.43, 0.45]) + rows_for("ahead", [0.50, 0.52])
    rows += rows_for("noisy", [0.40, 0.52]) + rows_for("behind", [0.30, 0.31])
    summary = compare.aggregate(rows)
    assert compare.verdict(summary, "ahead") == "ahead"
    assert compare.verdict(summary, "noisy") == "within noise"
    assert compare.verdict(summary, "behind") == "behind"
    table = compare.table_markdown(summary)
    assert table.count("\n") == 1 + len(summary) and "fine-tune, 1% labels" in table


@needs_data
def test_run_reuses_a_stored_result_of_the_same_code_and_budget(monkeypatch):
    data = random_images(80)
    first = compare.run(TINY, data, data, seeds=(0,), epochs=1, techniques=["context"],
                        progress=False)  # fmt: skip
    assert [r["method"] for r in first] == ["context"] and "tsne" in first[0]

    def no_training(*args, **kwargs):
        raise AssertionError("a stored result should have been reused")

    monkeypatch.setattr(sb.recipes.Recipe, "train", no_training)
    again = compare.run(TINY, data, data, seeds=(0,), epochs=1, techniques=["context"],
                        progress=False)  # fmt: skip
    assert again == first
    with pytest.raises(AssertionError, match="reused"):  # another budget is another result
        compare.run(TINY, data, data, seeds=(0,), epochs=2, techniques=["context"], progress=False)


@needs_data
def test_probe_by_budget_gives_one_probe_per_budget_and_reuses_the_runs():
    data = random_images(80)
    curves = compare.probe_by_budget(["rotation", "context"], TINY, [1, 2], data, data)
    assert list(curves) == ["rotation", "context"]
    assert all(len(ys) == 2 and all(0 <= y <= 1 for y in ys) for ys in curves.values())
    trained = compare.recipe("rotation", TINY, epochs=2)
    assert trained.checkpoint_path.exists()  # the runs are ordinary, checkpointed recipe runs
    assert compare.probe_by_budget(["rotation", "context"], TINY, [1, 2], data, data) == curves


def test_budget_verdict_separates_ahead_level_catching_up_and_stuck():
    def verdict(mine, theirs):
        return compare.budget_verdict({"a": mine, "b": theirs}, "a", "b")

    assert "ahead" in verdict([0.40, 0.50], [0.40, 0.45])
    assert "level" in verdict([0.40, 0.455], [0.40, 0.45])
    assert "more epochs would narrow" in verdict([0.30, 0.42], [0.40, 0.45])  # behind, gaining
    assert "unlikely to close it" in verdict([0.38, 0.40], [0.40, 0.45])
    report = compare.budget_report({"a": [0.38, 0.40], "b": [0.40, 0.45]}, [1, 3], "a", "b")
    assert report.splitlines()[0] == "a         1 epochs: 38.0%  3 epochs: 40.0%"
    assert report.splitlines()[-1] == verdict([0.38, 0.40], [0.40, 0.45])


def test_a_result_under_another_key_is_not_loaded(tmp_path):
    path = tmp_path / "rotation.json"
    sb.results.write_json(path, {"method": "rotation", "key": "abc"})
    assert compare.load_result(path, "abc")
    assert compare.load_result(path, "def") is None
    path.write_text("{ half a file")
    assert compare.load_result(path, "abc") is None
