"""Contrastive learning of visual representations (SimCLR).

Chen, Kornblith, Norouzi & Hinton (2020). *A Simple Framework for Contrastive Learning of Visual
Representations.* ICML 2020, arXiv 2002.05709.

The seed idea: what if we prepared pairs of (view, view) of the same image? Two random crops of a
photo, in different colours, differ pixel by pixel yet show the same thing. Ask the network to
find, among all the views of a batch, the one that comes from the same image as a given view: to
do that it has to describe what a view shows rather than its pixels. Every other view of the batch
is a *negative*: the loss (NT-Xent, a softmax cross-entropy over cosine similarities divided by a
temperature) pulls the two views of an image together and pushes all the others away.

The paper found three ingredients that matter: strong augmentation, crops and colour above all
(:mod:`sslbook.augment`: without colour changes, two crops of a photo can be matched by their
colour histograms alone); a small MLP *projection head* between the representation and the loss,
thrown away afterwards (the representation before it transfers better than the projection); and
many negatives, that is large batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import ViewPipeline, ViewSettings, two_views
from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.inference import predict
from sslbook.models import mlp_head
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, backbone_with_head, resolve, unlabelled

NAME = "simclr"
TITLE = "Contrastive learning (SimCLR)"
PAPER = "Chen, Kornblith, Norouzi & Hinton (2020), arXiv 2002.05709"

#: The overrides that switch colour augmentation off: the colour-histogram shortcut left open.
NO_COLOUR = {"jitter_probability": 0.0, "grayscale_probability": 0.0}


@dataclass(frozen=True)
class Settings(ViewSettings):
    """The SimCLR recipe's own settings: the views (:class:`~sslbook.augment.ViewSettings`,
    crops from 20 % of the image) and the paper's CIFAR-10 choices, except two that a budget of
    a few epochs prefers (the smallest crop and the temperature, both measured in
    ``benchmarks/README.md``).

    Attributes:
        temperature: divides the cosine similarities before the softmax (0.5 in the official
            code's CIFAR-10 command, for 500+ epochs; lower values weigh the hardest negatives
            more, which at a few epochs trained better features: the book's 0.2).
        projection_dim: output size of the projection head (the paper's 128).
        hidden_dim: hidden width of the projection head.
    """

    temperature: float = 0.2
    projection_dim: int = 128
    hidden_dim: int = 512

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        super().__post_init__()


#: The views the recipe trains on (its default settings'), so a figure made with the default
#: shows exactly what the network sees.
RECIPE_VIEWS = Settings().pipeline()


def make_pretext_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    pipeline: ViewPipeline = RECIPE_VIEWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random views of every image, and where each view's partner sits in the batch.

    Args:
        images: ``(B, C, H, W)`` images in [0, 1].
        generator: every crop, flip and colour change.
        pipeline: what a view is drawn from (:class:`~sslbook.augment.ViewPipeline`; default:
            the recipe's own, :data:`RECIPE_VIEWS`).

    Returns:
        inputs ``(2B, C, H, W)``: the first view of every image, then the second;
        targets ``(2B,)``: the index of each view's partner (``i + B``, then ``i - B``).
    """
    return two_views(images, generator, pipeline)


def build_head(feature_dim: int, hidden_dim: int = 512, projection_dim: int = 128) -> nn.Module:
    """The projection head ``g``: linear, batch norm, ReLU, linear, from the backbone's pooled
    ``(N, feature_dim)`` features to ``(N, projection_dim)`` projections. The loss sees only its
    output; after pretraining it is thrown away and the backbone is kept."""
    return mlp_head(feature_dim, hidden_dim, projection_dim)


def similarity_logits(projections: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarity of every view with every other, over the temperature: ``(2B, 2B)``.

    The diagonal (a view with itself) is ``-inf``: it is never a candidate.

    Args:
        projections: ``(2B, d)`` projections (any length: they are L2-normalised here).
        temperature: the softmax temperature ``tau``.
    """
    z = F.normalize(projections.float(), dim=1)  # (2B, d) unit vectors
    logits = z @ z.T / temperature  # (2B, 2B)
    itself = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return logits.masked_fill(itself, float("-inf"))


def nt_xent(projections: torch.Tensor, partners: torch.Tensor, temperature: float = 0.5):
    """The normalised temperature-scaled cross-entropy (NT-Xent) of the paper's Eq. 1.

    For view ``i`` with partner ``j``: ``-log(exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau))``,
    ``s`` the cosine similarity, averaged over all ``2B`` views (each pair counts twice, once
    from each side). The ``2B - 2`` views of other images are the negatives.

    Args:
        projections: ``(2B, d)`` projections of the views.
        partners: ``(2B,)`` index of each view's partner.
        temperature: ``tau``.

    Returns:
        The scalar loss.
    """
    return F.cross_entropy(similarity_logits(projections, temperature), partners)


def loss(outputs: torch.Tensor, targets: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """:func:`nt_xent` of the projections ``outputs`` ``(2B, d)``, partners ``targets``."""
    return nt_xent(outputs, targets, temperature)


def partner_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """How often a view's most similar other view is its partner (chance: ``1 / (2B - 1)``)."""
    nearest = similarity_logits(outputs, 1.0).argmax(1)  # (2B,)
    return (nearest == targets).float().mean().item()


def colour_histograms(images: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """Each image's joint RGB histogram with ``bins`` levels per channel, as frequencies:
    ``(N, 3, H, W)`` -> ``(N, bins ** 3)``."""
    levels = (images.clamp(0, 1) * bins).long().clamp(max=bins - 1)  # (N, 3, H, W)
    cell = (levels[:, 0] * bins + levels[:, 1]) * bins + levels[:, 2]  # (N, H, W) colour cell
    counts = torch.zeros(len(images), bins**3)
    counts.scatter_add_(1, cell.flatten(1).cpu(), torch.ones(cell.flatten(1).shape))
    return counts / cell[0].numel()


def histogram_partner_accuracy(views: torch.Tensor, partners: torch.Tensor, bins: int = 4) -> float:
    """:func:`partner_accuracy` of colour histograms instead of a network: how often the view
    whose colours are closest (cosine similarity of the square-rooted histograms) is the
    partner. High means that colour alone solves the task, with nothing learned at all.

    Args:
        views: ``(2B, 3, H, W)`` views.
        partners: ``(2B,)`` index of each view's partner.
        bins: levels per colour channel.
    """
    return partner_accuracy(colour_histograms(views, bins).sqrt(), partners)


def embed(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The representation ``h`` (the backbone's pooled features) and the projection ``z = g(h)``
    of every image, in eval mode, on the CPU.

    Args:
        model: a SimCLR :class:`~sslbook.models.PretextModel` (backbone and projection head).
        images: ``(N, C, H, W)`` uint8 or float images.

    Returns:
        ``(h, z)``: ``(N, feature_dim)`` and ``(N, projection_dim)``.
    """
    features = predict(model.backbone, images, batch_size)  # (N, feature_dim)
    return features, predict(model.head, features, batch_size)


def make_task(settings: Settings = Settings()) -> PretextTask:
    """The SimCLR task: two views per image, NT-Xent at ``settings.temperature``."""
    batch = partial(make_pretext_batch, pipeline=settings.pipeline())
    head = partial(build_head, hidden_dim=settings.hidden_dim,
                   projection_dim=settings.projection_dim)  # fmt: skip
    objective = partial(loss, temperature=settings.temperature)
    return PretextTask(NAME, batch, head, objective, metric=partner_accuracy,
                       metric_name="partner accuracy")  # fmt: skip


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: SimCLR's CIFAR-10 augmentations (no blur, colour
    strength 0.5, crops of 20 % to 100 % of the image), a 128-d projection head and temperature
    0.2, trained by SGD at the profile's
    learning rate and batch size (a batch of ``B`` images is ``2B`` views and ``2B - 2``
    negatives per view; the paper used 256 to 8192 images and the LARS optimiser). The training
    loop's own random crop and flip are off (``augment=None``): the views are crops of the
    images themselves.

    Args:
        profile: sizes the run.
        seed: initial weights and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields (e.g. ``temperature=0.1``, or
            ``**NO_COLOUR``) or :class:`~sslbook.train.TrainConfig` fields (``batch_size``).
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    task = make_task(settings)
    model = backbone_with_head(profile, seed, task)
    data = unlabelled(data, profile, seed)
    # the views make their own crops and flips: the loop's random crop would only add borders
    return Recipe(NAME, model, task, config, data, settings=settings, augment=None)
