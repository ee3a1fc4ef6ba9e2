"""Inpainting with context encoders.

Pathak, Krähenbühl, Donahue, Darrell & Efros (2016). *Context Encoders: Feature Learning by
Inpainting.* CVPR 2016, arXiv 1604.07379.

The seed idea: what if we prepared pairs of (image with a hole, original image)? To fill a hole
convincingly, a network has to understand what surrounds it: that the hole sits on a dog's head,
so it should hold an ear and fur, not sky. Holes are a central square (the default) or a few
random blocks, filled with the dataset's mean colour. The loss is L2 on the hole, with a higher
weight on a thin border around it (so the fill blends with its context), plus, as in the paper,
an adversarial loss weighted 0.001. The paper's released code shows its discriminator only the
predicted region (the hole, real or generated); ours does the same for the central hole and can
judge the whole filled image instead (``Settings(judge="image")``, see :func:`build_adversary`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.adversarial import Adversary, build_discriminator
from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.decoders import Decoder, EncoderDecoder
from sslbook.metrics import psnr
from sslbook.models import CIFAR10_MEAN, MNIST_MEAN
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled

NAME = "inpainting"
TITLE = "Inpainting with context encoders"
PAPER = "Pathak, Krähenbühl, Donahue, Darrell & Efros (2016), arXiv 1604.07379"

MASK_KINDS = ("central", "blocks")
JUDGES = ("hole", "image")
OVERLAP = 2  # border width (px) whose L2 weight is raised; Pathak used 4 px on 128 px images
OVERLAP_WEIGHT = 10.0  # as in the paper


@dataclass
class HoleTargets:
    """What an inpainting network must predict, and where.

    Attributes:
        originals: ``(B, C, H, W)`` the images before their holes were cut.
        masks: ``(B, 1, H, W)`` float, 1 in the hole and 0 in the context.
    """

    originals: torch.Tensor
    masks: torch.Tensor


@dataclass(frozen=True)
class Settings:
    """The inpainting recipe's own settings.

    Attributes:
        mask: ``"central"`` (a quarter of the image in its middle) or ``"blocks"`` (four random
            squares of a sixteenth each).
        hole_side: side of the central hole in pixels (``None``: half the image).
        overlap: width in pixels of the context border whose L2 weight is raised (0: none).
        overlap_weight: that border's weight (the paper's 10).
        adversarial_weight: weight of the adversarial term next to L2 (the paper's 0.001; 0
            trains with L2 only and no discriminator).
        judge: what the discriminator sees: ``"hole"``, only the predicted region (the paper's
            released code; central holes only), or ``"image"``, the whole filled image.
        discriminator_lr: the discriminator's Adam learning rate.
    """

    mask: str = "central"
    hole_side: int | None = None
    overlap: int = OVERLAP
    overlap_weight: float = OVERLAP_WEIGHT
    adversarial_weight: float = 1e-3
    judge: str = "hole"
    discriminator_lr: float = 5e-5

    def __post_init__(self) -> None:
        if self.mask not in MASK_KINDS:
            raise ValueError(f"mask must be one of {MASK_KINDS}, got {self.mask!r}")
        if self.judge not in JUDGES:
            raise ValueError(f"judge must be one of {JUDGES}, got {self.judge!r}")
        if self.judge == "hole" and self.mask != "central" and self.adversarial_weight:
            raise ValueError(
                'judge="hole" crops the central hole; with random blocks use judge="image"'
            )


def square_mask(size: int, top: int, left: int, side: int) -> torch.Tensor:
    """A ``(size, size)`` bool mask, ``True`` on the ``side x side`` square at ``(top, left)``.

    Raises:
        ValueError: the square does not fit in the image.
    """
    if side < 1 or top < 0 or left < 0 or top + side > size or left + side > size:
        raise ValueError(
            f"a {side}x{side} hole at (top={top}, left={left}) does not fit a {size}x{size} "
            f"image: keep top + side and left + side at most {size}."
        )
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top : top + side, left : left + side] = True
    return mask


def central_mask(size: int, side: int | None = None) -> torch.Tensor:
    """The paper's central square hole, ``side`` defaulting to half the image: ``(size, size)``."""
    side = size // 2 if side is None else side
    start = (size - side) // 2
    return square_mask(size, start, start, side)


def random_block_masks(
    n: int, size: int, generator: torch.Generator | None, blocks: int = 4, side: int | None = None
) -> torch.Tensor:
    """``n`` masks ``(n, size, size)``, each the union of ``blocks`` random squares of ``side``
    (default a quarter of the image) at random positions: the paper's "random block" holes."""
    side = size // 4 if side is None else side
    corners = torch.randint(0, size - side + 1, (n, blocks, 2), generator=generator)
    grid = torch.arange(size)
    top, left = corners[..., 0, None], corners[..., 1, None]  # (n, blocks, 1)
    rows = (grid >= top) & (grid < top + side)  # (n, blocks, size)
    cols = (grid >= left) & (grid < left + side)  # (n, blocks, size)
    return (rows[..., :, None] & cols[..., None, :]).any(dim=1)  # (n, size, size)


def fill_value(channels: int) -> torch.Tensor:
    """The dataset's mean colour ``(C, 1, 1)`` that fills holes (CIFAR-10 or MNIST)."""
    mean = CIFAR10_MEAN if channels == 3 else MNIST_MEAN
    if len(mean) != channels:
        raise ValueError(f"no dataset mean for {channels}-channel images; use 1 or 3 channels")
    return torch.tensor(mean).view(channels, 1, 1)


def corrupt(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fill the holes of ``images`` ``(B, C, H, W)`` with the mean colour; ``masks`` is
    ``(B, H, W)`` or ``(H, W)``, ``True`` in the hole. Returns ``(B, C, H, W)``."""
    masks = masks.to(images.device).expand(images.shape[0], *images.shape[-2:])[:, None]
    fill = fill_value(images.shape[1]).to(images)
    return torch.where(masks, fill, images)


def make_pretext_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    kind: str = "central",
    side: int | None = None,
) -> tuple[torch.Tensor, HoleTargets]:
    """Images with holes, and what was in them.

    Args:
        images: ``(B, C, H, W)`` square images in [0, 1].
        generator: places the random blocks (unused for ``kind="central"``).
        kind: ``"central"`` (the default), a quarter of the image in its middle, or ``"blocks"``,
            four random squares of a sixteenth each. On 128-pixel ImageNet images the paper found
            random regions teach more; on 32-pixel images a small block can be filled from its
            immediate neighbours, while the central hole usually hides much of the object and
            forces the network to reason from the whole context.
        side: side of the central hole (``None``: half the image).

    Returns:
        inputs ``(B, C, H, W)``: the images with their holes filled by the mean colour;
        targets: a :class:`HoleTargets` of the original images and the hole masks.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"inpainting needs square images, got {h}x{w}")
    if kind == "central":
        masks = central_mask(h, side).expand(b, h, w)
    else:
        masks = random_block_masks(b, h, generator)  # (B, H, W)
    return apply_masks(images, masks)


def apply_masks(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, HoleTargets]:
    """The ``(inputs, targets)`` pair of :func:`make_pretext_batch` for given holes: ``masks``
    ``(B, H, W)`` or one ``(H, W)`` mask for the whole batch, ``True`` in the hole."""
    masks = masks.to(images.device).expand(images.shape[0], *images.shape[-2:])
    targets = HoleTargets(images, masks[:, None].to(images.dtype))  # masks (B, 1, H, W)
    return corrupt(images, masks), targets


def loss_weights(
    masks: torch.Tensor, overlap: int = OVERLAP, overlap_weight: float = OVERLAP_WEIGHT
) -> torch.Tensor:
    """Per-pixel L2 weights ``(B, 1, H, W)``: 1 in the hole, ``overlap_weight`` on the
    ``overlap``-pixel border of context around it, 0 elsewhere.

    The border is visible in the input, yet the paper weights it 10x: the network must then
    continue the context smoothly into the hole instead of pasting a blob with a hard edge.
    """
    if overlap == 0:
        return masks
    grown = F.max_pool2d(masks, 2 * overlap + 1, stride=1, padding=overlap)  # dilate the hole
    return masks + overlap_weight * (grown - masks)


def loss(
    outputs: torch.Tensor,
    targets: HoleTargets,
    overlap: int = OVERLAP,
    overlap_weight: float = OVERLAP_WEIGHT,
) -> torch.Tensor:
    """Weighted L2 between the output and the original, on the hole and its border (see
    :func:`loss_weights`)."""
    weights = loss_weights(targets.masks, overlap, overlap_weight)
    squared = (outputs.float() - targets.originals).pow(2) * weights
    return squared.sum() / (weights.sum() * outputs.shape[1]).clamp_min(1.0)


def fill_hole(outputs: torch.Tensor, targets: HoleTargets) -> torch.Tensor:
    """The original context with the generator's pixels in the hole, ``(B, C, H, W)``: what the
    reader sees."""
    return targets.masks * outputs + (1 - targets.masks) * targets.originals


def hole_psnr(outputs: torch.Tensor, targets: HoleTargets) -> float:
    """PSNR (dB) of the filled images; only the hole differs from the original."""
    return psnr(fill_hole(outputs, targets), targets.originals)


def build_head(feature_dim: int, spatial: int = 8, channels: int = 3, stride: int = 4) -> nn.Module:
    """The decoder: channel-wise fully connected bottleneck on ``block3`` (``spatial`` x
    ``spatial``: the image side over the backbone's ``stride``, e.g. 32 / 4 = 8), then
    PixelShuffle upsamplings to the image."""
    return Decoder(feature_dim, channels, spatial=spatial, stride=stride)


def filled_image_view(outputs: torch.Tensor, targets: HoleTargets):
    """``(fake, real)`` for a discriminator that judges whole images: the image with its hole
    filled by the generator, and the original."""
    return fill_hole(outputs, targets), targets.originals


def hole_view(outputs: torch.Tensor, targets: HoleTargets):
    """``(fake, real)`` for a discriminator that judges only the predicted region, as the
    paper's released code does: the hole's bounding box cropped from the generator's output and
    from the original (the same box for every image: central holes)."""
    rows = targets.masks[0, 0].any(1).nonzero().flatten()
    cols = targets.masks[0, 0].any(0).nonzero().flatten()
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = (..., slice(int(top), int(bottom)), slice(int(left), int(right)))
    return outputs[crop], targets.originals[crop]


def build_adversary(
    width: int,
    depth: int,
    seed: int | None = None,
    weight: float = 1e-3,
    lr: float = 5e-5,
    judge: str = "hole",
    stem_stride: int = 1,
) -> Adversary:
    """The context encoder's adversary: a shared-backbone discriminator judging the fill.

    ``weight`` is the adversarial term's weight next to the L2 loss, 0.001 as in the paper: a
    nudge towards sharper fills that leaves the L2 loss in charge of what the encoder learns.
    ``lr``, the discriminator's Adam learning rate, is small because spotting a mean-coloured
    fill is easy: a faster discriminator wins within an epoch and stops teaching the generator.
    ``judge`` is what it sees: ``"hole"`` (the predicted region only, as in the paper's code)
    or ``"image"`` (the whole filled image, context included).
    """
    if judge not in JUDGES:
        raise ValueError(f"judge must be one of {JUDGES}, got {judge!r}")
    return Adversary(
        build_discriminator(width, depth, seed=seed, stem_stride=stem_stride),
        view=hole_view if judge == "hole" else filled_image_view,
        weight=weight,
        lr=lr,
        name=f"inpainting discriminator (judges the {judge})",
    )


def make_task(settings: Settings = Settings()) -> PretextTask:
    """The inpainting task: holes of ``settings.mask``, L2 weighted by ``settings.overlap``."""
    batch = partial(make_pretext_batch, kind=settings.mask, side=settings.hole_side)
    objective = partial(loss, overlap=settings.overlap, overlap_weight=settings.overlap_weight)
    return PretextTask(NAME, batch, build_head, objective, metric=hole_psnr,
                       metric_name="PSNR (dB)")  # fmt: skip


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: the central hole, L2 with a weighted border, plus the
    paper's 0.001 adversarial weight; the generator trains with Adam (lr 2e-3).

    Args:
        profile: sizes the run.
        seed: initial weights (generator and discriminator alike) and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields;
            ``adversarial_weight=0`` is the L2-only context encoder.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides, optimizer="adam",
                               lr=2e-3)  # fmt: skip
    task = make_task(settings)
    backbone = shared_backbone(profile, seed)
    data = unlabelled(data, profile, seed)
    spatial = data.images.shape[-1] // backbone.stride  # the side of block3's map
    with seeded(seed):
        decoder = build_head(backbone.feature_dim, spatial, stride=backbone.stride)
        model = EncoderDecoder(backbone, decoder)
    adversary = None
    if settings.adversarial_weight:
        adversary = build_adversary(**profile.backbone_settings(), seed=seed,
                                    weight=settings.adversarial_weight,
                                    lr=settings.discriminator_lr, judge=settings.judge)  # fmt: skip
    return Recipe(NAME, model, task, config, data, adversary, settings)
