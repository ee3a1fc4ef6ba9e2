"""Where and in which precision to compute: CUDA, Apple's MPS or the CPU; fp32, bf16 or fp16."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the fastest available: CUDA, then Apple's MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
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


def describe() -> str:
    """One line about where this process computes, e.g. for a chapter's first printout."""
    device = pick_device()
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16, so fp32"
    return f"CPU, {torch.get_num_threads()} threads, {bf16}"
