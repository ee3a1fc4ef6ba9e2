import math
from dataclasses import replace

import pytest
import torch

from sslbook import render


def empty_scene(size: int = 1) -> render.Scenes:
    """One scene whose spheres and boxes are all absent: ground and wall only, camera level."""
    scenes = render.sample_scenes(size, torch.Generator().manual_seed(0))
    return replace(
        scenes,
        sphere_present=torch.zeros_like(scenes.sphere_present),
        box_present=torch.zeros_like(scenes.box_present),
        pitch=torch.zeros(size),
    )


def one_sphere(z: float, radius: float) -> render.Scenes:
    """A level camera looking at one sphere centred on its axis, the wall far behind."""
    scenes = empty_scene()
    present = torch.zeros_like(scenes.sphere_present)
    present[0, 0] = True
    center = torch.zeros_like(scenes.sphere_center)
    center[0, 0] = torch.tensor([0.0, 0.0, z])
    return replace(
        scenes, sphere_present=present, sphere_center=center,
        sphere_radius=torch.full_like(scenes.sphere_radius, radius),
        wall_distance=torch.tensor([50.0]), ground_height=torch.tensor([5.0]),
    )  # fmt: skip


def test_shapes_ranges_and_unit_normals():
    r = render.render_random(20, seed=3, size=32)
    assert r.images.shape == (20, 3, 32, 32)
    assert r.depth.shape == r.edges.shape == r.ids.shape == (20, 1, 32, 32)
    assert r.normals.shape == (20, 3, 32, 32)
    assert r.images.min() >= 0 and r.images.max() <= 1
    assert (r.depth > 0).all() and r.depth.isfinite().all()
    assert torch.allclose(r.normals.norm(dim=1), torch.ones(20, 32, 32), atol=1e-4)
    assert set(r.edges.unique().tolist()) <= {0.0, 1.0}


def test_same_seed_same_scenes_whatever_the_chunk():
    a = render.render_random(30, seed=7, chunk=7)
    b = render.render_random(30, seed=7, chunk=256)
    assert torch.equal(a.images, b.images) and torch.equal(a.depth, b.depth)
    c = render.render_random(30, seed=8)
    assert not torch.equal(a.images, c.images)


def test_sphere_depth_at_the_centre_pixel_is_distance_minus_radius():
    r = render.render(one_sphere(z=5.0, radius=1.5), size=33)  # odd: a pixel on the axis
    assert r.ids[0, 0, 16, 16] == 2  # the first sphere
    assert math.isclose(r.depth[0, 0, 16, 16].item(), 5.0 - 1.5, rel_tol=1e-5)
    # facing the camera there: normal (0, 0, -1)
    assert torch.allclose(r.normals[0, :, 16, 16], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)


def test_ground_depth_follows_the_ray_plane_intersection():
    scenes = replace(empty_scene(), ground_height=torch.tensor([1.2]))
    r = render.render(scenes, size=32)
    rays = render.camera_rays(32, scenes.pitch)[0].view(32, 32, 3)
    on_ground = r.ids[0, 0] == render.GROUND
    assert on_ground[-1].all()  # the bottom row looks at the ground
    expected = -1.2 / rays[..., 1]  # t with y(t) = -h
    assert torch.allclose(r.depth[0, 0][on_ground], expected[on_ground], rtol=1e-5)
    assert torch.allclose(r.normals[0, :, -1, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    wall = r.ids[0, 0] == render.WALL
    expected_wall = scenes.wall_distance / rays[..., 2]
    assert torch.allclose(r.depth[0, 0][wall], expected_wall[wall], rtol=1e-5)


def test_box_face_depth_and_normal():
    scenes = empty_scene()
    present = torch.zeros_like(scenes.box_present)
    present[0, 0] = True
    center = torch.zeros_like(scenes.box_center)
    center[0, 0] = torch.tensor([0.0, 0.0, 4.0])
    scenes = replace(
        scenes, box_present=present, box_center=center, box_yaw=torch.zeros_like(scenes.box_yaw),
        box_half=torch.full_like(scenes.box_half, 0.5), wall_distance=torch.tensor([50.0]),
        ground_height=torch.tensor([5.0]),
    )  # fmt: skip
    r = render.render(scenes, size=33)
    assert math.isclose(r.depth[0, 0, 16, 16].item(), 3.5, rel_tol=1e-5)  # front face at z=3.5
    assert torch.allclose(r.normals[0, :, 16, 16], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)


def test_edges_lie_where_depth_jumps():
    r = render.render(one_sphere(z=5.0, radius=1.5), size=33)
    sphere = r.ids[0, 0] == 2
    row = 16
    inside = sphere[row].nonzero().flatten()
    left, right = inside.min().item(), inside.max().item()
    # the silhouette: the sphere's outermost pixels and their background neighbours
    for col in (left - 1, left, right, right + 1):
        assert r.edges[0, 0, row, col] == 1
    jump = (r.depth[0, 0, row, left] - r.depth[0, 0, row, left - 1]).abs()
    assert jump > 10  # from the sphere to the far wall
    assert r.edges[0, 0, row, 16] == 0  # smooth surface in the middle
    assert r.edges[0, 0, 0, 5] == 0  # plain wall


def test_shadows_darken_the_ground_under_a_sphere():
    scenes = one_sphere(z=5.0, radius=1.0)  # centred at y = 0
    from_the_right = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0]]), dim=-1)
    scenes = replace(scenes, ground_height=torch.tensor([1.0]), light=from_the_right)
    lit = render.render(scenes, size=33, shadows=False)
    shaded = render.render(scenes, size=33, shadows=True)
    assert (shaded.images <= lit.images + 1e-6).all()
    darker = (shaded.images < lit.images - 1e-3).any(1)[0]  # (H, W)
    assert darker.any()
    assert (shaded.ids[0, 0][darker] == render.GROUND).all()  # cast on the ground
    assert darker.nonzero()[:, 1].float().mean() < 16  # to the left, away from the light


def test_photographs_replace_textures_and_leave_the_geometry_alone():
    photos = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = render.render_random(16, seed=4, size=24)
    pasted = render.render_random(16, seed=4, size=24, photos=photos, photo_probability=1.0)
    for name in ("depth", "normals", "edges", "ids"):
        assert torch.equal(getattr(plain, name), getattr(pasted, name))
    assert not torch.allclose(plain.images, pasted.images)
    none = render.render_random(16, seed=4, size=24, photos=photos, photo_probability=0.0)
    assert torch.equal(plain.images, none.images)


def test_a_lit_wall_shows_its_photograph_upright():
    # A level camera facing an empty room: the wall fills the upper half of the image. A photo
    # that is red on top and blue below must appear red above blue, whatever the shading.
    photo = torch.zeros(1, 3, 8, 8)
    photo[0, 0, :4], photo[0, 2, 4:] = 1.0, 1.0
    room = {"wall_distance": torch.tensor([2.0]), "ground_height": torch.tensor([50.0])}
    scenes = replace(empty_scene(), photo=torch.zeros(1, 4, dtype=torch.long), **room)
    image = render.render(scenes, size=32, shadows=False, photos=photo).images[0]
    red, blue = image[0] > image[2], image[2] > image[0]  # (32, 32) each
    assert red[:15].all() and blue[17:].all()


def test_scenes_with_photographs_need_them():
    scenes = replace(empty_scene(), photo=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="photos"):
        render.render(scenes, size=8)
    with pytest.raises(ValueError, match="photos >= 1"):
        render.sample_scenes(2, photo_probability=0.5)
