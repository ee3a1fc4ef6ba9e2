import pytest
import torch

from sslbook.decoders import EncoderDecoder
from sslbook.models import CIFAR10_MEAN, build_backbone
from sslbook.pretext import inpainting


def _images(b=4, c=3, size=32, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_central_mask_is_the_centred_half():
    mask = inpainting.central_mask(32)
    assert mask.shape == (32, 32) and mask.dtype == torch.bool
    assert mask.sum() == 16 * 16
    assert mask[8:24, 8:24].all() and not mask[:8].any() and not mask[:, 24:].any()


def test_square_mask_that_does_not_fit_is_a_clear_error():
    assert inpainting.square_mask(32, 0, 20, 12).sum() == 144
    with pytest.raises(ValueError, match="does not fit"):
        inpainting.square_mask(32, 0, 24, 12)


def test_random_block_masks_are_seeded_and_bounded():
    a = inpainting.random_block_masks(8, 32, torch.Generator().manual_seed(1))
    b = inpainting.random_block_masks(8, 32, torch.Generator().manual_seed(1))
    c = inpainting.random_block_masks(8, 32, torch.Generator().manual_seed(2))
    assert a.shape == (8, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    holes = a.flatten(1).sum(1)
    assert (holes >= 64).all() and (holes <= 4 * 64).all()  # 4 blocks of 8x8, maybe overlapping


@pytest.mark.parametrize("kind", inpainting.MASK_KINDS)
def test_pretext_batch_fills_holes_with_the_mean_and_keeps_the_context(kind):
    images = _images()
    g = torch.Generator().manual_seed(0)
    inputs, targets = inpainting.make_pretext_batch(images, g, kind=kind)
    assert inputs.shape == images.shape and targets.masks.shape == (4, 1, 32, 32)
    originals, masks = targets.originals, targets.masks
    assert torch.equal(originals, images)
    hole = masks.bool().expand_as(images)
    assert torch.equal(inputs[~hole], images[~hole])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1).expand_as(images)
    assert torch.allclose(inputs[hole], mean[hole])
    if kind == "central":  # the default: a quarter of the image, in its middle
        assert torch.equal(masks[0, 0], inpainting.central_mask(32).float())


def test_central_kind_is_deterministic_and_unknown_kind_is_an_error():
    images = _images()
    a, _ = inpainting.make_pretext_batch(images, None, kind="central")
    b, _ = inpainting.make_pretext_batch(images, torch.Generator().manual_seed(5), kind="central")
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="central"):
        inpainting.make_pretext_batch(images, None, kind="ring")


def test_loss_weights_raise_the_border_only():
    mask = inpainting.central_mask(32)[None, None].float()
    w = inpainting.loss_weights(mask, overlap=2, overlap_weight=10.0)
    assert w[0, 0, 16, 16] == 1.0  # hole
    assert w[0, 0, 6, 16] == 10.0 and w[0, 0, 7, 7] == 10.0  # border (incl. corners)
    assert w[0, 0, 5, 16] == 0.0 and w[0, 0, 0, 0] == 0.0  # far context
    assert (w == 10.0).sum() == 20 * 20 - 16 * 16


def test_loss_ignores_the_far_context_and_is_zero_for_a_perfect_fill():
    images = _images()
    inputs, targets = inpainting.make_pretext_batch(images, None, kind="central")
    assert inpainting.loss(images, targets) == 0
    garbage_outside = images.clone()
    garbage_outside[..., :4, :] = 0.0  # rows far from the central hole
    assert inpainting.loss(garbage_outside, targets) == 0
    assert inpainting.loss(inputs, targets) > 0
    filled = inpainting.fill_hole(torch.zeros_like(images), targets)
    assert torch.equal(filled[..., :8, :], images[..., :8, :]) and (filled[..., 12, 12] == 0).all()


@pytest.mark.parametrize("spatial", [None, 8])  # without and with the channel-wise FC layer
def test_encoder_decoder_output_shape_and_starts_as_identity(spatial):
    backbone = build_backbone(8, 1, seed=0)
    head = inpainting.build_head(backbone.feature_dim, spatial=spatial)
    model = EncoderDecoder(backbone, head).eval()
    x = _images()
    y = model(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x)  # zero-initialised output layer: learning starts from the input


def test_decoder_for_another_map_size_says_what_to_do():
    head = inpainting.build_head(32, spatial=8)
    with pytest.raises(ValueError, match="spatial="):
        head(torch.zeros(2, 32, 4, 4))
