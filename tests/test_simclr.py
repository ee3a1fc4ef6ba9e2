import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

import sslbook as sb
from sslbook import augment
from sslbook.pretext import simclr

from .conftest import assert_seeded, losses_on_a_fixed_batch

#: Views that are the whole image, unchanged in colour: each view is the image or its mirror.
PLAIN = augment.ViewPipeline(min_scale=1.0, min_ratio=1.0, jitter_probability=0.0,
                             grayscale_probability=0.0)  # fmt: skip


def _images(b=4, size=32, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- the views ---------------------------------------------------------------------------------


def test_views_are_seeded_and_each_partner_is_the_other_view_of_its_image():
    images = _images(6)
    views, partners = assert_seeded(simclr.make_pretext_batch, images)
    assert views.shape == (12, 3, 32, 32)
    assert partners.tolist() == [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]
    assert torch.equal(partners[partners], torch.arange(12))  # partner of the partner: itself
    assert 0 <= views.min() and views.max() <= 1


def test_every_view_comes_from_its_own_image():
    images = _images(8)
    views, _ = simclr.make_pretext_batch(images, torch.Generator().manual_seed(0), PLAIN)
    for i, view in enumerate(views):
        image = images[i % 8]
        assert torch.allclose(view, image, atol=1e-6) or torch.allclose(view, image.flip(-1),
                                                                        atol=1e-6)  # fmt: skip


def test_crop_and_resize_is_exact_for_the_whole_image_its_mirror_and_a_quarter():
    images = _images()
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).repeat(4, 1)
    assert torch.allclose(augment.crop_and_resize(images, whole), images, atol=1e-6)
    mirrored = augment.crop_and_resize(images, whole, torch.ones(4, dtype=torch.bool))
    assert torch.allclose(mirrored, images.flip(-1), atol=1e-6)
    quarter = torch.tensor([[0.25, 0.25, 0.5, 0.5]]).repeat(4, 1)  # the top-left 16x16 pixels
    crop = augment.crop_and_resize(images, quarter)
    upsampled = F.interpolate(images[..., :16, :16], size=32, mode="bilinear", align_corners=False)
    assert torch.allclose(crop[..., 1:-1, 1:-1], upsampled[..., 1:-1, 1:-1], atol=1e-5)


def test_crop_boxes_stay_inside_the_image_with_the_asked_areas():
    boxes = augment.crop_boxes(5000, torch.Generator().manual_seed(0), (0.08, 1.0), (3 / 4, 4 / 3))
    cx, cy, w, h = boxes.unbind(1)
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    area = w * h
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    assert 0.45 < area.mean() < 0.6  # uniform in [0.08, 1], a little less where boxes were shrunk


@pytest.mark.parametrize(
    ("ours", "theirs", "values"),
    [
        (augment.adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.9]),
        (augment.adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.2]),
        (augment.adjust_saturation, TF.adjust_saturation, [0.6, 1.0, 1.4, 0.0]),
        (augment.adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.1, 0.45]),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_batched_colour_changes_match_torchvision_image_by_image(ours, theirs, values):
    images = _images()
    batched = ours(images, torch.tensor(values))
    one_by_one = torch.stack([theirs(x, v) for x, v in zip(images, values, strict=True)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_grayscale_matches_torchvision_and_is_applied_at_the_asked_rate():
    images = _images(400)
    assert torch.allclose(augment.grayscale(images), TF.rgb_to_grayscale(images), atol=1e-6)
    grey = augment.random_grayscale(images, torch.Generator().manual_seed(0), probability=0.2)
    is_grey = (grey[:, 0] == grey[:, 1]).flatten(1).all(1) & (grey[:, 1] == grey[:, 2]).flatten(
        1
    ).all(1)
    assert 0.12 < is_grey.float().mean() < 0.28


def test_colour_jitter_changes_colours_only_when_asked():
    images = _images(64)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment.colour_jitter(images, g, strength=0.0), images)
    assert torch.equal(augment.colour_jitter(images, g, probability=0.0), images)
    jittered = augment.colour_jitter(images, g, strength=0.5, probability=0.8)
    changed = (jittered - images).abs().flatten(1).amax(1) > 1e-4
    assert 0.6 < changed.float().mean() <= 0.95  # about 80 % of the images


def test_pipeline_settings_are_checked():
    with pytest.raises(ValueError, match="min_scale"):
        augment.ViewPipeline(min_scale=0.0)
    with pytest.raises(ValueError, match="probability"):
        augment.ViewPipeline(grayscale_probability=1.5)
    with pytest.raises(ValueError, match="temperature"):
        simclr.Settings(temperature=0.0)


# --- NT-Xent -----------------------------------------------------------------------------------


def nt_xent_by_hand(z: torch.Tensor, partners: torch.Tensor, temperature: float) -> float:
    """Eq. 1 of the paper, one view at a time, with Python loops: the reference."""
    z = F.normalize(z.double(), dim=1)
    losses = []
    for i in range(len(z)):
        sims = [float(z[i] @ z[k]) / temperature for k in range(len(z))]
        denominator = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        losses.append(-math.log(math.exp(sims[int(partners[i])]) / denominator))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_the_formula_written_out(temperature):
    z = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))
    partners = torch.tensor([5, 6, 7, 8, 9, 0, 1, 2, 3, 4])
    ours = simclr.nt_xent(z, partners, temperature).item()
    assert ours == pytest.approx(nt_xent_by_hand(z, partners, temperature), rel=1e-5)


def test_nt_xent_is_symmetric_in_the_two_views_and_follows_the_partners():
    g = torch.Generator().manual_seed(1)
    first, second = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    partners = torch.cat([torch.arange(6) + 6, torch.arange(6)])
    a = simclr.nt_xent(torch.cat([first, second]), partners)
    b = simclr.nt_xent(torch.cat([second, first]), partners)  # the two views swapped
    assert torch.allclose(a, b)
    shuffle = torch.randperm(12, generator=g)  # the same pairs, in another order
    where = torch.empty_like(shuffle)
    where[shuffle] = torch.arange(12)  # where[i]: the new position of view i
    shuffled = simclr.nt_xent(torch.cat([first, second])[shuffle], where[partners[shuffle]])
    assert torch.allclose(a, shuffled, atol=1e-6)
    wrong = torch.roll(partners, 1)  # every view paired with a stranger
    assert simclr.nt_xent(torch.cat([first, second]), wrong) != pytest.approx(a.item())


def test_nt_xent_is_low_when_partners_agree_and_strangers_differ():
    basis = torch.eye(8)[:4]  # four orthogonal directions, one per image
    z = torch.cat([basis, basis])  # both views of an image map to its direction
    partners = torch.cat([torch.arange(4) + 4, torch.arange(4)])
    assert simclr.partner_accuracy(z, partners) == 1.0
    low = simclr.nt_xent(z, partners, temperature=0.1)
    assert low < 1e-3
    assert simclr.nt_xent(torch.randn(8, 8), partners, 0.1) > low


def test_nt_xent_agrees_with_lightly():
    lightly_loss = pytest.importorskip("lightly.loss")
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    partners = torch.cat([torch.arange(16) + 16, torch.arange(16)])
    for temperature in (0.1, 0.5):
        theirs = lightly_loss.NTXentLoss(temperature=temperature)(first, second)
        ours = simclr.nt_xent(torch.cat([first, second]), partners, temperature)
        assert torch.allclose(ours, theirs, atol=1e-5)


# --- the colour shortcut, the model and its training -------------------------------------------


def test_colour_histograms_are_frequencies_and_copies_match_perfectly():
    images = _images(6)
    hist = simclr.colour_histograms(images, bins=4)
    assert hist.shape == (6, 64) and torch.allclose(hist.sum(1), torch.ones(6))
    partners = torch.cat([torch.arange(6) + 6, torch.arange(6)])
    views = torch.cat([images, images.flip(-1)])  # a mirror has the same colours
    assert simclr.histogram_partner_accuracy(views, partners) == 1.0


def test_the_model_embeds_and_its_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    plan = simclr.recipe(sb.get_profile("smoke"), seed=0, data=_uint8_images(64))
    model = plan.model
    images = _images(16, size=16)  # small: a few steps on one CPU core take seconds
    views, partners = plan.task.make_pretext_batch(images, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = losses_on_a_fixed_batch(model, plan.task.loss, views, partners, optimizer)
    assert losses[-1] < losses[0]
    h, z = simclr.embed(model, _uint8_images(5).images)
    assert h.shape == (5, model.backbone.feature_dim) and z.shape == (5, 128)


def _uint8_images(n):
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(n),
                           dtype=torch.uint8)  # fmt: skip
    return sb.ImageSet(images, torch.arange(n) % 10, tuple(str(i) for i in range(10)))


def test_recipe_switches_colour_off_and_keeps_every_setting_in_the_task():
    data = _uint8_images(64)
    plan = simclr.recipe(sb.get_profile("smoke"), seed=0, data=data, **simclr.NO_COLOUR)
    assert plan.augment is None  # the views make their own crops: the loop's are off
    pipeline = plan.settings.pipeline()
    assert pipeline.jitter_probability == 0 and pipeline.grayscale_probability == 0
    images = _images(16)
    views, _ = plan.task.make_pretext_batch(images, torch.Generator().manual_seed(0))
    # without colour changes every view is a crop of its image: its colours stay in range
    assert views.amax() <= images.amax() + 1e-6
    assert plan.model.head[-1].out_features == 128
