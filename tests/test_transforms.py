import torch

from sslbook.transforms import random_crop_flip, to_float


def test_to_float_range():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    assert to_float(x).tolist() == [[[[0.0, 1.0]]]]


def test_crop_flip_is_seeded_and_keeps_shape_and_content():
    images = torch.rand(16, 3, 32, 32)
    a = random_crop_flip(images, torch.Generator().manual_seed(0))
    b = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, images)


def test_crop_with_zero_padding_is_identity_or_flip():
    images = torch.rand(32, 3, 8, 8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=0)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert (flipped | same).all() and flipped.any() and same.any()
