import pytest
import torch

import sslbook as sb
from sslbook.patches import Grid, upsample
from sslbook.pretext import context

from .conftest import locate_patch


def test_labels_name_the_eight_neighbours_row_by_row():
    assert len(context.OFFSETS) == len(context.NAMES) == len(context.NEIGHBOUR_CELLS) == 8
    for (dy, dx), cell in zip(context.OFFSETS, context.NEIGHBOUR_CELLS, strict=True):
        assert cell == (1 + dy) * 3 + (1 + dx)  # the cell at that offset from the centre
    assert context.CENTRE_CELL not in context.NEIGHBOUR_CELLS
    assert context.neighbour_cell(torch.tensor([0, 4, 7])).tolist() == [0, 5, 8]


def assert_pair_at(pair: torch.Tensor, big: torch.Tensor, position: int, grid=context.GRID):
    """The centre patch inside the centre cell of ``big`` (the upsampled image), the neighbour
    one cell away from it in the direction ``position`` names."""
    (cy, cx), (ny, nx) = (locate_patch(patch, big) for patch in pair)
    dy, dx = context.OFFSETS[position]
    assert grid.cell <= cy and cy + grid.tile <= 2 * grid.cell
    assert grid.cell <= cx and cx + grid.tile <= 2 * grid.cell
    assert (ny - cy) * dy >= (grid.tile + grid.gap) * abs(dy)
    assert (nx - cx) * dx >= (grid.tile + grid.gap) * abs(dx)
    assert abs(ny - cy) <= (grid.tile + grid.gap + 4 * grid.jitter) * abs(dy) + 2 * grid.jitter
    assert abs(nx - cx) <= (grid.tile + grid.gap + 4 * grid.jitter) * abs(dx) + 2 * grid.jitter


def test_neighbour_sits_where_the_label_says():
    images = torch.rand(8, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    grid = context.GRID
    inputs, targets = context.make_pretext_batch(images, g, colour="keep")
    assert inputs.shape == (8, 2, 3, grid.tile, grid.tile)
    big = upsample(images, grid.size)
    for b in range(8):
        assert_pair_at(inputs[b], big[b], int(targets[b]))


@pytest.mark.parametrize("grid", [context.GRID, context.SHORTCUT_GRID, Grid(50, 1, 2)], ids=repr)
def test_patches_never_leave_the_image(grid):
    corners = grid.tile_corners(2000, torch.Generator().manual_seed(0))
    assert corners.min() >= 0 and corners.max() <= grid.size - grid.tile
    images = torch.rand(64, 3, 32, 32)
    inputs, targets = context.make_pretext_batch(images, torch.Generator().manual_seed(1), grid)
    assert inputs.shape[-1] == grid.tile and set(targets.tolist()) <= set(range(8))


@pytest.mark.parametrize("pairs", [2, context.PAIRS, 8])
def test_several_pairs_per_image_come_from_that_image_at_distinct_positions(pairs):
    images = torch.rand(5, 3, 32, 32)
    inputs, targets = context.make_pretext_batch(images, torch.Generator().manual_seed(0),
                                                 colour="keep", pairs=pairs)  # fmt: skip
    assert inputs.shape[:2] == (5 * pairs, 2) and targets.shape == (5 * pairs,)
    big = upsample(images, context.GRID.size)
    for i, positions in enumerate(targets.view(5, pairs)):
        assert len(set(positions.tolist())) == pairs  # no position twice for one image
        for pair, position in zip(inputs[i * pairs : (i + 1) * pairs], positions, strict=True):
            assert_pair_at(pair, big[i], int(position))  # cut from image i, where it says
    if pairs == 8:
        assert (targets.view(5, 8).sort(1).values == torch.arange(8)).all()


def test_pairs_per_image_out_of_range_is_refused():
    with pytest.raises(ValueError, match="pairs must be 1 to 8"):
        context.make_pretext_batch(torch.rand(2, 3, 32, 32), pairs=9)
    with pytest.raises(ValueError, match="pairs must be 1 to 8"):
        context.Settings(pairs=0)


def test_recipe_cuts_its_pairs_per_image():
    recipe = context.recipe(sb.get_profile("smoke"), seed=0)
    _, targets = recipe.task.make_pretext_batch(torch.rand(3, 3, 32, 32),
                                                torch.Generator().manual_seed(0))  # fmt: skip
    assert recipe.settings.pairs == context.PAIRS and targets.shape == (3 * context.PAIRS,)


def test_shortcut_patches_touch():
    grid = context.SHORTCUT_GRID
    corners = grid.tile_corners(4)
    right = corners[:, context.NEIGHBOUR_CELLS[4]] - corners[:, context.CENTRE_CELL]
    assert (right == torch.tensor([0, grid.tile])).all()  # edge to edge, nothing in between


def test_all_positions_occur_and_batches_are_deterministic():
    images = torch.rand(400, 3, 32, 32)
    a = context.make_pretext_batch(images, torch.Generator().manual_seed(3))
    b = context.make_pretext_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.bincount(a[1], minlength=8).min() > 25  # roughly uniform over the 8 labels


def test_colour_defences_and_the_shortcut_task_that_keeps_colour():
    images = torch.rand(64, 3, 32, 32)
    greyed, _ = context.make_pretext_batch(images, torch.Generator().manual_seed(0))  # default
    grey = (greyed[:, :, 0] == greyed[:, :, 1]).flatten(2).all(-1)  # (64, 2): patch is grey
    assert 0.1 < grey.float().mean() < 0.5  # about 30 % of the patches lose their colour
    dropped, _ = context.make_pretext_batch(
        images[:16], torch.Generator().manual_seed(0), colour="drop"
    )
    flat = dropped.flatten(-2).std(-1)  # (16, 2, 3): spread of each channel
    assert ((flat > 0.05).sum(-1) == 1).all()  # one live channel per patch
    shortcut = context.make_task(context.Settings(context.SHORTCUT_GRID, colour="keep"))
    kept, _ = shortcut.make_pretext_batch(images, torch.Generator().manual_seed(0))
    assert kept.shape[-1] == context.SHORTCUT_GRID.tile
    assert ((kept.flatten(-2).std(-1) > 0.05).sum(-1) == 3).all()


def test_siamese_model_head_loss_and_overlay():
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    model = sb.PretextModel(backbone, context.build_head(backbone.feature_dim))
    inputs, targets = context.make_pretext_batch(torch.rand(4, 3, 32, 32))
    outputs = model(inputs)
    assert outputs.shape == (4, 8)
    assert context.loss(outputs, targets).ndim == 0
    board = context.as_grid(torch.arange(8.0))
    assert board.shape == (3, 3) and torch.isnan(board[1, 1])
    assert board[0, 0] == 0 and board[1, 2] == 4 and board[2, 2] == 7
    with pytest.raises(ValueError, match="B, C, H, W"):
        context.make_pretext_batch(torch.rand(3, 32, 32))
