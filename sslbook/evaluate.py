"""How good is a representation? The book's evaluation protocol, used by every chapter.

1. Freeze the backbone, extract features of labelled images once.
2. **Linear probe**: a logistic-regression classifier on those features. Probed at every block,
   because a pretext task's last layers specialise in the pretext task (RotNet's best CIFAR-10
   features come from its second block). The block, and the probe's L2 penalty, are chosen on a
   validation split carved from the labelled *training* images, never on the test images; the
   test accuracy of that choice is what is reported.
3. **k-NN**: classify each test image by its nearest training images in feature space; no
   training at all, so it measures the geometry of the features directly.
4. **Fine-tuning** with few labels: the whole network adapts, starting from the learned weights.

Floor and ceiling on the same backbone and split: a randomly initialised (frozen) backbone and a
backbone trained with all the labels.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.checkpoint import cache_path
from sslbook.data import ImageSet, stratified_indices
from sslbook.fingerprint import data_digest, fingerprint, weights_digest
from sslbook.inference import classify_accuracy, extract_features
from sslbook.models import BLOCK_NAMES, PretextModel
from sslbook.pretext.base import SupervisedTask
from sslbook.recipes import shared_backbone, supervised
from sslbook.results import write_json
from sslbook.train import TrainConfig, train


@dataclass
class ProbeResult:
    """A linear probe's test accuracy, the L2 penalty chosen on a validation split of the
    training features, and the validation accuracy of that choice (``nan`` with one penalty)."""

    accuracy: float
    weight_decay: float
    validation: float = float("nan")


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decays: Sequence[float] = (1e-4, 1e-3, 1e-2),
    seed: int = 0,
) -> ProbeResult:
    """Multinomial logistic regression on frozen features (full-batch L-BFGS).

    Features are standardised with the training statistics. The L2 penalty is picked on a
    stratified 20 % validation split of the training features, then the probe is refit on all of
    them. Deterministic for fixed inputs.
    """
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    xtr, xte = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    best, validation = weight_decays[0], float("nan")
    if len(weight_decays) > 1:
        val = torch.zeros(len(xtr), dtype=torch.bool)
        val[stratified_indices(train_labels, max(num_classes, len(xtr) // 5), seed)] = True
        scores = [
            _accuracy(_fit_logistic(xtr[~val], train_labels[~val], num_classes, wd),
                      xtr[val], train_labels[val])
            for wd in weight_decays
        ]  # fmt: skip
        choice = max(range(len(scores)), key=scores.__getitem__)
        best, validation = weight_decays[choice], scores[choice]
    model = _fit_logistic(xtr, train_labels, num_classes, best)
    return ProbeResult(_accuracy(model, xte, test_labels), best, validation)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float):
    torch.manual_seed(0)
    layer = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(
        layer.parameters(), lr=1, max_iter=200, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


@torch.no_grad()
def _accuracy(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (layer(x).argmax(1) == y).float().mean().item()


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted k-nearest-neighbour accuracy with cosine similarity.

    Each of the ``k`` neighbours votes for its class with weight ``exp(similarity / T)``, as in
    Wu et al. 2018 (arXiv 1805.01978). Features are centred on the training mean first.
    """
    mean = train_features.mean(0)
    train_n = F.normalize(train_features - mean, dim=1)
    test_n = F.normalize(test_features - mean, dim=1)
    num_classes = int(train_labels.max()) + 1
    k = min(k, len(train_n))
    correct = 0
    for start in range(0, len(test_n), 1024):
        sims = test_n[start : start + 1024] @ train_n.T  # (b, N_train)
        top_sims, top_idx = sims.topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(sims), num_classes)
        votes.scatter_add_(1, train_labels[top_idx], (top_sims / temperature).exp())
        correct += (votes.argmax(1) == test_labels[start : start + 1024]).sum().item()
    return correct / len(test_n)


@dataclass
class Evaluation:
    """Linear-probe and k-NN accuracy of one backbone, per block and at the chosen block.

    Attributes:
        linear: test accuracy of the linear probe at every block.
        knn: test accuracy of k-NN at every block.
        validation: the linear probe's accuracy on the validation split of the labelled
            training images, at every block: what chooses the block.
    """

    linear: dict[str, float]
    knn: dict[str, float]
    validation: dict[str, float]

    @property
    def best_block(self) -> str:
        """The block whose linear probe scores highest on the validation split (the test
        images play no part in the choice)."""
        return max(self.validation, key=self.validation.get)

    @property
    def linear_probe(self) -> float:
        return self.linear[self.best_block]

    @property
    def knn_accuracy(self) -> float:
        return self.knn[self.best_block]

    def summary(self) -> dict:
        return {
            "linear_probe": self.linear_probe,
            "knn": self.knn_accuracy,
            "best_block": self.best_block,
            "linear_probe_per_block": dict(self.linear),
            "knn_per_block": dict(self.knn),
            "validation_per_block": dict(self.validation),
        }


def evaluate_backbone(
    backbone: nn.Module, train_set: ImageSet, test_set: ImageSet, seed: int = 0
) -> Evaluation:
    """Linear probe and k-NN at every block of a frozen backbone (train on ``train_set``'s
    labels, test on ``test_set``).

    The result is kept in the cache under a fingerprint of the weights, the images, the seed and
    the package source: the random-init and supervised baselines recur in every chapter and are
    measured once. A damaged cache file is measured again, with a warning.
    """
    key = fingerprint("evaluation", weights_digest(backbone), data_digest(train_set),
                      data_digest(test_set), seed, BLOCK_NAMES)  # fmt: skip
    path = cache_path("evaluations", "probe", key, suffix=".json")
    if path.exists():
        try:
            return Evaluation(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            warnings.warn(f"{path} is damaged ({error}); measuring again", stacklevel=2)
    train_features = extract_features(backbone, train_set)
    test_features = extract_features(backbone, test_set)
    linear, knn, validation = {}, {}, {}
    for block in train_features:
        args = (train_features[block], train_set.labels, test_features[block], test_set.labels)
        probe = linear_probe(*args, seed=seed)
        linear[block], validation[block] = probe.accuracy, probe.validation
        knn[block] = knn_accuracy(*args)
    evaluation = Evaluation(linear, knn, validation)
    write_json(path, vars(evaluation))  # atomic: a half-written file is never read
    return evaluation


def label_efficiency(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    labels_per_class: Sequence[int],
    seed: int = 0,
) -> list[float]:
    """Linear-probe accuracy when only ``n`` labelled images per class are available, for each
    ``n`` in ``labels_per_class``."""
    num_classes = int(train_labels.max()) + 1
    accuracies = []
    for n in labels_per_class:
        index = stratified_indices(train_labels, n * num_classes, seed)
        accuracies.append(
            linear_probe(train_features[index], train_labels[index], test_features, test_labels,
                         weight_decays=(1e-2,)).accuracy
        )  # fmt: skip
    return accuracies


def label_efficiency_curves(
    backbones: dict[str, nn.Module],
    evaluations: dict[str, Evaluation],
    train_set: ImageSet,
    test_set: ImageSet,
    labels_per_class: Sequence[int],
    seed: int = 0,
) -> dict[str, list[float]]:
    """:func:`label_efficiency` of each named backbone at the block where it probed best (from
    ``evaluations``, as :func:`compare_backbones` returns them): the few-label curve of every
    chapter, ``{name: [accuracy for n in labels_per_class]}``."""
    curves = {}
    for name, net in backbones.items():
        block = evaluations[name].best_block
        train_features = extract_features(net, train_set, blocks=[block])[block]
        test_features = extract_features(net, test_set, blocks=[block])[block]
        curves[name] = label_efficiency(train_features, train_set.labels, test_features,
                                        test_set.labels, labels_per_class, seed=seed)  # fmt: skip
    return curves


@dataclass
class FineTuneResult:
    """Test accuracy after fine-tuning, and after every epoch when that was measured.

    Attributes:
        accuracy: test accuracy after the last epoch.
        epoch_accuracy: test accuracy after each epoch (empty when only the end was measured).
    """

    accuracy: float
    epoch_accuracy: list[float]


def fine_tune(
    backbone: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet,
    config: TrainConfig,
    backbone_lr_scale: float = 1.0,
    progress: bool = False,
    every_epoch: bool = True,
) -> FineTuneResult:
    """Fine-tune a copy of ``backbone`` with a new linear head on ``train_set``, all layers
    trainable, measuring test accuracy after every epoch (``every_epoch``, for learning curves)
    or only at the end (cheaper). ``backbone`` itself is untouched.

    ``backbone_lr_scale`` < 1 lets the backbone move more slowly than the new head, the usual
    way to keep pretrained features from being overwritten by a few noisy labelled batches."""
    config = replace(config, batch_size=min(config.batch_size, len(train_set)))
    task = SupervisedTask(len(train_set.classes))
    net = copy.deepcopy(backbone)
    with torch.random.fork_rng(devices=[]):  # the same new head for every backbone compared
        torch.manual_seed(config.seed)
        model = PretextModel(net, task.build_head(net.feature_dim))
    accuracies: list[float] = []

    def record_test_accuracy(model: nn.Module, epoch: int) -> None:
        accuracies.append(classify_accuracy(model, test_set))

    groups = [
        {"params": list(net.parameters()), "lr_scale": backbone_lr_scale},
        {"params": list(model.head.parameters())},
    ]
    train(model, train_set, task, config, progress=progress, parameters=groups,
          on_epoch_end=record_test_accuracy if every_epoch else None)  # fmt: skip
    if every_epoch:
        return FineTuneResult(accuracies[-1], accuracies)
    return FineTuneResult(classify_accuracy(model, test_set), [])


def baseline_backbones(
    profile, train_set: ImageSet, seed: int = 0, progress: bool = True
) -> dict[str, nn.Module]:
    """The floor and the ceiling of every chapter, on the same backbone and images.

    ``"random init"``: the backbone exactly as initialised with ``seed`` (what every method starts
    from), never trained. ``"supervised"``: the same initial network trained with all labels of
    ``train_set`` (:func:`sslbook.recipes.supervised`); its checkpoint is keyed by the images
    among the rest, so later chapters reuse it and no chapter loads one trained on other images.
    """
    random_init = shared_backbone(profile, seed)
    ceiling = supervised(profile, seed, data=train_set)
    ceiling.train(progress=progress)
    return {"random init": random_init.eval(), "supervised": ceiling.backbone.eval()}


def compare_backbones(
    backbones: dict[str, nn.Module], train_set: ImageSet, test_set: ImageSet, seed: int = 0
) -> dict[str, Evaluation]:
    """:func:`evaluate_backbone` for each named backbone, on the same split."""
    return {
        name: evaluate_backbone(net, train_set, test_set, seed) for name, net in backbones.items()
    }


def report(evaluations: dict[str, Evaluation]) -> None:
    """Print each backbone's linear probe and k-NN at its chosen block, and the linear probe's
    test accuracy at every block."""
    for name, e in evaluations.items():
        blocks = "  ".join(f"{b} {acc:.1%}" for b, acc in e.linear.items())
        print(
            f"{name:12s} linear probe {e.linear_probe:.1%} ({e.best_block}, chosen on "
            f"validation), k-NN {e.knn_accuracy:.1%}   | test accuracy per block: {blocks}"
        )


def as_table(evaluations: dict[str, Evaluation]) -> dict[str, dict[str, float]]:
    """``{name: {"linear_probe": ..., "knn": ...}}``, as ``plot.plot_probe_comparison`` takes."""
    return {
        n: {"linear_probe": e.linear_probe, "knn": e.knn_accuracy} for n, e in evaluations.items()
    }


def fine_tune_curves(
    backbones: dict[str, nn.Module],
    train_set: ImageSet,
    test_set: ImageSet,
    labels_per_class: Sequence[int],
    config: TrainConfig,
    backbone_lr_scale: float = 1.0,
    curves_for: Sequence[int] | None = None,
) -> dict[str, list[FineTuneResult]]:
    """Fine-tune each backbone with ``n`` labelled images per class, for each ``n``.

    The labelled images are the same for every backbone (a stratified subset of ``train_set``
    chosen by ``config.seed``), so curves differ only by initialisation. Test accuracy is
    measured after every epoch for the label counts in ``curves_for`` (default: the largest,
    the curve worth plotting) and only at the end for the others, which saves most of the
    evaluation time.
    """
    num_classes = len(train_set.classes)
    curves_for = [max(labels_per_class)] if curves_for is None else curves_for
    runs = {n: train_set.stratified(n * num_classes, config.seed) for n in labels_per_class}
    return {
        name: [
            fine_tune(net, subset, test_set, config, backbone_lr_scale, every_epoch=n in curves_for)
            for n, subset in runs.items()
        ]
        for name, net in backbones.items()
    }


@torch.no_grad()
def nearest_neighbours(
    features: torch.Tensor, queries: torch.Tensor | Sequence[int], k: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` images most similar to each query image, among all the others.

    Looking at them shows what a representation considers alike, with or without labels; it
    uses the cosine similarity of centred features, as :func:`knn_accuracy` does.

    Args:
        features: ``(N, D)`` features of every image (e.g. from :func:`extract_features`).
        queries: ``(Q,)`` indices of the query images.
        k: neighbours per query (at most ``N - 1``).

    Returns:
        ``(indices, similarities)``, both ``(Q, k)``, most similar first; a query is never its own
        neighbour.
    """
    queries = torch.as_tensor(queries, dtype=torch.long)
    if not 0 < k < len(features):
        raise ValueError(f"k must be between 1 and {len(features) - 1} (N - 1), got {k}")
    normed = F.normalize(features - features.mean(0), dim=1)
    sims = normed[queries] @ normed.T  # (Q, N)
    sims[torch.arange(len(queries)), queries] = -float("inf")
    top_sims, top_idx = sims.topk(k, dim=1)
    return top_idx, top_sims
