"""Tiles and patches cut from a grid, and the defences against low-level shortcuts.

Both spatial-context tasks of the book (context prediction, Doersch et al. 2015, arXiv
1505.05192; jigsaw puzzles, Noroozi & Favaro 2016, arXiv 1603.09246) cut an image into a 3x3
grid and ask a network how pieces relate. A network is lazy: if two pieces touch, it can match
their edges pixel by pixel; if lenses split colours a little (chromatic aberration), the colour
fringes tell where in the frame a piece came from. Neither needs any idea of what the object is.
So the pieces are cut with a **gap** between them and a random **jitter** inside their cell, each
piece is **normalised** on its own (no brightness cue across pieces), and colour is **dropped,
projected or jittered** so it cannot serve as a ruler.

The geometry (:class:`Grid`) and the colour defences live here, shared by
:mod:`sslbook.pretext.jigsaw` and :mod:`sslbook.pretext.context`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

COLOUR_MODES = ("keep", "drop", "project", "gray")
# Chromatic aberration moves green against magenta; projecting it out removes the cue
# (Doersch et al. 2015, section 3.1). A unit vector in RGB space.
GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5
MIN_TILE = 8  # the backbone needs at least 8 pixels


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` images to ``size x size`` (bilinear), so 3x3 tiles are not tiny."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Grid:
    """A ``cells x cells`` grid over a ``size x size`` image, with one square tile per cell.

    Each tile sits strictly inside its cell: a margin of at least ``gap // 2`` pixels on every
    side, and a random shift of up to ``jitter`` pixels in each direction. Two neighbouring tiles
    are therefore always at least ``gap`` pixels apart (at most ``gap + 4 * jitter``), and no
    tile ever leaves the image. ``gap=0, jitter=0`` gives tiles that are exactly the cells, edges
    touching: the trivial shortcut.

    Attributes:
        size: side of the (upsampled) image in pixels.
        gap: minimum number of pixels between neighbouring tiles.
        jitter: maximum random shift of a tile inside its cell, per axis.
        cells: cells per side (3 for both tasks).
    """

    size: int = 64
    gap: int = 3
    jitter: int = 1
    cells: int = 3

    def __post_init__(self) -> None:
        if self.gap < 0 or self.jitter < 0:
            raise ValueError(
                f"gap and jitter must be >= 0, got gap={self.gap}, jitter={self.jitter}"
            )
        if self.tile < MIN_TILE:
            raise ValueError(
                f"a {self.size}-px image cut into {self.cells}x{self.cells} cells of "
                f"{self.cell} px leaves tiles of {self.tile} px with gap={self.gap} and "
                f"jitter={self.jitter}; the "
                f"backbone needs >= {MIN_TILE} px: use a larger size or a smaller gap/jitter."
            )

    @property
    def cell(self) -> int:
        """Side of one cell in pixels."""
        return self.size // self.cells

    @property
    def tile(self) -> int:
        """Side of one tile in pixels."""
        return self.cell - self.gap - 2 * self.jitter

    @property
    def origin(self) -> int:
        """Offset of the grid in the image (the grid is centred when ``size`` is not divisible)."""
        return (self.size - self.cells * self.cell) // 2

    def cell_corners(self) -> torch.Tensor:
        """Top-left ``(y, x)`` of every cell, row by row: ``(cells**2, 2)``."""
        starts = self.origin + self.cell * torch.arange(self.cells)
        return torch.cartesian_prod(starts, starts)  # (9, 2): (row, col) in row-major order

    def tile_corners(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random top-left ``(y, x)`` of every tile of ``batch`` images.

        Returns:
            ``(batch, cells**2, 2)`` integer pixel positions; tile ``k`` lies in cell ``k``
            (row-major).
        """
        n = self.cells**2
        shift = torch.randint(-self.jitter, self.jitter + 1, (batch, n, 2), generator=generator)
        return self.cell_corners() + (self.gap // 2 + self.jitter) + shift  # (B, 9, 2)


def crop(
    images: torch.Tensor,
    corners: torch.Tensor,
    tile: int,
    channel_shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut square tiles out of every image, in one indexing operation.

    Args:
        images: ``(B, C, H, W)``.
        corners: ``(B, K, 2)`` top-left ``(y, x)`` of each of the ``K`` tiles.
        tile: side of the tiles.
        channel_shift: optional ``(B, K, C, 2)`` extra offset per colour channel (CFN's colour
            jitter); shifted crops are clamped to stay inside the image.

    Returns:
        ``(B, K, C, tile, tile)`` tiles.
    """
    b, c, h, w = images.shape
    k = corners.shape[1]
    corners = corners.to(images.device)
    start = corners[:, :, None, :].expand(b, k, c, 2)  # (B, K, C, 2)
    if channel_shift is not None:
        start = start + channel_shift.to(images.device)
        limit = torch.tensor([h - tile, w - tile], device=images.device)
        start = torch.minimum(start.clamp(min=0), limit)
    if (start < 0).any() or (start[..., 0] > h - tile).any() or (start[..., 1] > w - tile).any():
        raise ValueError(
            f"a {tile}-px tile would leave the {h}x{w} image: check the corners (a Grid's "
            "tile_corners always fit an image of its size; upsample the images to Grid.size first)"
        )
    offsets = torch.arange(tile, device=images.device)
    rows = (start[..., 0, None] + offsets)[..., :, None]  # (B, K, C, t, 1)
    cols = (start[..., 1, None] + offsets)[..., None, :]  # (B, K, C, 1, t)
    batch = torch.arange(b, device=images.device)[:, None, None, None, None]
    channel = torch.arange(c, device=images.device)[None, None, :, None, None]
    return images[batch, channel, rows, cols]  # (B, K, C, t, t)


def normalize_per_tile(tiles: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Standardise every tile on its own (all its pixels and channels), then re-centre on grey.

    Without this, overall brightness and contrast would tell which tiles belong together. The
    result has mean 0.5 and standard deviation 0.2 per tile, so it still plots as an image.

    Args:
        tiles: ``(..., C, h, w)``.
    """
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    std = tiles.std(dim=(-3, -2, -1), keepdim=True)
    return 0.5 + 0.2 * (tiles - mean) / (std + eps)


def defend_colour(
    tiles: torch.Tensor,
    generator: torch.Generator | None = None,
    mode: str = "drop",
    gray_probability: float = 0.3,
) -> torch.Tensor:
    """Take colour away as a cue, one of four ways.

    - ``"keep"``: nothing (the shortcut stays open).
    - ``"drop"``: keep one random channel per tile; the other two become grey plus faint Gaussian
      noise (1/100 of the kept channel's spread), as in Doersch et al.
    - ``"project"``: remove the green-magenta component of every pixel, the axis along which
      chromatic aberration shifts colours (Doersch et al.'s alternative).
    - ``"gray"``: turn a tile to grayscale with probability ``gray_probability`` (CFN).

    Args:
        tiles: ``(B, K, C, h, w)`` tiles (3 channels for anything but ``"keep"``).
        generator: source of randomness.
        mode: one of :data:`COLOUR_MODES`.
        gray_probability: used by ``"gray"``.

    Returns:
        ``(B, K, C, h, w)`` tiles.
    """
    if mode not in COLOUR_MODES:
        raise ValueError(f"unknown colour mode {mode!r}; choose one of {COLOUR_MODES}")
    if mode == "keep" or tiles.shape[2] == 1:
        return tiles
    if tiles.shape[2] != 3:
        raise ValueError(f"colour defences need RGB tiles, got {tiles.shape[2]} channels")
    b, k = tiles.shape[:2]
    if mode == "project":
        axis = GREEN_MAGENTA.to(tiles.device).view(1, 1, 3, 1, 1)
        return tiles - (tiles * axis).sum(2, keepdim=True) * axis
    if mode == "gray":
        gray = tiles.mean(2, keepdim=True).expand_as(tiles)
        pick = torch.rand(b, k, generator=generator).to(tiles.device) < gray_probability
        return torch.where(pick[..., None, None, None], gray, tiles)
    kept = torch.randint(0, 3, (b, k), generator=generator).to(tiles.device)
    keep = F.one_hot(kept, 3).bool()[..., None, None]  # (B, K, 3, 1, 1)
    spread = tiles.std(dim=(-3, -2, -1), keepdim=True)  # (B, K, 1, 1, 1)
    noise = torch.randn(tiles.shape, generator=generator).to(tiles.device)
    return torch.where(keep, tiles, 0.5 + 0.01 * spread * noise)


def channel_jitter(
    batch: int, tiles: int, channels: int, amount: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random per-channel shifts of up to ``amount`` pixels, ``(batch, tiles, channels, 2)``:
    CFN's colour jitter, which blurs the colour fringes that chromatic aberration leaves."""
    return torch.randint(-amount, amount + 1, (batch, tiles, channels, 2), generator=generator)


PIXELATED_PIXELS = 100  # Doersch et al. shrink some patches "to as little as 100 total pixels"


def pixelate(
    tiles: torch.Tensor, generator: torch.Generator | None = None, probability: float = 0.0
) -> torch.Tensor:
    """Shrink each tile, with ``probability``, to about :data:`PIXELATED_PIXELS` pixels and blow
    it up again (Doersch et al. 2015's defence: a network that cannot rely on fine detail, and
    on the colour fringes it carries, must use coarser structure).

    Args:
        tiles: ``(B, K, C, t, t)``.
        generator: source of randomness (not drawn from when ``probability`` is 0).
        probability: share of tiles pixelated.

    Returns:
        ``(B, K, C, t, t)`` tiles.
    """
    if probability <= 0:
        return tiles
    b, k, c, t, _ = tiles.shape
    side = max(2, min(t, round(PIXELATED_PIXELS**0.5)))
    flat = tiles.reshape(b * k, c, t, t)
    small = F.interpolate(flat, size=(side, side), mode="area")
    coarse = F.interpolate(small, size=(t, t), mode="bilinear", align_corners=False)
    pick = torch.rand(b, k, generator=generator).to(tiles.device) < probability  # (B, K)
    return torch.where(pick[..., None, None, None], coarse.view_as(tiles), tiles)
