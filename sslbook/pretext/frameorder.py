"""Frame-order verification (Shuffle and Learn).

Misra, Zitnick & Hebert (2016). *Shuffle and Learn: Unsupervised Learning using Temporal Order
Verification.* ECCV 2016, arXiv 1603.08561.

The seed idea: what if we prepared pairs of (three frames of a video, "are they in order?")? From
five frames ``a < b < c < d < e`` of a video, the tuple ``(b, c, d)`` is in order; ``(b, a, d)``
and ``(b, e, d)``, whose middle frame comes from outside the interval ``[b, d]``, are not. To
tell them apart a network must find what moves and where it is in each frame; the paper found
that this teaches features of the moving things (there, human pose).

As in the paper, tuples come from *high-motion* windows (where frames differ most; the paper used
optical flow, we use the mean absolute frame difference), because frames of a still scene have no
order to verify; about three tuples in four are negatives; and the network is a siamese triplet:
each frame goes through the same backbone, the three feature vectors are concatenated, and a
small head says "in order" or not.

Videos arrive as the channels of a ``(B, T, H, W)`` batch (see :mod:`sslbook.video`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.config import Profile
from sslbook.data import ImageSet, load_mnist
from sslbook.models import mlp_head
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, backbone_with_head, resolve, unlabelled
from sslbook.video import PAN, ZOOM, camera_clips, moving_mnist, moving_patches

NAME = "frameorder"
TITLE = "Frame-order verification"
PAPER = "Misra, Zitnick & Hebert (2016), arXiv 1603.08561"

NUM_FRAMES = 3  # frames per tuple
WINDOW = 10  # frames of a window the five frames a < b < c < d < e are drawn from
HIGH_MOTION = 0.5  # windows are drawn from this top fraction by motion
LABELS = ("shuffled", "in order")  # target 0 and 1
KINDS = ("(b, c, d)", "(b, a, d)", "(b, e, d)")  # what each tuple kind shows


class Tuples(NamedTuple):
    """Which frames a batch of tuples was made of (all ``(B, ...)`` int64 frame indices).

    Attributes:
        five: ``(B, 5)`` the sorted frames ``a < b < c < d < e``.
        frames: ``(B, 3)`` the frames shown, in the order shown.
        kind: ``(B,)`` 0 for ``(b, c, d)``, 1 for ``(b, a, d)``, 2 for ``(b, e, d)``.
        targets: ``(B,)`` 1 for in order (kind 0), else 0.
        start: ``(B,)`` first frame of the chosen window.
    """

    five: torch.Tensor
    frames: torch.Tensor
    kind: torch.Tensor
    targets: torch.Tensor
    start: torch.Tensor


def motion(videos: torch.Tensor) -> torch.Tensor:
    """How much changes between consecutive frames: ``(B, T, H, W)`` → ``(B, T - 1)`` mean
    absolute differences (a cheap stand-in for the paper's optical-flow magnitude)."""
    return (videos[:, 1:].float() - videos[:, :-1].float()).abs().mean((-2, -1))


def window_motion(videos: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Total motion inside every window of ``window`` consecutive frames: ``(B, T - window + 1)``;
    entry ``s`` covers frames ``s .. s + window - 1``."""
    if not 5 <= window <= videos.shape[1]:
        raise ValueError(f"a window needs 5 to {videos.shape[1]} frames, got {window}")
    return motion(videos).unfold(1, window - 1, 1).sum(-1)


def high_motion_starts(
    videos: torch.Tensor,
    window: int = WINDOW,
    high_motion: float = HIGH_MOTION,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One window per video, drawn uniformly among its ``high_motion`` fraction of windows with
    the most motion (ties go to the earlier window).

    Returns:
        ``(B,)`` int64 first frame of each chosen window.
    """
    scores = window_motion(videos, window)  # (B, W)
    keep = max(1, math.ceil(high_motion * scores.shape[1]))
    ranked = scores.argsort(dim=1, descending=True, stable=True)[:, :keep]  # (B, keep)
    pick = torch.randint(keep, (len(videos),), generator=generator).to(videos.device)
    return ranked.gather(1, pick[:, None]).squeeze(1)


def sample_tuples(
    videos: torch.Tensor,
    generator: torch.Generator | None = None,
    window: int = WINDOW,
    high_motion: float = HIGH_MOTION,
) -> Tuples:
    """Choose, for each video, a high-motion window, five frames in it, and a tuple kind.

    Kinds are dealt exactly one positive in four (batch sizes divisible by 4 are exactly 25 %
    positive, the paper's ratio): a shuffled deck of ``0, 1, 2, r`` repeated, where ``r`` is 1 or
    2 at random, so ``(b, a, d)`` and ``(b, e, d)`` are equally likely.
    """
    b = len(videos)
    start = high_motion_starts(videos, window, high_motion, generator)  # (B,)
    offsets = torch.rand(b, window, generator=generator).argsort(1)[:, :5].sort(1).values
    five = start[:, None] + offsets.to(videos.device)  # (B, 5): a < b < c < d < e
    deck = torch.arange(b) % 4  # 0, 1, 2, 3, 0, 1, ...
    random_negative = 1 + torch.randint(2, (b,), generator=generator)
    deck = torch.where(deck == 3, random_negative, deck)
    kind = deck[torch.randperm(b, generator=generator)].to(videos.device)  # (B,)
    middle = five.gather(1, torch.tensor([2, 0, 4], device=videos.device)[kind][:, None])
    frames = torch.cat([five[:, 1:2], middle, five[:, 3:4]], 1)  # (B, 3): b, ?, d
    return Tuples(five, frames, kind, (kind == 0).long(), start)


def gather_frames(videos: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``(B, K)`` of grey videos ``(B, T, H, W)`` as colour inputs ``(B, K, 3, H, W)``."""
    picked = videos.gather(1, frames[..., None, None].expand(-1, -1, *videos.shape[-2:]))
    return picked[:, :, None].expand(-1, -1, 3, -1, -1).contiguous()  # grey → 3 channels


def make_pretext_batch(
    videos: torch.Tensor,
    generator: torch.Generator | None = None,
    window: int = WINDOW,
    high_motion: float = HIGH_MOTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One triplet of frames per video, labelled in order or not.

    Args:
        videos: ``(B, T, H, W)`` float grey videos in [0, 1] (frames on the channel axis).
        generator: source of all randomness (window, frames, kind).
        window: frames per window the five frames are drawn from.
        high_motion: fraction of each video's windows (those with the most motion) to draw from.

    Returns:
        inputs ``(B, 3, 3, H, W)``: frames ``(b, c, d)``, ``(b, a, d)`` or ``(b, e, d)``, grey
        replicated to 3 channels; targets ``(B,)``: 1 if in order, 0 if shuffled (~75 %).
    """
    if videos.dim() != 4:
        raise ValueError(f"expected (B, T, H, W) videos, got shape {tuple(videos.shape)}")
    tuples = sample_tuples(videos, generator, window, high_motion)
    return gather_frames(videos, tuples.frames), tuples.targets  # (B, 3, 3, H, W), (B,)


def make_camera_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    n_frames: int = 16,
    window: int = WINDOW,
    high_motion: float = HIGH_MOTION,
    pan: float = PAN,
    zoom: tuple[float, float] = ZOOM,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One triplet of frames per photo, from a clip of a virtual camera moving over it.

    The clip is :func:`sslbook.video.camera_clips` (pan and zoom, speeding up and slowing
    down); the tuple is drawn from its high-motion windows as for any video.

    Args:
        images: ``(B, C, H, W)`` float still images in [0, 1].
        generator: source of all randomness (the camera's path, the window, frames and kind).
        n_frames: frames per clip.
        window, high_motion: as in :func:`make_pretext_batch`.
        pan, zoom: how far the camera travels and the range of its zoom
            (:func:`sslbook.video.camera_paths`).

    Returns:
        inputs ``(B, 3, C, H, W)``: frames ``(b, c, d)``, ``(b, a, d)`` or ``(b, e, d)`` in
        colour; targets ``(B,)``: 1 if in order, 0 if shuffled (~75 %).
    """
    _check_photos(images)
    clips = camera_clips(images, generator, n_frames, pan, zoom)  # (B, T, C, H, W)
    return tuples_of_clips(clips, generator, window, high_motion)


def make_patches_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    n_frames: int = 16,
    window: int = WINDOW,
    high_motion: float = HIGH_MOTION,
    num_patches: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One triplet of frames per photo, from a clip of patches of other photos moving over it
    (:func:`sslbook.video.moving_patches`). Arguments and returns as in
    :func:`make_camera_batch`; ``num_patches`` is the number of moving patches per clip."""
    _check_photos(images)
    clips = moving_patches(images, generator, n_frames, num_patches)  # (B, T, C, H, W)
    return tuples_of_clips(clips, generator, window, high_motion)


def tuples_of_clips(
    clips: torch.Tensor,
    generator: torch.Generator | None = None,
    window: int = WINDOW,
    high_motion: float = HIGH_MOTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour clips ``(B, T, C, H, W)`` → a triplet of frames each ``(B, 3, C, H, W)`` and its
    target ``(B,)``, drawn as from any video (:func:`sample_tuples`, motion measured in grey)."""
    tuples = sample_tuples(clips.mean(2), generator, window, high_motion)
    rows = torch.arange(len(clips), device=clips.device)[:, None]  # (B, 1)
    return clips[rows, tuples.frames], tuples.targets.to(clips.device)  # (B, 3, C, H, W)


def _check_photos(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected (B, C, H, W) photos with 1 or 3 channels, got shape {tuple(images.shape)}"
            "; videos (frames on the channel axis) go to make_pretext_batch"
        )


def build_head(feature_dim: int) -> nn.Module:
    """An MLP from the three concatenated frame features ``(B, 3 * D)`` to two scores."""
    return mlp_head(NUM_FRAMES * feature_dim, 128, len(LABELS))


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over shuffled / in order (unweighted, as in the paper)."""
    return F.cross_entropy(outputs, targets)


def balanced_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean of the accuracy on in-order and on shuffled tuples: 50 % is chance, whereas plain
    accuracy reaches 75 % by answering "shuffled" every time."""
    predicted = outputs.argmax(-1)
    recalls = [
        (predicted[targets == c] == c).float().mean() for c in (0, 1) if (targets == c).any()
    ]
    return torch.stack(recalls).mean().item()


METRIC_NAME = "order accuracy (balanced)"


SOURCES = ("camera", "moving-mnist", "patches")


@dataclass(frozen=True)
class Settings:
    """The frame-order recipe's own settings.

    Attributes:
        source: where the videos come from when the recipe is given still images (or none):
            ``"moving-mnist"`` (the chapter's), as many Moving-MNIST videos (digits on black: a
            domain far from the photos the CIFAR-10 probe is measured on); ``"camera"``,
            clips of a virtual camera panning and zooming over the photos themselves; or
            ``"patches"``, patches of photos gliding over a still photo as the digits of
            Moving MNIST do. Both of the latter are made batch by batch.
        window: frames of a window the five frames ``a < b < c < d < e`` are drawn from.
        high_motion: fraction of each video's windows (those with the most motion) to draw from.
        num_digits: digits per Moving-MNIST video.
        num_patches: moving patches per clip (``"patches"`` only).
        n_frames: frames per video.
        pan: how far the virtual camera travels (``"camera"`` only; see
            :func:`sslbook.video.camera_paths`).
        zoom: the range its zoom is drawn from, at the clip's start and end: ``(z, z)`` keeps
            the zoom, and so the sharpness of the frames, constant (``"camera"`` only).
    """

    source: str = "moving-mnist"
    window: int = WINDOW
    high_motion: float = HIGH_MOTION
    num_digits: int = 2
    num_patches: int = 2
    n_frames: int = 16
    pan: float = PAN
    zoom: tuple[float, float] = ZOOM

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        object.__setattr__(self, "zoom", tuple(float(z) for z in self.zoom))  # JSON gives lists
        if len(self.zoom) != 2 or not 1 <= self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"zoom must be (low, high) with 1 <= low <= high, got {self.zoom}")


def make_task(settings: Settings = Settings(), stills: bool = False) -> PretextTask:
    """The task with the settings' window length and share of high-motion windows; with
    ``stills``, the batches are still photos and the clips are made from them as
    ``settings.source`` says (:func:`make_camera_batch`, :func:`make_patches_batch`)."""
    common = {"window": settings.window, "high_motion": settings.high_motion}
    if not stills:
        batch = functools.partial(make_pretext_batch, **common)
    elif settings.source == "patches":
        batch = functools.partial(make_patches_batch, n_frames=settings.n_frames,
                                  num_patches=settings.num_patches, **common)  # fmt: skip
    else:
        batch = functools.partial(make_camera_batch, n_frames=settings.n_frames,
                                  pan=settings.pan, zoom=settings.zoom, **common)  # fmt: skip
    return PretextTask(NAME, batch, build_head, loss, balanced_accuracy, metric_name=METRIC_NAME)


def videos_for(settings: Settings, n_videos: int, seed: int = 0) -> ImageSet:
    """The unlabelled videos this recipe pretrains on: ``n_videos`` Moving-MNIST clips made
    from as many MNIST training digits (:func:`sslbook.video.moving_mnist`)."""
    digits = load_mnist("train", n=n_videos, seed=seed)
    return moving_mnist(digits, n_videos, n_frames=settings.n_frames,
                        num_digits=settings.num_digits, seed=seed)  # fmt: skip


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: triplets from high-motion windows of clips, one in four
    in order, from as many Moving-MNIST videos as the profile has unlabelled images
    (``source="camera"`` or ``"patches"``: clips made from those photos instead).

    Args:
        profile: sizes the run.
        seed: initial weights, the videos and every random choice.
        data: videos to train on (an :class:`~sslbook.data.ImageSet` whose channels are frames,
            e.g. :func:`sslbook.video.load_video_folder`), or still images (default: the
            profile's unlabelled images): then ``settings.source`` says how clips are made.
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    given_videos = data is not None and data.images.shape[1] > 3
    if not given_videos:
        data = unlabelled(data, profile, seed)
        if settings.source == "moving-mnist":
            data = videos_for(settings, len(data), seed)
    task = make_task(settings, stills=not given_videos and settings.source != "moving-mnist")
    model = backbone_with_head(profile, seed, task)
    return Recipe(NAME, model, task, config, data, settings=settings)
