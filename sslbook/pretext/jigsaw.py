"""Jigsaw puzzles with a context-free network (CFN).

Noroozi & Favaro (2016). *Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles.* ECCV 2016, arXiv 1603.09246.

The seed idea: what if we prepared pairs of (shuffled tiles, the shuffle)? Cut an image into a
3x3 grid of tiles, shuffle them with one of a fixed set of permutations, and ask a network which
permutation it was. To put a cat back together you must know that heads go above bodies and paws
below: knowledge of object parts and their layout, learnt without a label.

The network is *context-free*: each tile goes through the same backbone on its own (shared
weights, a siamese network), so early layers cannot compare neighbouring pixels across tiles;
only the small head sees the nine feature vectors together. The permutations are not all
9! = 362,880 of them but a set chosen greedily to be far apart in Hamming distance (the number of
tiles that land in a different place). The paper's rule maximises the *average* distance to the
permutations already chosen; that makes most pairs far apart (a 64-set averages about 8 of 9)
but guarantees no minimum: some pairs can still differ by a single swap (distance 2). The
farthest-point rule (``criterion="min"``) maximises the distance to the *nearest* chosen
permutation instead, and raises the minimum (to 7 for 64 permutations; seed 0).

Tiles are cut with a gap and jitter, normalised one by one, and colour is dropped to grey at
random and jittered per channel, so that edges, brightness and chromatic aberration do not give
the answer away (see :mod:`sslbook.patches`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.models import mlp_head
from sslbook.patches import (
    Grid,
    channel_jitter,
    crop,
    defend_colour,
    normalize_per_tile,
    upsample,
)
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, backbone_with_head, resolve, unlabelled

NAME = "jigsaw"
TITLE = "Jigsaw puzzles"
PAPER = "Noroozi & Favaro (2016), arXiv 1603.09246"

NUM_TILES = 9
DEFAULT_SET_SIZE = 64
GRID = Grid(size=72, gap=4, jitter=2)  # 24-px cells, 16-px tiles, 4..12 px between tiles
CRITERIA = ("mean", "min")


@functools.lru_cache(maxsize=1)
def all_permutations(n: int = NUM_TILES) -> torch.Tensor:
    """Every permutation of ``n`` items, ``(n!, n)`` uint8, in lexicographic order."""
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.uint8)


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamming distances between permutations ``a`` ``(M, n)`` and ``b`` ``(N, n)``: ``(M, N)``,
    the number of positions at which they differ."""
    return (a[:, None, :] != b[None, :, :]).sum(-1)


@functools.lru_cache(maxsize=16)
def _greedy_set(count: int, seed: int, criterion: str) -> torch.Tensor:
    pool = all_permutations()  # (9!, 9)
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(pool), (1,), generator=generator))]
    total = torch.zeros(len(pool), dtype=torch.int64)  # sum of distances to the chosen set
    nearest = torch.full((len(pool),), NUM_TILES + 1, dtype=torch.int64)  # min distance
    for _ in range(count - 1):
        d = (pool != pool[chosen[-1]]).sum(1)  # (9!,) distances to the newest member
        total += d
        nearest = torch.minimum(nearest, d)
        score = (total if criterion == "mean" else nearest).clone()
        score[chosen] = -1  # never pick a permutation twice
        chosen.append(int(score.argmax()))  # first of the farthest, deterministic
    return pool[chosen].long()


def permutation_set(
    count: int = DEFAULT_SET_SIZE, seed: int = 0, criterion: str = "mean"
) -> torch.Tensor:
    """The paper's greedy maximal-Hamming-distance permutation set (its Algorithm 1).

    The first permutation is drawn at random (from ``seed``); then, again and again, the
    permutation farthest from those already chosen joins the set. "Farthest" is the largest
    *mean* Hamming distance to the chosen set in the paper (``criterion="mean"``); with
    ``criterion="min"`` it is the largest distance to the *nearest* chosen permutation
    (farthest-point sampling, which raises the set's minimum distance).

    Args:
        count: size of the set (64 by default; the paper used 100 and 1000).
        seed: which permutation starts the set.
        criterion: ``"mean"`` or ``"min"``.

    Returns:
        ``(count, 9)`` int64: row ``j`` is permutation ``j``; tile ``i`` of a puzzle shuffled
        with it comes from grid cell ``row[i]``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not 1 <= count <= math.factorial(NUM_TILES):
        raise ValueError(f"a set holds 1 to 9! = 362880 permutations, not {count}")
    return _greedy_set(count, seed, criterion).clone()


def set_distances(permutations: torch.Tensor) -> tuple[int, float]:
    """Minimum and mean Hamming distance between distinct members of a set (of >= 2)."""
    if len(permutations) < 2:
        raise ValueError("a set of one permutation has no pairwise distances")
    d = hamming(permutations, permutations).float()  # (N, N)
    off = ~torch.eye(len(permutations), dtype=torch.bool)
    return int(d[off].min()), d[off].mean().item()


def make_pretext_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    permutations: torch.Tensor | None = None,
    grid: Grid = GRID,
    colour: str = "gray",
    channel_shift: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle every image's nine tiles with a random permutation from the set.

    Args:
        images: ``(B, C, H, W)`` float images in [0, 1]; upsampled to ``grid.size`` first.
        generator: source of all randomness (permutation, jitter, colour), so the same generator
            state gives the same batch.
        permutations: ``(P, 9)`` permutation set; ``None``: :func:`permutation_set` with the
            defaults.
        grid: tile geometry (gap, jitter, size).
        colour: colour defence (see :func:`sslbook.patches.defend_colour`); CFN turns ~30 % of
            tiles grey.
        channel_shift: CFN's colour jitter, a random shift of each colour channel by up to this
            many pixels (0 turns it off).

    Returns:
        inputs ``(B, 9, C, t, t)``: tile ``i`` of image ``b`` is cut from grid cell
        ``permutations[targets[b], i]``; targets ``(B,)``: the permutation's index in the set.
    """
    if permutations is None:
        permutations = permutation_set()
    if images.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    b, c = images.shape[:2]
    images = upsample(images, grid.size)  # (B, C, S, S)
    targets = torch.randint(len(permutations), (b,), generator=generator)  # (B,)
    corners = grid.tile_corners(b, generator)  # (B, 9, 2): cell k's tile, row-major
    order = permutations[targets]  # (B, 9)
    shuffled = corners.gather(1, order[..., None].expand(b, NUM_TILES, 2))  # (B, 9, 2)
    shift = channel_jitter(b, NUM_TILES, c, channel_shift, generator) if channel_shift else None
    tiles = crop(images, shuffled, grid.tile, shift)  # (B, 9, C, t, t)
    tiles = defend_colour(normalize_per_tile(tiles), generator, colour)
    return tiles, targets.to(images.device)


def build_head(feature_dim: int, num_permutations: int = DEFAULT_SET_SIZE) -> nn.Module:
    """An MLP from the nine concatenated tile features ``(B, 9 * D)`` to permutation scores."""
    return mlp_head(NUM_TILES * feature_dim, 256, num_permutations)


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the permutation set."""
    return F.cross_entropy(outputs, targets)


@dataclass(frozen=True)
class Settings:
    """The jigsaw recipe's own settings.

    Attributes:
        set_size: permutations in the set (the classes of the task); the paper used 100 and
            1000, we use 64 for tiny images and a small head.
        criterion: how :func:`permutation_set` picks them: ``"mean"`` (the paper's rule) or
            ``"min"`` (farthest-point sampling, a larger minimum distance).
        grid: tile geometry (gap, jitter, size).
        colour: colour defence (:func:`sslbook.patches.defend_colour`).
        channel_shift: CFN's per-channel colour jitter in pixels (0 turns it off).
    """

    set_size: int = DEFAULT_SET_SIZE
    criterion: str = "mean"
    grid: Grid = GRID
    colour: str = "gray"
    channel_shift: int = 2


def make_task(settings: Settings = Settings(), seed: int = 0) -> PretextTask:
    """The jigsaw task: the permutation set is drawn from ``seed`` by ``settings.criterion``;
    the head's output size follows the set."""
    permutations = permutation_set(settings.set_size, seed=seed, criterion=settings.criterion)
    batch = functools.partial(
        make_pretext_batch, permutations=permutations, grid=settings.grid,
        colour=settings.colour, channel_shift=settings.channel_shift,
    )  # fmt: skip
    head = functools.partial(build_head, num_permutations=len(permutations))
    return PretextTask(NAME, batch, head, loss, metric_name="jigsaw accuracy")


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: 64 permutations chosen by the paper's rule, tiles cut
    with a gap and jitter, normalised one by one, sometimes grey and colour-jittered.

    Args:
        profile: sizes the run.
        seed: initial weights, the permutation set and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    task = make_task(settings, seed)
    model = backbone_with_head(profile, seed, task)
    return Recipe(NAME, model, task, config, unlabelled(data, profile, seed), settings=settings)


def arrange(
    tiles: torch.Tensor, cells: Sequence[int] | torch.Tensor, border: int = 2
) -> torch.Tensor:
    """Lay tiles out on the 3x3 grid: tile ``i`` goes to cell ``cells[i]``.

    With ``cells = permutations[target]`` this undoes the shuffle (the solved puzzle); with
    ``cells = range(9)`` it shows the tiles in the order the network received them.

    Args:
        tiles: ``(9, C, t, t)``.
        cells: where each tile goes.
        border: white pixels between tiles.

    Returns:
        ``(C, 3t + 2 * border, 3t + 2 * border)`` image.
    """
    c, t = tiles.shape[1], tiles.shape[-1]
    side = 3 * t + 2 * border
    board = torch.ones(c, side, side, dtype=tiles.dtype)
    for tile, cell in zip(tiles.cpu(), torch.as_tensor(cells).tolist(), strict=True):
        y, x = (cell // 3) * (t + border), (cell % 3) * (t + border)
        board[:, y : y + t, x : x + t] = tile
    return board
