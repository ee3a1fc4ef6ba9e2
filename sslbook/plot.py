"""The book's figures: image grids made from real data, training curves and comparisons.

Every function draws into a new matplotlib figure and returns it, so a notebook cell shows it and
a reader can restyle or save it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sslbook.pretext import TECHNIQUES
from sslbook.train import History
from sslbook.transforms import to_float

#: The baselines' colours, the same in every chapter.
METHOD_COLORS = {"random init": "#9e9e9e", "supervised": "#37474f"}
#: matplotlib's tab10 without its grey, then the lighter half of tab20: a technique's colour is
#: the entry at its place in :data:`sslbook.pretext.TECHNIQUES`, so it is the same everywhere.
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5",
]  # fmt: skip


def color_of(method: str, index: int = 0) -> str:
    """Stable colour for a method name: the baselines' own, a registered technique's by its
    place in the registry, anything else (an ablation) by ``index``."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    if method in TECHNIQUES:
        return PALETTE[TECHNIQUES.index(method) % len(PALETTE)]
    return PALETTE[index % len(PALETTE)]


def _as_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` uint8 or [0, 1] float → ``(H, W, C)`` or ``(H, W)`` float array."""
    image = to_float(image.detach().cpu()).clamp(0, 1)
    array = image.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def show_images(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.3,
    suptitle: str | None = None,
    title_colors: Sequence[str] | None = None,
):
    """A grid of images ``(N, C, H, W)`` (uint8 or float in [0, 1]) with optional titles."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15),
                             squeeze=False)  # fmt: skip
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_numpy_image(images[i]), cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(titles[i], fontsize=8, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_pretext_pairs(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    target_names: Sequence[str],
    ncols: int = 8,
    suptitle: str | None = None,
):
    """The network's inputs titled with their pretext labels: exactly what it is trained on."""
    titles = [target_names[int(t)] for t in targets]
    return show_images(inputs, titles, ncols=ncols, suptitle=suptitle)


def plot_history(history: History, metric_name: str = "accuracy", title: str | None = None):
    """Loss per step (with a running mean) and the per-epoch metric."""
    has_metric = bool(history.epoch_metric)
    fig, axes = plt.subplots(1, 1 + has_metric, figsize=(5 * (1 + has_metric), 3.2),
                             squeeze=False)  # fmt: skip
    losses = np.asarray(history.step_loss)
    axes[0, 0].plot(losses, alpha=0.3, color="#1f77b4", label="step")
    window = max(1, len(losses) // 20)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes[0, 0].plot(np.arange(window - 1, len(losses)), smooth, color="#1f77b4",
                        label=f"mean of {window}")  # fmt: skip
    axes[0, 0].set(xlabel="step", ylabel="loss", title="training loss")
    axes[0, 0].legend()
    if has_metric:
        epochs = np.arange(1, len(history.epoch_metric) + 1)
        axes[0, 1].plot(epochs, history.epoch_metric, marker="o")
        axes[0, 1].set(xlabel="epoch", ylabel=metric_name, title=f"{metric_name} (training)")
        axes[0, 1].set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_probe_comparison(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("linear_probe", "knn"),
    chance: float | None = None,
    title: str = "Frozen features on the test set",
):
    """Grouped bars: one group per metric, one bar per method (``{method: {metric: acc}}``)."""
    methods = list(results)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(metrics) * len(methods) / 2, 3.4))
    for i, method in enumerate(methods):
        xs = np.arange(len(metrics)) + (i - (len(methods) - 1) / 2) * width
        values = [results[method][m] for m in metrics]
        bars = ax.bar(xs, values, width, label=method, color=color_of(method, i))
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize=8, padding=2)
    if chance is not None:
        ax.axhline(chance, color="black", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(metrics)), [m.replace("_", " ") for m in metrics])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, min(1.0, max(max(r[m] for m in metrics) for r in results.values()) + 0.15))
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    xs: Sequence[float],
    xlabel: str,
    ylabel: str = "test accuracy",
    title: str | None = None,
    log_x: bool = False,
    chance: float | None = None,
    ax=None,
):
    """Several methods' accuracy against a shared x axis (labels per class, epochs, ...)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.4))
    else:
        fig = ax.figure
    for i, (method, ys) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o", label=method, color=color_of(method, i))
    if chance is not None:
        ax.axhline(chance, color="black", linestyle=":", linewidth=1, label="chance")
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(list(xs), [f"{x:g}" for x in xs])
        ax.minorticks_off()  # only the values measured are labelled
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_probe_by_budget(
    curves: Mapping[str, Sequence[float]],
    budgets: Sequence[int],
    random_init: float,
    title: str | None = None,
):
    """:func:`sslbook.compare.probe_by_budget`'s curves against the pretraining epochs, with
    random init's probe as a dotted line and a tick at every budget measured."""
    fig = plot_curves(curves, budgets, "pretraining epochs", ylabel="linear probe", title=title)
    ax = fig.axes[0]
    ax.axhline(random_init, color="black", linestyle=":", label="random init")
    ax.set_xticks(list(budgets))
    ax.legend(frameon=False)
    return fig


def plot_label_efficiency(
    curves: Mapping[str, Sequence[float]],
    labels_per_class: Sequence[int],
    chance: float | None = 0.1,
    title: str = "Linear probe with few labels",
    ax=None,
):
    """Linear-probe accuracy against labelled images per class (log axis), one line per method:
    what :func:`sslbook.evaluate.label_efficiency_curves` returns."""
    return plot_curves(curves, labels_per_class, "labelled images per class", title=title,
                       log_x=True, chance=chance, ax=ax)  # fmt: skip


def plot_method_bars(
    summary: Mapping[str, Mapping[str, tuple[float, float]]],
    metrics: Sequence[str] = ("linear_probe", "knn"),
    reference: str | None = "random init",
    title: str = "Frozen features on the test set",
):
    """One horizontal bar per method and panel per metric, with the spread over seeds as error
    bars, for many methods at once (``{method: {metric: (mean, std)}}``, as
    :func:`sslbook.compare.aggregate` returns). A dotted line marks ``reference``'s mean."""
    methods = list(summary)
    figsize = (4.2 * len(metrics), 0.34 * len(methods) + 1.4)
    fig, axes = plt.subplots(1, len(metrics), figsize=figsize, sharey=True, squeeze=False)
    ys = np.arange(len(methods))[::-1]
    for ax, metric in zip(axes[0], metrics, strict=True):
        means = np.array([summary[m][metric][0] for m in methods])
        spreads = np.array([summary[m][metric][1] for m in methods])
        colours = [color_of(m, i) for i, m in enumerate(methods)]
        ax.barh(ys, means, xerr=spreads, color=colours, capsize=3)
        for y, mean in zip(ys, means, strict=True):
            ax.text(mean + 0.005, y + 0.2, f"{mean:.1%}", fontsize=7)
        if reference in summary:
            ax.axvline(summary[reference][metric][0], color="black", linestyle=":", linewidth=1)
        ax.set(
            xlabel=metric.replace("_", " "), xlim=(0, min(1.0, means.max() + spreads.max() + 0.1))
        )
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(ys, methods)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_feature_maps(
    maps: Mapping[str, Mapping[str, Sequence]],
    classes: Sequence[str],
    ncols: int = 4,
    size: float = 2.6,
):
    """Scatter plots of 2-D feature maps, one per method (``{method: {"xy": (n, 2), "labels":
    (n,)}}``, e.g. t-SNE), points coloured by true class: clusters of one colour mean the
    features separate that class without ever having seen a label."""
    nrows = -(-len(maps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (method, points) in zip(axes.flat, maps.items(), strict=False):  # spare axes stay empty
        xy, labels = np.asarray(points["xy"]), np.asarray(points["labels"])
        ax.scatter(xy[:, 0], xy[:, 1], c=cmap(labels % 10), s=4, linewidths=0)
        ax.set_title(method, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(maps) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=cmap(i), label=c)
               for i, c in enumerate(classes)]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 10), frameon=False,
               fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_gan_history(history, metric_name: str, title: str | None = None):
    """Generator loss, the pretext metric per epoch and the discriminator's accuracy per step."""
    has_adversary = bool(history.step_adversary_accuracy)
    fig, axes = plt.subplots(1, 2 + has_adversary, figsize=(4.6 * (2 + has_adversary), 3.2))
    axes[0].plot(history.step_loss, alpha=0.4)
    axes[0].set(xlabel="step", ylabel="loss", title="generator loss", yscale="log")
    epochs = np.arange(1, len(history.epoch_metric) + 1)
    axes[1].plot(epochs, history.epoch_metric, marker="o")
    axes[1].set(xlabel="epoch", ylabel=metric_name, title=f"{metric_name} (training)")
    if has_adversary:
        acc = np.asarray(history.step_adversary_accuracy)
        window = max(1, len(acc) // 20)
        axes[2].plot(acc, alpha=0.3, color="#d62728")
        smooth = np.convolve(acc, np.ones(window) / window, mode="valid")
        axes[2].plot(np.arange(window - 1, len(acc)), smooth, color="#d62728")
        axes[2].axhline(0.5, color="black", linestyle=":", linewidth=1)
        axes[2].set(xlabel="step", ylabel="accuracy", title="discriminator accuracy", ylim=(0, 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
