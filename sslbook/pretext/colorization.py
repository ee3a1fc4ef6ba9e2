"""Colorization.

Zhang, Isola & Efros (2016). *Colorful Image Colorization.* ECCV 2016, arXiv 1603.08511.

The seed idea: what if we prepared pairs of (grey image, its colours)? Every colour photo is such
a pair for free: keep its lightness, hide its colour, and ask a network to paint the colour back.
To know that grass is green, sky blue and a fire truck red, the network has to recognise grass,
sky and fire trucks.

The work happens in CIE Lab, where lightness ``L`` is separate from the colour ``ab``: the network
sees ``L`` (as a grey RGB image, so the shared backbone needs no change) and predicts ``ab``. Two
ways to predict it are here, side by side:

- **regression** (``Settings(regression=True)``): minimise the squared error of ``ab``. It is
  what intuition suggests, and it paints grey: when a shirt may be red or blue, the mean of the
  two is the squared error's best bet, and the mean of many colours is a dull brown-grey.
- **classification** (the default, :func:`make_task`), Zhang's fix: quantise the
  in-gamut ``ab`` plane into bins, predict a distribution over them, soft-encode the targets,
  re-weight rare (saturated) colours, and decode with the *annealed mean* at temperature ``T``,
  between the mean (dull but smooth) and the mode (vivid but patchy).

Colour conversions use kornia (``kornia.color``), batched on tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial

import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled
from sslbook.transforms import to_float

NAME = "colorization"
TITLE = "Colorization"
PAPER = "Zhang, Isola & Efros (2016), arXiv 1603.08511"

#: Spacing of the ab grid (Lab units), as in the paper.
GRID_SIZE = 10
#: The network predicts ab at 1/4 of the input resolution, as in the paper, and we upsample.
TARGET_STRIDE = 4
#: Scale of the regression head's outputs: it predicts ``ab / AB_SCALE``.
AB_SCALE = 100.0
#: Soft-encoding: nearest bins and Gaussian width (Lab units), as in the paper.
SOFT_NEIGHBOURS, SOFT_SIGMA = 5, 5.0
#: Rebalancing: mix of empirical prior and uniform, and smoothing of the prior (Lab units).
REBALANCE_LAMBDA, PRIOR_SIGMA = 0.5, 5.0
#: Annealed-mean temperature of the paper.
TEMPERATURE = 0.38


# --------------------------------------------------------------------------- Lab conversions


def rgb_to_l_ab(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split RGB images into lightness and colour.

    Args:
        images: ``(B, 3, H, W)`` uint8 or float sRGB images in [0, 1].

    Returns:
        ``L`` ``(B, 1, H, W)`` in [0, 100] and ``ab`` ``(B, 2, H, W)`` in about [-110, 110].
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"colorization needs colour images (B, 3, H, W), got {tuple(images.shape)}; "
            "greyscale data (MNIST) has no colour to predict"
        )
    lab = rgb_to_lab(to_float(images).float())  # (B, 3, H, W)
    return lab[:, :1], lab[:, 1:]


def l_ab_to_rgb(lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Recombine ``L`` ``(B, 1, H, W)`` with ``ab`` ``(B, 2, h, w)`` into sRGB in [0, 1].

    ``ab`` may be at a lower resolution (the network's output): it is upsampled bilinearly to
    ``L``'s size, as in the paper. Colours outside the sRGB gamut are clipped.
    """
    if ab.shape[-2:] != lightness.shape[-2:]:
        ab = F.interpolate(ab, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat([lightness, ab], dim=1), clip=True)


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """The colour removed: ``(B, 3, H, W)`` → the same lightness with ``ab = 0``, as 3 equal RGB
    channels in [0, 1] (what the network is given)."""
    lightness, ab = rgb_to_l_ab(images)
    grey = l_ab_to_rgb(lightness, torch.zeros_like(ab))
    return grey.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()  # (B, 3, H, W)


# --------------------------------------------------------------------------- the ab bins


@lru_cache(maxsize=4)
def _gamut_bins(grid_size: int, samples_per_channel: int) -> torch.Tensor:
    steps = torch.linspace(0, 1, samples_per_channel)
    rgb = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"))  # (3, n, n, n)
    ab = rgb_to_lab(rgb.reshape(1, 3, -1, 1))[0, 1:, :, 0]  # (2, n^3)
    cells = torch.unique(torch.round(ab / grid_size).long(), dim=1)  # (2, Q)
    return (cells.T * grid_size).float()  # (Q, 2)


def ab_bins(grid_size: int = GRID_SIZE, samples_per_channel: int = 64) -> torch.Tensor:
    """Centres of the in-gamut ab bins, derived from the sRGB gamut.

    Every colour an sRGB image can hold is sampled on a ``samples_per_channel``-cube, converted
    to Lab, and its ab rounded to the nearest grid point; the occupied grid points are the bins.
    (The paper's 313 bins come from its own gamut computation; sRGB gives a few less.)

    Returns:
        ``(Q, 2)`` float tensor of (a, b) centres, sorted by a then b.
    """
    if grid_size <= 0:
        raise ValueError(f"grid_size must be positive, got {grid_size}")
    return _gamut_bins(grid_size, samples_per_channel).clone()


def quantize(ab: torch.Tensor, bins: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest bin of every pixel: ``(B, 2, H, W)`` → ``(B, H, W)`` int64."""
    bins = (ab_bins() if bins is None else bins).to(ab.device)
    pixels = ab.movedim(1, -1).reshape(-1, 2)  # (B*H*W, 2)
    nearest = torch.cdist(pixels, bins).argmin(1)
    return nearest.view(ab.shape[0], *ab.shape[2:])


def soft_encode(
    ab: torch.Tensor,
    bins: torch.Tensor | None = None,
    neighbours: int = SOFT_NEIGHBOURS,
    sigma: float = SOFT_SIGMA,
) -> torch.Tensor:
    """Zhang's soft targets: each pixel's ab spread over its nearest bins.

    A hard one-hot target would call a colour 1 unit from a bin's edge as wrong as one far away;
    spreading it over the ``neighbours`` nearest bins with Gaussian weights tells the network
    which bins are nearly right.

    Args:
        ab: ``(B, 2, H, W)`` colours.
        bins: ``(Q, 2)`` bin centres (default :func:`ab_bins`).
        neighbours: how many nearest bins share the mass.
        sigma: width of the Gaussian (Lab units).

    Returns:
        ``(B, Q, H, W)`` distributions (each pixel's sums to 1).
    """
    bins = (ab_bins() if bins is None else bins).to(ab.device)
    b, _, h, w = ab.shape
    pixels = ab.movedim(1, -1).reshape(-1, 2)  # (N, 2)
    distances, nearest = torch.cdist(pixels, bins).topk(neighbours, dim=1, largest=False)
    weights = torch.softmax(-(distances**2) / (2 * sigma**2), dim=1)  # (N, k), rows sum to 1
    encoded = torch.zeros(len(pixels), len(bins), device=ab.device)
    encoded.scatter_(1, nearest, weights)  # (N, Q)
    return encoded.view(b, h, w, -1).movedim(-1, 1)  # (B, Q, H, W)


def ab_prior(
    images: torch.Tensor,
    bins: torch.Tensor | None = None,
    sigma: float = PRIOR_SIGMA,
    batch_size: int = 512,
) -> torch.Tensor:
    """The empirical distribution of colours over the bins, smoothed as in the paper.

    Args:
        images: ``(N, 3, H, W)`` uint8 or float RGB images (the unlabelled training set).
        bins: ``(Q, 2)`` bin centres (default :func:`ab_bins`).
        sigma: Gaussian smoothing across neighbouring bins (Lab units); 0 for none.

    Returns:
        ``(Q,)`` probabilities summing to 1.
    """
    bins = ab_bins() if bins is None else bins
    counts = torch.zeros(len(bins))
    for start in range(0, len(images), batch_size):
        _, ab = rgb_to_l_ab(images[start : start + batch_size])
        counts += torch.bincount(quantize(ab, bins).flatten().cpu(), minlength=len(bins))
    prior = counts / counts.sum()
    if sigma > 0:
        kernel = torch.exp(-(torch.cdist(bins, bins) ** 2) / (2 * sigma**2))  # (Q, Q)
        prior = kernel @ prior
        prior = prior / prior.sum()
    return prior


def rebalance_weights(prior: torch.Tensor, lam: float = REBALANCE_LAMBDA) -> torch.Tensor:
    """Class-rebalancing weights ``w ∝ 1 / ((1 - λ) p + λ / Q)``, scaled so ``Σ p w = 1``.

    Natural images are mostly dull (sky, ground, walls: ab near 0). Unweighted, the loss is
    dominated by those pixels and the network learns to play safe. Rare saturated colours get
    larger weights; ``λ`` mixes in a uniform distribution so that never-seen colours do not get
    infinite weight. The scaling keeps the expected weight of a pixel at 1, so the loss keeps
    its size.

    Args:
        prior: ``(Q,)`` empirical bin probabilities (:func:`ab_prior`).
        lam: weight of the uniform distribution, in [0, 1] (the paper: 0.5).

    Returns:
        ``(Q,)`` positive weights.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if lam == 0 and (prior <= 0).any():
        raise ValueError("with lam=0 a bin of zero probability gets infinite weight; use lam > 0")
    weights = 1.0 / ((1 - lam) * prior + lam / len(prior))
    return weights / (prior * weights).sum()


# --------------------------------------------------------------------------- decoding


def annealed_mean(
    logits: torch.Tensor, temperature: float = TEMPERATURE, bins: torch.Tensor | None = None
) -> torch.Tensor:
    """Turn a distribution over bins into one colour per pixel.

    The mean of the distribution is smooth but dull (the regression's problem again); its mode
    is vivid but jumps between bins from pixel to pixel. Sharpening the distribution with a
    temperature, ``softmax(logits / T)``, and taking its mean interpolates: ``T = 1`` is the mean,
    ``T → 0`` the mode.

    Args:
        logits: ``(B, Q, H, W)`` classifier outputs.
        temperature: ``T > 0``.
        bins: ``(Q, 2)`` bin centres (default :func:`ab_bins`).

    Returns:
        ``(B, 2, H, W)`` ab.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    bins = (ab_bins() if bins is None else bins).to(logits.device)
    probs = torch.softmax(logits.float() / temperature, dim=1)  # (B, Q, H, W)
    return torch.einsum("bqhw,qc->bchw", probs, bins)


def decode(outputs: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """ab ``(B, 2, h, w)`` from either head's outputs: 2 channels are the regression head's
    scaled ab; more are the classification head's logits (decoded by :func:`annealed_mean`)."""
    if outputs.shape[1] == 2:
        return outputs.float() * AB_SCALE
    return annealed_mean(outputs, temperature)


def ab_accuracy_auc(predicted: torch.Tensor, target: torch.Tensor, max_error: int = 150) -> float:
    """The paper's "raw accuracy" AuC: the share of pixels whose ab error is within ``t``,
    averaged over thresholds ``t = 0, 1, ..., max_error``. 1 is perfect.

    Args:
        predicted, target: ``(B, 2, H, W)`` ab.
    """
    error = (predicted.float() - target.float()).norm(dim=1)  # (B, H, W)
    within = (max_error + 1 - torch.ceil(error)).clamp(0, max_error + 1)  # thresholds passed
    return (within / (max_error + 1)).mean().item()


def chroma(ab: torch.Tensor) -> float:
    """Mean colourfulness ``sqrt(a² + b²)`` of ``(B, 2, H, W)`` ab: 0 for a grey image."""
    return ab.float().norm(dim=1).mean().item()


# --------------------------------------------------------------------------- the task


def make_pretext_batch(
    images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide the colour, keep it as the label.

    Args:
        images: ``(B, 3, H, W)`` RGB images in [0, 1], ``H`` and ``W`` multiples of
            :data:`TARGET_STRIDE`.
        generator: unused (the task is deterministic); kept for the common interface.

    Returns:
        inputs ``(B, 3, H, W)``: the grey images (``L`` only, three equal channels);
        targets ``(B, 2, H/4, W/4)``: their ab, average-pooled to the prediction resolution.
    """
    del generator
    h, w = images.shape[-2:]
    if h % TARGET_STRIDE or w % TARGET_STRIDE:
        raise ValueError(
            f"image size {h}x{w} must be a multiple of {TARGET_STRIDE}; crop or resize first"
        )
    lightness, ab = rgb_to_l_ab(images)
    grey = l_ab_to_rgb(lightness, torch.zeros_like(ab)).mean(1, keepdim=True)  # (B, 1, H, W)
    targets = F.avg_pool2d(ab, TARGET_STRIDE)  # (B, 2, H/4, W/4)
    return grey.expand(-1, 3, -1, -1).contiguous(), targets


class ColorizationNet(nn.Module):
    """The shared backbone as the encoder, a small decoder on one of its feature maps.

    The pretext models of other chapters see only pooled features; colour is per pixel, so this
    wrapper hands the head the spatial map of ``block`` (``block3``). Colours are predicted at
    1/:data:`TARGET_STRIDE` of the image's resolution, as in the paper; a backbone whose
    ``block3`` is coarser (a strided stem) has its predictions upsampled bilinearly to that size.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, block: str = "block3") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.block = block

    def config(self) -> dict:
        return {
            "backbone": self.backbone.config(),
            "head": type(self.head).__name__,
            "outputs": self.head.num_outputs,
            "block": self.block,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` grey images → ``(B, outputs, H/4, W/4)``."""
        outputs = self.head(self.backbone.feature_maps(x)[self.block])  # (B, outputs, h, w)
        size = (x.shape[-2] // TARGET_STRIDE, x.shape[-1] // TARGET_STRIDE)
        if outputs.shape[-2:] != size:
            outputs = F.interpolate(outputs, size=size, mode="bilinear", align_corners=False)
        return outputs


class ColorDecoder(nn.Module):
    """A 3x3 convolution (BN, ReLU) and a 1x1 convolution to ``num_outputs`` per pixel.

    Deliberately small, so the backbone does the work that is later evaluated.
    """

    def __init__(self, feature_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.layers = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(feature_dim),
            nn.ReLU(),
            nn.Conv2d(feature_dim, num_outputs, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # (B, num_outputs, h, w)


def build_head(feature_dim: int) -> nn.Module:
    """The classification decoder: one logit per ab bin and pixel."""
    return ColorDecoder(feature_dim, len(ab_bins()))


def build_l2_head(feature_dim: int) -> nn.Module:
    """The regression decoder: ab (scaled by :data:`AB_SCALE`) per pixel."""
    return ColorDecoder(feature_dim, 2)


def l2_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ab (in units of :data:`AB_SCALE`)."""
    return F.mse_loss(outputs.float(), targets / AB_SCALE)


def loss(
    outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Zhang's multinomial cross-entropy with soft targets and class rebalancing.

    Args:
        outputs: ``(B, Q, h, w)`` logits.
        targets: ``(B, 2, h, w)`` ab.
        weights: ``(Q,)`` rebalancing weights (:func:`rebalance_weights`); each pixel is weighted
            by the weight of its nearest bin. ``None``: every pixel counts the same.
    """
    bins = ab_bins().to(outputs.device)
    soft = soft_encode(targets.float(), bins)  # (B, Q, h, w)
    per_pixel = -(soft * F.log_softmax(outputs.float(), dim=1)).sum(1)  # (B, h, w)
    if weights is not None:
        per_pixel = per_pixel * weights.to(outputs.device)[soft.argmax(1)]
    return per_pixel.mean()


def metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """:func:`ab_accuracy_auc` of the decoded prediction (either head)."""
    return ab_accuracy_auc(decode(outputs), targets)


@dataclass(frozen=True)
class Settings:
    """The colorization recipe's own settings.

    Attributes:
        regression: predict ab by L2 regression (the intuitive objective that paints grey)
            instead of Zhang's classification over ab bins.
        rebalance_lambda: the ``λ`` of class rebalancing (:func:`rebalance_weights`): 0.5 in the
            paper; 1 weights every colour the same (no rebalancing).
        prior_images: how many training images the colour prior is counted on (it is a smooth
            histogram: a few thousand images pin it down).
    """

    regression: bool = False
    rebalance_lambda: float = REBALANCE_LAMBDA
    prior_images: int = 5000


def training_prior(data: ImageSet, settings: Settings = Settings()) -> torch.Tensor:
    """The colour prior the recipe rebalances with: :func:`ab_prior` of the first
    ``settings.prior_images`` pretraining images (all of them when it is 0)."""
    counted = data[: settings.prior_images] if settings.prior_images else data
    return ab_prior(counted.images)


def make_task(settings: Settings = Settings(), prior: torch.Tensor | None = None) -> PretextTask:
    """Zhang's classification task, its classes rebalanced by ``prior`` (the training set's
    :func:`ab_prior`; ``None``: no rebalancing), or the L2 regression with
    ``settings.regression``."""
    if settings.regression:
        return PretextTask(
            "colorization-l2", make_pretext_batch, build_l2_head, l2_loss, metric,
            metric_name="ab accuracy (AuC)",
        )  # fmt: skip
    weights = None if prior is None else rebalance_weights(prior, settings.rebalance_lambda)
    return PretextTask(
        NAME, make_pretext_batch, build_head, partial(loss, weights=weights), metric,
        metric_name="ab accuracy (AuC)",
    )  # fmt: skip


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: Zhang's rebalanced classification, the prior counted on
    the pretraining images, the decoder on ``block3``.

    Args:
        profile: sizes the run.
        seed: initial weights and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    data = unlabelled(data, profile, seed)
    task = make_task(settings, None if settings.regression else training_prior(data, settings))
    backbone = shared_backbone(profile, seed)
    with seeded(seed):
        model = ColorizationNet(backbone, task.build_head(backbone.feature_dim))
    return Recipe(NAME, model, task, config, data, settings=settings)


@torch.no_grad()
def predict_ab(
    model: nn.Module,
    images: torch.Tensor,
    temperature: float = TEMPERATURE,
    batch_size: int = 256,
) -> torch.Tensor:
    """The model's colours for RGB ``images`` ``(N, 3, H, W)`` (their colour is removed first):
    ``(N, 2, H/4, W/4)`` ab on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        grey, _ = make_pretext_batch(to_float(images[start : start + batch_size]).to(device))
        out.append(decode(model(grey), temperature).cpu())
    model.train(was_training)
    return torch.cat(out)


def colorize(images: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """``images``' own lightness with the predicted ``ab`` (any resolution): ``(N, 3, H, W)``."""
    lightness, _ = rgb_to_l_ab(images)
    return l_ab_to_rgb(lightness, ab.to(lightness.device))
