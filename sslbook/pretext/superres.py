"""Super-resolution as a pretext task (SRGAN).

Ledig, Theis, Huszár, Caballero, Cunningham, Acosta, Aitken, Tejani, Totz, Wang & Shi (2017).
*Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network.* CVPR 2017,
arXiv 1609.04802.

The seed idea: what if we prepared pairs of (low-resolution image, high-resolution image)? Shrink a
photo 4x and ask a network to restore the lost detail. Edges, fur and windows can only be
sharpened the right way by a network that recognises them, so the generator must learn about
image content; and the discriminator, which tells restored images from real ones, must learn
what real images look like. Both are the book's shared backbone, and we probe both.

The headline recipe is the paper's first network, SRResNet: the generator trained on the pixel
MSE alone (the paper then starts SRGAN from it). The adversarial term (``adversarial_weight=
SRGAN_WEIGHT``) makes sharper images, but in the book's runs it did not make better features:
a linear probe of SRResNet's encoder scored 45.3 % / 44.4 % against SRGAN-MSE's 42.8 % / 44.4 %
(seeds 0 / 1, ``cpu`` profile, one epoch; ``benchmarks/README.md``), at two thirds of the
training time. The chapter trains and probes both.

The low-resolution image is upsampled back to full size with bicubic interpolation before the
network sees it, so the backbone always works on normal-sized images (as it will downstream) and
the generator only predicts the missing high frequencies (a residual), at 1/4 resolution in its
``block3`` and back up with two sub-pixel (PixelShuffle) steps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.adversarial import Adversary, build_discriminator, vgg_content_loss
from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.decoders import Decoder, EncoderDecoder
from sslbook.metrics import psnr
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled

NAME = "superres"
TITLE = "Super-resolution (SRResNet, from the SRGAN paper)"
PAPER = "Ledig et al. (2017), arXiv 1609.04802"

FACTOR = 4  # 32 px → 8 px → 32 px, SRGAN's 4x
SRGAN_WEIGHT = 1e-3  # the paper's weight of the adversarial loss (Ledig et al. 2017, eq. 3)
CONTENT_LOSSES = ("mse", "vgg", "features")


def downsample(images: torch.Tensor, factor: int = FACTOR) -> torch.Tensor:
    """Bicubic, anti-aliased downsampling: ``(B, C, H, W)`` → ``(B, C, H/factor, W/factor)``.

    Raises:
        ValueError: the image size is not a multiple of ``factor``.
    """
    h, w = images.shape[-2:]
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"{h}x{w} images cannot be shrunk by {factor}: use a divisor of {h}")
    small = F.interpolate(
        images, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False
    )
    return small.clamp(0, 1)


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic upsampling to ``size x size``, the classic baseline: ``(B, C, h, w)`` →
    ``(B, C, size, size)``, clamped to [0, 1]."""
    big = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
    return big.clamp(0, 1)


def make_pretext_batch(
    images: torch.Tensor, generator: torch.Generator | None = None, factor: int = FACTOR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blurred-by-resolution inputs and their sharp originals.

    Args:
        images: ``(B, C, H, W)`` images in [0, 1].
        generator: unused (the task is deterministic); kept for the common interface.
        factor: how much resolution is thrown away.

    Returns:
        inputs ``(B, C, H, W)``: each image shrunk by ``factor`` and upsampled back (bicubic);
        targets ``(B, C, H, W)``: the original images.
    """
    del generator
    low = downsample(images, factor)  # (B, C, H/f, W/f)
    return upsample(low, images.shape[-1]), images


def build_head(feature_dim: int, channels: int = 3, stride: int = 4) -> nn.Module:
    """The decoder: from ``block3`` (``1/stride`` of the resolution) back to full size with
    PixelShuffle upsamplings; it predicts the residual added to the bicubic input."""
    return Decoder(feature_dim, channels, stride=stride)


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pixel-wise mean squared error: the MSE content loss of SRResNet and SRGAN-MSE."""
    return F.mse_loss(outputs.float(), targets)


def vgg_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SRGAN's VGG54 content loss (see :func:`sslbook.adversarial.vgg_content_loss`)."""
    return _vgg()(outputs, targets)


@functools.cache
def _vgg():
    return vgg_content_loss()


def no_pixel_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Zero, with the graph intact: the content loss is the discriminator's feature matching,
    which the adversary adds."""
    return 0.0 * F.mse_loss(outputs.float(), targets)


def build_adversary(
    width: int,
    depth: int,
    seed: int | None = None,
    weight: float = 1e-3,
    content: str = "mse",
    lr: float = 5e-5,
    stem_stride: int = 1,
) -> Adversary:
    """SRGAN's discriminator (the shared backbone) and its adversarial loss.

    Args:
        width, depth, seed, stem_stride: of the discriminator's backbone.
        weight: weight of the adversarial loss next to the content loss (the paper's 1e-3).
        content: the content loss (see :class:`Settings`); with ``"features"`` the adversary
            adds the feature-matching loss on its own feature maps (weight 1).
        lr: the discriminator's Adam learning rate. Small, because telling a restored image from
            a real one is easy: a discriminator that learns faster wins within an epoch, and its
            gradient stops teaching the generator (a collapse that
            :func:`sslbook.adversarial.diagnose` reports).

    Raises:
        ValueError: unknown ``content``.
    """
    if content not in CONTENT_LOSSES:
        raise ValueError(f"content must be one of {CONTENT_LOSSES}, got {content!r}")
    return Adversary(
        build_discriminator(width, depth, seed=seed, stem_stride=stem_stride),
        weight=weight,
        content_weight=1.0 if content == "features" else 0.0,
        lr=lr,
        name=f"srgan discriminator ({content} content loss)",
    )


@dataclass(frozen=True)
class Settings:
    """The super-resolution recipe's own settings.

    The generator's loss is the paper's: a content loss plus ``adversarial_weight`` times the
    adversarial loss (Ledig et al. 2017, eq. 3).

    Attributes:
        factor: how much resolution is thrown away (SRGAN's 4x).
        content: the content loss. ``"mse"`` (the default): the pixel MSE, the paper's
            SRGAN-MSE (and, without adversary, SRResNet); needs no download. ``"vgg"``: the
            paper's SRGAN-VGG54, the distance of ImageNet-trained VGG19 features (needs
            torchvision's weights, ~550 MB). ``"features"``: the book's offline stand-in for a
            perceptual loss, the distance of the discriminator's own feature maps (feature
            matching, Salimans et al. 2016); not in the paper.
        adversarial_weight: weight of the adversarial term. 0 (the default): no
            discriminator, the content loss alone (SRResNet); :data:`SRGAN_WEIGHT`, the
            paper's 1e-3: SRGAN.
        discriminator_lr: the discriminator's Adam learning rate.
    """

    factor: int = FACTOR
    content: str = "mse"
    adversarial_weight: float = 0.0
    discriminator_lr: float = 5e-5

    def __post_init__(self) -> None:
        if self.content not in CONTENT_LOSSES:
            raise ValueError(f"content must be one of {CONTENT_LOSSES}, got {self.content!r}")
        if self.content == "features" and not self.adversarial_weight:
            raise ValueError(
                'content="features" needs the discriminator: pass adversarial_weight > 0 '
                "(the paper's is superres.SRGAN_WEIGHT)"
            )


CONTENT_OBJECTIVES = {"mse": loss, "vgg": vgg_loss, "features": no_pixel_loss}


def make_task(settings: Settings = Settings()) -> PretextTask:
    """Inputs shrunk by ``settings.factor`` and upsampled back; the content loss of
    ``settings.content`` as the task's loss (the adversary adds its own terms)."""
    batch = partial(make_pretext_batch, factor=settings.factor)
    objective = CONTENT_OBJECTIVES[settings.content]
    return PretextTask(NAME, batch, build_head, objective, metric=psnr, metric_name="PSNR (dB)")


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: 4x super-resolution and the paper's SRResNet, the
    generator trained on the pixel MSE alone with Adam (lr 2e-3); with
    ``adversarial_weight=SRGAN_WEIGHT`` the paper's SRGAN-MSE (pixel MSE + 1e-3 x adversarial).

    Args:
        profile: sizes the run.
        seed: initial weights (generator and discriminator alike) and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields;
            ``adversarial_weight=SRGAN_WEIGHT`` adds the discriminator (SRGAN).

    Raises:
        RuntimeError: ``content="vgg"`` and the VGG19 weights cannot be loaded (says what to do).
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides, optimizer="adam",
                               lr=2e-3)  # fmt: skip
    if settings.content == "vgg":
        _vgg()  # load the weights now: a missing download fails here, with what to do
    task = make_task(settings)
    backbone = shared_backbone(profile, seed)
    with seeded(seed):
        model = EncoderDecoder(backbone, build_head(backbone.feature_dim, stride=backbone.stride))
    adversary = None
    if settings.adversarial_weight:
        adversary = build_adversary(
            **profile.backbone_settings(), seed=seed, weight=settings.adversarial_weight,
            content=settings.content, lr=settings.discriminator_lr,
        )  # fmt: skip
    return Recipe(NAME, model, task, config, unlabelled(data, profile, seed), adversary, settings)
