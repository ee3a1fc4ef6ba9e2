"""A tiny procedural renderer: random 3D scenes with exact depth, normals and edges.

Ren & Lee (2018, arXiv 1711.09082) trained on renders of synthetic indoor scenes (SUNCG and
SceneNet), whose every pixel comes with its true depth, surface normal and object contour for
free. SUNCG is no longer distributed, so this module makes such scenes itself, from nothing but
random numbers: a ground plane, a back wall, a few spheres and boxes, each with a procedural
texture (checker, stripes or smooth noise) or, if asked, a photograph pasted on it like wallpaper,
lit by one directional light with Lambertian shading, ambient light and hard shadows, and seen by a
pinhole camera that casts one ray per pixel. Photographs on the surfaces bring the colours and
textures of real images into the renders while the geometry stays exact: a cheap way to narrow
the gap between the two domains (Ren & Lee's renders were textured with real materials too).

Everything is batched tensor algebra over ``(scenes, pixels, objects)``: no Python loop touches a
pixel, so thousands of 32x32 scenes render in about a second on a CPU. The scene parameters come
from one ``torch.Generator``: the same seed gives the same scenes.

Coordinates: the camera sits at the origin looking along ``+z`` (``y`` up, ``x`` right), tilted
down by each scene's ``pitch``. Depth is the distance along the pixel's ray to the first surface it
hits (the camera is at the origin, so it is the distance of that point from the camera). Normals
are unit vectors in the camera's frame, pointing out of the surface, towards the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

#: Object ids in the id map: ground 0, wall 1, then the spheres, then the boxes.
GROUND, WALL = 0, 1
#: Procedural textures, by index in :attr:`Scenes.texture`.
TEXTURES = ("checker", "stripes", "noise")
#: Horizontal and vertical field of view of the camera (radians).
FIELD_OF_VIEW = math.radians(60)
#: Sine waves summed by the noise texture.
NOISE_WAVES = 4
#: Side, in scene units, of the square one photograph covers on a surface (it repeats beyond).
PHOTO_SPAN = 4.0
#: Relative depth change between neighbouring pixels that counts as an edge.
DEPTH_JUMP = 0.5
_EPS = 1e-4


@dataclass(frozen=True)
class Scenes:
    """Parameters of ``B`` scenes with up to ``S`` spheres and ``K`` boxes each.

    Surfaces are indexed ``0`` ground, ``1`` wall, ``2 .. 2+S-1`` spheres, ``2+S ..`` boxes; the
    material tensors have one row per surface (``M = 2 + S + K``).

    Attributes:
        sphere_center: ``(B, S, 3)``. sphere_radius: ``(B, S)``. sphere_present: ``(B, S)`` bool.
        box_center: ``(B, K, 3)``. box_half: ``(B, K, 3)`` half side lengths.
        box_yaw: ``(B, K)`` rotation about the vertical axis. box_present: ``(B, K)`` bool.
        ground_height: ``(B,)`` the ground is the plane ``y = -ground_height``.
        wall_distance: ``(B,)`` the wall is the plane ``z = wall_distance``.
        pitch: ``(B,)`` camera tilt (radians, negative looks down).
        light: ``(B, 3)`` unit vector towards the light. ambient: ``(B,)`` in [0, 1].
        texture: ``(B, M)`` index into :data:`TEXTURES`. color_a, color_b: ``(B, M, 3)``.
        frequency: ``(B, M, NOISE_WAVES, 3)`` spatial frequencies of the pattern.
        phase: ``(B, M, NOISE_WAVES)``.
        photo: ``(B, M)`` int64, the photograph pasted on each surface instead of its procedural
            texture (an index into the ``photos`` given to :func:`render`), or -1 for none.
    """

    sphere_center: torch.Tensor
    sphere_radius: torch.Tensor
    sphere_present: torch.Tensor
    box_center: torch.Tensor
    box_half: torch.Tensor
    box_yaw: torch.Tensor
    box_present: torch.Tensor
    ground_height: torch.Tensor
    wall_distance: torch.Tensor
    pitch: torch.Tensor
    light: torch.Tensor
    ambient: torch.Tensor
    texture: torch.Tensor
    color_a: torch.Tensor
    color_b: torch.Tensor
    frequency: torch.Tensor
    phase: torch.Tensor
    photo: torch.Tensor

    def __len__(self) -> int:
        return len(self.pitch)

    def __getitem__(self, index: slice | torch.Tensor) -> Scenes:
        """A subset of the scenes (every field indexed along its first axis)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class Renders:
    """What the renderer returns for ``B`` scenes of ``H x W`` pixels.

    Attributes:
        images: ``(B, 3, H, W)`` RGB in [0, 1].
        depth: ``(B, 1, H, W)`` distance from the camera, > 0.
        normals: ``(B, 3, H, W)`` unit surface normals in the camera frame.
        edges: ``(B, 1, H, W)`` 1.0 where the object id or the depth jumps to a neighbour, else 0.
        ids: ``(B, 1, H, W)`` int64, the surface each pixel sees (see :class:`Scenes`).
    """

    images: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    edges: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def sample_scenes(
    n: int,
    generator: torch.Generator | None = None,
    spheres: int = 2,
    boxes: int = 2,
    photos: int = 0,
    photo_probability: float = 0.0,
) -> Scenes:
    """Draw ``n`` random scenes: objects rest on the ground in front of the wall, in view.

    Each sphere and box is present with probability 3/4; the light comes from above, on the
    camera's side; colours are drawn per surface, two per texture. With ``photos`` > 0, each
    surface shows one of that many photographs with probability ``photo_probability`` (drawn
    last, so the rest of the scenes are those of the same seed without photographs).
    """
    if not 0 <= photo_probability <= 1:
        raise ValueError(f"photo_probability must be in [0, 1], got {photo_probability}")
    if photo_probability > 0 and photos < 1:
        raise ValueError("photo_probability > 0 needs photographs: pass photos >= 1")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    ground = _uniform(g, 0.7, 1.6, n)  # camera height above the ground
    wall = _uniform(g, 6.0, 11.0, n)
    depth_room = wall[:, None] - 4.0  # objects stand between z = 2.5 and 1.5 before the wall
    sz = 2.5 + depth_room * torch.rand(n, spheres, generator=g)
    radius = _uniform(g, 0.35, 1.0, n, spheres)
    sx = _uniform(g, -0.45, 0.45, n, spheres) * sz
    sphere_center = torch.stack([sx, radius - ground[:, None], sz], dim=-1)
    half = _uniform(g, 0.25, 0.8, n, boxes, 3)
    bz = 2.5 + depth_room * torch.rand(n, boxes, generator=g)
    bx = _uniform(g, -0.45, 0.45, n, boxes) * bz
    box_center = torch.stack([bx, half[..., 1] - ground[:, None], bz], dim=-1)
    elevation = _uniform(g, 0.35, 1.2, n)
    azimuth = _uniform(g, -1.2, 1.2, n)
    light = torch.stack(
        [elevation.cos() * azimuth.sin(), elevation.sin(), -elevation.cos() * azimuth.cos()], -1
    )
    m = 2 + spheres + boxes
    directions = F.normalize(torch.randn(n, m, NOISE_WAVES, 3, generator=g), dim=-1)
    return Scenes(
        sphere_center=sphere_center,
        sphere_radius=radius,
        sphere_present=torch.rand(n, spheres, generator=g) < 0.75,
        box_center=box_center,
        box_half=half,
        box_yaw=_uniform(g, 0.0, math.pi / 2, n, boxes),
        box_present=torch.rand(n, boxes, generator=g) < 0.75,
        ground_height=ground,
        wall_distance=wall,
        pitch=_uniform(g, -0.35, 0.05, n),
        light=light,
        ambient=_uniform(g, 0.15, 0.45, n),
        texture=torch.randint(len(TEXTURES), (n, m), generator=g),
        color_a=torch.rand(n, m, 3, generator=g),
        color_b=torch.rand(n, m, 3, generator=g),
        frequency=directions * _uniform(g, 1.5, 6.0, n, m, 1, 1),
        phase=_uniform(g, 0.0, 2 * math.pi, n, m, NOISE_WAVES),
        photo=_draw_photos(g, n, m, photos, photo_probability),
    )


def _draw_photos(g: torch.Generator, n: int, m: int, photos: int, probability: float):
    none = torch.full((n, m), -1, dtype=torch.long)
    if probability == 0:
        return none
    chosen = torch.rand(n, m, generator=g) < probability
    return torch.where(chosen, torch.randint(photos, (n, m), generator=g), none)


# --- rays and intersections: every function works on (B, P) rays and (B, N) objects ----------


def camera_rays(size: int, pitch: torch.Tensor) -> torch.Tensor:
    """Unit ray directions through every pixel centre, in world coordinates.

    Args:
        size: image side ``H = W``.
        pitch: ``(B,)`` camera tilt about the ``x`` axis.

    Returns:
        ``(B, H*W, 3)`` directions, row-major over pixels (row 0 is the top of the image).
    """
    half = math.tan(FIELD_OF_VIEW / 2)
    coords = ((torch.arange(size) + 0.5) / size * 2 - 1) * half  # (H,)
    v, u = torch.meshgrid(-coords, coords, indexing="ij")  # y up, x right
    rays = F.normalize(torch.stack([u, v, torch.ones_like(u)], -1).view(-1, 3), dim=-1)
    return rotate_x(rays.expand(len(pitch), -1, -1), pitch)  # (B, P, 3)


def rotate_x(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``(B, ..., 3)`` about the ``x`` axis by ``angle`` ``(B,)`` (positive: up)."""
    c, s = (t.view(-1, *[1] * (v.dim() - 2)) for t in (angle.cos(), angle.sin()))
    x, y, z = v.unbind(-1)
    return torch.stack([x, c * y + s * z, -s * y + c * z], -1)


def rotate_y(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``(..., 3)`` about the vertical axis by ``angle`` (broadcast to ``(...)``)."""
    c, s = angle.cos(), angle.sin()
    x, y, z = v.unbind(-1)
    x_new, z_new = c * x + s * z, -s * x + c * z
    return torch.stack([x_new, y.expand_as(x_new), z_new], -1)


def intersect_spheres(
    origins: torch.Tensor, rays: torch.Tensor, center: torch.Tensor, radius: torch.Tensor,
    present: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Nearest hit of each ray with each sphere.

    Args:
        origins, rays: ``(B, P, 3)`` ray origins and unit directions.
        center: ``(B, S, 3)``; radius, present: ``(B, S)``.

    Returns:
        distance ``(B, P, S)`` (``inf`` on a miss) and outward unit normals ``(B, P, S, 3)``.
    """
    oc = origins[:, :, None] - center[:, None]  # (B, P, S, 3)
    b = (rays[:, :, None] * oc).sum(-1)  # (B, P, S)
    disc = b * b - (oc * oc).sum(-1) + radius[:, None] ** 2
    t = -b - disc.clamp(min=0).sqrt()
    hit = (disc > 0) & (t > _EPS) & present[:, None]
    t = torch.where(hit, t, torch.inf)
    normals = (oc + t.clamp(max=1e6)[..., None] * rays[:, :, None]) / radius[:, None, :, None]
    return t, normals


def intersect_boxes(
    origins: torch.Tensor, rays: torch.Tensor, center: torch.Tensor, half: torch.Tensor,
    yaw: torch.Tensor, present: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Nearest hit of each ray with each box (the slab method, in the box's own frame).

    Args:
        origins, rays: ``(B, P, 3)``.
        center, half: ``(B, K, 3)``; yaw, present: ``(B, K)``.

    Returns:
        distance ``(B, P, K)`` (``inf`` on a miss) and outward unit normals ``(B, P, K, 3)``.
    """
    yaw = yaw[:, None]  # (B, 1, K), broadcast over the rays
    o = rotate_y(origins[:, :, None] - center[:, None], -yaw)  # (B, P, K, 3) box frame
    d = rotate_y(rays[:, :, None], -yaw)
    d = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t1, t2 = (-half[:, None] - o) / d, (half[:, None] - o) / d
    near_axes = torch.minimum(t1, t2)  # (B, P, K, 3)
    t_near, axis = near_axes.max(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    hit = (t_near <= t_far) & (t_near > _EPS) & present[:, None]
    t = torch.where(hit, t_near, torch.inf)
    local = -F.one_hot(axis, 3).to(d) * d.sign()  # the face the ray enters through
    return t, rotate_y(local, yaw)


def intersect_planes(
    rays: torch.Tensor, ground_height: torch.Tensor, wall_distance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera rays (from the origin) against the ground ``y = -h`` and the wall ``z = d``.

    Returns:
        distance ``(B, P, 2)`` (ground, wall; ``inf`` on a miss) and normals ``(B, P, 2, 3)``.
    """
    ground = -ground_height[:, None] / rays[..., 1]  # (B, P)
    wall = wall_distance[:, None] / rays[..., 2]
    t = torch.stack([ground, wall], -1)
    t = torch.where(t > _EPS, t, torch.inf)
    normals = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]).expand(*t.shape, 3)
    return t, normals


# --- shading -----------------------------------------------------------------------------------


def _gather(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per-surface values ``(B, M, ...)`` → per-pixel ``(B, P, ...)`` for ids ``(B, P)``."""
    index = ids.view(*ids.shape, *[1] * (values.dim() - 2)).expand(-1, -1, *values.shape[2:])
    return values.gather(1, index)


def local_position(scenes: Scenes, points: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Hit points ``(B, P, 3)`` in the frame of the surface they lie on, so textures stick to
    objects: planes keep world coordinates, spheres are centred, boxes centred and un-rotated."""
    zeros = torch.zeros(len(scenes), 2, 3)
    centers = torch.cat([zeros, scenes.sphere_center, scenes.box_center], 1)  # (B, M, 3)
    return rotate_y(points - _gather(centers, ids), -_surface_yaw(scenes, ids))


def _surface_yaw(scenes: Scenes, ids: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` rotation about the vertical of the surface each pixel sees (boxes only)."""
    b, s = len(scenes), scenes.sphere_center.shape[1]
    return _gather(torch.cat([torch.zeros(b, 2 + s), scenes.box_yaw], 1), ids)


def photo_texels(
    photos: torch.Tensor, photo: torch.Tensor, position: torch.Tensor, normals: torch.Tensor
) -> torch.Tensor:
    """The colour ``(B, P, 3)`` of photograph ``photo`` ``(B, P)`` (indices into ``photos``
    ``(N, 3, h, w)``, uint8 or float; -1 pixels get any photo's texel, to be discarded) at
    surface-frame ``position`` ``(B, P, 3)``.

    The photo is projected along the axis the surface faces (``normals``, in the surface's
    frame): a wall shows it upright, the ground lying flat, a box face by face; it covers
    :data:`PHOTO_SPAN` units, centred on the surface's origin (an object's centre), and repeats
    beyond, like wallpaper.
    """
    h, w = photos.shape[-2:]
    facing = normals.abs().argmax(-1)  # (B, P): 0 x, 1 y, 2 z
    other_axes = torch.tensor([[2, 1], [0, 2], [0, 1]])[facing]  # (B, P, 2): (u, v) axes
    uv = position.gather(-1, other_axes) / PHOTO_SPAN + 0.5  # centred on the surface's origin
    uv = uv - uv.floor()  # (B, P, 2) in [0, 1)
    column = (uv[..., 0] * w).long().clamp(max=w - 1)
    row = ((1 - uv[..., 1]) * h).long().clamp(0, h - 1)  # v up, image rows down
    texels = photos[photo.clamp(min=0), :, row, column]  # (B, P, 3)
    return texels.float() / 255 if photos.dtype == torch.uint8 else texels.float()


def albedo(scenes: Scenes, position: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Texture colour ``(B, P, 3)`` at surface-frame ``position`` ``(B, P, 3)``.

    ``checker``: 3D checkerboard; ``stripes``: the sign of one sine wave; ``noise``: a smooth sum
    of sine waves. Each mixes the surface's two colours.
    """
    freq, phase = _gather(scenes.frequency, ids), _gather(scenes.phase, ids)  # (B,P,N,3),(B,P,N)
    waves = torch.sin((freq * position[:, :, None]).sum(-1) + phase)  # (B, P, N)
    scale = freq[:, :, 0].norm(dim=-1, keepdim=True) / math.pi  # (B, P, 1) squares per unit
    checker = torch.floor(position * scale).sum(-1).remainder(2)  # (B, P)
    stripes = (waves[..., 0] > 0).float()
    noise = (0.5 + waves.mean(-1)).clamp(0, 1)
    mix = torch.stack([checker, stripes, noise], -1).gather(
        -1, _gather(scenes.texture, ids)[..., None]
    )
    a, b = _gather(scenes.color_a, ids), _gather(scenes.color_b, ids)
    return a + (b - a) * mix  # (B, P, 3)


def in_shadow(scenes: Scenes, points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` bool: whether a ray from each point towards the light hits a sphere or box."""
    origins = points + 1e-3 * normals
    light = scenes.light[:, None].expand_as(points)
    ts, _ = intersect_spheres(origins, light, scenes.sphere_center, scenes.sphere_radius,
                              scenes.sphere_present)  # fmt: skip
    tb, _ = intersect_boxes(origins, light, scenes.box_center, scenes.box_half, scenes.box_yaw,
                            scenes.box_present)  # fmt: skip
    return torch.cat([ts, tb], -1).isfinite().any(-1)


def edge_map(ids: torch.Tensor, depth: torch.Tensor, jump: float = DEPTH_JUMP) -> torch.Tensor:
    """1.0 at pixels whose right, left, upper or lower neighbour sees another surface, or lies
    at a depth more than ``jump`` (relative) away; ``ids``, ``depth``: ``(B, 1, H, W)``."""

    def differs(a: torch.Tensor, b: torch.Tensor, da: torch.Tensor, db: torch.Tensor):
        return (a != b) | ((da - db).abs() > jump * torch.minimum(da, db))

    edges = torch.zeros_like(depth, dtype=torch.bool)
    horizontal = differs(ids[..., :, 1:], ids[..., :, :-1], depth[..., :, 1:], depth[..., :, :-1])
    vertical = differs(ids[..., 1:, :], ids[..., :-1, :], depth[..., 1:, :], depth[..., :-1, :])
    edges[..., :, 1:] |= horizontal
    edges[..., :, :-1] |= horizontal
    edges[..., 1:, :] |= vertical
    edges[..., :-1, :] |= vertical
    return edges.float()


def render(
    scenes: Scenes, size: int = 32, shadows: bool = True, photos: torch.Tensor | None = None
) -> Renders:
    """Ray-cast every pixel of every scene at once.

    Args:
        scenes: ``B`` scenes (see :func:`sample_scenes`).
        size: image side in pixels.
        shadows: cast a second ray per pixel towards the light.
        photos: ``(N, 3, h, w)`` photographs (uint8, or float in [0, 1]) that
            ``scenes.photo`` indexes; needed when a surface shows one.

    Returns:
        :class:`Renders` with images, depth, normals, edges and ids, all ``(B, ., size, size)``.
    """
    b = len(scenes)
    rays = camera_rays(size, scenes.pitch)  # (B, P, 3) world frame
    origins = torch.zeros_like(rays)
    t_plane, n_plane = intersect_planes(rays, scenes.ground_height, scenes.wall_distance)
    t_sphere, n_sphere = intersect_spheres(origins, rays, scenes.sphere_center,
                                           scenes.sphere_radius, scenes.sphere_present)  # fmt: skip
    t_box, n_box = intersect_boxes(origins, rays, scenes.box_center, scenes.box_half,
                                   scenes.box_yaw, scenes.box_present)  # fmt: skip
    t_all = torch.cat([t_plane, t_sphere, t_box], -1)  # (B, P, M)
    depth, ids = t_all.min(-1)  # (B, P): nearest surface along each ray
    normals = torch.cat([n_plane, n_sphere, n_box], 2)  # (B, P, M, 3)
    normals = normals.gather(2, ids[..., None, None].expand(-1, -1, 1, 3)).squeeze(2)
    points = rays * depth[..., None]  # (B, P, 3)
    position = local_position(scenes, points, ids)
    color = albedo(scenes, position, ids)  # (B, P, 3)
    photo = _gather(scenes.photo, ids)  # (B, P)
    if (photo >= 0).any():
        if photos is None:
            raise ValueError("these scenes show photographs: pass them to render(photos=...)")
        local_normals = rotate_y(normals, -_surface_yaw(scenes, ids))
        texels = photo_texels(photos, photo, position, local_normals)
        color = torch.where(photo[..., None] >= 0, texels, color)
    lambert = (normals * scenes.light[:, None]).sum(-1).clamp(min=0)  # (B, P)
    if shadows:
        lambert = lambert * ~in_shadow(scenes, points, normals)
    ambient = scenes.ambient[:, None, None]
    image = color * (ambient + (1 - ambient) * lambert[..., None])  # (B, P, 3)

    def as_map(x: torch.Tensor) -> torch.Tensor:  # (B, P, C) -> (B, C, H, W)
        return x.view(b, size, size, -1).permute(0, 3, 1, 2).contiguous()

    camera_normals = rotate_x(normals, -scenes.pitch)  # world -> camera frame
    depth_map, id_map = as_map(depth[..., None]), as_map(ids[..., None])
    return Renders(
        images=as_map(image).clamp(0, 1),
        depth=depth_map,
        normals=as_map(camera_normals),
        edges=edge_map(id_map, depth_map),
        ids=id_map,
    )


def render_random(
    n: int,
    seed: int = 0,
    size: int = 32,
    chunk: int = 256,
    shadows: bool = True,
    photos: torch.Tensor | None = None,
    photo_probability: float = 0.0,
) -> Renders:
    """``n`` random scenes from ``seed``, rendered ``chunk`` at a time (bounded memory); with
    ``photos`` ``(N, 3, h, w)``, each surface shows one of them with ``photo_probability``.

    The same ``(n, seed)`` always gives the same renders, whatever ``chunk`` is.
    """
    count = 0 if photos is None else len(photos)
    scenes = sample_scenes(n, torch.Generator().manual_seed(seed), photos=count,
                           photo_probability=photo_probability)  # fmt: skip
    parts = [render(scenes[i : i + chunk], size, shadows, photos) for i in range(0, n, chunk)]
    return Renders(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Renders)))
