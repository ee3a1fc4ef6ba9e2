"""How fast does each technique train here, and how close is that to the machine's matmul peak?

``throughput.py`` times the bare backbone on random tensors. Here the whole training step of
every technique counts, as the comparison chapter trains it (``sb.compare.recipe``): drawing the
images, augmenting them, making the pretext batch, the network, the loss and, for the two GAN
chapters, the discriminator's step. Each technique trains for one epoch on ``--images`` CIFAR-10
training images (frame order: as many Moving-MNIST videos) through ``sb.train``, in a fresh
process so that its peak memory is its own, after one untimed warm-up step on a copy.

Prints one row per technique: source images/s (``History.images_per_second``), network inputs
per image and per second, training FLOPs per source image (forward + backward, counted by
``torch.utils.flop_counter`` on one pretext batch), the GFLOP/s that makes and its fraction of the
matmul peak of the training precision, the seconds in the loop and in the whole ``sb.train``
call (the difference is DeepCluster's clustering before the epoch), and memory.

    python benchmarks/techniques.py --profile cpu
    python benchmarks/techniques.py --profile smoke --images 128 --techniques rotation jigsaw
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import traceback
import warnings
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch
from benchtools import in_fresh_process, machine, peak_rss_bytes
from throughput import measure_peak, peak_name
from torch.utils.flop_counter import FlopCounterMode

import sslbook as sb
from sslbook.device import pick_precision
from sslbook.recipes import Recipe
from sslbook.train import Run, draw_batch, keep_freed_memory, start_run, train_step
from sslbook.transforms import random_crop_flip

SEED = 0
NOTES = """\
FLOPs: forward + backward of one step, the discriminator's included (inpainting, superres).
train() s - loop s: work before the epoch, mostly DeepCluster's clustering (not in images/s).
train MB: growth of peak RSS during training (CUDA: peak memory allocated on the GPU)."""
COLUMNS = (  # (heading, key in a result, format)
    ("technique", "technique", "{}"),
    ("inputs/img", "inputs_per_image", "{:.3g}"),
    ("images/s", "images_per_second", "{:.0f}"),
    ("inputs/s", "inputs_per_second", "{:.0f}"),
    ("MFLOP/img", "mflop_per_image", "{:.1f}"),
    ("GFLOP/s", "gflop_per_second", "{:.1f}"),
    ("% of peak", "fraction_of_peak", "{:.1%}"),
    ("loop s", "loop_seconds", "{:.2f}"),
    ("train() s", "train_seconds", "{:.2f}"),
    ("train MB", "train_mb", "{:.0f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
)


def first_step(plan: Recipe, device: torch.device) -> tuple[Run, object, object, int]:
    """A fresh :class:`~sslbook.train.Run` on copies of the recipe's networks (so the timed
    training starts from the recipe's exact initial weights) and the ``(inputs, targets)`` of its
    first batch, drawn as ``sb.train`` draws it, with the number of source images."""
    model, adversary = copy.deepcopy(plan.model), copy.deepcopy(plan.adversary)
    task = copy.deepcopy(plan.task)
    run = start_run(model, task, plan.config, device, adversary=adversary,
                    n_images=len(plan.data))  # fmt: skip
    if task.on_epoch_start is not None:  # DeepCluster: cluster first, or there are no targets
        task.on_epoch_start(model, plan.data, 0)
    generator = torch.Generator().manual_seed(SEED)
    index = torch.arange(plan.config.batch_size)
    batch = draw_batch(run, plan.data, index, random_crop_flip, generator)
    inputs, targets = task.make_batch(batch, generator)
    return run, inputs, targets, len(index)


def warm_up_and_count(plan: Recipe, device: torch.device) -> float:
    """One untimed warm-up step, then the FLOPs of one step per source image, counted on the
    loop's own :func:`~sslbook.train.train_step` (the discriminator's step included; the
    optimiser updates add no matrix FLOPs)."""
    run, inputs, targets, n = first_step(plan, device)
    train_step(run, inputs, targets, 0, 0)
    with FlopCounterMode(display=False) as counter:
        train_step(run, inputs, targets, 0, 1)
    return counter.get_total_flops() / n


def timed_training(plan: Recipe, device: torch.device) -> tuple[sb.History, float]:
    """``sb.train`` for the recipe's one epoch: its History and the wall time of the call, which
    also holds work outside the loop such as DeepCluster's clustering before the epoch."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one epoch is too short for GAN checks
        history = sb.train(
            plan.model, plan.data, plan.task, plan.config, device=device, progress=False,
            adversary=plan.adversary,
        )  # fmt: skip
    return history, time.perf_counter() - started


def measure(technique: str, profile: str, n_images: int, device: str, precision: str) -> dict:
    """Everything one row of the table needs; runs in a fresh process (see ``main``)."""
    try:
        return _measure(technique, sb.get_profile(profile), n_images, torch.device(device),
                        precision)  # fmt: skip
    except Exception as error:  # report it in the table and go on with the next technique
        traceback.print_exc()
        return {"technique": technique, "error": f"{type(error).__name__}: {error}"}


def _measure(technique, profile, n_images, device, precision) -> dict:
    keep_freed_memory()  # as sb.train does, from the warm-up step on
    sb.seed_everything(SEED)
    train_set = sb.load_cifar10("train", n=n_images, seed=SEED)
    plan = sb.compare.recipe(technique, profile, seed=SEED, epochs=1, data=train_set)
    plan.config = replace(plan.config, precision=precision)
    rss_before = peak_rss_bytes()
    flops_per_image = warm_up_and_count(plan, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history, seconds = timed_training(plan, device)
    train_bytes = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else peak_rss_bytes() - rss_before
    )
    return {
        "technique": technique,
        "images_seen": history.images_seen,
        "inputs_per_image": history.inputs_seen / history.images_seen,
        "images_per_second": history.images_per_second,
        "inputs_per_second": history.inputs_seen / history.seconds,
        "mflop_per_image": flops_per_image / 1e6,
        "gflop_per_second": history.images_per_second * flops_per_image / 1e9,
        "loop_seconds": history.seconds,
        "train_seconds": seconds,
        "train_mb": train_bytes / 2**20,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
    }


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table; failed techniques follow it with their errors."""
    done = [row for row in rows if "error" not in row]
    cells = [[heading for heading, _, _ in COLUMNS]]
    cells += [[form.format(row[key]) for _, key, form in COLUMNS] for row in done]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(_aligned(line, widths)) for line in cells]
    lines += [f"{row['technique']}: FAILED, {row['error']}" for row in rows if "error" in row]
    return "\n".join(lines)


def _aligned(line: list[str], widths: list[int]) -> list[str]:
    """Names left-aligned, numbers right-aligned."""
    numbers = (cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))
    return [line[0].ljust(widths[0]), *numbers]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=list(sb.PROFILES))
    parser.add_argument("--images", type=int, default=1024, help="CIFAR-10 training images")
    parser.add_argument("--techniques", nargs="+", default=list(sb.pretext.TECHNIQUES),
                        choices=list(sb.pretext.TECHNIQUES), metavar="TECHNIQUE")  # fmt: skip
    parser.add_argument("--device", default=None, help="default: as sb.train picks it")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures here")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = sb.pick_device(args.device)
    precision = pick_precision(device, args.precision)
    print(f"{machine()}; device {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)  # fmt: skip
    bound = peak_name(device, precision)
    peak = measure_peak(device, bound)  # before any training, on the otherwise idle machine
    print(f"profile {args.profile}, {args.images} images, one epoch, precision {precision}; "
          f"{bound} matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)  # fmt: skip
    rows = []
    for technique in args.techniques:
        row = in_fresh_process(measure, technique, args.profile, args.images, str(device),
                               args.precision)  # fmt: skip
        if "error" not in row:
            row["fraction_of_peak"] = row["gflop_per_second"] * 1e9 / peak
        rows.append(row)
        print(f"  {technique} done", flush=True)
    print(format_table(rows))
    print(NOTES)
    if args.json:
        summary = {"date": date.today().isoformat(), "machine": machine(),
                   "torch": torch.__version__, "profile": args.profile, "images": args.images,
                   "device": str(device), "precision": precision, "peak_name": bound,
                   "peak_flops": peak, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1))
    if any("error" in row for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
