"""Scores computed on a batch of outputs: classification accuracy and image quality.

Low in the package on purpose: training metrics, chapters and probes all use them, and they
depend on nothing but torch (and scikit-image for SSIM).
"""

from __future__ import annotations

import numpy as np
import torch

#: SSIM window (pixels, odd). scikit-image's default is 7; SRGAN and most super-resolution
#: papers use an 11-pixel Gaussian window on the luminance channel, so SSIM values quoted from
#: papers are not directly comparable with ours (see the chapters).
SSIM_WINDOW = 7


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the target class."""
    return (outputs.argmax(dim=-1) == targets).float().mean().item()


def psnr(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Batch-mean PSNR in dB of images in [0, 1] (outputs clamped): a cheap training metric."""
    mse = (outputs.float().clamp(0, 1) - targets.float()).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).mean().item()


def image_quality(
    restored: torch.Tensor, reference: torch.Tensor, ssim_window: int = SSIM_WINDOW
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``restored`` vs ``reference`` ``(B, C, H, W)`` in [0, 1],
    per image with scikit-image on all colour channels, SSIM with a uniform ``ssim_window`` window
    (the value depends on it: see :data:`SSIM_WINDOW`)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnrs, ssims = [], []
    for x, y in zip(restored.detach().cpu().clamp(0, 1), reference.cpu(), strict=True):
        a, b = x.permute(1, 2, 0).double().numpy(), y.permute(1, 2, 0).double().numpy()
        psnrs.append(peak_signal_noise_ratio(b, a, data_range=1.0))
        ssims.append(
            structural_similarity(b, a, data_range=1.0, channel_axis=-1, win_size=ssim_window)
        )
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}
