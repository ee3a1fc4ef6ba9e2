import math

import pytest
import torch

import sslbook as sb
from sslbook.pretext import deepcluster
from sslbook.train import TrainConfig, train


def _blobs(n_per: int = 30, k: int = 4, dim: int = 8, seed: int = 0) -> tuple:
    """``k`` well-separated Gaussian blobs: (features (n_per * k, dim), true blob ids)."""
    g = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(k, dim, generator=g)
    ids = torch.arange(k).repeat_interleave(n_per)
    return centres[ids] + torch.randn(len(ids), dim, generator=g), ids


def _image_set(n: int = 64, size: int = 8, seed: int = 0) -> sb.ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return sb.ImageSet(images, torch.arange(n) % 4, ("a", "b", "c", "d"))


# --- PCA whitening ----------------------------------------------------------------------------


def test_pca_whitening_decorrelates_equalises_and_normalises():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=g) * torch.tensor([10.0, 5, 2, 1, 0.5, 0.1])
    x = torch.randn(2000, 6, generator=g) @ mixing + 3.0  # correlated, uneven, off-centre
    whitened = deepcluster.pca_whiten(x, dim=4, normalize=False)
    assert whitened.shape == (2000, 4)
    assert torch.allclose(whitened.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(torch.cov(whitened.T), torch.eye(4), atol=1e-3)  # identity covariance
    out = deepcluster.pca_whiten(x, dim=4)
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2000), atol=1e-5)  # on the unit sphere
    assert torch.allclose(out, torch.nn.functional.normalize(whitened, dim=1), atol=1e-5)


def test_pca_whitening_keeps_at_most_the_available_dimensions():
    out = deepcluster.pca_whiten(torch.randn(5, 16), dim=32)
    assert out.shape == (5, 5)


# --- k-means and empty clusters ---------------------------------------------------------------


def test_kmeans_finds_separated_blobs_and_leaves_no_cluster_empty():
    x, ids = _blobs()
    clustering = deepcluster.run_kmeans(x, k=4, seed=0)
    assert clustering.assignments.shape == (120,) and clustering.centroids.shape == (4, 8)
    assert deepcluster.nmi(ids, clustering.assignments) == pytest.approx(1.0)
    assert (clustering.sizes() > 0).all() and clustering.reseeded == 0


def test_empty_clusters_are_reseeded_from_a_large_cluster():
    x, _ = _blobs(n_per=20, k=2)
    assignments = torch.zeros(40, dtype=torch.int64)  # everything in cluster 0 ...
    centroids = torch.stack([x.mean(0), 100 + x.mean(0), -100 + x.mean(0)])  # ... 1, 2 empty
    g = torch.Generator().manual_seed(0)
    result = deepcluster.reseed_empty_clusters(x, assignments, centroids, g)
    sizes = result.sizes()
    assert result.reseeded == 2 and (sizes > 0).all() and sizes.sum() == 40
    # the re-seeded centroids sit next to the donor's, not where they were
    assert (result.centroids - x.mean(0)).norm(dim=1).max() < 1.0
    assert torch.equal(assignments, torch.zeros(40, dtype=torch.int64))  # inputs untouched


def test_kmeans_on_fewer_distinct_points_than_clusters_reseeds_empty_ones():
    # 3 distinct images repeated: scikit-learn cannot make 6 non-empty clusters by itself
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]]).repeat(10, 1)
    with pytest.warns(Warning):  # scikit-learn's ConvergenceWarning about distinct clusters
        clustering = deepcluster.run_kmeans(x, k=6, seed=0)
    assert clustering.reseeded > 0
    assert (clustering.sizes() > 0).all(), "no cluster may stay empty"


def test_more_clusters_than_images_is_a_clear_error():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="cannot fill"):
        deepcluster.reseed_empty_clusters(
            torch.randn(3, 2), torch.zeros(3, dtype=torch.int64), torch.randn(5, 2), g
        )


# --- uniform sampling over pseudo-labels ------------------------------------------------------


def test_uniform_sampling_balances_very_uneven_clusters():
    labels = torch.cat([torch.zeros(900), torch.ones(90), torch.full((10,), 2)]).long()
    order = deepcluster.uniform_sample_order(labels, torch.Generator().manual_seed(0))
    assert order.shape == (1000,)
    counts = torch.bincount(labels[order], minlength=3)
    assert counts.max() - counts.min() <= 1  # 334, 333, 333
    small = order[labels[order] == 2]
    assert set(small.tolist()) == set(range(990, 1000))  # all 10 images, cycled
    big = order[labels[order] == 0]
    assert len(set(big.tolist())) == len(big)  # a big cluster is drawn without replacement


def test_uniform_sampling_skips_empty_cluster_ids_and_is_seeded():
    labels = torch.tensor([0, 0, 0, 5, 5, 7])  # ids 1-4 and 6 have no image
    a = deepcluster.uniform_sample_order(labels, torch.Generator().manual_seed(1), n=9)
    b = deepcluster.uniform_sample_order(labels, torch.Generator().manual_seed(1), n=9)
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [3, 0, 0, 0, 0, 3, 0, 3]


# --- the task: head re-initialisation, relabelling, determinism --------------------------------


def _task_and_model(**kwargs):
    task = deepcluster.DeepCluster(k=kwargs.pop("k", 5), pca_dim=4, **kwargs)
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    return task, sb.PretextModel(backbone, task.build_head(backbone.feature_dim))


def test_head_is_reinitialised_in_place_every_epoch():
    task, model = _task_and_model(seed=0)
    data = _image_set()
    weight = model.head.weight  # the tensor the optimizer holds
    with torch.no_grad():
        weight.fill_(7.0)
    task.on_epoch_start(model, data, epoch=0)
    assert model.head.weight is weight, "must stay the same tensor, or SGD updates a stale one"
    assert not torch.all(weight == 7.0)
    first = weight.clone()
    task.on_epoch_start(model, data, epoch=1)
    assert not torch.equal(first, weight)  # a fresh draw each epoch
    bound = 1 / math.sqrt(model.backbone.feature_dim)  # nn.Linear's default init range
    assert weight.abs().max() <= bound


def test_head_kept_when_reinitialisation_is_off():
    task, model = _task_and_model(reinit_head=False)
    with torch.no_grad():
        model.head.weight.fill_(7.0)
    task.on_epoch_start(model, _image_set(), epoch=0)
    assert torch.all(model.head.weight == 7.0)


def test_epoch_plan_draws_uniformly_over_clusters_and_batches_carry_cluster_ids():
    task, model = _task_and_model(k=5)
    data = _image_set(n=64)
    plan = task.on_epoch_start(model, data, epoch=0)
    assert len(plan.order) == 64
    assignments = task.log[0]["assignments"]
    assert torch.equal(task.assignments, assignments)
    counts = torch.bincount(assignments[plan.order], minlength=5)
    assert len(counts) == 5 and counts.max() - counts.min() <= 1  # uniform over the 5 clusters
    index = plan.order[:10]
    batch = sb.pretext.Batch(data.images[index].float() / 255, data.labels[index], index)
    _, targets = task.make_batch(batch, None)
    assert torch.equal(targets, assignments[index])  # each image's own cluster id, not its label
    entry = task.log[0]
    assert math.isnan(entry["nmi_previous"]) and 0 <= entry["nmi_labels"] <= 1
    assert entry["sizes"].sum() == 64
    task.on_epoch_start(model, data, epoch=1)
    assert 0 <= task.log[1]["nmi_previous"] <= 1


def test_reinitialised_head_loses_its_optimiser_momentum():
    task, model = _task_and_model(k=5)
    plan = task.on_epoch_start(model, _image_set(n=40), epoch=0)
    assert {id(p) for p in plan.fresh_parameters} == {id(p) for p in model.head.parameters()}
    off, model_off = _task_and_model(k=5, reinit_head=False)
    assert list(off.on_epoch_start(model_off, _image_set(n=40), epoch=0).fresh_parameters) == []


def test_without_uniform_sampling_every_image_appears_once():
    task, model = _task_and_model(uniform_sampling=False)
    plan = task.on_epoch_start(model, _image_set(n=40), epoch=0)
    assert sorted(plan.order.tolist()) == list(range(40))


def test_unlabelled_data_gives_nan_nmi_against_labels():
    task, model = _task_and_model()
    data = _image_set(n=40)
    data = sb.ImageSet(data.images, torch.full((40,), -1), ())
    task.on_epoch_start(model, data, epoch=0)
    assert math.isnan(task.log[0]["nmi_labels"])


def test_same_seed_same_clusters_sampling_and_head():
    data = _image_set(n=64)
    runs = []
    for seed in (3, 3, 4):
        task, model = _task_and_model(seed=seed)
        plans = [task.on_epoch_start(model, data, epoch) for epoch in (0, 1)]
        runs.append((task, plans, model.head.weight.detach().clone()))
    (a, plans_a, head_a), (b, plans_b, head_b), (_, plans_c, _) = runs
    for ea, eb, pa, pb in zip(a.log, b.log, plans_a, plans_b, strict=True):
        assert torch.equal(ea["assignments"], eb["assignments"])
        assert torch.equal(pa.order, pb.order)
    assert torch.equal(head_a, head_b)
    assert not torch.equal(plans_a[0].order, plans_c[0].order)  # another seed, another draw


def test_log_travels_in_the_training_checkpoint(tmp_path, cifar_small):
    train_set, _ = cifar_small
    profile = sb.get_profile("smoke", batch_size=32, n_unlabelled=64)
    data = train_set[:64]
    plan = deepcluster.recipe(profile, seed=0, data=data, k=4, pca_dim=4, epochs=2)
    plan.train(progress=False)
    assert [entry["epoch"] for entry in plan.task.log] == [0, 1]
    again = deepcluster.recipe(profile, seed=0, data=data, k=4, pca_dim=4, epochs=2)
    again.train(progress=False)  # finished: loaded, the hook never runs
    assert torch.equal(again.task.log[1]["assignments"], plan.task.log[1]["assignments"])


def test_make_pretext_batch_pairs_images_with_their_cluster_ids():
    images, ids = torch.rand(4, 3, 8, 8), torch.tensor([3, 1, 4, 1])
    inputs, targets = deepcluster.make_pretext_batch(images, ids)
    assert inputs is images and torch.equal(targets, ids)
    with pytest.raises(ValueError):
        deepcluster.make_pretext_batch(images, ids[:3])


# --- Sobel input ------------------------------------------------------------------------------


def test_sobel_filter_sees_edges_not_colour():
    flat = torch.zeros(2, 3, 8, 8)
    flat[0] = 0.8  # two flat images of different colours: no gradient at all
    flat[1, 0] = 0.3
    assert torch.allclose(deepcluster.SobelFilter()(flat), torch.zeros(2, 2, 8, 8), atol=1e-6)
    edge = torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 1.0  # a vertical edge: horizontal gradient only
    out = deepcluster.SobelFilter()(edge)
    assert out[0, 0].abs().sum() > 0 and out[0, 1].abs().sum() == 0


def test_sobel_backbone_has_the_backbone_interface_and_is_seeded():
    a = deepcluster.build_sobel_backbone(8, 1, seed=0)
    b = deepcluster.build_sobel_backbone(8, 1, seed=0)
    x = torch.rand(2, 3, 16, 16)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x)) and a(x).shape == (2, a.feature_dim)
    assert set(a.feature_maps(x)) == {"block1", "block2", "block3"}
    assert a.config()["sobel"] and a.config()["in_channels"] == 2
    features = sb.inference.extract_features(a, x, device="cpu")
    assert features["block3"].shape == (2, 4 * a.feature_dim)


# --- the training loop's hook (a generic change in sslbook/train.py) ---------------------------


class _PlannedTask:
    """Trains on a planned order of images and records which images reached the batches."""

    name, metric, metric_name = "planned", None, "none"

    def __init__(self, order):
        self.order, self.seen = order, []

    def on_epoch_start(self, model, data, epoch):
        return sb.pretext.EpochPlan(order=self.order)

    def build_head(self, feature_dim):
        return torch.nn.Linear(feature_dim, 3)

    def make_batch(self, batch, generator):
        self.seen.append(batch.index.clone())
        return batch.images, torch.zeros(len(batch.index), dtype=torch.long)

    def loss(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs, targets)


def test_the_planned_order_is_what_the_epoch_trains_on():
    data = _image_set(n=32)
    order = torch.arange(32).flip(0)
    task = _PlannedTask(order)
    assert isinstance(task, sb.pretext.Task)
    model = sb.PretextModel(sb.build_backbone(8, 1, seed=0), torch.nn.Linear(32, 3))
    train(model, data, task, TrainConfig(epochs=2, batch_size=16), progress=False)
    assert torch.equal(torch.cat(task.seen), torch.cat([order, order]))


def test_a_plan_with_too_few_images_is_a_clear_error():
    data = _image_set(n=32)
    model = sb.PretextModel(sb.build_backbone(8, 1, seed=0), torch.nn.Linear(32, 3))
    with pytest.raises(ValueError, match="planned 16 images, the epoch needs 32"):
        train(model, data, _PlannedTask(torch.arange(16)), TrainConfig(batch_size=16),
              progress=False)  # fmt: skip
