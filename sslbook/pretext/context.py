"""Context prediction: where does this patch sit relative to that one?

Doersch, Gupta & Efros (2015). *Unsupervised Visual Representation Learning by Context
Prediction.* ICCV 2015, arXiv 1505.05192.

The seed idea: what if we prepared pairs of (two patches, where the second sits relative to the
first)? Take the centre patch of a 3x3 grid and one of its eight neighbours, and ask the network
which of the eight it is. Saying "this wheel is below-left of that door" requires knowing what
wheels and doors are.

Both patches go through the same backbone (shared weights); a small head sees the two feature
vectors side by side and picks one of the eight positions. Each image gives several pairs per step,
at distinct positions (:data:`PAIRS`), as the rotation chapter feeds every image in all four
rotations. The paper's main lesson is about *shortcuts*: with touching patches the network matches
edges and textures across the border, and with colour kept it can read the position from chromatic
aberration. So patches are cut with a gap and jitter, normalised one by one, and colour is taken
away as a cue (see :mod:`sslbook.patches`). The paper drops two of the three channels of every
patch (``"drop"``) or projects colours (``"project"``); on small, upsampled CIFAR-10 images our
default is the jigsaw chapter's milder defence, a patch turned grey with probability 0.3
(``"gray"``): a network that only ever saw one colour channel per patch transfers worse to the
colour images of the probe. The paper also shrinks some patches to about 100 pixels and blows them
up again (pixelation); that defence is here as ``Settings(pixelated=...)``, off by default (see
:class:`Settings`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.models import mlp_head
from sslbook.patches import Grid, crop, defend_colour, normalize_per_tile, pixelate, upsample
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, backbone_with_head, resolve, unlabelled

NAME = "context"
TITLE = "Context prediction"
PAPER = "Doersch, Gupta & Efros (2015), arXiv 1505.05192"

# The eight neighbours of the centre cell, labels 0..7, row by row (the paper's layout):
#   0 1 2
#   3 . 4
#   5 6 7
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
NEIGHBOUR_CELLS = (0, 1, 2, 3, 5, 6, 7, 8)  # the grid cell (row-major) of each label
CENTRE_CELL = 4
NAMES = ("up-left", "up", "up-right", "left", "right", "down-left", "down", "down-right")
GRID = Grid(size=72, gap=4, jitter=2)  # 24-px cells, 16-px patches, 4..12 px between patches
#: Touching 16-px patches (the cells of a 48-px upsampling): edges can be matched across the
#: border. The same patch size as :data:`GRID`'s, so a shortcut run costs what a defended one does.
SHORTCUT_GRID = Grid(size=48, gap=0, jitter=0)
#: Pairs the recipe cuts from each image per step, at distinct positions. A pair costs half an
#: image's pixels, so four cost about what rotation's four rotated copies do; in the book's
#: development runs four pairs for one epoch probed as well as one pair for ten epochs.
PAIRS = 4


def make_pretext_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    grid: Grid = GRID,
    colour: str = "gray",
    normalize: bool = True,
    pixelated: float = 0.0,
    pairs: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pairs`` (centre, neighbour) patch pairs per image and the neighbours' positions.

    Args:
        images: ``(B, C, H, W)`` float images in [0, 1]; upsampled to ``grid.size`` first.
        generator: source of all randomness (position, jitter, colour).
        grid: patch geometry: ``GRID`` (gap and jitter) or ``SHORTCUT_GRID`` (touching).
        colour: colour defence (see :func:`sslbook.patches.defend_colour`); ``"keep"`` leaves
            the chromatic shortcut open.
        normalize: standardise each patch on its own.
        pixelated: share of patches shrunk to about 100 pixels and blown up again (the paper's
            defence; see :func:`sslbook.patches.pixelate`).
        pairs: pairs cut from each image, 1 to 8, each with its own jitter, at distinct
            positions drawn at random; 8 asks every image for all eight positions. The recipe
            cuts :data:`PAIRS`; one pair per image suits pictures and test sets.

    Returns:
        inputs ``(B * pairs, 2, C, t, t)``: the centre patch, then the neighbour, the pairs of
        one image next to each other; targets ``(B * pairs,)``: the neighbour's position 0..7
        (see ``OFFSETS`` and ``NAMES``).
    """
    if images.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    check_pairs(pairs)
    images = upsample(images, grid.size)  # (B, C, S, S)
    targets = neighbour_positions(images.shape[0], pairs, generator)  # (N,), N = B * pairs
    images = images.repeat_interleave(pairs, dim=0)  # (N, C, S, S)
    n = images.shape[0]
    corners = grid.tile_corners(n, generator)  # (N, 9, 2), one jittered tile per cell
    cells = torch.stack([torch.full_like(targets, CENTRE_CELL), neighbour_cell(targets)], 1)
    pair = corners.gather(1, cells[..., None].expand(n, 2, 2))  # (N, 2, 2)
    patches = crop(images, pair, grid.tile)  # (N, 2, C, t, t)
    if normalize:
        patches = normalize_per_tile(patches)
    patches = pixelate(defend_colour(patches, generator, colour), generator, pixelated)
    return patches, targets.to(images.device)


def check_pairs(pairs: int) -> None:
    """Refuse a number of pairs per image that the eight positions cannot supply."""
    if not 1 <= pairs <= len(OFFSETS):
        raise ValueError(f"pairs must be 1 to {len(OFFSETS)} per image, got {pairs}")


def neighbour_positions(n: int, pairs: int, generator: torch.Generator | None) -> torch.Tensor:
    """``pairs`` distinct positions 0..7 for each of ``n`` images, flattened ``(n * pairs,)``."""
    if pairs == 1:
        return torch.randint(len(OFFSETS), (n,), generator=generator)
    order = torch.rand(n, len(OFFSETS), generator=generator).argsort(dim=1)  # (n, 8)
    return order[:, :pairs].reshape(-1)


def neighbour_cell(labels: torch.Tensor) -> torch.Tensor:
    """Grid cell (0..8, row-major) of each neighbour label (0..7)."""
    return torch.tensor(NEIGHBOUR_CELLS)[labels.cpu()].to(labels.device)


def build_head(feature_dim: int) -> nn.Module:
    """An MLP from the two concatenated patch features ``(B, 2 * D)`` to the 8 positions."""
    return mlp_head(2 * feature_dim, 256, len(OFFSETS))


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the eight positions."""
    return F.cross_entropy(outputs, targets)


@dataclass(frozen=True)
class Settings:
    """The context-prediction recipe's own settings.

    Attributes:
        grid: patch geometry: :data:`GRID` (gap and jitter) or :data:`SHORTCUT_GRID` (touching).
        colour: colour defence (:func:`sslbook.patches.defend_colour`); ``"keep"`` leaves the
            chromatic shortcut open.
        normalize: standardise each patch on its own.
        pixelated: share of patches shrunk to about 100 pixels and blown up again, the paper's
            defence against fine-detail cues; 0 by default: our 16-pixel patches, cut from
            upsampled 32-pixel images, already hold only about 100 pixels of real detail.
        pairs: (centre, neighbour) pairs cut from each image per step (:data:`PAIRS`).
    """

    grid: Grid = GRID
    colour: str = "gray"
    normalize: bool = True
    pixelated: float = 0.0
    pairs: int = PAIRS

    def __post_init__(self) -> None:
        check_pairs(self.pairs)  # at the recipe's construction, not at its first batch


def make_task(settings: Settings = Settings(), name: str = NAME) -> PretextTask:
    """The context task with the given geometry and defences (e.g. the shortcut ablation:
    ``make_task(Settings(SHORTCUT_GRID, colour="keep"), name="context-shortcut")``)."""
    batch = functools.partial(
        make_pretext_batch, grid=settings.grid, colour=settings.colour,
        normalize=settings.normalize, pixelated=settings.pixelated, pairs=settings.pairs,
    )  # fmt: skip
    return PretextTask(name, batch, build_head, loss, metric_name="position accuracy")


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: a gap and jitter between the patches, each patch
    normalised on its own, a patch turned grey now and then, and :data:`PAIRS` pairs per image.

    Args:
        profile: sizes the run.
        seed: initial weights and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    task = make_task(settings)
    model = backbone_with_head(profile, seed, task)
    return Recipe(NAME, model, task, config, unlabelled(data, profile, seed), settings=settings)


def as_grid(scores: torch.Tensor) -> torch.Tensor:
    """Eight per-position scores ``(8,)`` laid out on the 3x3 grid ``(3, 3)``, centre NaN, for
    plotting a prediction as an overlay."""
    board = torch.full((9,), float("nan"))
    board[list(NEIGHBOUR_CELLS)] = scores.detach().float().cpu()
    return board.view(3, 3)
