"""Every pretext task of the book on the same backbone, data, budget and probes.

A chapter tunes its own run to show its technique at its best (rotation trains three times the
profile's epochs, colorization twice). That makes chapters good teachers and bad witnesses for a
comparison. Here every technique gets the same *budget*: ``epochs`` passes over the same
``n_unlabelled`` images, so each has seen exactly as many images. Everything else is the
chapter's headline setting: its task, head, optimiser and, for the two GAN chapters, its adversary.

- :func:`recipe` is the technique's own ``recipe`` (from :mod:`sslbook.pretext`, the same one
  its chapter calls) with the comparison's budget;
- :func:`pretrain` trains it (or loads the checkpoint of an identical earlier run);
- :func:`measure` puts a backbone through the book's probes: linear probe and k-NN at its best
  block, probe curves with few labels, fine-tuning with 1 %, 10 % and 100 % of the labels, and a
  2-D t-SNE map of its features;
- :func:`run` does both for every technique and seed, reusing this build's results when they
  come from the same recipe, profile, budget, data and code.

Frame-order verification learns from videos, not still images: it pretrains on videos made for
its recipe (as many as the others have images), and is probed on CIFAR-10 like all.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.evaluate import evaluate_backbone, fine_tune, label_efficiency
from sslbook.fingerprint import data_digest, fingerprint, weights_digest
from sslbook.inference import extract_features
from sslbook.pretext import TECHNIQUES, technique
from sslbook.recipes import Recipe
from sslbook.results import results_dir, write_json
from sslbook.train import History

BASELINES = ("random init", "supervised")
LABEL_FRACTIONS = (0.01, 0.1, 1.0)  # of the training images, for fine-tuning
FINETUNE_PASSES = 1  # fine-tuning budget, in passes over all training images (see fine_tune_at)
TSNE_POINTS = 500


def default_epochs(profile: Profile) -> int:
    """The comparison's budget: the profile's epochs, the budget every chapter's recipe trains
    by default. A chapter's seed-0 run is then the comparison's seed-0 run, loaded, not
    retrained."""
    return profile.epochs


def recipe(
    name: str,
    profile: Profile,
    seed: int = 0,
    epochs: int | None = None,
    data: ImageSet | None = None,
) -> Recipe:
    """Technique ``name``'s own recipe (its chapter's headline setting), trained for ``epochs``
    (default: :func:`default_epochs`) on ``data`` (default: the profile's unlabelled
    pretraining images, as in the chapters).

    Raises:
        ValueError: an unknown technique, naming the known ones.
    """
    epochs = default_epochs(profile) if epochs is None else epochs
    return technique(name).recipe(profile, seed, data=data, epochs=epochs)


@dataclass
class Pretrained:
    """A pretrained backbone and how its training went."""

    technique: str
    backbone: nn.Module
    history: History


def pretrain(
    name: str,
    profile: Profile,
    seed: int = 0,
    epochs: int | None = None,
    data: ImageSet | None = None,
    checkpoint: bool = True,
    progress: bool = True,
) -> Pretrained:
    """Train technique ``name``'s recipe on ``data`` (any :class:`ImageSet`: CIFAR-10 or your
    own photos; default: the profile's pretraining images) and return its backbone.

    With ``checkpoint`` the weights are kept in the cache, keyed by the recipe's fingerprint
    (the images' content among the rest), and an identical later run loads them.
    """
    plan = recipe(name, profile, seed, epochs, data)
    history = plan.train(progress=progress, checkpoint=checkpoint)
    return Pretrained(name, plan.backbone.eval(), history)


# ------------------------------------------------------------------------------ measurements


def probe_by_budget(
    names: Sequence[str],
    profile: Profile,
    budgets: Sequence[int],
    train_set: ImageSet,
    test_set: ImageSet,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Linear probe (at the validation-chosen block) of each technique's recipe after each
    number of epochs in ``budgets``: ``{name: [accuracy per budget]}``.

    Whether one technique trails another because of its budget shows in the slopes: a curve
    still climbing faster than its rival's is catching up. Every run is an ordinary recipe run,
    so one that a chapter or the comparison has trained (the profile's epochs, a chapter's
    budget) is loaded from its checkpoint, not trained again.
    """
    curves = {}
    for name in names:
        curves[name] = []
        for epochs in budgets:
            plan = recipe(name, profile, seed, epochs)
            plan.train()
            backbone = plan.backbone.eval()
            curves[name].append(evaluate_backbone(backbone, train_set, test_set, seed).linear_probe)
    return curves


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


#: Probe differences smaller than this (one point) are within the seed-to-seed spread of the
#: ``cpu`` profile's probes (``benchmarks/README.md``): two such runs are level.
LEVEL = 0.01


def budget_verdict(curves: dict[str, list[float]], method: str, rival: str) -> str:
    """One sentence on :func:`probe_by_budget`'s ``curves``: is ``method`` ahead of ``rival`` at
    the largest budget, and if it is behind, is it closing the gap (gaining more from the
    extra epochs)?"""
    gap = curves[method][-1] - curves[rival][-1]
    gain, rival_gain = (curves[name][-1] - curves[name][0] for name in (method, rival))
    if abs(gap) < LEVEL:
        return f"{method} and {rival} are level at this budget ({gap:+.1%})"
    if gap > 0:
        return f"{method} is ahead of {rival} at this budget ({gap:+.1%})"
    if gain - rival_gain >= LEVEL:
        return (f"{method} is behind {rival} at this budget ({gap:+.1%}) but gains more from "
                f"the extra epochs ({gain:+.1%} against {rival_gain:+.1%}): a gap of training "
                "time, which more epochs would narrow")  # fmt: skip
    return (f"{method} is behind {rival} at this budget ({gap:+.1%}) and gains no more from "
            f"the extra epochs ({gain:+.1%} against {rival_gain:+.1%}): more epochs alone are "
            "unlikely to close it")  # fmt: skip


def budget_report(
    curves: dict[str, list[float]], budgets: Sequence[int], method: str, rival: str
) -> str:
    """Each curve's probe at each budget, a line per technique, then :func:`budget_verdict`."""
    lines = [f"{name:9s} " + "  ".join(f"{n} epochs: {p:.1%}"
                                       for n, p in zip(budgets, probes, strict=True))
             for name, probes in curves.items()]  # fmt: skip
    return "\n".join([*lines, budget_verdict(curves, method, rival)])


# ------------------------------------------------------------------------------ the whole table


def result_path(method: str, profile: Profile, seed: int, directory: Path | None = None) -> Path:
    """Where one method's comparison result is kept in this build's results directory."""
    slug = method.replace(" ", "-")
    return (directory or results_dir()) / "comparison" / f"{slug}-{profile.name}-seed{seed}.json"


def load_result(path: Path, key: str) -> dict | None:
    """The result stored at ``path`` if it exists and was measured under ``key`` (see
    :func:`run`), else ``None``: results from other code, data or settings are never mixed in."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return stored if isinstance(stored, dict) and stored.get("key") == key else None


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

    Each technique pretrains on its recipe's own data (the profile's unlabelled images, as in
    its chapter) and is probed on the labelled ``train_set`` and ``test_set``. ``baselines``
    maps a seed to ``{"random init": backbone, "supervised": backbone}`` (see
    :func:`sslbook.evaluate.baseline_backbones`); the baselines are measured like every method.
    A stored result is reused when its key matches: the fingerprint of the method (its recipe,
    or a baseline's weights), the profile, the budget, the seed, the images and the package.
    """
    epochs = default_epochs(profile) if epochs is None else epochs
    rows = []
    for seed in seeds:
        methods = {**dict.fromkeys(techniques), **(baselines or {}).get(seed, {})}
        for method, backbone in methods.items():
            plan = recipe(method, profile, seed, epochs) if backbone is None else None
            identity = plan.fingerprint if plan is not None else weights_digest(backbone)
            key = fingerprint("comparison", method, identity, profile, epochs, seed,
                              data_digest(train_set), data_digest(test_set))  # fmt: skip
            path = result_path(method, profile, seed)
            row = load_result(path, key)
            if row is None:
                row = _measure_method(method, plan, backbone, profile, train_set, test_set, seed,
                                      epochs, progress)  # fmt: skip
                row = {"method": method, "seed": seed, "profile": profile.name,
                       "epochs": epochs, "key": key, **row}  # fmt: skip
                write_json(path, row)
            rows.append(row)
    return rows


def _measure_method(method, plan, backbone, profile, train_set, test_set, seed, epochs, progress):
    timing = {"pretrain_seconds": None, "images_per_second": None, "images_seen": 0}
    if plan is not None:  # a technique: pretrain it first
        started = time.perf_counter()
        history = plan.train(progress=progress)
        backbone = plan.backbone.eval()
        timing = {
            "pretrain_seconds": history.seconds or time.perf_counter() - started,
            "images_per_second": history.images_per_second,
            "images_seen": history.images_seen,
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


def techniques_markdown(techniques: Sequence[str] = TECHNIQUES) -> str:
    """The registered techniques and their papers as a Markdown table, arXiv ids linked: the
    comparison's list of rows, written from the registry so that it never misses one."""
    lines = ["| technique | paper |", "| --- | --- |"]
    for name in techniques:
        module = technique(name)
        paper = re.sub(r"arXiv (\d{4}\.\d{4,5})", r"[arXiv:\1](https://arxiv.org/abs/\1)",
                       module.PAPER)  # fmt: skip
        lines.append(f"| {module.TITLE} | {paper} |")
    return "\n".join(lines)


def _percent(mean_std: tuple[float, float]) -> str:
    mean, spread = mean_std
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"
