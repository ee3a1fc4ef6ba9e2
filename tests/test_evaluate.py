import pytest
import torch

import sslbook as sb
from sslbook.evaluate import (
    evaluate_backbone,
    extract_features,
    fine_tune,
    fine_tune_curves,
    knn_accuracy,
    label_efficiency,
    linear_probe,
)
from sslbook.models import PretextModel
from sslbook.pretext import rotation
from sslbook.train import TrainConfig, train


def _blobs(n=200, d=8, classes=4, seed=0):
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(42)) * 3
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(n // classes)
    return centres[labels] + torch.randn(len(labels), d, generator=g), labels


def test_probes_solve_separable_data_and_fail_on_noise():
    x, y = _blobs()
    xt, yt = _blobs(seed=1)
    assert linear_probe(x, y, xt, yt).accuracy > 0.95
    assert knn_accuracy(x, y, xt, yt) > 0.95
    noise = torch.randn_like(x)
    assert linear_probe(noise, y, torch.randn_like(xt), yt).accuracy < 0.5


def test_feature_extraction_shapes():
    net = sb.build_backbone(width=8, depth=1)
    features = extract_features(net, torch.zeros(5, 3, 32, 32, dtype=torch.uint8))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "block1": (5, 32),
        "block2": (5, 64),
        "block3": (5, 128),
    }


def test_probe_after_short_pretraining_beats_chance(cifar_small):
    train_set, test_set = cifar_small
    backbone = sb.build_backbone(width=8, depth=1)
    model = PretextModel(backbone, rotation.build_head(backbone.feature_dim))
    train(
        model, train_set, rotation.make_task(), TrainConfig(epochs=2, batch_size=64), progress=False
    )
    result = evaluate_backbone(backbone, train_set, test_set)
    assert result.linear_probe > 0.2  # chance is 0.1
    assert result.knn_accuracy > 0.15
    assert result.best_block in ("block1", "block2", "block3")


def test_label_efficiency_grows_with_labels():
    x, y = _blobs(n=400, d=16)
    xt, yt = _blobs(d=16, seed=1)
    curve = label_efficiency(x + 2 * torch.randn_like(x), y, xt, yt, [1, 50])
    assert curve[1] >= curve[0]


def test_fine_tune_reports_every_epoch_and_leaves_backbone_untouched(cifar_small):
    train_set, test_set = cifar_small
    backbone = sb.build_backbone(width=8, depth=1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = fine_tune(backbone, train_set[:100], test_set[:100], TrainConfig(epochs=2))
    assert len(result.epoch_accuracy) == 2
    assert all(0 <= a <= 1 for a in result.epoch_accuracy)
    assert result.accuracy == result.epoch_accuracy[-1]
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k])


def test_fine_tune_measured_only_at_the_end_gives_the_same_final_accuracy(cifar_small):
    train_set, test_set = cifar_small
    backbone = sb.build_backbone(width=8, depth=1)
    config = TrainConfig(epochs=2)
    curve = fine_tune(backbone, train_set[:64], test_set[:64], config)
    end_only = fine_tune(backbone, train_set[:64], test_set[:64], config, every_epoch=False)
    assert end_only.epoch_accuracy == []
    assert end_only.accuracy == pytest.approx(curve.accuracy, abs=1 / 64)


def test_fine_tune_curves_measure_every_epoch_only_for_the_largest_label_count(cifar_small):
    train_set, test_set = cifar_small
    two_classes = train_set.select_classes(train_set.classes[:2])
    backbone = sb.build_backbone(width=8, depth=1)
    runs = fine_tune_curves(
        {"net": backbone}, two_classes, test_set[:32], [2, 4], TrainConfig(epochs=2)
    )["net"]
    assert [len(r.epoch_accuracy) for r in runs] == [0, 2]
    assert all(0 <= r.accuracy <= 1 for r in runs)


def test_label_efficiency_curves_use_each_backbones_best_block(cifar_small):
    train_set, test_set = cifar_small
    backbones = {"a": sb.build_backbone(width=8, depth=1, seed=0)}
    evaluations = {"a": evaluate_backbone(backbones["a"], train_set, test_set)}
    curves = sb.evaluate.label_efficiency_curves(
        backbones, evaluations, train_set, test_set, [1, 5]
    )
    assert list(curves) == ["a"] and len(curves["a"]) == 2
    assert all(0 <= a <= 1 for a in curves["a"])


def test_supervised_baselines_of_other_data_get_their_own_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path))
    images = torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8)
    data = sb.ImageSet(images, torch.arange(32) % 2, ("a", "b"))
    profile = sb.get_profile("smoke", batch_size=16, width=8)
    sb.evaluate.baseline_backbones(profile, data, progress=False)
    sb.evaluate.baseline_backbones(profile, data, progress=False)  # loads the same checkpoint
    assert len(list((tmp_path / "checkpoints").glob("supervised-*.pt"))) == 1
    other = sb.ImageSet(images.flip(0), data.labels, data.classes)  # same count, other images
    sb.evaluate.baseline_backbones(profile, other, progress=False)
    assert len(list((tmp_path / "checkpoints").glob("supervised-*.pt"))) == 2


def test_nearest_neighbours_are_the_most_similar_others():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, -1.0]])
    index, sims = sb.evaluate.nearest_neighbours(features, [0, 2], k=2)
    assert index.shape == sims.shape == (2, 2)
    assert index[:, 0].tolist() == [1, 3]  # the closest other image, never the query itself
    assert 0 not in index[0].tolist() and 2 not in index[1].tolist()
    assert (sims[:, 0] >= sims[:, 1]).all()
    with pytest.raises(ValueError, match="between 1 and 4"):
        sb.evaluate.nearest_neighbours(features, [0], k=5)


def test_an_evaluation_is_measured_once_per_weights_images_and_seed(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)
    data = sb.ImageSet(images, torch.arange(40) % 4, ("a", "b", "c", "d"), "random")
    backbone = sb.build_backbone(8, 1, seed=0)
    first = sb.evaluate.evaluate_backbone(backbone, data, data)

    calls = []
    real_extract = sb.inference.extract_features

    def counted_extract(*args, **kwargs):
        calls.append(1)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(sb.evaluate, "extract_features", counted_extract)
    again = sb.evaluate.evaluate_backbone(sb.build_backbone(8, 1, seed=0), data, data)
    assert again == first and not calls, "the same weights, images and seed: reuse"
    sb.evaluate.evaluate_backbone(sb.build_backbone(8, 1, seed=1), data, data)
    assert calls, "other weights: measure again"
    calls.clear()
    sb.evaluate.evaluate_backbone(backbone, data, data, seed=3)
    assert calls, "another seed: measure again"
