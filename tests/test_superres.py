import pytest
import torch
from torch import nn

import sslbook as sb
from sslbook.decoders import Decoder, EncoderDecoder
from sslbook.models import build_backbone
from sslbook.pretext import superres


def _images(b=4, size=32):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("factor", [2, 4])
def test_downsampling_shapes_and_range(factor):
    low = superres.downsample(_images(), factor)
    assert low.shape == (4, 3, 32 // factor, 32 // factor)
    assert low.min() >= 0 and low.max() <= 1


def test_downsampling_keeps_a_constant_image_and_the_mean_colour():
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(superres.downsample(flat), torch.full((1, 3, 8, 8), 0.3), atol=1e-6)
    images = _images()
    low = superres.downsample(images, 4)
    assert torch.allclose(low.mean((-2, -1)), images.mean((-2, -1)), atol=0.03)


def test_pretext_pair_is_the_upsampled_low_res_image_and_the_original():
    images = _images()
    inputs, targets = superres.make_pretext_batch(images)
    assert inputs.shape == targets.shape == images.shape
    assert torch.equal(targets, images)
    # the input carries exactly the low-res information: shrinking it again gives the low-res
    low = superres.downsample(images)
    assert (superres.downsample(inputs) - low).abs().mean() < 0.03

    # and it is blurrier than the original: less high-frequency energy
    def detail(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()

    assert detail(inputs) < 0.5 * detail(images)
    again, _ = superres.make_pretext_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(inputs, again)


def test_factor_that_does_not_divide_the_size_is_a_clear_error():
    with pytest.raises(ValueError, match="divisor"):
        superres.downsample(_images(size=30), 4)


def test_pixel_shuffle_upsamples_channels_into_space():
    x = torch.arange(2 * 16 * 3 * 3, dtype=torch.float).view(2, 16, 3, 3)
    y = nn.PixelShuffle(2)(x)
    assert y.shape == (2, 4, 6, 6)
    # the four channels 0..3 of an output channel fill each 2x2 block
    assert y[0, 0, 0, 0] == x[0, 0, 0, 0] and y[0, 0, 0, 1] == x[0, 1, 0, 0]
    assert y[0, 0, 1, 0] == x[0, 2, 0, 0] and y[0, 0, 1, 1] == x[0, 3, 0, 0]


def test_decoder_upsamples_block3_by_four_with_pixel_shuffle():
    decoder = Decoder(64, 3)
    assert sum(isinstance(m, nn.PixelShuffle) for m in decoder.modules()) == 2
    assert decoder(torch.zeros(2, 64, 8, 8)).shape == (2, 3, 32, 32)


def test_generator_maps_input_to_same_shape():
    backbone = build_backbone(8, 1, seed=0)
    model = EncoderDecoder(backbone, superres.build_head(backbone.feature_dim))
    inputs, _ = superres.make_pretext_batch(_images())
    assert model(inputs).shape == inputs.shape


def test_loss_is_mse_and_psnr_of_perfect_output_is_high():
    images = _images()
    inputs, targets = superres.make_pretext_batch(images)
    assert superres.loss(targets, targets) == 0
    assert superres.loss(inputs, targets) > 0
    assert sb.metrics.psnr(targets, targets) > 90
    assert 10 < sb.metrics.psnr(inputs, targets) < 40


def test_unknown_content_loss_is_an_error():
    with pytest.raises(ValueError, match="mse"):
        superres.build_adversary(8, 1, content="pixels")
