"""Every pretext task of the book on the same backbone, data, budget and probes.

A chapter tunes its own run to show its technique at its best (rotation trains 20 epochs,
context prediction 40). That makes chapters good teachers and bad witnesses for a comparison.
Here every technique gets the same *budget*: ``epochs`` passes over the same ``n_train``
unlabelled images, so each has seen exactly as many images. Everything else is the chapter's
headline setting: its task, head, optimiser and, for the two GAN chapters, its adversary.

- :func:`recipe` builds what one technique trains: model, task, settings, data, adversary;
- :func:`pretrain` trains it (or loads the checkpoint of an identical earlier run);
- :func:`measure` puts a backbone through the book's probes: linear probe and k-NN at its best
  block, probe curves with few labels, fine-tuning with 1 %, 10 % and 100 % of the labels, and a
  2-D t-SNE map of its features;
- :func:`run` does both for every technique and seed, reusing this build's results when they
  come from the same profile, budget and code version.

Frame-order verification learns from videos, not still images: it pretrains on as many
Moving-MNIST videos as the others have CIFAR-10 images, and is probed on CIFAR-10 like all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE
from torch import nn

from sslbook import video
from sslbook.adversarial import EncoderDecoder
from sslbook.checkpoint import default_path
from sslbook.config import Profile
from sslbook.data import ImageSet, load_mnist
from sslbook.evaluate import (
    evaluate_backbone,
    extract_features,
    fine_tune,
    label_efficiency,
)
from sslbook.models import PretextModel, build_backbone
from sslbook.pretext import (
    colorization,
    context,
    deepcluster,
    frameorder,
    inpainting,
    jigsaw,
    rotation,
    superres,
    synthetic,
)
from sslbook.results import code_version, results_dir, write_json
from sslbook.train import History, TrainConfig, train

TECHNIQUES = (
    "rotation", "colorization", "inpainting", "superres", "context", "jigsaw", "deepcluster",
    "synthetic", "frameorder",
)  # fmt: skip
BASELINES = ("random init", "supervised")
LABEL_FRACTIONS = (0.01, 0.1, 1.0)  # of the training images, for fine-tuning
FINETUNE_PASSES = 1  # fine-tuning budget, in passes over all training images (see fine_tune_at)
TSNE_POINTS = 500
DEEPCLUSTER_K = 100  # the chapter's k; fewer clusters on small image sets (10 images each at least)


@dataclass
class Recipe:
    """What one technique trains, ready for :func:`sslbook.train.train`.

    Attributes:
        model: the network trained; ``model.backbone`` is the shared backbone that is probed.
        task: the pretext task (labels made from the images).
        config: optimiser settings, with the comparison's epochs.
        data: the unlabelled images (frame order: videos) it pretrains on.
        adversary: the discriminator of a GAN chapter, else ``None``.
        settings: what else identifies the run, for the checkpoint's name.
    """

    model: nn.Module
    task: object
    config: TrainConfig
    data: ImageSet
    adversary: nn.Module | None = None
    settings: dict = field(default_factory=dict)


def default_epochs(profile: Profile) -> int:
    """The comparison's budget: half the profile's epochs (5 passes over the images in the
    ``cpu`` profile), so that nine techniques times two seeds fit in a book build."""
    return max(1, profile.epochs // 2)


def recipe(
    technique: str, profile: Profile, train_set: ImageSet, seed: int = 0, epochs: int | None = None
) -> Recipe:
    """The chapter's headline setting of ``technique``, trained for ``epochs`` (default:
    :func:`default_epochs`) on ``train_set``.

    Raises:
        ValueError: an unknown technique, naming the known ones.
    """
    if technique not in RECIPES:
        raise ValueError(f"unknown technique {technique!r}; choose one of: {', '.join(TECHNIQUES)}")
    epochs = default_epochs(profile) if epochs is None else epochs
    return RECIPES[technique](profile, train_set, seed, profile.train_config(seed, epochs=epochs))


def _backbone(profile: Profile, seed: int) -> nn.Module:
    return build_backbone(profile.width, profile.depth, seed=seed)


def _classifier(task, profile, train_set, seed, config, **settings) -> Recipe:
    backbone = _backbone(profile, seed)
    model = PretextModel(backbone, task.build_head(backbone.feature_dim))
    return Recipe(model, task, config, train_set, settings=settings)


def _rotation(profile, train_set, seed, config) -> Recipe:
    # Four rotated inputs per image: the chapter doubles the learning rate for the 4x batch.
    return _classifier(rotation.task, profile, train_set, seed, replace(config, lr=2 * config.lr))


def _jigsaw(profile, train_set, seed, config) -> Recipe:
    task = jigsaw.make_task(jigsaw.permutation_set(jigsaw.DEFAULT_SET_SIZE, seed=seed))
    return _classifier(task, profile, train_set, seed, config)


def _context(profile, train_set, seed, config) -> Recipe:
    return _classifier(context.task, profile, train_set, seed, config)


def _colorization(profile, train_set, seed, config) -> Recipe:
    weights = colorization.rebalance_weights(colorization.ab_prior(train_set.images))
    backbone = _backbone(profile, seed)
    model = colorization.ColorizationNet(backbone, colorization.build_head(backbone.feature_dim))
    return Recipe(model, colorization.classification_task(weights), config, train_set)


def _generator(decoder_for, profile, seed) -> EncoderDecoder:
    backbone = _backbone(profile, seed)
    return EncoderDecoder(backbone, decoder_for(backbone.feature_dim))


def _inpainting(profile, train_set, seed, config) -> Recipe:
    adversary = inpainting.build_adversary(profile.width, profile.depth, seed=seed)
    config = replace(config, optimizer="adam", lr=2e-3)
    model = _generator(inpainting.build_head, profile, seed)
    return Recipe(model, inpainting.task, config, train_set, adversary, {"adv": adversary.config()})


def _superres(profile, train_set, seed, config) -> Recipe:
    adversary = superres.build_adversary(profile.width, profile.depth, seed=seed)
    config = replace(config, optimizer="adam", lr=2e-3)
    model = _generator(superres.build_head, profile, seed)
    return Recipe(model, superres.task, config, train_set, adversary, {"adv": adversary.config()})


def _deepcluster(profile, train_set, seed, config) -> Recipe:
    # Sobel input and a constant learning rate, as in the paper and the chapter.
    backbone = deepcluster.build_sobel_backbone(profile.width, profile.depth, seed=seed)
    task = deepcluster.DeepCluster(k=min(DEEPCLUSTER_K, len(train_set) // 10), seed=seed)
    model = PretextModel(backbone, task.build_head(backbone.feature_dim))
    config = replace(config, schedule="constant")
    return Recipe(model, task, config, train_set, settings={"task": task.config()})


def _synthetic(profile, train_set, seed, config) -> Recipe:
    bank = synthetic.load_bank(len(train_set), seed=seed)
    backbone = _backbone(profile, seed)
    model = synthetic.SyntheticNet(backbone, synthetic.build_head(backbone.feature_dim))
    return Recipe(model, synthetic.make_task(bank), config, train_set)


def _frameorder(profile, train_set, seed, config) -> Recipe:
    digits = load_mnist("train", n=len(train_set), seed=seed)
    videos = video.moving_mnist(digits, len(train_set), seed=seed)
    return _classifier(frameorder.make_task(), profile, videos, seed, config)


RECIPES = {
    "rotation": _rotation, "colorization": _colorization, "inpainting": _inpainting,
    "superres": _superres, "context": _context, "jigsaw": _jigsaw, "deepcluster": _deepcluster,
    "synthetic": _synthetic, "frameorder": _frameorder,
}  # fmt: skip


@dataclass
class Pretrained:
    """A pretrained backbone and how its training went."""

    technique: str
    backbone: nn.Module
    history: History


def pretrain(
    technique: str,
    profile: Profile,
    train_set: ImageSet,
    seed: int = 0,
    epochs: int | None = None,
    checkpoint: bool = True,
    progress: bool = True,
) -> Pretrained:
    """Train ``technique``'s recipe on ``train_set`` (any :class:`ImageSet`: CIFAR-10 or your
    own photos) and return its backbone.

    With ``checkpoint`` the weights are kept in the cache, named by technique, profile, seed,
    settings and the images' count and name, and an identical later run loads them.
    """
    plan = recipe(technique, profile, train_set, seed, epochs)
    path = None
    if checkpoint:
        path = default_path(
            f"compare-{technique}", profile=profile, seed=seed, config=plan.config,
            data=(train_set.name, len(train_set)), **plan.settings,
        )  # fmt: skip
    history = train(plan.model, plan.data, plan.task, plan.config, checkpoint=path,
                    progress=progress, adversary=plan.adversary)  # fmt: skip
    return Pretrained(technique, plan.model.backbone.eval(), history)


# ------------------------------------------------------------------------------ measurements


def fine_tune_at(
    backbone: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet,
    profile: Profile,
    fractions: Sequence[float] = LABEL_FRACTIONS,
    seed: int = 0,
) -> dict[str, float]:
    """Test accuracy after fine-tuning a copy of ``backbone`` on each ``fraction`` of the labels.

    Every fraction gets the same compute, ``FINETUNE_PASSES`` passes' worth of the full training
    set: 1 epoch with all labels, 10 with a tenth, 100 with 1 %. A fixed number of epochs would
    starve the small subsets or make the full set the slowest run of the book.
    """
    config = profile.finetune_config(seed)
    scores = {}
    for fraction in fractions:
        n = max(len(train_set.classes), round(fraction * len(train_set)))
        subset = train_set.stratified(n, seed)
        epochs = max(1, round(FINETUNE_PASSES * len(train_set) / n))
        run = replace(config, epochs=epochs)
        scores[f"{fraction:.0%}"] = fine_tune(backbone, subset, test_set, run,
                                              every_epoch=False).accuracy  # fmt: skip
    return scores


def tsne_map(
    backbone: nn.Module, test_set: ImageSet, block: str, n: int = TSNE_POINTS, seed: int = 0
) -> dict:
    """A 2-D t-SNE map (scikit-learn) of ``n`` test images' features at ``block``:
    ``{"xy": (n, 2) list, "labels": (n,) list}``."""
    subset = test_set.stratified(min(n, len(test_set)), seed)
    features = extract_features(backbone, subset, blocks=[block])[block].numpy()
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    xy = TSNE(2, init="pca", perplexity=30, random_state=seed).fit_transform(features)
    return {"xy": xy.round(3).tolist(), "labels": subset.labels.tolist()}


def measure(
    backbone: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet,
    profile: Profile,
    seed: int = 0,
    tsne: bool = False,
) -> dict:
    """The book's probes for one backbone, as a JSON-ready dict: ``linear_probe``, ``knn`` and
    ``best_block`` (plus per-block values), ``probe_curve`` (linear probe with
    ``profile.probe_labels`` labels per class), ``fine_tune`` (per label fraction) and, with
    ``tsne``, a ``tsne`` map."""
    evaluation = evaluate_backbone(backbone, train_set, test_set, seed)
    block = evaluation.best_block
    train_features = extract_features(backbone, train_set, blocks=[block])[block]
    test_features = extract_features(backbone, test_set, blocks=[block])[block]
    result = {
        **evaluation.summary(),
        "probe_curve": label_efficiency(train_features, train_set.labels, test_features,
                                        test_set.labels, profile.probe_labels, seed=seed),
        "fine_tune": fine_tune_at(backbone, train_set, test_set, profile, seed=seed),
    }  # fmt: skip
    if tsne:
        result["tsne"] = tsne_map(backbone, test_set, block, seed=seed)
    return result


# ------------------------------------------------------------------------------ the whole table


def result_path(method: str, profile: Profile, seed: int, directory: Path | None = None) -> Path:
    """Where one method's comparison result is kept in this build's results directory."""
    slug = method.replace(" ", "-")
    return (directory or results_dir()) / "comparison" / f"{slug}-{profile.name}-seed{seed}.json"


def load_result(path: Path, expect: dict) -> dict | None:
    """The result stored at ``path`` if it exists and matches ``expect`` (profile, budget, code
    version...), else ``None``: results from other code or settings are never mixed in."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return stored if all(stored.get(k) == v for k, v in expect.items()) else None


def run(
    profile: Profile,
    train_set: ImageSet,
    test_set: ImageSet,
    seeds: Sequence[int] = (0, 1),
    epochs: int | None = None,
    techniques: Sequence[str] = TECHNIQUES,
    baselines: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Pretrain and measure every technique for every seed; one dict per (method, seed).

    ``baselines`` maps a seed to ``{"random init": backbone, "supervised": backbone}`` (see
    :func:`sslbook.evaluate.baseline_backbones`); the baselines are measured like every method.
    A stored result of the same method, seed, profile, budget and code version is reused.
    """
    epochs = default_epochs(profile) if epochs is None else epochs
    rows = []
    for seed in seeds:
        methods = {**dict.fromkeys(techniques), **(baselines or {}).get(seed, {})}
        for method, backbone in methods.items():
            expect = {"method": method, "seed": seed, "profile": profile.name,
                      "epochs": epochs, "code_version": code_version()}  # fmt: skip
            path = result_path(method, profile, seed)
            row = load_result(path, expect)
            if row is None:
                row = _measure_method(method, backbone, profile, train_set, test_set, seed, epochs,
                                      progress)  # fmt: skip
                row = {**expect, **row}
                write_json(path, row)
            rows.append(row)
    return rows


def _measure_method(method, backbone, profile, train_set, test_set, seed, epochs, progress):
    timing = {"pretrain_seconds": None, "images_per_second": None, "images_seen": 0}
    if backbone is None:  # a technique: pretrain it first
        started = time.perf_counter()
        pretrained = pretrain(method, profile, train_set, seed, epochs, progress=progress)
        backbone, history = pretrained.backbone, pretrained.history
        timing = {
            "pretrain_seconds": history.seconds or time.perf_counter() - started,
            "images_per_second": history.images_per_second,
            "images_seen": epochs * len(train_set),
        }
    if progress:
        print(f"measuring {method} (seed {seed})", flush=True)
    return {**timing, **measure(backbone, train_set, test_set, profile, seed, tsne=seed == 0)}


# ------------------------------------------------------------------------------ summaries


def aggregate(rows: Sequence[dict]) -> dict[str, dict]:
    """Mean and spread over seeds, per method: ``{method: {metric: (mean, std)}}`` for the
    linear probe, k-NN, each fine-tuning fraction and the pretraining time and speed, and
    ``{"probe_curve": [mean per label count]}``. ``std`` is the sample standard deviation
    (0 with a single seed). Methods keep the order in which they first appear."""
    methods: dict[str, list[dict]] = {}
    for row in rows:
        methods.setdefault(row["method"], []).append(row)
    summary = {}
    for method, runs in methods.items():
        scalars = {
            "linear_probe": [r["linear_probe"] for r in runs],
            "knn": [r["knn"] for r in runs],
            **{f"fine_tune {k}": [r["fine_tune"][k] for r in runs] for k in runs[0]["fine_tune"]},
            "pretrain_seconds": [r["pretrain_seconds"] for r in runs],
            "images_per_second": [r["images_per_second"] for r in runs],
        }
        entry = {name: _mean_std(values) for name, values in scalars.items()}
        entry["probe_curve"] = np.mean([r["probe_curve"] for r in runs], axis=0).tolist()
        entry["seeds"] = [r["seed"] for r in runs]
        summary[method] = entry
    return summary


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    known = [v for v in values if v is not None]
    if not known:
        return (float("nan"), float("nan"))
    return float(np.mean(known)), float(np.std(known, ddof=1)) if len(known) > 1 else 0.0


def verdict(
    summary: dict, method: str, baseline: str = "random init", metric: str = "linear_probe"
) -> str:
    """``"ahead"``, ``"behind"`` or ``"within noise"``: ``method`` against ``baseline`` on
    ``metric``, calling a gap real only when it exceeds the two spreads over seeds together."""
    (mean, spread), (base, base_spread) = summary[method][metric], summary[baseline][metric]
    if mean - base > spread + base_spread:
        return "ahead"
    if base - mean > spread + base_spread:
        return "behind"
    return "within noise"


def table_markdown(summary: dict) -> str:
    """The comparison as a Markdown table: mean ± spread over seeds of every measurement."""
    fractions = [k for k in next(iter(summary.values())) if k.startswith("fine_tune ")]
    header = ["method", "linear probe", "k-NN", *[f"fine-tune, {k[10:]} labels" for k in fractions],
              "pretraining", "images/s", "vs random init"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, entry in summary.items():
        seconds, speed = entry["pretrain_seconds"][0], entry["images_per_second"][0]
        cells = [
            method,
            *[_percent(entry[k]) for k in ("linear_probe", "knn", *fractions)],
            "—" if not np.isfinite(seconds) else f"{seconds:.0f} s",
            "—" if not np.isfinite(speed) else f"{speed:.0f}",
            "" if method in BASELINES else verdict(summary, method),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(mean_std: tuple[float, float]) -> str:
    mean, spread = mean_std
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"
