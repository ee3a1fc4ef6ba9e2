"""How fast does the book's backbone train here, and how close is that to the machine's peak?

Prints: the fp32 and bf16 matmul peaks of this device (on CUDA also the TF32 one), then for the
backbone of a profile the training throughput (images/s, forward + backward + SGD step,
channels-last) in fp32 and in the precision the training loop picks by default ("auto"), and the
fraction of the matching matmul peak that the training step's FLOPs reach. On CUDA, fp32 training
runs its convolutions in TF32 (cuDNN's default), so it is compared with the TF32 peak.

    python benchmarks/throughput.py --profile cpu
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import sslbook as sb
from sslbook.device import autocast, cpu_has_fast_bf16, pick_precision
from sslbook.models import PretextModel
from sslbook.pretext import rotation
from sslbook.train import keep_freed_memory

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """Best-of-3 FLOP/s of a square matmul."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - start))
    return best


@contextmanager
def tf32_matmuls(device: torch.device, enabled: bool) -> Iterator[None]:
    """On CUDA, let fp32 matmuls use TF32 tensor cores (or not) and restore the setting after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def peak_name(device: torch.device, precision: str) -> str:
    """The matmul peak that bounds training in ``precision``: on CUDA fp32 training runs its
    convolutions in TF32 whenever cuDNN allows it (the default), so its bound is the TF32 peak,
    and comparing it with the strict fp32 peak reads as more than 100 %."""
    if precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return precision


def measure_peak(device: torch.device, name: str) -> float:
    """FLOP/s of the ``name`` (fp32, tf32, bf16 or fp16) matmul peak. Half precision uses small
    matrices on CPU, where it is usually emulated and slow."""
    if name in HALF_DTYPES:
        return matmul_peak(device, HALF_DTYPES[name], size=2048 if device.type == "cuda" else 512)
    with tf32_matmuls(device, enabled=name == "tf32"):
        return matmul_peak(device, torch.float32)


def training_step_flops(model, batch: torch.Tensor, targets: torch.Tensor) -> int:
    """FLOPs of one forward + backward pass, counted by PyTorch."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(batch), targets).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train_throughput(model, device, precision: str, batch_size: int, steps: int) -> float:
    """Images/s of SGD steps on random images (forward, backward, update)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 4, (batch_size,), device=device)

    def step():
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=list(sb.PROFILES))
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    profile = sb.get_profile(args.profile)
    device = sb.pick_device()
    keep_freed_memory()  # as the training loop does
    auto = pick_precision(device, "auto")
    print(f"device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}")
    if device.type == "cpu":
        print(f"CPU has native bf16: {cpu_has_fast_bf16()}; 'auto' precision -> {auto}")
    else:
        print(f"'auto' precision -> {auto}")

    half = auto if auto in HALF_DTYPES else "bf16"
    names = ["fp32", "tf32", half] if device.type == "cuda" else ["fp32", half]
    peaks = {name: measure_peak(device, name) for name in names}
    for name, peak in peaks.items():
        print(f"matmul peak {name}: {peak / 1e9:8.1f} GFLOP/s")

    backbone = sb.build_backbone(profile.width, profile.depth, seed=0)
    model = PretextModel(backbone, rotation.build_head(backbone.feature_dim)).to(device)
    model = model.to(memory_format=torch.channels_last)
    batch = profile.batch_size
    sample = torch.rand(batch, 3, 32, 32, device=device)
    flops_per_image = (
        training_step_flops(model, sample, torch.zeros(batch, dtype=torch.long, device=device))
        / batch
    )
    print(
        f"backbone ({args.profile}: width {profile.width}, depth {profile.depth}): "
        f"{flops_per_image / 1e6:.1f} MFLOP per training image (fwd + bwd)"
    )
    for precision in dict.fromkeys(["fp32", auto]):
        rate = train_throughput(model, device, precision, batch, args.steps)
        bound = peak_name(device, precision)
        print(
            f"train {precision:5s}: {rate:8.0f} images/s = {rate * flops_per_image / 1e9:7.1f} "
            f"GFLOP/s = {rate * flops_per_image / peaks[bound]:6.1%} of the {bound} matmul peak"
        )
    if device.type == "cpu" and auto == "fp32":
        rate = train_throughput(model, device, "bf16", batch, max(2, args.steps // 5))
        print(f"train bf16 (for reference, not used here): {rate:8.0f} images/s")


if __name__ == "__main__":
    main()
