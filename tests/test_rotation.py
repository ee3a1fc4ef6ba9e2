import torch

from sslbook.pretext import rotation
from sslbook.transforms import rotate90


def test_four_rotations_per_image_with_matching_labels():
    images = torch.rand(5, 3, 8, 8)
    inputs, targets = rotation.make_pretext_batch(images)
    assert inputs.shape == (20, 3, 8, 8)
    assert targets.shape == (20,)
    for i in range(5):
        rows = [i + 5 * k for k in range(4)]
        assert sorted(targets[rows].tolist()) == [0, 1, 2, 3]  # all four angles per image
        for row in rows:
            k = int(targets[row])
            # rotating back by the label recovers the original image exactly
            assert torch.equal(rotate90(inputs[row], -k), images[i])


def test_rotation_by_one_quarter_is_counter_clockwise():
    image = torch.tensor([[1, 2], [3, 4]]).view(1, 1, 2, 2)
    assert rotate90(image, 1).flatten().tolist() == [2, 4, 1, 3]
    assert torch.equal(rotate90(rotate90(image, 1), 3), image)


def test_rotation_is_deterministic_and_ignores_generator():
    images = torch.rand(2, 3, 8, 8)
    a = rotation.make_pretext_batch(images, torch.Generator().manual_seed(0))
    b = rotation.make_pretext_batch(images, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_head_and_loss():
    head = rotation.build_head(16)
    outputs = head(torch.randn(8, 16))
    assert outputs.shape == (8, 4)
    assert rotation.loss(outputs, torch.randint(0, 4, (8,))).ndim == 0
