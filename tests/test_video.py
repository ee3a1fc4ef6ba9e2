import sys

import numpy as np
import pytest
import torch

import sslbook as sb
from sslbook.data import DataNotFoundError
from sslbook.video import (
    VideoBackendError,
    bounce,
    camera_clips,
    digit_frames,
    load_video_folder,
    moving_mnist,
    moving_patches,
    render,
    trajectories,
)


def fake_digits(n: int = 20) -> sb.ImageSet:
    """MNIST-shaped digits: a bright square in a black 28x28 image, no dataset needed."""
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 4:24, 8:20] = torch.arange(1, n + 1, dtype=torch.uint8)[:, None, None, None] * 10
    return sb.ImageSet(images, torch.arange(n) % 10, sb.data.MNIST_CLASSES, "fake digits")


def test_same_seed_same_video_different_seed_different():
    digits = fake_digits()
    a = moving_mnist(digits, 8, n_frames=10, seed=3)
    b = moving_mnist(digits, 8, n_frames=10, seed=3)
    c = moving_mnist(digits, 8, n_frames=10, seed=4)
    assert a.images.shape == (8, 10, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_digits_move_and_stay_inside_the_frame():
    corners = trajectories(500, 40, 2, span=18, speed=(1.0, 4.0), generator=torch.Generator())
    assert corners.shape == (500, 40, 2, 2)
    assert corners.min() >= 0 and corners.max() <= 18  # 32 - 14: the whole digit is inside
    assert (corners[:, 1:] != corners[:, :-1]).any(-1).float().mean() > 0.9  # they do move


def test_rendered_digits_are_whole_in_every_frame():
    # A digit is a 14x14 block of ones: every frame must show all 196 of its pixels.
    digits = torch.ones(50, 1, 14, 14, dtype=torch.uint8)
    corners = trajectories(50, 30, 1, span=18, generator=torch.Generator().manual_seed(0))
    videos = render(digits, corners, 32)
    assert (videos.sum((-2, -1)) == 14 * 14).all()


def test_bounce_reflects_off_both_walls():
    path = bounce(torch.tensor([1.0]), torch.tensor([2.0]), torch.arange(8.0), span=5)
    assert path[0].tolist() == [1, 3, 5, 3, 1, 1, 3, 5]  # up to 5, back to 0 (at t=4.5), up


def test_digit_frames_keep_labels_and_replicate_grey():
    digits = fake_digits()
    frames = digit_frames(digits, seed=0)
    assert frames.images.shape == (20, 3, 32, 32)
    assert torch.equal(frames.labels, digits.labels)
    assert torch.equal(frames.images[:, 0], frames.images[:, 2])
    # each frame holds its digit's block of 10 * (i + 1), shrunk but with the same brightness
    assert torch.equal(frames.images.flatten(1).amax(1), digits.images.flatten(1).amax(1))


def test_single_digit_videos_are_labelled_and_pairs_are_not():
    digits = fake_digits()
    assert (moving_mnist(digits, 5, num_digits=1).labels >= 0).all()
    assert (moving_mnist(digits, 5, num_digits=2).labels == -1).all()


def _write_frames(folder, count: int, size=(40, 60)) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for t in range(count):
        frame = np.zeros(size, dtype=np.uint8)
        frame[:, 10 + t : 20 + t] = 255  # a bar moving right
        Image.fromarray(frame).save(folder / f"{t:03d}.png")


def test_video_folder_reads_frame_sequences_and_skips_short_clips(tmp_path):
    _write_frames(tmp_path / "clip_a", 12)
    _write_frames(tmp_path / "clip_b", 12)
    _write_frames(tmp_path / "too_short", 3)
    with pytest.warns(UserWarning, match="too_short"):
        videos = load_video_folder(tmp_path, n_frames=6, size=16, stride=2)
    assert videos.images.shape == (2, 6, 16, 16) and videos.images.dtype == torch.uint8
    assert (videos.labels == -1).all()
    centre = videos.images[0].float().mean(1).argmax(-1)  # the bar's column in each frame
    assert (centre[1:] >= centre[:-1]).all() and centre[-1] > centre[0]  # it moves right


def test_video_file_without_pyav_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"not really a video")
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail
    with pytest.raises(VideoBackendError, match="pip install av"):
        load_video_folder(tmp_path)


def test_empty_folder_says_what_it_expects(tmp_path):
    with pytest.raises(DataNotFoundError, match="sub-folder of frame images"):
        load_video_folder(tmp_path)


def photos(b: int = 6, size: int = 32) -> torch.Tensor:
    """Random photos ``(b, 3, size, size)``: no two pixels are equal, so a moved pixel shows."""
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_camera_clips_are_seeded_views_that_move_and_stay_inside_the_photo():
    still = photos()
    a = camera_clips(still, torch.Generator().manual_seed(1), n_frames=8)
    b = camera_clips(still, torch.Generator().manual_seed(1), n_frames=8)
    assert a.shape == (6, 8, 3, 32, 32) and torch.equal(a, b)
    assert (a[:, -1] != a[:, 0]).any(1).any(1).any(1).all()  # every view moves
    assert a.min() >= still.min() and a.max() <= still.max()  # interpolated, no padding
    fixed = camera_clips(still, torch.Generator(), n_frames=4, pan=0.0, zoom=(1.0, 1.0))
    assert torch.allclose(fixed, still[:, None].expand_as(fixed), atol=1e-5)  # no move, no zoom


def test_moving_patches_glide_over_a_still_photo():
    still = photos()
    clips = moving_patches(still, torch.Generator().manual_seed(0), n_frames=10, num_patches=1)
    assert clips.shape == (6, 10, 3, 32, 32)
    changed = (clips != still[:, None]).any(2)  # (B, T, H, W): where the patch covers the photo
    assert changed.any((2, 3)).all()  # a patch is in every frame
    assert changed.sum((2, 3)).le(14 * 14).all()  # and no more than one 14x14 patch
    first = clips[:, 0][:, None]
    assert (clips != first).any((2, 3, 4))[:, 1:].any(1).all()  # it moves in every clip
    for i in range(6):  # what a patch shows is cut from the next photo of the batch
        covered = clips[i, :, 0][changed[i]]  # red values under the patch, every frame
        assert torch.isin(covered, still[(i + 1) % 6, 0]).all()


def test_moving_patches_are_seeded_and_checked():
    still = photos()
    a = moving_patches(still, torch.Generator().manual_seed(2))
    assert torch.equal(a, moving_patches(still, torch.Generator().manual_seed(2)))
    assert not torch.equal(a, moving_patches(still, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="do not fit"):
        moving_patches(still, patch_size=40)
