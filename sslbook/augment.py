"""Batched view augmentations for the joint-embedding chapters (SimCLR, SimSiam and BYOL).

Those methods learn by comparing two *views* of one image: two independent draws of the same
random pipeline of crops, flips and colour changes. What the pipeline changes is what the network
learns to ignore, so it is the heart of these methods and gets its own module. The pipeline is
SimCLR's (Chen et al. 2020, arXiv 2002.05709, Appendix A and the official code), at 32 pixels:

1. a random resized crop (8 % to 100 % of the image's area, aspect ratio 3/4 to 4/3) resized
   back to the full size, and a random horizontal flip;
2. colour jitter with probability 0.8: brightness, contrast and saturation factors in
   ``[1 - 0.8 s, 1 + 0.8 s]`` and a hue shift of up to ``0.2 s`` of the colour wheel, for a
   strength ``s`` (0.5 on CIFAR-10, as the official code's CIFAR-10 command uses);
3. greyscale with probability 0.2.

Gaussian blur, part of the ImageNet pipeline, is left out, as the paper does on CIFAR-10: a 32-pixel
image has little fine detail to lose, and a blur wide enough to matter wipes out the object.

Like :mod:`sslbook.transforms`, every function takes a whole batch ``(B, C, H, W)`` in [0, 1] and
a ``torch.Generator``: a few tensor operations per batch (no Python loop over images), and the
same seed gives bit-identical views. Each function draws a fixed number of random numbers per
image whatever it then applies, so one setting never shifts the random stream of another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb, rgb_to_hsv

#: ITU-R 601 luma weights, exactly as torchvision's ``rgb_to_grayscale`` writes them.
LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class ViewPipeline:
    """The random pipeline one view is drawn from.

    Attributes:
        min_scale: smallest crop, as a fraction of the image's area (SimCLR: 0.08).
        max_scale: largest crop (1: the whole image).
        min_ratio: smallest aspect ratio (width / height) of a crop; the largest is its inverse.
        flip: flip half of the views horizontally.
        jitter_strength: SimCLR's colour distortion strength ``s`` (0: no jitter).
        jitter_probability: probability that a view is colour-jittered.
        grayscale_probability: probability that a view is turned grey.
    """

    min_scale: float = 0.08
    max_scale: float = 1.0
    min_ratio: float = 3 / 4
    flip: bool = True
    jitter_strength: float = 0.5
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(
                f"crop scales must satisfy 0 < min_scale <= max_scale <= 1, got "
                f"{self.min_scale} and {self.max_scale}"
            )
        if not 0 < self.min_ratio <= 1:
            raise ValueError(f"min_ratio must be in (0, 1], got {self.min_ratio}")
        for name in ("jitter_probability", "grayscale_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.jitter_strength < 0:
            raise ValueError(f"jitter_strength must be >= 0, got {self.jitter_strength}")


#: SimCLR's CIFAR-10 pipeline, the default of every function that takes one.
SIMCLR_VIEWS = ViewPipeline()


@dataclass(frozen=True)
class ViewSettings:
    """The view settings of the recipes that compare two views (SimCLR, SimSiam and BYOL): the
    four fields of :class:`ViewPipeline` worth changing, with the book's defaults. Each recipe's
    ``Settings`` adds its own fields to these.

    Attributes:
        min_scale: smallest crop, as a fraction of the image's area (SimCLR's 0.08; the book's
            0.2, because at 32 pixels an 8 % crop is a 9-pixel patch, a task too hard to pay
            off within a few epochs: measured in ``benchmarks/README.md``).
        jitter_strength: colour distortion strength ``s`` (0.5 for CIFAR-10, as in SimCLR).
        jitter_probability: probability that a view is colour-jittered (SimCLR's 0.8).
        grayscale_probability: probability that a view is turned grey (SimCLR's 0.2).
    """

    min_scale: float = 0.2
    jitter_strength: float = 0.5
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2

    def __post_init__(self) -> None:
        self.pipeline()  # checks the augmentation settings

    def pipeline(self) -> ViewPipeline:
        """The augmentation pipeline these settings describe."""
        return ViewPipeline(min_scale=self.min_scale, jitter_strength=self.jitter_strength,
                            jitter_probability=self.jitter_probability,
                            grayscale_probability=self.grayscale_probability)  # fmt: skip


def crop_boxes(
    n: int,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """``n`` random crop boxes as fractions of the image: ``(n, 4)`` rows of ``(centre_x,
    centre_y, width, height)``, all in (0, 1].

    The area is uniform in ``scale`` and the aspect ratio log-uniform in ``ratio``, as in
    torchvision's ``RandomResizedCrop``; a box that would stick out of the image is shrunk to fit
    on that side (torchvision draws again instead), so one draw per image always suffices.
    """
    area = torch.empty(n).uniform_(*scale, generator=generator)  # (n,)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()  # width / height
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    where = torch.rand(n, 2, generator=generator)  # where the box sits in the free space
    centre_x = width / 2 + where[:, 0] * (1 - width)
    centre_y = height / 2 + where[:, 1] * (1 - height)
    return torch.stack([centre_x, centre_y, width, height], dim=1)


def crop_and_resize(
    images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor | None = None
) -> torch.Tensor:
    """Cut each image's box out and resize it to the full image size (bilinear), optionally
    mirrored: one ``grid_sample`` for the whole batch.

    Args:
        images: ``(B, C, H, W)`` float images.
        boxes: ``(B, 4)`` boxes as :func:`crop_boxes` makes them.
        flips: ``(B,)`` bool, which crops to mirror left-right (``None``: none).

    Returns:
        ``(B, C, H, W)`` crops.
    """
    boxes = boxes.to(images)
    centre_x, centre_y, width, height = boxes.unbind(1)  # each (B,)
    sign = torch.ones_like(width) if flips is None else 1 - 2 * flips.to(images)
    zero = torch.zeros_like(width)
    theta = torch.stack([
        torch.stack([width * sign, zero, 2 * centre_x - 1], dim=1),
        torch.stack([zero, height, 2 * centre_y - 1], dim=1),
    ], dim=1)  # (B, 2, 3): output coordinates in [-1, 1] -> input coordinates  # fmt: skip
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)  # fmt: skip


def random_resized_crop(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """A random crop of each image (see :func:`crop_boxes`) resized to ``(H, W)``, mirrored with
    probability 1/2 when ``flip``. ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
    b = images.shape[0]
    boxes = crop_boxes(b, generator, scale, ratio)
    flips = torch.rand(b, generator=generator) < 0.5
    return crop_and_resize(images, boxes, flips if flip else None)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """The luma of RGB images, ``(B, 1, H, W)`` (the weights of :data:`LUMA`)."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images).view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale every pixel of image ``i`` by ``factors[i]``, ``(B,)``; clipped to [0, 1]."""
    return (images * _per_image(factors, images)).clamp(0, 1)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level: factor 0 is flat grey, 1 the image itself."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    f = _per_image(factors, images)
    return (f * images + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each image with its greyscale version: factor 0 is grey, 1 the image itself."""
    f = _per_image(factors, images)
    return (f * images + (1 - f) * grayscale(images)).clamp(0, 1)


def adjust_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Turn each image's hues by ``shifts[i]`` of the colour wheel (in [-0.5, 0.5]), through
    kornia's batched HSV conversion."""
    hsv = rgb_to_hsv(images)  # (B, 3, H, W), hue in radians
    hue = torch.remainder(hsv[:, :1] + 2 * math.pi * _per_image(shifts, images), 2 * math.pi)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)).clamp(0, 1)


def colour_jitter(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    strength: float = 0.5,
    probability: float = 0.8,
) -> torch.Tensor:
    """SimCLR's colour jitter, batched: with ``probability``, random brightness, contrast and
    saturation factors in ``[1 - 0.8 s, 1 + 0.8 s]`` and a hue shift in ``[-0.2 s, 0.2 s]``,
    for strength ``s``, applied in that fixed order (the official code can also draw the order
    at random; a fixed one keeps it to four batched operations).

    Args:
        images: ``(B, 3, H, W)`` RGB images in [0, 1].
        generator: draws the factors and which images are jittered.
        strength: ``s``; 0 leaves the images unchanged.
        probability: chance that an image is jittered at all.

    Returns:
        ``(B, 3, H, W)``.
    """
    b = images.shape[0]
    spread = 0.8 * strength
    factors = 1 + spread * (2 * torch.rand(b, 3, generator=generator) - 1)  # (B, 3)
    shifts = 0.2 * strength * (2 * torch.rand(b, generator=generator) - 1)  # (B,)
    chosen = torch.rand(b, generator=generator) < probability
    if strength == 0 or not chosen.any():
        return images
    jittered = adjust_brightness(images, factors[:, 0].clamp(min=0))
    jittered = adjust_contrast(jittered, factors[:, 1].clamp(min=0))
    jittered = adjust_saturation(jittered, factors[:, 2].clamp(min=0))
    jittered = adjust_hue(jittered, shifts)
    return torch.where(_per_image(chosen, images).bool(), jittered, images)


def random_grayscale(
    images: torch.Tensor, generator: torch.Generator | None = None, probability: float = 0.2
) -> torch.Tensor:
    """Turn each RGB image grey (its luma in all three channels) with ``probability``."""
    chosen = torch.rand(images.shape[0], generator=generator) < probability
    grey = grayscale(images).expand_as(images)
    return torch.where(_per_image(chosen, images).bool(), grey, images)


def augment_view(
    images: torch.Tensor, generator: torch.Generator | None, pipeline: ViewPipeline
) -> torch.Tensor:
    """One view of every image: crop and flip, then (RGB images only) colour jitter and
    greyscale. ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
    ratio = (pipeline.min_ratio, 1 / pipeline.min_ratio)
    scale = (pipeline.min_scale, pipeline.max_scale)
    views = random_resized_crop(images, generator, scale, ratio, pipeline.flip)
    if images.shape[1] != 3:  # grey images: nothing to jitter
        return views
    views = colour_jitter(views, generator, pipeline.jitter_strength, pipeline.jitter_probability)
    return random_grayscale(views, generator, pipeline.grayscale_probability)


def two_views(
    images: torch.Tensor, generator: torch.Generator | None, pipeline: ViewPipeline = SIMCLR_VIEWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views of every image, and where each view's partner is.

    Args:
        images: ``(B, C, H, W)`` images in [0, 1].
        generator: every random choice.
        pipeline: what a view is drawn from.

    Returns:
        views ``(2B, C, H, W)``: the first view of every image, then the second view of every
        image; partners ``(2B,)``: the index of the other view of the same image (``i + B`` for
        the first half, ``i - B`` for the second).
    """
    b = images.shape[0]
    views = torch.cat([augment_view(images, generator, pipeline) for _ in range(2)])  # (2B, ...)
    index = torch.arange(b, device=images.device)
    partners = torch.cat([index + b, index])  # (2B,)
    return views, partners
