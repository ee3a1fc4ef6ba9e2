"""DeepCluster: clustering the network's own features gives it labels to learn from.

Caron, Bojanowski, Joulin & Douze (2018). *Deep Clustering for Unsupervised Learning of Visual
Features.* ECCV 2018, arXiv 1807.05520.

The seed idea: what if we prepared pairs of (image, the cluster its features fall in)? Even a
random convolutional network maps similar-looking images to nearby features, so k-means on its
features finds groups that are better than chance; training the network to predict those groups
sharpens its features, and clustering the sharper features gives better groups. Every epoch
alternates the two steps:

1. extract features of all pretraining images, PCA-whiten and L2-normalise them, run k-means
   (scikit-learn's ``KMeans``), and use the cluster ids as pseudo-labels;
2. re-initialise the classifier head (the old one predicts last epoch's cluster numbering, which
   means nothing now) and train backbone and head for one epoch on the pseudo-labels.

Two trivial solutions lurk, and the paper's fixes are implemented here:

- **Empty clusters.** A centroid can end up with no image. :func:`reseed_empty_clusters` moves it
  next to the centroid of a large cluster, with a small perturbation, and splits that cluster's
  images between the two.
- **One giant cluster.** If most images share one pseudo-label, predicting it is easy and teaches
  nothing. :func:`uniform_sample_order` draws every epoch's images uniformly over the clusters,
  so each pseudo-label is seen equally often, whatever the cluster sizes.

Unlike the other pretext tasks, a DeepCluster target depends on the whole data set, not on the
image alone, so the task is a small stateful object, :class:`DeepCluster`, whose
``on_epoch_start`` hook clusters the data and plans the epoch (see :func:`sslbook.train.train`).
The true labels are read only to *measure* the clusters (normalised mutual information), never to
train.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.inference import predict
from sslbook.metrics import accuracy
from sslbook.models import PretextModel, ResNet, build_backbone, linear_head
from sslbook.pretext.base import Batch, EpochPlan
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled

NAME = "deepcluster"
TITLE = "DeepCluster"
PAPER = "Caron, Bojanowski, Joulin & Douze (2018), arXiv 1807.05520"


def make_pretext_batch(
    images: torch.Tensor, pseudo_labels: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images themselves, with their cluster ids as targets.

    A DeepCluster target is the cluster an image's features fell in at the start of the epoch,
    a function of the whole data set, so it comes in as an argument (the other chapters compute
    theirs from the image alone and take only ``(images, generator)``).

    Args:
        images: ``(B, C, H, W)`` images (already augmented by the training loop).
        pseudo_labels: ``(B,)`` cluster ids from the last clustering.
        generator: unused; kept for the common interface.

    Returns:
        inputs ``(B, C, H, W)``, the images unchanged; targets ``(B,)``, the cluster ids.
    """
    del generator
    if len(images) != len(pseudo_labels):
        raise ValueError(f"{len(images)} images but {len(pseudo_labels)} pseudo-labels")
    return images, pseudo_labels


def build_head(feature_dim: int, k: int = 100) -> nn.Module:
    """A linear k-way classifier on the pooled backbone features, like the paper's top layer."""
    return linear_head(feature_dim, k)


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the k clusters."""
    return F.cross_entropy(outputs, targets)


# ---------------------------------------------------------------------------------------------
# Step 1: features → PCA-whitened, L2-normalised → k-means, with empty clusters re-seeded.


def pca_whiten(
    features: torch.Tensor, dim: int, eps: float = 1e-5, normalize: bool = True
) -> torch.Tensor:
    """Project onto the top ``dim`` principal components, whiten, and L2-normalise each row.

    Whitening gives every kept direction unit variance, so k-means is not dominated by the few
    directions where a (random) network's features vary most; normalising puts every image on
    the unit sphere, so distances compare directions, not feature magnitudes. Both follow the
    paper.

    Args:
        features: ``(N, D)`` features.
        dim: components kept (at most ``min(N, D)``).
        eps: added to the variances before dividing, for directions with almost none.
        normalize: L2-normalise the rows (``False``: stop at zero mean, identity covariance).

    Returns:
        ``(N, dim)`` float32, rows of unit length when ``normalize``.
    """
    x = features.double()
    x = x - x.mean(0)
    dim = min(dim, *x.shape)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # rows of vh: principal directions
    variance = s[:dim] ** 2 / max(len(x) - 1, 1)
    whitened = x @ vh[:dim].T / torch.sqrt(variance + eps)  # (N, dim), identity covariance
    return (F.normalize(whitened, dim=1) if normalize else whitened).float()


@dataclass
class Clustering:
    """The result of one k-means run.

    Attributes:
        assignments: ``(N,)`` cluster id of every image, in ``0..k-1``, no cluster empty.
        centroids: ``(k, d)`` cluster centres in the whitened feature space.
        reseeded: how many empty clusters were re-seeded.
    """

    assignments: torch.Tensor
    centroids: torch.Tensor
    reseeded: int

    def sizes(self) -> torch.Tensor:
        """``(k,)`` images per cluster."""
        return torch.bincount(self.assignments, minlength=len(self.centroids))


def reseed_empty_clusters(
    features: torch.Tensor,
    assignments: torch.Tensor,
    centroids: torch.Tensor,
    generator: torch.Generator,
    eps: float = 1e-4,
) -> Clustering:
    """Give every empty cluster half of a large one (the paper's fix, as in its faiss code).

    For each empty cluster: pick a cluster with at least two images, with probability
    proportional to its size; put the empty centroid at that centroid plus a small random
    perturbation, and the donor's at the same point minus it; then reassign the donor's images
    to the nearer of the two. If the split leaves one side empty (identical images, which no
    perturbation separates), the donor's images are divided at random in two halves instead.

    Args:
        features: ``(N, d)`` the clustered features.
        assignments: ``(N,)`` cluster ids (some clusters may have no image).
        centroids: ``(k, d)`` cluster centres.
        generator: seeds the choice of donors and perturbations.
        eps: size of the perturbation relative to the centroid's norm.

    Returns:
        A :class:`Clustering` with no empty cluster (new tensors; the inputs are not modified).

    Raises:
        ValueError: fewer images than clusters, so some cluster must stay empty.
    """
    k = len(centroids)
    if len(features) < k:
        raise ValueError(f"{len(features)} images cannot fill {k} clusters")
    assignments, centroids = assignments.clone(), centroids.clone().float()
    features = features.float()
    sizes = torch.bincount(assignments, minlength=k)
    empty = torch.nonzero(sizes == 0).flatten().tolist()
    for j in empty:
        weights = (sizes * (sizes > 1)).double()
        donor = int(torch.multinomial(weights, 1, generator=generator))
        members = torch.nonzero(assignments == donor).flatten()
        noise = torch.randn(centroids.shape[1], generator=generator)
        step = eps * noise * centroids[donor].norm().clamp_min(1e-8) / noise.norm()
        centroids[j], centroids[donor] = centroids[donor] + step, centroids[donor] - step
        pair = centroids[[donor, j]]  # (2, d)
        to_new = torch.cdist(features[members], pair).argmin(1) == 1  # (n_donor,)
        if to_new.all() or not to_new.any():  # a tie the perturbation cannot break
            to_new = torch.zeros_like(to_new)
            to_new[torch.randperm(len(members), generator=generator)[: len(members) // 2]] = True
        assignments[members[to_new]] = j
        sizes[j], sizes[donor] = int(to_new.sum()), int((~to_new).sum())
    return Clustering(assignments, centroids, len(empty))


def run_kmeans(features: torch.Tensor, k: int, seed: int = 0) -> Clustering:
    """scikit-learn k-means (one initialisation), then :func:`reseed_empty_clusters`.

    scikit-learn already relocates centroids that empty *during* its iterations, but its final
    labels can still leave a cluster empty (e.g. fewer distinct images than ``k``); the check
    after fitting makes "no empty cluster" a guarantee that the tests can hold it to.

    Args:
        features: ``(N, d)`` e.g. the output of :func:`pca_whiten`.
        k: number of clusters.
        seed: seeds k-means++ initialisation and the re-seeding.

    Returns:
        A :class:`Clustering` with ``assignments`` ``(N,)`` and ``centroids`` ``(k, d)``.
    """
    kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(features.numpy())
    assignments = torch.as_tensor(kmeans.labels_, dtype=torch.int64)
    centroids = torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    return reseed_empty_clusters(features, assignments, centroids, generator)


# ---------------------------------------------------------------------------------------------
# Step 2: sample uniformly over pseudo-labels, re-initialise the head, train one epoch.


def uniform_sample_order(
    pseudo_labels: torch.Tensor, generator: torch.Generator, n: int | None = None
) -> torch.Tensor:
    """``n`` image indices, drawn so that every non-empty cluster appears equally often.

    Without this, a clustering with one huge cluster yields a network that predicts that
    cluster for everything, a trivial solution. Each cluster gets ``n // C`` draws (the
    remainder going to randomly chosen clusters): without replacement while it has enough
    images, cycling through a shuffled copy of its images otherwise.

    Args:
        pseudo_labels: ``(N,)`` cluster ids.
        generator: seeds the draw.
        n: how many indices (default ``N``, so an epoch keeps its length).

    Returns:
        ``(n,)`` int64 indices into ``pseudo_labels``, shuffled.
    """
    n = len(pseudo_labels) if n is None else n
    clusters = torch.unique(pseudo_labels)
    counts = torch.full((len(clusters),), n // len(clusters))
    counts[torch.randperm(len(clusters), generator=generator)[: n % len(clusters)]] += 1
    order = []
    for cluster, count in zip(clusters.tolist(), counts.tolist(), strict=True):
        members = torch.nonzero(pseudo_labels == cluster).flatten()
        repeats = -(-count // len(members))  # ceil: cycle through small clusters
        shuffled = torch.cat(
            [members[torch.randperm(len(members), generator=generator)] for _ in range(repeats)]
        )
        order.append(shuffled[:count])
    order = torch.cat(order)
    return order[torch.randperm(n, generator=generator)]


def reinitialize_head(head: nn.Module, fresh: nn.Module) -> None:
    """Overwrite ``head``'s weights with those of a freshly built ``fresh``, in place.

    In place, because the optimizer holds references to ``head``'s parameter tensors: replacing
    the module would leave it optimising the old, detached ones.
    """
    head.load_state_dict(fresh.state_dict())


def cluster_sizes_entropy(sizes: torch.Tensor) -> float:
    """Entropy of the cluster-size distribution divided by ``log k`` (1: all equal, 0: one
    cluster holds every image)."""
    p = sizes.double() / sizes.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / np.log(len(sizes)))


# ---------------------------------------------------------------------------------------------
# Optional Sobel input, as in the paper.


class SobelFilter(nn.Module):
    """A fixed layer: RGB → grey → horizontal and vertical Sobel gradients.

    The paper puts it in front of the network because colour is the easiest thing to cluster
    on: without it, k-means groups images by colour and the network learns colour histograms.
    Gradients keep edges and shapes and throw colour away. Input ``(B, 3, H, W)`` in [0, 1];
    output ``(B, 2, H, W)``.
    """

    def __init__(self) -> None:
        super().__init__()
        grey = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("grey", grey)
        self.register_buffer("kernels", torch.stack([gx, gx.T]).unsqueeze(1))  # (2, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x * self.grey).sum(1, keepdim=True)  # (B, 1, H, W)
        return F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.kernels)  # (B, 2, H, W)


class SobelBackbone(nn.Module):
    """A :class:`SobelFilter` in front of a 2-channel backbone, with the backbone's interface
    (``forward``, ``feature_maps``, ``feature_dim``, ``stage_channels``, ``config``), so probes
    and the training loop use it like any other."""

    def __init__(self, backbone: ResNet) -> None:
        super().__init__()
        self.sobel = SobelFilter()
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.stage_channels = backbone.stage_channels
        self.block_strides, self.stride = backbone.block_strides, backbone.stride

    def config(self) -> dict:
        return {"sobel": True, **self.backbone.config()}

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone.feature_maps(self.sobel(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.sobel(x))  # (B, feature_dim)


def build_sobel_backbone(
    width: int, depth: int, seed: int | None = None, stem_stride: int = 1
) -> SobelBackbone:
    """The book's ResNet on 2 Sobel channels (gradients are centred on 0 with a spread of
    about 0.5, hence the normalisation), seeded like :func:`sslbook.models.build_backbone`."""
    resnet = build_backbone(width, depth, in_channels=2, seed=seed, stem_stride=stem_stride,
                            mean=(0.0, 0.0), std=(0.5, 0.5))  # fmt: skip
    return SobelBackbone(resnet)


# ---------------------------------------------------------------------------------------------
# The task: both steps, and a log of every epoch's clusters.


@dataclass(frozen=True)
class Settings:
    """The DeepCluster recipe's own settings.

    Attributes:
        k: number of clusters (at most a tenth of the images); the paper over-clusters
            (k = 10,000 for 1,000 ImageNet classes).
        pca_dim: PCA components kept (and whitened) before k-means, at most the features'
            size. The paper keeps 256 of AlexNet's 4,096 dimensions; the book keeps 32 of the
            backbone's pooled features (``backbone.feature_dim``: 64 in the ``cpu`` profile,
            256 in the ``gpu`` one, 32 in ``smoke``, where nothing is dropped).
        sobel: the fixed Sobel layer in front of the backbone (the paper's; it removes colour).
        uniform_sampling: draw every epoch's images uniformly over the clusters.
        reinit_head: re-initialise the classifier head (and its optimiser state) every epoch.
    """

    k: int = 100
    pca_dim: int = 32
    sobel: bool = True
    uniform_sampling: bool = True
    reinit_head: bool = True


class DeepCluster:
    """The DeepCluster pretext task for :func:`sslbook.train.train` (a :class:`Task`).

    Before every epoch, :meth:`on_epoch_start` clusters the backbone's features of all training
    images, re-initialises the head, logs how the clusters changed, and plans the epoch: its
    images drawn uniformly over clusters. :meth:`make_batch` then looks up each image's cluster
    id by its position in the training set. The log travels in the checkpoint
    (:meth:`state_dict`), so a notebook that loads a finished run still has it.

    Args:
        k: number of clusters.
        pca_dim: PCA components kept before k-means.
        seed: seeds k-means, the re-seeding, the head and the sampling of every epoch.
        uniform_sampling: draw images uniformly over clusters (``False``: every image once).
        reinit_head: re-initialise the head every epoch, with fresh optimiser state (the
            paper's code builds a new optimiser for the top layer every epoch).

    Attributes:
        assignments: ``(N,)`` this epoch's cluster id of every training image.
        log: one dict per epoch: ``epoch``, ``assignments`` (N,), ``sizes`` (k,),
            ``reseeded``, ``nmi_previous`` (against the epoch before; NaN at epoch 0),
            ``nmi_labels`` (against the true labels; NaN without labels), ``seconds``.
    """

    metric_name = "pseudo-label accuracy"

    def __init__(
        self,
        k: int = 100,
        pca_dim: int = 32,
        seed: int = 0,
        uniform_sampling: bool = True,
        reinit_head: bool = True,
        name: str = "deepcluster",
    ) -> None:
        self.k, self.pca_dim, self.seed = k, pca_dim, seed
        self.uniform_sampling, self.reinit_head = uniform_sampling, reinit_head
        self.name = name
        self.assignments: torch.Tensor | None = None
        self.log: list[dict] = []

    def config(self) -> dict:
        """The settings that change what is learned."""
        return {
            "k": self.k, "pca_dim": self.pca_dim, "seed": self.seed,
            "uniform_sampling": self.uniform_sampling, "reinit_head": self.reinit_head,
        }  # fmt: skip

    def build_head(self, feature_dim: int) -> nn.Module:
        """:func:`build_head` with this task's ``k``."""
        return build_head(feature_dim, self.k)

    def make_batch(self, batch: Batch, generator: torch.Generator | None):
        """The batch's images and their cluster ids from the last clustering (never the true
        labels)."""
        if self.assignments is None:
            raise RuntimeError("DeepCluster.make_batch before on_epoch_start: no clusters yet")
        pseudo_labels = self.assignments[batch.index].to(batch.images.device)
        return make_pretext_batch(batch.images, pseudo_labels, generator)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return accuracy(outputs, targets)

    def features(self, backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """PCA-whitened, L2-normalised pooled features ``(N, pca_dim)`` of uint8 ``images``
        ``(N, C, H, W)``, computed in eval mode (the paper uses un-augmented images)."""
        return pca_whiten(predict(backbone, images), self.pca_dim)

    def cluster(self, backbone: nn.Module, images: torch.Tensor, epoch: int = 0) -> Clustering:
        """Cluster ``images`` ``(N, C, H, W)`` by ``backbone``'s features (seeded by epoch)."""
        return run_kmeans(self.features(backbone, images), self.k, seed=self._seed(epoch))

    def on_epoch_start(self, model: nn.Module, data: ImageSet, epoch: int) -> EpochPlan:
        """Cluster, log, re-initialise ``model.head``, and plan the epoch: ``len(data)`` images
        drawn uniformly over the clusters."""
        started = time.perf_counter()
        clustering = self.cluster(model.backbone, data.images, epoch)
        self._record(clustering, data.labels, epoch, time.perf_counter() - started)
        self.assignments = clustering.assignments
        fresh: list[nn.Parameter] = []
        if self.reinit_head:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed(epoch))
                reinitialize_head(model.head, self.build_head(model.backbone.feature_dim))
            fresh = list(model.head.parameters())
        generator = torch.Generator().manual_seed(self._seed(epoch))
        order = (
            uniform_sample_order(clustering.assignments, generator)
            if self.uniform_sampling
            else torch.randperm(len(data), generator=generator)
        )
        return EpochPlan(order=order, fresh_parameters=fresh)

    def state_dict(self) -> dict:
        """The per-epoch log, for the training loop's checkpoint."""
        return {"log": self.log}

    def load_state_dict(self, state: dict) -> None:
        self.log = list(state["log"])

    def _seed(self, epoch: int) -> int:
        return self.seed * 100_003 + epoch

    def _record(self, clustering: Clustering, labels: torch.Tensor, epoch: int, seconds: float):
        self.log = [entry for entry in self.log if entry["epoch"] < epoch]  # a re-run replaces
        previous = self.log[-1]["assignments"] if self.log else None
        self.log.append(
            {
                "epoch": epoch,
                "assignments": clustering.assignments,
                "sizes": clustering.sizes(),
                "reseeded": clustering.reseeded,
                "nmi_previous": nmi(previous, clustering.assignments),
                "nmi_labels": nmi(labels, clustering.assignments),
                "seconds": seconds,
            }
        )


def make_task(settings: Settings = Settings(), seed: int = 0, n_images: int | None = None):
    """The DeepCluster task; ``k`` is capped at a tenth of ``n_images`` (at least 10 images a
    cluster on average)."""
    k = settings.k if n_images is None else max(2, min(settings.k, n_images // 10))
    return DeepCluster(k=k, pca_dim=settings.pca_dim, seed=seed,
                       uniform_sampling=settings.uniform_sampling,
                       reinit_head=settings.reinit_head)  # fmt: skip


#: Caron et al.'s learning rate (SGD, momentum 0.9, constant): the book's profiles move theirs.
PAPER_LR = 0.05


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: the Sobel layer in front of the shared backbone, k-means
    on PCA-whitened features every epoch, uniform sampling over clusters, a fresh head every
    epoch, and the paper's constant learning rate of 0.05 (the targets move; a decayed rate cannot
    follow them).

    Args:
        profile: sizes the run.
        seed: initial weights, the clusterings and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides, schedule="constant",
                                 lr=PAPER_LR)  # fmt: skip
    data = unlabelled(data, profile, seed)
    task = make_task(settings, seed, len(data))
    backbone = (
        build_sobel_backbone(**profile.backbone_settings(), seed=seed)
        if settings.sobel
        else shared_backbone(profile, seed)
    )
    with seeded(seed):
        model = PretextModel(backbone, task.build_head(backbone.feature_dim))
    return Recipe(NAME, model, task, config, data, settings=settings)


def nmi(a: torch.Tensor | None, b: torch.Tensor) -> float:
    """Normalised mutual information between two labellings (scikit-learn's); NaN when ``a``
    is missing or holds unknown labels (``-1``)."""
    if a is None or bool((a < 0).any()):
        return float("nan")
    return float(normalized_mutual_info_score(a.numpy(), b.numpy()))
