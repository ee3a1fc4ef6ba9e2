import math

import pytest
import torch

import sslbook as sb
from sslbook.models import CIFAR10_MEAN
from sslbook.pretext import inpainting, mim

from .conftest import losses_on_a_fixed_batch


def _images(b=4, size=32, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("patch_size", "ratio"), [(4, 0.6), (4, 0.75), (8, 0.5), (2, 0.3)])
def test_masks_hide_exactly_the_asked_share_of_whole_patches(patch_size, ratio):
    masks = mim.patch_masks(16, 32, patch_size, ratio, torch.Generator().manual_seed(0))
    assert masks.shape == (16, 32, 32) and masks.dtype == torch.bool
    side = 32 // patch_size
    hidden = math.ceil(ratio * side * side)
    assert (masks.flatten(1).sum(1) == hidden * patch_size**2).all()  # the same count each
    patches = masks.view(16, side, patch_size, side, patch_size)
    assert (patches.all(dim=(2, 4)) == patches.any(dim=(2, 4))).all()  # whole patches only
    assert not torch.equal(masks[0], masks[1])  # a new draw for every image


def test_masks_are_seeded_and_need_patches_that_tile_the_image():
    a = mim.patch_masks(4, 32, generator=torch.Generator().manual_seed(1))
    b = mim.patch_masks(4, 32, generator=torch.Generator().manual_seed(1))
    c = mim.patch_masks(4, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="divide"):
        mim.patch_masks(4, 32, patch_size=5)


def test_pretext_batch_hides_patches_with_the_mean_colour_and_keeps_the_rest():
    images = _images()
    g = torch.Generator().manual_seed(0)
    inputs, targets = mim.make_pretext_batch(images, g)
    assert inputs.shape == images.shape and targets.masks.shape == (4, 1, 32, 32)
    assert torch.equal(targets.originals, images)
    hidden = targets.masks.bool().expand_as(images)
    assert torch.equal(inputs[~hidden], images[~hidden])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1).expand_as(images)
    assert torch.allclose(inputs[hidden], mean[hidden])
    assert targets.masks.mean().item() == pytest.approx(math.ceil(0.6 * 64) / 64)
    again, again_targets = mim.make_pretext_batch(images, torch.Generator().manual_seed(0))
    assert torch.equal(inputs, again) and torch.equal(targets.masks, again_targets.masks)


def test_only_hidden_patches_are_scored():
    images = _images()
    _, targets = mim.make_pretext_batch(images, torch.Generator().manual_seed(0))
    hidden = targets.masks.bool().expand_as(images)
    wrong_where_visible = torch.where(hidden, images, 1 - images)
    assert mim.loss(wrong_where_visible, targets) == 0  # errors on visible pixels do not count
    assert mim.loss(wrong_where_visible, targets, score_visible=True) > 0
    wrong_where_hidden = torch.where(hidden, 1 - images, images)
    expected = (wrong_where_hidden - images).abs()[hidden].mean()
    assert torch.allclose(mim.loss(wrong_where_hidden, targets), expected)


def test_masked_psnr_and_the_reconstruction_keep_the_visible_pixels():
    images = _images()
    _, targets = mim.make_pretext_batch(images, torch.Generator().manual_seed(0))
    hidden = targets.masks.bool().expand_as(images)
    off = torch.where(hidden, images + 0.1, images).clamp(0, 1)
    mse = (off - images)[hidden].pow(2).mean()
    assert mim.masked_psnr(off, targets) == pytest.approx(-10 * math.log10(mse), rel=1e-4)
    shown = mim.reconstruct(torch.zeros_like(images), targets)
    assert torch.equal(shown[~hidden], images[~hidden]) and (shown[hidden] == 0).all()
    assert isinstance(targets, inpainting.HoleTargets)  # the inpainting chapter's targets


@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("decoder", mim.DECODERS)
def test_model_predicts_full_images_for_either_stem_and_head(stem_stride, decoder):
    backbone = sb.build_backbone(width=8, depth=1, stem_stride=stem_stride, seed=0)
    head = mim.build_head(backbone.feature_dim, 3, backbone.stride, decoder)
    model = mim.MaskedImageModel(backbone, head)
    assert model(_images(2)).shape == (2, 3, 32, 32)
    if decoder == "linear":
        assert isinstance(head, mim.PixelShuffleHead)
        assert head.project.out_channels == 3 * backbone.stride**2
    assert model.config()["head"] in ("PixelShuffleHead", "Decoder")


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    model = mim.MaskedImageModel(backbone, mim.build_head(backbone.feature_dim, 3, 4))
    inputs, targets = mim.make_pretext_batch(_images(8), torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = losses_on_a_fixed_batch(model, mim.loss, inputs, targets, optimizer)
    assert losses[-1] < losses[0]


def test_settings_are_checked_and_the_recipe_fits_the_backbone():
    with pytest.raises(ValueError, match="mask_ratio"):
        mim.Settings(mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder"):
        mim.Settings(decoder="transformer")
    data = sb.ImageSet(torch.zeros(64, 3, 32, 32, dtype=torch.uint8), torch.zeros(64).long(),
                       ("x",))  # fmt: skip
    profile = sb.get_profile("smoke", stem_stride=2)
    plan = mim.recipe(profile, 0, data=data, decoder="deep")
    assert plan.config.optimizer == "adam"
    assert plan.augment is sb.transforms.random_crop_flip  # as for the inpainting chapter
    assert plan.model(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
