"""What does each technique buy over random init at a given budget? The sweep behind the profiles.

Pretrains each technique's recipe (its chapter's headline setting, ``sb.pretext.technique(name)
.recipe``) for ``--epochs`` passes over the profile's unlabelled images, then probes the frozen
backbone like every chapter (``sb.evaluate.evaluate_backbone``: linear probe at the block chosen
on a validation split of the labelled images, and k-NN) on the profile's labelled subset and test
images. Three references go through the same probes: ``random`` (the untrained backbone),
``random-sobel`` (DeepCluster's fixed Sobel layer in front of an untrained backbone, its floor)
and ``supervised`` (the backbone trained with the labelled subset's labels, the profile's
supervised recipe).

    python benchmarks/probe_sweep.py --techniques random supervised rotation --seeds 0 1
    python benchmarks/probe_sweep.py --techniques simclr --epochs 4 --override temperature=0.2

Prints one line per (technique, seed) and, at the end, the mean and sample standard deviation
over seeds; ``--json PATH`` appends the rows as JSON lines. Each line also gives the probe's
accuracy on the validation split at the chosen block: choose between recipes by that number,
which no test image shaped, and report the test accuracy of the choice. Accuracies do not depend
on what else runs on the machine; the seconds do: run it on an otherwise idle machine to quote
them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from datetime import date

import torch
from benchtools import machine

import sslbook as sb

REFERENCES = ("random", "random-sobel", "supervised")


def parse_value(text: str):
    """``"0.2"`` -> 0.2, ``"true"`` or ``"True"`` -> True, ``"camera"`` -> "camera": a
    command-line override."""
    python_spelling = {"True": True, "False": False, "None": None}
    if text in python_spelling:
        return python_spelling[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def backbone_of(name, profile, seed: int, epochs: int, overrides: dict, labelled):
    """The backbone to probe, its training seconds and its task's metric at the last epoch (0
    and ``None`` for the untrained references); the supervised reference trains on
    ``labelled``, the same split for every seed."""
    if name == "random":
        return sb.recipes.shared_backbone(profile, seed), 0.0, None
    if name == "random-sobel":
        module = sb.pretext.deepcluster
        return module.build_sobel_backbone(**profile.backbone_settings(), seed=seed), 0.0, None
    if name == "supervised":
        plan = sb.recipes.supervised(profile, seed, data=labelled, **overrides)
    else:
        plan = sb.pretext.technique(name).recipe(profile, seed, epochs=epochs, **overrides)
    history = plan.train(progress=False)
    metric = history.epoch_metric[-1] if history.epoch_metric else None
    return plan.backbone, history.seconds, (plan.task.metric_name, metric)


def task_summary(metric: tuple[str, float | None] | None) -> str:
    """``", accuracy 0.913"``: how well the pretext task itself was learned (a probe near
    random init's is read differently when the task stayed at chance)."""
    if metric is None or metric[1] is None:
        return ""
    return f", {metric[0]} {metric[1]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--techniques", nargs="+", default=[*REFERENCES, *sb.pretext.TECHNIQUES])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    parser.add_argument("--override", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="recipe settings, e.g. temperature=0.2 source=camera")  # fmt: skip
    parser.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    profile = sb.get_profile(args.profile)
    epochs = profile.epochs if args.epochs is None else args.epochs
    overrides = dict(item.split("=", 1) for item in args.override)
    overrides = {key: parse_value(value) for key, value in overrides.items()}
    labelled = sb.load_cifar10("train", n=profile.n_labelled, seed=0)
    test = sb.load_cifar10("test", n=profile.n_test, seed=0)
    print(f"{date.today()}  {machine()}  torch {torch.__version__}")
    sizes = f"{profile.n_unlabelled:,} unlabelled, {len(labelled):,} labelled, {len(test):,} test"
    print(f"profile {profile.name!r}: {sizes} images; {epochs} epochs; overrides {overrides}")

    rows = []
    for name in args.techniques:
        for seed in args.seeds:
            started = time.perf_counter()
            backbone, seconds, metric = backbone_of(name, profile, seed, epochs, overrides,
                                                    labelled)  # fmt: skip
            evaluation = sb.evaluate.evaluate_backbone(backbone.eval(), labelled, test, seed)
            row = {"technique": name, "seed": seed, "profile": profile.name, "epochs": epochs,
                   "overrides": overrides, "linear_probe": evaluation.linear_probe,
                   "knn": evaluation.knn_accuracy, "block": evaluation.best_block,
                   "validation": evaluation.validation[evaluation.best_block],
                   "train_seconds": seconds, "task_metric": metric,
                   "wall_seconds": time.perf_counter() - started}  # fmt: skip
            rows.append(row)
            print(f"{name:13s} seed {seed}  linear probe {row['linear_probe']:.1%} "
                  f"({row['block']}, validation {row['validation']:.1%})  k-NN {row['knn']:.1%}  "
                  f"train {seconds:5.0f} s{task_summary(metric)}", flush=True)  # fmt: skip
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(row) + "\n")

    print("\nmean ± sample sd over seeds:")
    for name in args.techniques:
        probes = [100 * r["linear_probe"] for r in rows if r["technique"] == name]
        spread = statistics.stdev(probes) if len(probes) > 1 else 0.0
        checks = [100 * r["validation"] for r in rows if r["technique"] == name]
        print(f"{name:13s} linear probe {statistics.mean(probes):5.1f} ± {spread:.1f}  "
              f"(validation {statistics.mean(checks):5.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
