"""Masked image modelling (SimMIM), on the book's convolutional backbone.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai & Hu (2021). *SimMIM: A Simple Framework for Masked Image
Modeling.* CVPR 2022, arXiv 2111.09886. The idea is shared with He, Chen, Xie, Li, Dollár &
Girshick (2021), *Masked Autoencoders Are Scalable Vision Learners* (MAE), arXiv 2111.06377.

The seed idea: what if we prepared pairs of (image with most of its patches hidden, the hidden
pixels)? It is the context encoder's question (:mod:`sslbook.pretext.inpainting`) asked
differently: instead of one large hole, many small square patches scattered over the image, most
of it hidden (60 %, SimMIM's ratio; MAE hides 75 %), so that no patch can be filled by continuing
its neighbours and the network must infer the object from the few pieces left. The loss looks at
the hidden patches only (an L1 distance, as in SimMIM, which compared this with reconstructing
the whole image and kept the hidden patches): the visible ones could simply be copied.

SimMIM found that on a vision transformer the prediction head can be a single linear layer (a 1x1
convolution whose outputs a ``PixelShuffle`` rearranges into pixels), so that all the work is in
the encoder. On the book's small convolutional backbone that head made the last block a pixel
decoder: in our sanity runs (5,000 images, 8 epochs, seed 0) its features fine-tuned clearly
worse than random init, while with the inpainting chapter's upsampling decoder they did not. So
the recipe uses that decoder (``decoder="deep"``); SimMIM's head (``decoder="linear"``) is an
exercise.

SimMIM and MAE use vision transformers, which drop or replace the hidden patches' tokens. The book
keeps its shared convolutional backbone so that chapters stay comparable: hidden patches are
filled with the dataset's mean colour (which the backbone's input normalisation turns into
zeros: a fixed "mask token" in pixel space), exactly as the inpainting chapter fills its hole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.decoders import Decoder
from sslbook.pretext.base import PretextTask
from sslbook.pretext.inpainting import HoleTargets, apply_masks, fill_hole
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled

NAME = "mim"
TITLE = "Masked image modelling (SimMIM)"
PAPER = "Xie et al. (2021), arXiv 2111.09886; He et al. (2021), arXiv 2111.06377"

DECODERS = ("linear", "deep")


@dataclass(frozen=True)
class Settings:
    """The masked-image-modelling recipe's own settings.

    Attributes:
        patch_size: side of the square patches that are hidden or kept, in pixels (4: an
            8x8 grid of patches on a 32-pixel image).
        mask_ratio: fraction of the patches hidden in every image (SimMIM's 0.6; MAE's 0.75).
        score_visible: also score the reconstruction of the visible pixels (``False``, the
            papers' choice: only the hidden patches count).
        decoder: ``"deep"``, the inpainting chapter's upsampling
            :class:`~sslbook.decoders.Decoder`, or ``"linear"``, SimMIM's one-layer head.
    """

    patch_size: int = 4
    mask_ratio: float = 0.6
    score_visible: bool = False
    decoder: str = "deep"

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be between 0 and 1, got {self.mask_ratio}")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be at least 1, got {self.patch_size}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")


def patch_masks(
    n: int,
    size: int,
    patch_size: int = 4,
    mask_ratio: float = 0.6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` random masks ``(n, size, size)``, ``True`` on hidden pixels, each hiding exactly
    ``ceil(mask_ratio * P)`` of the ``P = (size / patch_size) ** 2`` patches (SimMIM's count).

    Raises:
        ValueError: ``patch_size`` does not divide ``size``.
    """
    if size % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide the image side {size}")
    side = size // patch_size
    n_patches = side * side
    n_hidden = math.ceil(mask_ratio * n_patches)
    ranks = torch.rand(n, n_patches, generator=generator).argsort(1).argsort(1)  # (n, P)
    hidden = (ranks < n_hidden).view(n, side, side)  # a random n_hidden of the P patches
    return hidden.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)


def make_pretext_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    patch_size: int = 4,
    mask_ratio: float = 0.6,
) -> tuple[torch.Tensor, HoleTargets]:
    """Images with most patches hidden, and what was under them.

    Args:
        images: ``(B, C, H, W)`` square images in [0, 1].
        generator: chooses the hidden patches.
        patch_size: side of a patch in pixels (must divide the image side).
        mask_ratio: fraction of patches hidden.

    Returns:
        inputs ``(B, C, H, W)``: the images with their hidden patches filled by the mean colour;
        targets: the inpainting chapter's :class:`~sslbook.pretext.inpainting.HoleTargets`,
        the original images and the masks ``(B, 1, H, W)`` (1 on hidden pixels).
    """
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"masked image modelling needs square images, got {h}x{w}")
    masks = patch_masks(b, h, patch_size, mask_ratio, generator).to(images.device)
    return apply_masks(images, masks)


def loss(outputs: torch.Tensor, targets: HoleTargets, score_visible: bool = False) -> torch.Tensor:
    """Mean absolute error on the hidden pixels (every pixel with ``score_visible``), per
    channel: SimMIM's L1 reconstruction loss.

    Args:
        outputs: ``(B, C, H, W)`` predicted images.
        targets: originals and masks (``(B, 1, H, W)``, 1 on hidden pixels).
        score_visible: score every pixel.
    """
    weights = torch.ones_like(targets.masks) if score_visible else targets.masks
    error = (outputs.float() - targets.originals).abs() * weights  # (B, C, H, W)
    return error.sum() / (weights.sum() * outputs.shape[1]).clamp_min(1.0)


def masked_psnr(outputs: torch.Tensor, targets: HoleTargets) -> float:
    """PSNR (dB) of the prediction on the hidden pixels only (outputs clipped to [0, 1])."""
    squared = (outputs.float().clamp(0, 1) - targets.originals).pow(2) * targets.masks
    mse = squared.sum() / (targets.masks.sum() * outputs.shape[1]).clamp_min(1.0)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).item()


def reconstruct(outputs: torch.Tensor, targets: HoleTargets) -> torch.Tensor:
    """The visible pixels of the original with the prediction in the hidden patches,
    ``(B, C, H, W)``: the picture of what the network inferred."""
    return fill_hole(outputs, targets)


class PixelShuffleHead(nn.Module):
    """SimMIM's linear prediction head: a 1x1 convolution to ``channels * stride ** 2`` maps,
    rearranged by ``nn.PixelShuffle(stride)`` into a full-size image. Every output pixel is a
    linear function of the one ``block3`` position above it, so the encoder must carry what is
    needed to paint it. ``(B, feature_dim, h, w)`` -> ``(B, channels, stride * h, stride * w)``."""

    def __init__(self, feature_dim: int, channels: int = 3, stride: int = 4) -> None:
        super().__init__()
        self.project = nn.Conv2d(feature_dim, channels * stride**2, 1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.project(features))


def build_head(
    feature_dim: int, channels: int = 3, stride: int = 4, decoder: str = "deep"
) -> nn.Module:
    """The prediction head on ``block3`` (``stride``: how much smaller it is than the image, the
    backbone's ``stride``): the book's :class:`~sslbook.decoders.Decoder` or SimMIM's
    :class:`PixelShuffleHead` (``decoder="linear"``)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "linear":
        return PixelShuffleHead(feature_dim, channels, stride)
    return Decoder(feature_dim, channels, stride=stride)


class MaskedImageModel(nn.Module):
    """The shared backbone as the encoder and a prediction head on its ``block3`` map.

    Unlike the inpainting chapter's :class:`~sslbook.decoders.EncoderDecoder`, it predicts the
    pixels themselves, not a correction to its input, as SimMIM does: with ``score_visible`` the
    visible pixels must then also pass through the encoder. Input and output ``(B, C, H, W)``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def config(self) -> dict:
        head = self.head.config() if hasattr(self.head, "config") else type(self.head).__name__
        return {"backbone": self.backbone.config(), "head": head}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.feature_maps(x)["block3"]  # (B, 4w, H/s, W/s)
        return self.head(features)  # (B, C, H, W)


def make_task(settings: Settings = Settings()) -> PretextTask:
    """The masked-image-modelling task: hide ``settings.mask_ratio`` of the patches, score the
    reconstruction of the hidden ones."""
    batch = partial(make_pretext_batch, patch_size=settings.patch_size,
                    mask_ratio=settings.mask_ratio)  # fmt: skip
    head = partial(build_head, decoder=settings.decoder)
    objective = partial(loss, score_visible=settings.score_visible)
    return PretextTask(NAME, batch, head, objective, metric=masked_psnr,
                       metric_name="PSNR of hidden pixels (dB)")  # fmt: skip


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: 4-pixel patches, 60 % of them hidden, L1 on the hidden
    pixels, the inpainting chapter's decoder (see the module's docstring); Adam (lr 2e-3) as for
    the book's other pixel-regression tasks (SimMIM uses AdamW too).

    Args:
        profile: sizes the run.
        seed: initial weights and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides, optimizer="adam",
                               lr=2e-3)  # fmt: skip
    task = make_task(settings)
    backbone = shared_backbone(profile, seed)
    data = unlabelled(data, profile, seed)
    channels = data.images.shape[1]
    with seeded(seed):
        head = task.build_head(backbone.feature_dim, channels=channels, stride=backbone.stride)
        model = MaskedImageModel(backbone, head)
    return Recipe(NAME, model, task, config, data, settings=settings)
