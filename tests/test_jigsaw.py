import math

import pytest
import torch

import sslbook as sb
from sslbook.patches import (
    Grid,
    channel_jitter,
    crop,
    defend_colour,
    normalize_per_tile,
    upsample,
)
from sslbook.pretext import jigsaw

from .conftest import assert_seeded, locate_patch

GRIDS = [Grid(72, gap=4, jitter=2), Grid(64, gap=3, jitter=1), Grid(50, gap=0, jitter=3)]


# --------------------------------------------------------------------------- tile geometry


@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_every_tile_lies_inside_its_cell_and_inside_the_image(grid):
    corners = grid.tile_corners(500, torch.Generator().manual_seed(0))  # (500, 9, 2)
    cells = grid.cell_corners()  # (9, 2)
    assert (corners >= cells).all()
    assert (corners + grid.tile <= cells + grid.cell).all()
    assert (corners >= 0).all() and (corners + grid.tile <= grid.size).all()


@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_neighbouring_tiles_are_at_least_gap_apart(grid):
    corners = grid.tile_corners(500, torch.Generator().manual_seed(1)).view(500, 3, 3, 2)
    horizontal = corners[:, :, 1:, 1] - (corners[:, :, :-1, 1] + grid.tile)  # (500, 3, 2)
    vertical = corners[:, 1:, :, 0] - (corners[:, :-1, :, 0] + grid.tile)
    for gaps in (horizontal, vertical):
        assert gaps.min() >= grid.gap
        assert gaps.max() <= grid.gap + 4 * grid.jitter


@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_jitter_uses_its_whole_range_inside_the_cell(grid):
    corners = grid.tile_corners(2000, torch.Generator().manual_seed(2)) - grid.cell_corners()
    for k in range(9):
        for axis in range(2):
            values = set(corners[:, k, axis].tolist())
            assert len(values) == 2 * grid.jitter + 1  # every shift in [-jitter, jitter] occurs


def test_no_gap_no_jitter_tiles_are_the_cells_and_touch():
    grid = Grid(72, gap=0, jitter=0)
    assert grid.tile == grid.cell == 24
    corners = grid.tile_corners(3)
    assert torch.equal(corners, grid.cell_corners().expand(3, 9, 2))


def test_too_small_tiles_are_refused_with_advice():
    with pytest.raises(ValueError, match="larger size"):
        Grid(32, gap=4, jitter=2)
    with pytest.raises(ValueError, match=">= 0"):
        Grid(72, gap=-1)


def test_crop_cuts_exactly_the_requested_square():
    images = torch.rand(2, 3, 20, 20)
    corners = torch.tensor([[[0, 0], [3, 7]], [[12, 12], [5, 0]]])  # (B=2, K=2, 2)
    tiles = crop(images, corners, 8)  # (2, 2, 3, 8, 8)
    for b in range(2):
        for k in range(2):
            y, x = corners[b, k].tolist()
            assert torch.equal(tiles[b, k], images[b, :, y : y + 8, x : x + 8])


def test_crop_refuses_tiles_outside_the_image_and_clamps_channel_shifts():
    images = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="leave"):
        crop(images, torch.tensor([[[13, 0]]]), 8)
    shift = torch.full((1, 1, 3, 2), -5)
    tiles = crop(images, torch.tensor([[[2, 2]]]), 8, shift)  # clamped to the corner (0, 0)
    assert torch.equal(tiles[0, 0], images[0, :, :8, :8])
    shift = channel_jitter(1, 1, 3, 2, torch.Generator().manual_seed(0))
    assert shift.abs().max() <= 2


def test_per_tile_normalisation():
    tiles = torch.rand(4, 9, 3, 8, 8) * (0.5 + torch.rand(4, 9, 1, 1, 1)) + torch.rand(
        4, 9, 1, 1, 1
    )
    out = normalize_per_tile(tiles)
    assert torch.allclose(out.mean(dim=(-3, -2, -1)), torch.full((4, 9), 0.5), atol=1e-5)
    assert torch.allclose(out.std(dim=(-3, -2, -1)), torch.full((4, 9), 0.2), atol=2e-3)


# --------------------------------------------------------------------------- colour defences


def test_colour_dropping_keeps_one_channel_per_tile():
    tiles = torch.rand(8, 9, 3, 8, 8)
    out = defend_colour(tiles, torch.Generator().manual_seed(0), "drop")
    kept = (out == tiles).flatten(-2).all(-1)  # (8, 9, 3)
    assert (kept.sum(-1) == 1).all()
    dropped = out.transpose(0, 2)[~kept.transpose(0, 2)]  # dropped channels
    assert (dropped - 0.5).abs().max() < 0.02  # grey plus faint noise
    assert len(set(kept.float().argmax(-1).flatten().tolist())) == 3  # all channels get kept


def test_projection_removes_the_green_magenta_axis_and_gray_makes_gray():
    tiles = torch.rand(4, 9, 3, 8, 8)
    projected = defend_colour(tiles, None, "project")
    axis = torch.tensor([-1.0, 2.0, -1.0]).view(1, 1, 3, 1, 1)
    assert (projected * axis).sum(2).abs().max() < 1e-5
    gray = defend_colour(tiles, torch.Generator().manual_seed(0), "gray", gray_probability=1.0)
    assert torch.allclose(gray[:, :, 0], gray[:, :, 1]) and torch.allclose(
        gray[:, :, 1], gray[:, :, 2]
    )
    assert torch.equal(defend_colour(tiles, None, "keep"), tiles)
    with pytest.raises(ValueError, match="colour mode"):
        defend_colour(tiles, None, "sepia")


# --------------------------------------------------------------------------- permutation sets


def test_hamming_distance_counts_differing_positions():
    identity = torch.arange(9)[None]
    swapped = identity.clone()
    swapped[0, [3, 7]] = swapped[0, [7, 3]]
    assert jigsaw.hamming(identity, swapped).item() == 2
    assert jigsaw.hamming(identity, identity.flip(-1)).item() == 8  # the middle tile stays


@pytest.mark.parametrize("count", [1, 8, 64])
def test_permutation_set_has_the_requested_size_of_unique_permutations(count):
    perms = jigsaw.permutation_set(count)
    assert perms.shape == (count, 9)
    assert (perms.sort(1).values == torch.arange(9)).all()  # every row is a permutation
    assert len({tuple(p) for p in perms.tolist()}) == count  # no duplicates


@pytest.mark.parametrize("criterion", jigsaw.CRITERIA)
def test_permutation_set_is_greedy(criterion):
    """Each new member is the farthest from the members chosen before it, and the first one
    depends on the seed."""
    perms = jigsaw.permutation_set(12, seed=3, criterion=criterion)
    pool = jigsaw.all_permutations().long()
    d = jigsaw.hamming(pool, perms)  # (9!, 12): every permutation's distance to each member
    for k in range(1, len(perms)):
        score = d[:, :k].sum(1) if criterion == "mean" else d[:, :k].min(1).values
        score[(d[:, :k] == 0).any(1)] = -1  # members already chosen are out
        assert score[d[:, k] == 0].item() == score.max().item()
    assert not torch.equal(jigsaw.permutation_set(12, seed=4)[0], perms[0])
    assert torch.equal(jigsaw.permutation_set(12, seed=3, criterion=criterion), perms)


def test_set_distances_and_what_the_criteria_promise():
    mean_set = jigsaw.permutation_set(32, criterion="mean")
    min_set = jigsaw.permutation_set(32, criterion="min")
    for perms in (mean_set, min_set):
        d = jigsaw.hamming(perms, perms).float()
        off = ~torch.eye(32, dtype=torch.bool)
        assert jigsaw.set_distances(perms) == (
            int(d[off].min()),
            pytest.approx(d[off].mean().item()),
        )
    # farthest-point sampling raises the minimum distance; both sets are far apart on average
    assert jigsaw.set_distances(min_set)[0] > jigsaw.set_distances(mean_set)[0]
    assert jigsaw.set_distances(mean_set)[1] > 7.5
    # small sets reach the maximum distance: no tile ever in the same place twice
    assert jigsaw.set_distances(jigsaw.permutation_set(8)) == (9, 9.0)


def test_permutation_set_refuses_bad_arguments():
    with pytest.raises(ValueError, match="criterion"):
        jigsaw.permutation_set(8, criterion="max")
    with pytest.raises(ValueError, match="362880"):
        jigsaw.permutation_set(math.factorial(9) + 1)
    with pytest.raises(ValueError, match="pairwise"):
        jigsaw.set_distances(jigsaw.permutation_set(1))


# --------------------------------------------------------------------------- the puzzles


def test_tile_i_comes_from_cell_permutation_i():
    perms = jigsaw.permutation_set(16)
    images = torch.rand(3, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    inputs, targets = jigsaw.make_pretext_batch(images, g, perms, colour="keep", channel_shift=0)
    assert inputs.shape == (3, 9, 3, jigsaw.GRID.tile, jigsaw.GRID.tile)
    big = upsample(images, jigsaw.GRID.size)
    for b in range(3):
        grid = jigsaw.GRID
        for i, cell in enumerate(perms[targets[b]].tolist()):
            y, x = locate_patch(inputs[b, i], big[b])
            cy, cx = grid.cell_corners()[cell].tolist()
            assert cy <= y and y + grid.tile <= cy + grid.cell  # inside cell permutation[i]
            assert cx <= x and x + grid.tile <= cx + grid.cell


def test_batches_are_deterministic_given_the_generator():
    a = assert_seeded(jigsaw.make_pretext_batch, torch.rand(6, 3, 32, 32))
    assert ((0 <= a[1]) & (a[1] < jigsaw.DEFAULT_SET_SIZE)).all()


def test_arrange_undoes_the_shuffle():
    perm = jigsaw.permutation_set(8)[5]
    cells = torch.arange(9).float().view(9, 1, 1, 1).expand(9, 1, 4, 4)  # tile k shows k
    shuffled = cells[perm]  # what the network sees: tile i is cell perm[i]
    board = jigsaw.arrange(shuffled, perm, border=0)  # (1, 12, 12)
    assert torch.equal(board[0, ::4, ::4], torch.arange(9).float().view(3, 3))


def test_siamese_model_head_and_loss():
    task = jigsaw.make_task(jigsaw.Settings(set_size=10))
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    model = sb.PretextModel(backbone, task.build_head(backbone.feature_dim))
    inputs, targets = task.make_pretext_batch(torch.rand(4, 3, 32, 32), None)
    outputs = model(inputs)
    assert outputs.shape == (4, 10)
    assert task.loss(outputs, targets).ndim == 0
    with pytest.raises(ValueError, match="B, C, H, W"):
        jigsaw.make_pretext_batch(torch.rand(3, 32, 32))
