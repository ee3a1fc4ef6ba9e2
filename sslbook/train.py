"""One training loop for every chapter.

The loop knows nothing about the method: it draws batches of images, lets the task turn them into
``(inputs, targets)``, and minimises the task's loss. Around that it does the chores once, for all
chapters: device choice, seeding, mixed precision where it pays, channels-last memory, a progress
bar, a learning-rate schedule, NaN detection, and checkpoints that resume.

For the GAN chapters the loop takes an optional ``adversary`` (see :mod:`sslbook.adversarial`):
every step it first trains the adversary's discriminator on the detached outputs, with its own
optimiser, then adds the adversary's generator loss to the task's loss.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sslbook.checkpoint import load_checkpoint, save_checkpoint
from sslbook.data import ImageSet
from sslbook.transforms import random_crop_flip, to_float

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the fastest available: CUDA, then Apple's MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX-512-BF16).

    Without these instructions, PyTorch emulates bf16 and autocast makes training slower, not
    faster (on an AVX2-only CPU, ~10x slower: see ``benchmarks/throughput.py``).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(device: torch.device, precision: str = "auto") -> str:
    """Resolve ``"auto"`` into ``"fp32"``, ``"bf16"`` or ``"fp16"`` for this device.

    CUDA: bf16 where supported, else fp16 with loss scaling. CPU: bf16 only with native support.
    MPS: fp32 (autocast there is still patchy).
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
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


@dataclass
class TrainConfig:
    """Optimisation settings (SGD with Nesterov momentum, linear warm-up, cosine decay).

    ``optimizer="adam"`` (AdamW, ``momentum`` unused) suits pixel-regression objectives such as
    the generators of the reconstruction chapters, whose small losses SGD follows badly.
    ``schedule="constant"`` keeps the learning rate at ``lr`` after the warm-up: DeepCluster needs
    it, because its targets change every epoch and a decayed rate can no longer follow them.
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
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
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


def train(
    model: nn.Module,
    data: ImageSet,
    task,
    config: TrainConfig | None = None,
    *,
    augment: Augment | None = random_crop_flip,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    parameters: list | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    adversary: nn.Module | None = None,
) -> History:
    """Train ``model`` on ``task`` over the images of ``data``.

    Args:
        model: maps ``inputs`` to ``outputs`` for ``task.loss`` (e.g. a ``PretextModel``).
        data: training images (uint8); labels are only handed to the task, which may ignore them.
        task: anything with ``make_batch(images, labels, generator)``, ``loss(outputs,
            targets)``, ``metric`` (or ``None``), ``name`` and ``on_epoch_start`` (or ``None``).
            ``on_epoch_start(model, data, epoch)`` runs before every epoch; if it returns an
            :class:`~sslbook.data.ImageSet`, that epoch trains on it instead of ``data`` (a task
            that relabels or resamples the data as it goes, as DeepCluster does). It must hold
            at least ``len(data)`` images, so every epoch has the same number of steps.
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
        adversary: optional GAN opponent with ``discriminator_step_loss(outputs, targets) ->
            (loss, accuracy)``, ``generator_loss(outputs, targets)``, ``make_optimizer()``,
            ``lr``, ``config()`` and ``check(history) -> str | None`` (a warning to raise), e.g.
            :class:`sslbook.adversarial.Adversary`. Its learning rate follows the same schedule.

    Returns:
        The :class:`History`; ``model`` is trained in place and left in eval mode on ``device``.

    Raises:
        ValueError: the dataset is smaller than one batch.
        TrainingDivergedError: the loss (or the adversary's loss) became NaN or infinite.
    """
    config = config or TrainConfig()
    _check_batch_fits(len(data), config.batch_size)
    device = pick_device(device)
    precision = pick_precision(device, config.precision)
    keep_freed_memory()
    seed_everything(config.seed)
    model.to(device)
    if device.type != "mps":
        model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(
        parameters if parameters is not None else model.parameters(), config
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    steps_per_epoch = len(data) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    history, start_epoch = History(), 0
    train_config = asdict(config) | {"task": task.name}
    if adversary is not None:
        adversary.to(device)
        adversary_optimizer = adversary.make_optimizer()
        adversary_scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        train_config["adversary"] = adversary.config()
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(
            checkpoint, expect={"model_config": _model_config(model), "train_config": train_config}
        )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if adversary is not None:
            adversary.load_state_dict(state["adversary"])
            adversary_optimizer.load_state_dict(state["adversary_optimizer"])
        history = History(**state["history"])
        start_epoch = state["epoch"]
        if progress and start_epoch:
            print(f"loaded {checkpoint} ({start_epoch}/{config.epochs} epochs done)")

    bar = tqdm(
        total=total_steps, initial=start_epoch * steps_per_epoch, disable=not progress,
        desc=task.name, unit="step", mininterval=1.0,
    )  # fmt: skip
    for epoch in range(start_epoch, config.epochs):
        # One generator per epoch, seeded by (seed, epoch): resuming replays exactly.
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        epoch_data = data
        if task.on_epoch_start is not None:
            relabelled = task.on_epoch_start(model, data, epoch)
            if relabelled is not None:  # e.g. DeepCluster: resampled images with pseudo-labels
                epoch_data = _check_epoch_data(relabelled, len(data), task.name)
        model.train()
        if adversary is not None:
            adversary.train()
        started, losses, metrics, adversary_accuracy = time.perf_counter(), [], [], []
        order = torch.randperm(len(epoch_data), generator=generator)
        for i in range(steps_per_epoch):
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            images = to_float(epoch_data.images[index].to(device, non_blocking=True))  # (B,C,H,W)
            if augment is not None:
                images = augment(images, generator)
            labels = epoch_data.labels[index].to(device)
            inputs, targets = task.make_batch(images, labels, generator)
            if inputs.dim() == 4 and device.type != "mps":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            step = epoch * steps_per_epoch + i
            lr = learning_rate(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1)
            with autocast(device, precision):
                outputs = model(inputs)
                loss = task.loss(outputs, targets)
            if adversary is not None:
                for group in adversary_optimizer.param_groups:
                    group["lr"] = adversary.lr * lr / config.lr
                adversary_loss, accuracy = _adversary_step(
                    adversary, adversary_optimizer, adversary_scaler, outputs.detach(), targets,
                    device, precision,
                )  # fmt: skip
                if not math.isfinite(adversary_loss):
                    bar.close()
                    raise TrainingDivergedError(
                        f"{task.name}: the discriminator's loss became {adversary_loss} at epoch "
                        f"{epoch + 1}, step {i + 1}. Lower its learning rate (now {adversary.lr})."
                    )
                history.step_adversary_loss.append(adversary_loss)
                adversary_accuracy.append(accuracy)
                adversary.requires_grad_(False)  # the generator step leaves it untouched
                with autocast(device, precision):
                    loss = loss + adversary.generator_loss(outputs, targets)
            if not torch.isfinite(loss):
                bar.close()
                raise TrainingDivergedError(
                    f"{task.name}: loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}. "
                    f"Lower the learning rate (now {config.lr}) or check the inputs for NaNs."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if adversary is not None:
                adversary.requires_grad_(True)
            losses.append(loss.item())
            if task.metric is not None:
                metrics.append(task.metric(outputs.detach().float(), targets))
            history.images_seen += len(index)
            history.inputs_seen += len(inputs)
            elapsed = history.seconds + time.perf_counter() - started
            bar.set_postfix(
                epoch=f"{epoch + 1}/{config.epochs}", loss=f"{losses[-1]:.3f}",
                img_s=f"{history.images_seen / max(elapsed, 1e-9):.0f}", refresh=False,
                **({"d_acc": f"{adversary_accuracy[-1]:.2f}"} if adversary_accuracy else {}),
            )  # fmt: skip
            bar.update()
        history.seconds += time.perf_counter() - started
        history.step_loss.extend(losses)
        history.epoch_loss.append(float(np.mean(losses)))
        if metrics:
            history.epoch_metric.append(float(np.mean(metrics)))
        if adversary_accuracy:
            history.step_adversary_accuracy.extend(adversary_accuracy)
            history.epoch_adversary_accuracy.append(float(np.mean(adversary_accuracy)))
        if on_epoch_end is not None:
            on_epoch_end(model, epoch)
            model.train()
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "history": asdict(history),
                    "model_config": _model_config(model),
                    "train_config": train_config,
                    **(
                        {
                            "adversary": adversary.state_dict(),
                            "adversary_optimizer": adversary_optimizer.state_dict(),
                        }
                        if adversary is not None
                        else {}
                    ),
                },
            )
    bar.close()
    model.eval()
    if adversary is not None:
        adversary.eval()
        problem = adversary.check(history)
        if problem:
            warnings.warn(f"{task.name}: {problem}", RuntimeWarning, stacklevel=2)
    return history


def _check_batch_fits(n_images: int, batch_size: int) -> None:
    """Refuse, before any work, a dataset that cannot fill one batch: an epoch would have no
    step, and the run would end "trained" without a single update."""
    if n_images >= batch_size:
        return
    suggestion = 1 << max(0, n_images.bit_length() - 1)  # the largest power of two that fits
    raise ValueError(
        f"{n_images} images cannot fill one batch of {batch_size}: add images (at least "
        f"{batch_size}), or train with a smaller batch_size, e.g. "
        f"config = profile.train_config(seed, batch_size={suggestion}), or "
        f"sb.get_profile(name, batch_size={suggestion}) for code that takes a whole profile "
        f"(sb.compare.pretrain)."
    )


def _check_epoch_data(epoch_data, n: int, name: str) -> ImageSet:
    """What ``on_epoch_start`` returned, checked: an ImageSet of at least ``n`` images."""
    if not isinstance(epoch_data, ImageSet):
        raise TypeError(
            f"{name}: on_epoch_start must return None or an ImageSet, got {type(epoch_data)}"
        )
    if len(epoch_data) < n:
        raise ValueError(f"{name}: on_epoch_start returned {len(epoch_data)} images, not {n}")
    return epoch_data


def _make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, nesterov=True,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    if config.optimizer == "adam":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")


def _adversary_step(adversary, optimizer, scaler, outputs, targets, device, precision) -> tuple:
    """One discriminator update on detached generator ``outputs``; ``(loss, accuracy)``."""
    with autocast(device, precision):
        loss, accuracy = adversary.discriminator_step_loss(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item(), accuracy


def _model_config(model: nn.Module) -> dict:
    return model.config() if hasattr(model, "config") else {"class": type(model).__name__}
