import pytest
import torch

import sslbook as sb
from sslbook.pretext import frameorder

from .conftest import assert_seeded


def counting_videos(b: int = 64, t: int = 16, size: int = 4) -> torch.Tensor:
    """Videos whose frame ``i`` is filled with the value ``i / 100``: a frame tells its index.
    Frame differences are equal everywhere (uniform motion)."""
    values = torch.arange(t, dtype=torch.float32) / 100
    return values.view(1, t, 1, 1).expand(b, t, size, size).clone()


def frame_index(inputs: torch.Tensor) -> torch.Tensor:
    """Recover the frame numbers of ``(B, 3, 3, H, W)`` inputs made from counting videos."""
    return (inputs[:, :, 0, 0, 0] * 100).round().long()


def test_tuples_are_in_order_or_have_their_middle_outside_the_interval():
    videos = counting_videos(256)
    inputs, targets = frameorder.make_pretext_batch(videos, torch.Generator().manual_seed(0))
    assert inputs.shape == (256, 3, 3, 4, 4) and targets.shape == (256,)
    assert torch.equal(inputs[:, :, 0], inputs[:, :, 2])  # grey replicated to 3 channels
    first, middle, last = frame_index(inputs).unbind(1)
    assert (first < last).all()  # b < d
    positive = targets == 1
    assert ((first < middle) & (middle < last))[positive].all()  # (b, c, d)
    assert ((middle < first) | (middle > last))[~positive].all()  # (b, a, d) or (b, e, d)


def test_the_five_frames_are_distinct_sorted_and_inside_the_window():
    tuples = frameorder.sample_tuples(counting_videos(500), torch.Generator().manual_seed(1))
    assert (tuples.five[:, 1:] > tuples.five[:, :-1]).all()
    assert (tuples.five[:, 0] >= tuples.start).all()
    assert (tuples.five[:, -1] < tuples.start + frameorder.WINDOW).all()
    # frames shown: b, then c / a / e by kind, then d
    expected_middle = tuples.five.gather(1, torch.tensor([2, 0, 4])[tuples.kind][:, None])
    assert torch.equal(tuples.frames[:, 1:2], expected_middle)


def test_three_negatives_for_every_positive_and_both_negative_kinds():
    tuples = frameorder.sample_tuples(counting_videos(4000), torch.Generator().manual_seed(2))
    assert (tuples.targets == 0).float().mean().item() == 0.75  # exact for batches of 4k
    kinds = torch.bincount(tuples.kind, minlength=3).float() / 4000
    assert kinds[0] == 0.25
    assert kinds[1] == pytest.approx(0.375, abs=0.03) and kinds[2] == pytest.approx(0.375, abs=0.03)
    small = frameorder.sample_tuples(counting_videos(30), torch.Generator().manual_seed(3))
    assert 0.7 <= (small.targets == 0).float().mean() <= 0.8  # near 75 % for other sizes too


def test_windows_are_chosen_where_things_move():
    # Frames 0-9 are still, frames 10-19 change every step: windows must lie in the moving part.
    b, t = 32, 20
    videos = torch.zeros(b, t, 8, 8)
    videos[:, 10:] = torch.rand(b, 10, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = frameorder.window_motion(videos, window=6)  # (B, 15)
    assert scores.shape == (b, 15)
    assert (scores[:, 10:] > scores[:, :5]).all()
    starts = frameorder.high_motion_starts(
        videos, window=6, high_motion=0.3, generator=torch.Generator().manual_seed(0)
    )
    assert (starts >= 8).all()  # the top 30 % of windows (5 of 15) start at frame 8 or later
    tuples = frameorder.sample_tuples(videos, torch.Generator(), window=6, high_motion=0.3)
    assert (tuples.five[:, 0] >= 8).all()


def test_batches_are_seeded():
    assert_seeded(frameorder.make_pretext_batch, torch.rand(16, 12, 8, 8))


def test_window_longer_than_the_video_is_an_error():
    with pytest.raises(ValueError, match="window"):
        frameorder.make_pretext_batch(torch.rand(4, 6, 8, 8), window=10)


def test_siamese_model_head_loss_and_balanced_metric():
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    model = sb.PretextModel(backbone, frameorder.build_head(backbone.feature_dim))
    inputs, targets = frameorder.make_pretext_batch(torch.rand(8, 12, 32, 32), torch.Generator())
    outputs = model(inputs)  # every frame through the same backbone, features concatenated
    assert outputs.shape == (8, 2)
    assert frameorder.loss(outputs, targets).ndim == 0
    always_shuffled = torch.tensor([[1.0, 0.0]]).expand(8, 2)
    assert frameorder.balanced_accuracy(always_shuffled, targets) == 0.5  # not 75 %


def test_training_runs_on_a_video_set():
    digits = sb.ImageSet(
        torch.randint(0, 255, (40, 1, 28, 28), dtype=torch.uint8),
        torch.arange(40) % 10,
        sb.data.MNIST_CLASSES,
    )
    videos = sb.video.moving_mnist(digits, 32, n_frames=12, seed=0)
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    model = sb.PretextModel(backbone, frameorder.build_head(backbone.feature_dim))
    config = sb.TrainConfig(epochs=1, batch_size=16)
    history = sb.train(model, videos, frameorder.make_task(), config, progress=False)
    assert len(history.step_loss) == 2 and history.images_seen == 32
    assert history.inputs_seen == 32  # one tuple per video


@pytest.mark.parametrize(
    "make_batch", [frameorder.make_camera_batch, frameorder.make_patches_batch]
)
def test_clips_made_from_photos_give_colour_triplets(make_batch):
    photos = torch.rand(8, 3, 32, 32)
    inputs, targets = make_batch(photos, torch.Generator().manual_seed(0))
    assert inputs.shape == (8, 3, 3, 32, 32) and targets.shape == (8,)
    assert targets.sum() == 2  # one in four in order
    assert_seeded(make_batch, photos)
    with pytest.raises(ValueError, match="photos"):
        make_batch(torch.rand(8, 16, 32, 32))


def test_each_source_makes_its_own_clips():
    photos = torch.rand(8, 3, 32, 32)
    for source, maker in (("camera", frameorder.make_camera_batch),
                          ("patches", frameorder.make_patches_batch)):  # fmt: skip
        task = frameorder.make_task(frameorder.Settings(source=source), stills=True)
        batch = sb.pretext.base.Batch(photos, torch.full((8,), -1), torch.arange(8))
        made = task.make_batch(batch, torch.Generator().manual_seed(4))
        expected = maker(photos, torch.Generator().manual_seed(4))
        assert torch.equal(made[0], expected[0]) and torch.equal(made[1], expected[1])


def test_settings_check_source_and_zoom():
    assert frameorder.Settings(zoom=[1.5, 1.5]).zoom == (1.5, 1.5)  # a JSON list is accepted
    with pytest.raises(ValueError, match="source"):
        frameorder.Settings(source="youtube")
    with pytest.raises(ValueError, match="zoom"):
        frameorder.Settings(zoom=(0.5, 2.0))
