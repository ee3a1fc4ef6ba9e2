"""Batched image transforms on tensors.

Everything here takes a whole batch ``(B, C, H, W)`` and a ``torch.Generator``, so augmenting a
batch is a handful of tensor operations (no Python loop over images or pixels) and the same seed
always gives the same batch: a notebook can plot exactly what the network saw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(B, C, H, W)`` in [0, 255] → float32 in [0, 1]; floats pass through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images


def rotate90(images: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate a batch by ``k`` quarter turns counter-clockwise, exactly (a transpose and flips)."""
    return torch.rot90(images, k % 4, dims=(-2, -1))


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4
) -> torch.Tensor:
    """The standard CIFAR augmentation, batched: pad by reflection, random crop, random h-flip.

    Args:
        images: ``(B, C, H, W)`` float images.
        generator: source of randomness (a CPU generator; offsets move to the images' device).
        padding: pixels of reflection padding on each side before cropping back to ``H x W``.

    Returns:
        ``(B, C, H, W)`` augmented images.
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (B,1,H,1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (B,1,1,W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    cropped = padded[batch, channels, rows, cols]  # (B, C, H, W)
    flip = torch.rand(b, generator=generator).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)
