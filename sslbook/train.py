"""One training loop for every chapter.

The loop knows nothing about the method: it draws batches of images, lets the task turn them into
``(inputs, targets)``, and minimises the task's loss. Around that it does the chores once, for all
chapters: device choice, seeding, mixed precision where it pays, channels-last memory, a progress
bar, a learning-rate schedule, checks for NaNs, and checkpoints that resume.

Each job is one short function, to be read on its own:

- :func:`train` sets up a :class:`Run` (:func:`start_run`), resumes it, and loops over epochs;
- :func:`train_epoch` draws the epoch's batches (the task may plan the epoch, see
  :class:`~sslbook.pretext.base.EpochPlan`);
- :func:`train_step` is one optimisation step of the model; in the GAN chapters
  (``adversary=``) it calls :func:`adversary_step`, the discriminator's own update, first;
- :func:`resume` and :func:`save` are the checkpoint, :func:`check_finite` the guard against
  a run that "finishes" with broken weights.
"""

from __future__ import annotations

import ctypes
import functools
import math
import numbers
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sslbook.checkpoint import load_checkpoint, save_checkpoint
from sslbook.data import ImageSet
from sslbook.device import autocast, pick_device, pick_precision
from sslbook.pretext.base import Adversary, Batch, EpochPlan, Task
from sslbook.transforms import random_crop_flip, to_float

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TrainingDivergedError(FloatingPointError):
    """The loss, or the model's weights or statistics, became NaN or infinite."""


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    Every training step allocates and frees the same large activation buffers. By default glibc
    hands blocks that big back to the kernel on ``free`` and page-faults them in again on the
    next step; on a 2-core CPU that costs ~40 % of training time (see
    ``benchmarks/throughput.py``). Raising the mmap and trim thresholds keeps them in the heap.
    Returns whether the setting was applied (only on Linux with glibc; harmless elsewhere).
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    keep_large_blocks = libc.mallopt(m_mmap_threshold, 1 << 30)
    never_trim = libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    return bool(keep_large_blocks and never_trim)


def _whole_number(name: str, value) -> int:
    """``value`` as an ``int``, or a ValueError naming the setting (a string from the command
    line, a float, or a bool would otherwise fail later, far from where it was given)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices).

    Raises:
        ValueError: ``seed`` is not a whole number. A notebook seeds first, so ``-p seed=abc`` on
            the command line would otherwise fail inside NumPy with a string-formatting error.
    """
    seed = _whole_number("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds libraries that use the global state)
    torch.manual_seed(seed)


@dataclass
class History:
    """What happened during training, for plots and summaries.

    Attributes:
        step_loss: loss of every optimisation step.
        epoch_loss: mean loss of every epoch.
        epoch_metric: the task's metric (e.g. pretext accuracy) averaged over every epoch.
        seconds: wall time spent training (excluding any loaded from a checkpoint).
        images_seen: source images drawn (a pretext task may turn one image into several inputs).
        inputs_seen: network inputs processed.
        step_adversary_loss: the discriminator's loss at every step (GAN training only).
        step_adversary_accuracy: the discriminator's real/fake accuracy at every step.
        epoch_adversary_accuracy: its mean over every epoch.
    """

    step_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    epoch_metric: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0
    inputs_seen: int = 0
    step_adversary_loss: list[float] = field(default_factory=list)
    step_adversary_accuracy: list[float] = field(default_factory=list)
    epoch_adversary_accuracy: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Source images per second of training."""
        return self.images_seen / self.seconds if self.seconds else float("nan")


SCHEDULES = ("cosine", "constant")  # learning-rate schedules after the warm-up
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Optimisation settings (SGD with Nesterov momentum, linear warm-up, cosine decay).

    ``optimizer="adam"`` (AdamW, ``momentum`` unused) suits pixel-regression objectives such as
    the generators of the reconstruction chapters, whose small losses SGD follows badly.
    ``schedule="constant"`` keeps the learning rate at ``lr`` after the warm-up: DeepCluster needs
    it, because its targets change every epoch and a decayed rate can no longer follow them.

    Raises:
        ValueError: a setting out of range (e.g. ``batch_size=0``, ``seed="abc"``), naming it.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    seed: int = 0
    precision: str = "auto"
    optimizer: str = "sgd"
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            _whole_number(name, getattr(self, name))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be at least 1, got epochs={self.epochs}, "
                f"batch_size={self.batch_size}"
            )
        for name in ("lr", "weight_decay", "momentum", "warmup_fraction"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up to ``config.lr``, then cosine decay to zero (or constant)."""
    warmup = max(1, int(config.warmup_fraction * total_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Run:
    """Everything one training run holds while it trains (built by :func:`train`)."""

    model: nn.Module
    task: Task
    config: TrainConfig
    device: torch.device
    precision: str
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    adversary: Adversary | None = None
    adversary_optimizer: torch.optim.Optimizer | None = None
    adversary_scaler: torch.amp.GradScaler | None = None
    history: History = field(default_factory=History)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    def identity(self) -> dict:
        """What a checkpoint of this run must match: the model's and the training's settings."""
        train_config = asdict(self.config) | {"task": self.task.name}
        if self.adversary is not None:
            train_config["adversary"] = self.adversary.config()
        return {"model_config": _model_config(self.model), "train_config": train_config}


def train(
    model: nn.Module,
    data: ImageSet,
    task: Task,
    config: TrainConfig | None = None,
    *,
    augment: Augment | None = random_crop_flip,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    parameters: list | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    adversary: Adversary | None = None,
) -> History:
    """Train ``model`` on ``task`` over the images of ``data``.

    Args:
        model: maps ``inputs`` to ``outputs`` for ``task.loss`` (e.g. a ``PretextModel``).
        data: training images (uint8); labels are only handed to the task, which may ignore them.
        task: a :class:`~sslbook.pretext.base.Task`.
        config: optimisation settings; defaults to :class:`TrainConfig`.
        augment: batched augmentation applied to float images before the task sees them.
        device: where to train; chosen automatically when ``None``.
        checkpoint: file to save after each epoch; if it exists, training resumes from it (or
            returns at once when it already holds all epochs).
        progress: show a progress bar with loss and images/s.
        parameters: what to optimise (default: all of ``model``'s parameters). Either parameters
            or optimizer parameter groups; a group's ``lr_scale`` multiplies the scheduled
            learning rate (e.g. a pretrained backbone fine-tuned more gently than a new head).
        on_epoch_end: called as ``on_epoch_end(model, epoch)`` after every epoch (e.g. to
            measure test accuracy); the model is back in train mode afterwards.
        adversary: an optional GAN opponent (:class:`~sslbook.pretext.base.Adversary`), trained
            by :func:`adversary_step` before every step of the model; its learning rate follows
            the same schedule.

    Returns:
        The :class:`History`; ``model`` is trained in place and left in eval mode on ``device``.

    Raises:
        ValueError: the dataset is smaller than one batch.
        TrainingDivergedError: the loss, the adversary's loss, or the weights became NaN or inf.
    """
    config = config or TrainConfig()
    _check_batch_fits(len(data), config.batch_size)
    run = start_run(model, task, config, device, parameters, adversary, len(data))
    start_epoch = resume(run, checkpoint, progress)
    bar = tqdm(
        total=run.total_steps, initial=start_epoch * run.steps_per_epoch, disable=not progress,
        desc=task.name, unit="step", mininterval=1.0,
    )  # fmt: skip
    try:
        for epoch in range(start_epoch, config.epochs):
            train_epoch(run, data, epoch, augment, bar)
            check_finite(run, epoch)
            if on_epoch_end is not None:
                on_epoch_end(model, epoch)
                model.train()
            if checkpoint is not None:
                save(run, checkpoint, epoch + 1)
    finally:
        bar.close()
    model.eval()
    if adversary is not None:
        adversary.eval()
        problem = adversary.check(run.history)
        if problem:
            warnings.warn(f"{task.name}: {problem}", RuntimeWarning, stacklevel=2)
    return run.history


def start_run(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    device: str | torch.device | None = None,
    parameters=None,
    adversary: Adversary | None = None,
    n_images: int = 0,
) -> Run:
    """Seed, move the model and build the optimisers: a :class:`Run` ready for epoch 0 of
    ``n_images`` images (benchmarks use it to time and count one :func:`train_step`)."""
    device = pick_device(device)
    precision = pick_precision(device, config.precision)
    keep_freed_memory()
    seed_everything(config.seed)
    model.to(device)
    if device.type != "mps":
        model.to(memory_format=torch.channels_last)
    run = Run(
        model=model, task=task, config=config, device=device, precision=precision,
        optimizer=_make_optimizer(parameters if parameters is not None else model.parameters(),
                                  config),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        steps_per_epoch=n_images // config.batch_size,
    )  # fmt: skip
    if adversary is not None:
        adversary.to(device)
        run.adversary = adversary
        run.adversary_optimizer = adversary.make_optimizer()
        run.adversary_scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return run


def train_epoch(run: Run, data: ImageSet, epoch: int, augment: Augment | None, bar) -> None:
    """One pass: the task may plan it (new targets, an order), then every batch is one step."""
    # One generator per epoch, seeded by (seed, epoch): resuming replays exactly.
    generator = torch.Generator().manual_seed(run.config.seed * 100_003 + epoch)
    order = _epoch_order(run, data, epoch, generator)
    run.model.train()
    if run.adversary is not None:
        run.adversary.train()
    history, started = run.history, time.perf_counter()
    losses, metrics, adversary_accuracy = [], [], []
    for i in range(run.steps_per_epoch):
        index = order[i * run.config.batch_size : (i + 1) * run.config.batch_size]
        batch = draw_batch(run, data, index, augment, generator)
        inputs, targets = run.task.make_batch(batch, generator)
        step = train_step(run, inputs, targets, epoch, i)
        losses.append(step.loss)
        if step.metric is not None:
            metrics.append(step.metric)
        if step.adversary_accuracy is not None:
            history.step_adversary_loss.append(step.adversary_loss)
            adversary_accuracy.append(step.adversary_accuracy)
        history.images_seen += len(index)
        history.inputs_seen += len(inputs)
        _show(bar, run, epoch, step, history.seconds + time.perf_counter() - started)
    history.seconds += time.perf_counter() - started
    history.step_loss.extend(losses)
    history.epoch_loss.append(float(np.mean(losses)))
    if metrics:
        history.epoch_metric.append(float(np.mean(metrics)))
    if adversary_accuracy:
        history.step_adversary_accuracy.extend(adversary_accuracy)
        history.epoch_adversary_accuracy.append(float(np.mean(adversary_accuracy)))


def _epoch_order(run: Run, data: ImageSet, epoch: int, generator) -> torch.Tensor:
    """The images of this epoch, in order: a shuffle, unless the task plans the epoch."""
    plan: EpochPlan | None = None
    if run.task.on_epoch_start is not None:
        plan = run.task.on_epoch_start(run.model, data, epoch)
    if plan is not None:
        for parameter in plan.fresh_parameters:  # re-initialised: no momentum from the past
            run.optimizer.state.pop(parameter, None)
    if plan is None or plan.order is None:
        return torch.randperm(len(data), generator=generator)
    needed = run.steps_per_epoch * run.config.batch_size
    if len(plan.order) < needed:
        raise ValueError(
            f"{run.task.name}: on_epoch_start planned {len(plan.order)} images, the epoch needs "
            f"{needed}"
        )
    return plan.order


def draw_batch(run: Run, data: ImageSet, index: torch.Tensor, augment, generator) -> Batch:
    """The images at ``index``, as floats on the run's device, augmented: the task's input."""
    images = to_float(data.images[index].to(run.device, non_blocking=True))  # (B, C, H, W)
    if augment is not None:
        images = augment(images, generator)
    return Batch(images, data.labels[index].to(run.device), index)


@dataclass
class Step:
    """What one step reports: the loss, the task's metric (``None`` without one) and, in GAN
    training, the discriminator's loss and accuracy."""

    loss: float
    metric: float | None
    adversary_loss: float | None = None
    adversary_accuracy: float | None = None


def train_step(run: Run, inputs, targets, epoch: int, step: int) -> Step:
    """One update of the model: forward, the task's loss, backward, an optimiser step.

    With an adversary, the discriminator first takes its own step on the detached outputs
    (:func:`adversary_step`), then its generator loss joins the task's loss while it is frozen.
    """
    lr = learning_rate(epoch * run.steps_per_epoch + step, run.total_steps, run.config)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1)
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and run.device.type != "mps":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, run.precision):
        outputs = run.model(inputs)
        loss = run.task.loss(outputs, targets)
    result = Step(loss=0.0, metric=None)
    if run.adversary is not None:
        result.adversary_loss, result.adversary_accuracy = adversary_step(
            run, outputs.detach(), targets, lr / max(run.config.lr, 1e-12), epoch, step
        )
        run.adversary.requires_grad_(False)  # the generator's step leaves it untouched
        with autocast(run.device, run.precision):
            loss = loss + run.adversary.generator_loss(outputs, targets)
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"{run.task.name}: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}. "
            f"Lower the learning rate (now {run.config.lr}) or check the inputs for NaNs."
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.adversary is not None:
        run.adversary.requires_grad_(True)
    result.loss = loss.item()
    if run.task.metric is not None:
        with torch.no_grad():
            result.metric = run.task.metric(outputs, targets)
    return result


def adversary_step(run: Run, outputs, targets, schedule: float, epoch: int, step: int):
    """One update of the discriminator on the model's detached ``outputs``, its learning rate
    scaled by ``schedule`` (the generator's scheduled rate over its peak).

    Returns:
        ``(loss, accuracy)``: the discriminator's loss and real/fake accuracy on this batch.
    """
    adversary, optimizer, scaler = run.adversary, run.adversary_optimizer, run.adversary_scaler
    for group in optimizer.param_groups:
        group["lr"] = adversary.lr * schedule
    with autocast(run.device, run.precision):
        loss, accuracy = adversary.discriminator_step_loss(outputs, targets)
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"{run.task.name}: the discriminator's loss became {loss.item()} at epoch "
            f"{epoch + 1}, step {step + 1}. Lower its learning rate (now {adversary.lr})."
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), accuracy


def check_finite(run: Run, epoch: int) -> None:
    """Refuse to go on (or save) with a NaN or infinite weight or statistic.

    A huge learning rate can leave the loss finite while BatchNorm's running statistics
    overflow; the run would "finish" and save a model that every evaluation then fails on.
    """
    modules = {"model": run.model, "adversary": run.adversary}
    for owner, module in modules.items():
        if module is None:
            continue
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDivergedError(
                    f"{run.task.name}: after epoch {epoch + 1} the {owner}'s {name} holds NaN or "
                    f"infinite values, although the loss stayed finite. Lower the learning rate "
                    f"(now {run.config.lr}); these weights were not saved."
                )


def resume(run: Run, checkpoint: str | os.PathLike | None, progress: bool) -> int:
    """Restore ``run`` from ``checkpoint`` if the file exists; returns the epochs already done.

    Raises:
        CheckpointError: the file is unreadable or was written by another model or setting.
    """
    if checkpoint is None or not Path(checkpoint).exists():
        return 0
    state = load_checkpoint(checkpoint, expect=run.identity())
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.adversary is not None:
            run.adversary.load_state_dict(state["adversary"])
            run.adversary_optimizer.load_state_dict(state["adversary_optimizer"])
        run.history = History(**state["history"])
        if "task_state" in state:
            run.task.load_state_dict(state["task_state"])
        epoch = int(state["epoch"])
        if not 0 <= epoch <= run.config.epochs:
            raise ValueError(f"epoch {epoch} is not between 0 and {run.config.epochs}")
    except (KeyError, IndexError, AttributeError, TypeError, ValueError, RuntimeError) as error:
        # a damaged file whose pieces are the wrong type or shape: load_state_dict and History
        # fail in any of these ways (AttributeError: an optimiser state that is not a dict)
        from sslbook.checkpoint import CheckpointError

        raise CheckpointError(
            f"{checkpoint} matches this model but cannot be restored ({type(error).__name__}: "
            f"{str(error)[:200]}). Delete it and the run will train from scratch."
        ) from None
    if progress and epoch:
        print(f"loaded {checkpoint} ({epoch}/{run.config.epochs} epochs done)")
    return epoch


def save(run: Run, checkpoint: str | os.PathLike, epochs_done: int) -> None:
    """Write the run atomically (see :func:`sslbook.checkpoint.save_checkpoint`): the model, the
    optimiser, the history, the adversary, and the task's own state if it has one (a task with
    ``state_dict``/``load_state_dict``, such as DeepCluster's log of its clusterings)."""
    state: dict[str, Any] = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "epoch": epochs_done,
        "history": asdict(run.history),
        **run.identity(),
    }
    if run.adversary is not None:
        state["adversary"] = run.adversary.state_dict()
        state["adversary_optimizer"] = run.adversary_optimizer.state_dict()
    if hasattr(run.task, "state_dict"):  # a task that keeps something across epochs
        state["task_state"] = run.task.state_dict()
    save_checkpoint(checkpoint, state)


def _show(bar, run: Run, epoch: int, step: Step, elapsed: float) -> None:
    """Progress: epoch, loss, images/s and, in the GAN chapters, the discriminator's accuracy."""
    d_acc = step.adversary_accuracy
    bar.set_postfix(
        epoch=f"{epoch + 1}/{run.config.epochs}", loss=f"{step.loss:.3f}",
        img_s=f"{run.history.images_seen / max(elapsed, 1e-9):.0f}", refresh=False,
        **({"d_acc": f"{d_acc:.2f}"} if d_acc is not None else {}),
    )  # fmt: skip
    bar.update()


def _check_batch_fits(n_images: int, batch_size: int) -> None:
    """Refuse, before any work, a dataset that cannot fill one batch: an epoch would have no
    step, and the run would end "trained" without a single update."""
    if n_images >= batch_size:
        return
    suggestion = 1 << max(0, n_images.bit_length() - 1)  # the largest power of two that fits
    raise ValueError(
        f"{n_images} images cannot fill one batch of {batch_size}: add images (at least "
        f"{batch_size}), or train with a smaller batch_size, e.g. "
        f"recipe(cfg, seed, batch_size={suggestion}), or "
        f"sb.get_profile(name, batch_size={suggestion}) for a whole profile."
    )


def _make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, nesterov=True,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def _model_config(model: nn.Module) -> dict:
    return model.config() if hasattr(model, "config") else {"class": type(model).__name__}
