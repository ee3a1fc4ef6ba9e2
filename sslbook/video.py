"""Videos for the frame-order chapter: Moving MNIST made offline, or a folder of your own clips.

**Moving MNIST** (Srivastava, Mansimov & Salakhutdinov 2015, *Unsupervised Learning of Video
Representations using LSTMs*, arXiv 1502.04681): MNIST digits glide across a black frame at a
constant velocity and bounce off its edges. The paper's frames are 64x64 with 28-pixel digits; the
book renders the same geometry at half scale (32x32 frames, 14-pixel digits) so that frames fit the
shared 32x32 backbone without resizing. Every video is a closed-form function of its seed: the
digits' starting points, directions and speeds are drawn once, the bounces are a triangle wave, and
the frames are drawn with tensor indexing (no loop over pixels or frames).

**Storage.** A video set is an :class:`~sslbook.data.ImageSet` whose *channels are frames*:
``images`` is ``(N, T, H, W)`` uint8 grey. That is deliberate: the generic training loop then
shuffles, batches and augments whole videos (a random crop or flip moves every frame of a clip
the same way) without knowing they are videos, and the pretext task picks frames out of the
channel axis.

**Your own clips.** :func:`load_video_folder` turns a folder of video files (decoded with PyAV)
or of frame sequences (one sub-folder of images per clip) into the same format.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sslbook.data import (
    IMAGE_SUFFIXES,
    MNIST_CLASSES,
    CorruptImageError,
    DataNotFoundError,
    ImageSet,
)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
FRAME_SIZE = 32  # the shared backbone's input size
DIGIT_SIZE = 14  # Moving MNIST's 28-pixel digits in 64-pixel frames, at half scale
SPEED = (1.0, 2.5)  # pixels per frame at 32x32 (2 to 5 at the paper's 64x64)


class VideoBackendError(ImportError):
    """Decoding video files needs PyAV, which is not installed."""


# --------------------------------------------------------------------------- Moving MNIST


def bounce(start: torch.Tensor, velocity: torch.Tensor, steps: torch.Tensor, span: int):
    """Positions of points moving at constant velocity between walls at 0 and ``span``.

    A bounce off a wall mirrors the motion, so the path is the unbounded line ``start + v t``
    folded into ``[0, span]`` by a triangle wave: no step-by-step simulation needed.

    Args:
        start: ``(...)`` starting coordinates in ``[0, span]``.
        velocity: ``(...)`` pixels per frame (sign: direction).
        steps: ``(T,)`` frame numbers.
        span: the largest coordinate (frame size minus digit size).

    Returns:
        ``(..., T)`` float coordinates in ``[0, span]``.
    """
    free = start[..., None] + velocity[..., None] * steps  # (..., T)
    if span == 0:
        return torch.zeros_like(free)
    folded = torch.remainder(free, 2 * span)  # (..., T) in [0, 2 span)
    return span - (folded - span).abs()


def trajectories(
    n: int,
    n_frames: int,
    num_digits: int,
    span: int,
    speed: tuple[float, float] = SPEED,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integer top-left corners of ``num_digits`` bouncing digits in ``n`` videos.

    Each digit starts at a uniform random point, heads in a uniform random direction, at a
    uniform random speed in ``speed`` pixels per frame (the Moving MNIST recipe).

    Returns:
        ``(n, n_frames, num_digits, 2)`` int64 ``(row, column)`` corners in ``[0, span]``.
    """
    start = torch.rand(n, num_digits, 2, generator=generator) * span  # (n, D, 2)
    angle = torch.rand(n, num_digits, generator=generator) * 2 * math.pi  # (n, D)
    low, high = speed
    magnitude = low + (high - low) * torch.rand(n, num_digits, generator=generator)  # (n, D)
    velocity = magnitude[..., None] * torch.stack([angle.sin(), angle.cos()], -1)  # (n, D, 2)
    path = bounce(start, velocity, torch.arange(n_frames, dtype=torch.float32), span)
    return path.round().long().permute(0, 3, 1, 2)  # (n, D, 2, T) → (n, T, D, 2)


def render(digits: torch.Tensor, corners: torch.Tensor, size: int = FRAME_SIZE) -> torch.Tensor:
    """Draw digits into black frames at the given corners; overlapping digits take the maximum.

    Args:
        digits: ``(N, D, s, s)`` uint8 digit images, ``D`` per video.
        corners: ``(N, T, D, 2)`` int64 top-left ``(row, column)`` of every digit in every frame.
        size: side of the square frames.

    Returns:
        ``(N, T, size, size)`` uint8 videos.
    """
    n, t, num_digits = corners.shape[:3]
    s = digits.shape[-1]
    if corners.numel() and (corners.min() < 0 or corners.max() > size - s):
        raise ValueError(f"a {s}-pixel digit at those corners leaves a {size}-pixel frame")
    videos = torch.zeros(n, t, size, size, dtype=torch.uint8)
    offsets = torch.arange(s)
    vid = torch.arange(n)[:, None, None, None]  # (N, 1, 1, 1)
    frame = torch.arange(t)[None, :, None, None]  # (1, T, 1, 1)
    for d in range(num_digits):  # a handful of digits: each one drawn in all frames at once
        rows = (corners[:, :, d, 0, None] + offsets)[..., :, None]  # (N, T, s, 1)
        cols = (corners[:, :, d, 1, None] + offsets)[..., None, :]  # (N, T, 1, s)
        stamp = digits[:, d, None].expand(n, t, s, s)  # (N, T, s, s)
        videos[vid, frame, rows, cols] = torch.maximum(videos[vid, frame, rows, cols], stamp)
    return videos


def resize_digits(images: torch.Tensor, digit_size: int = DIGIT_SIZE) -> torch.Tensor:
    """MNIST digits ``(N, 1, 28, 28)`` uint8 → ``(N, digit_size, digit_size)`` uint8 (area
    averaging, so thin strokes survive the shrink)."""
    small = F.interpolate(images.float(), size=(digit_size, digit_size), mode="area")
    return small[:, 0].round().clamp(0, 255).to(torch.uint8)


def moving_mnist(
    digits: ImageSet,
    n_videos: int,
    n_frames: int = 16,
    num_digits: int = 2,
    size: int = FRAME_SIZE,
    digit_size: int = DIGIT_SIZE,
    speed: tuple[float, float] = SPEED,
    seed: int = 0,
) -> ImageSet:
    """Moving MNIST videos, a deterministic function of ``seed``.

    Args:
        digits: MNIST images to draw the digits from (``sb.load_mnist``), ``(M, 1, 28, 28)``.
        n_videos: how many videos.
        n_frames: frames per video.
        num_digits: digits per video (the paper used 2).
        size: side of the square frames.
        digit_size: side the digits are shrunk to.
        speed: range of speeds in pixels per frame.
        seed: the same seed gives the same videos, bit for bit.

    Returns:
        An :class:`~sslbook.data.ImageSet` with ``(n_videos, n_frames, size, size)`` uint8 images
        (channels are frames). Labels are the digit's class when a video holds one digit, else
        ``-1``: pretraining never looks at them.
    """
    if digit_size > size:
        raise ValueError(f"{digit_size}-pixel digits do not fit {size}-pixel frames")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(digits), (n_videos, num_digits), generator=generator)  # (N, D)
    corners = trajectories(n_videos, n_frames, num_digits, size - digit_size, speed, generator)
    small = resize_digits(digits.images, digit_size)  # (M, s, s)
    videos = render(small[pick], corners, size)  # (N, T, size, size)
    if num_digits == 1:
        labels = digits.labels[pick[:, 0]]
    else:
        labels = torch.full((n_videos,), -1, dtype=torch.long)
    return ImageSet(videos, labels, MNIST_CLASSES, f"Moving MNIST ({num_digits} digits)")


def digit_frames(
    digits: ImageSet, size: int = FRAME_SIZE, digit_size: int = DIGIT_SIZE, seed: int = 0
) -> ImageSet:
    """One still frame per MNIST digit, the digit at a random place, labelled with its class.

    This is how the chapter probes a backbone on digit classification: single frames that look
    exactly like the frames of the videos, grey replicated to the backbone's 3 channels.

    Returns:
        An :class:`~sslbook.data.ImageSet` ``(M, 3, size, size)`` with ``digits``' labels.
    """
    generator = torch.Generator().manual_seed(seed)
    corners = trajectories(len(digits), 1, 1, size - digit_size, SPEED, generator)  # (M,1,1,2)
    frames = render(resize_digits(digits.images, digit_size)[:, None], corners, size)
    return ImageSet(
        grey_to_rgb(frames),  # (M, 1, size, size) → (M, 3, size, size)
        digits.labels.clone(),
        digits.classes,
        f"{digits.name}, single frames",
    )


def grey_to_rgb(frames: torch.Tensor) -> torch.Tensor:
    """Grey frames ``(..., 1, H, W)`` → ``(..., 3, H, W)``: the shared backbone takes colour."""
    return frames.expand(*frames.shape[:-3], 3, *frames.shape[-2:]).contiguous()


def as_frames(video: torch.Tensor) -> torch.Tensor:
    """One video ``(T, H, W)`` → ``(T, 1, H, W)``, to show its frames with ``plot.show_images``."""
    return video.unsqueeze(1)


# --------------------------------------------------------------------------- a virtual camera

#: How far the camera's view may travel across a photo, and how far it may zoom in.
PAN, ZOOM = 0.5, (1.0, 2.0)


def camera_paths(
    n: int, generator: torch.Generator | None = None, pan: float = PAN, zoom=ZOOM
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random straight camera moves over ``n`` photos: where each starts, where it ends, and
    how its speed varies.

    A move is a zoom factor and a view centre at its start and at its end; the view is the photo
    shrunk by the zoom, and its centre stays where the view fits inside the photo. The centre
    travels at most ``pan`` (in units of half the photo) per axis, with an ease-in ease-out of
    random strength: the camera speeds up and slows down, as a hand-held one does, so some
    stretches of a clip move more than others.

    Returns:
        ``start`` and ``end`` ``(n, 3)``: centre x, centre y (in [-1, 1]) and log-zoom; and
        ``ease`` ``(n,)`` in [0, 1] (0: constant speed).
    """
    low, high = math.log(zoom[0]), math.log(zoom[1])
    log_zoom = low + (high - low) * torch.rand(n, 2, generator=generator)  # (n, 2): start, end
    room = 1 - torch.exp(-log_zoom)  # (n, 2): how far the centre may sit from the middle
    first = (2 * torch.rand(n, 2, generator=generator) - 1) * room[:, :1]  # (n, 2): x, y
    step = (2 * torch.rand(n, 2, generator=generator) - 1) * pan
    last = torch.maximum(torch.minimum(first + step, room[:, 1:]), -room[:, 1:])
    start = torch.cat([first, log_zoom[:, :1]], 1)  # (n, 3)
    end = torch.cat([last, log_zoom[:, 1:]], 1)
    ease = torch.rand(n, generator=generator)
    return start, end, ease


def camera_clips(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    n_frames: int = 16,
    pan: float = PAN,
    zoom=ZOOM,
) -> torch.Tensor:
    """Clips of a virtual camera moving over photos: ``(B, C, H, W)`` → ``(B, T, C, H, W)``.

    Frame ``t`` is the view of :func:`camera_paths` at time ``t / (T - 1)``, sampled from the
    photo with bilinear interpolation (one ``grid_sample`` for all frames). Natural images in
    motion, made from the very photos the probe is measured on, so frame order learns without
    the domain gap of digits on black.
    """
    b, c, h, w = images.shape
    start, end, ease = camera_paths(b, generator, pan, zoom)
    start, end, ease = start.to(images.device), end.to(images.device), ease.to(images.device)
    times = torch.linspace(0, 1, n_frames, device=images.device)  # (T,)
    smooth = times - ease[:, None] * torch.sin(2 * math.pi * times) / (2 * math.pi)  # (B, T)
    pose = start[:, None] + (end - start)[:, None] * smooth[..., None]  # (B, T, 3)
    scale = torch.exp(-pose[..., 2])  # (B, T): the view's size relative to the photo
    theta = torch.zeros(b, n_frames, 2, 3, device=images.device)
    theta[..., 0, 0], theta[..., 1, 1] = scale, scale
    theta[..., 0, 2], theta[..., 1, 2] = pose[..., 0], pose[..., 1]
    grid = F.affine_grid(theta.flatten(0, 1), (b * n_frames, c, h, w), align_corners=False)
    frames = images[:, None].expand(b, n_frames, c, h, w).flatten(0, 1)  # (B*T, C, H, W)
    sampled = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection",
                            align_corners=False)  # fmt: skip
    return sampled.view(b, n_frames, c, h, w)


# --------------------------------------------------------------------------- moving patches

PATCH_SIZE = 14  # the side of a moving patch: Moving MNIST's digit size


def moving_patches(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    n_frames: int = 16,
    num_patches: int = 2,
    patch_size: int = PATCH_SIZE,
    speed: tuple[float, float] = SPEED,
) -> torch.Tensor:
    """Moving MNIST with photos: square patches cut from other photos glide over a still photo.

    ``(B, C, H, W)`` → ``(B, T, C, H, W)``. Patch ``d`` of clip ``i`` is cut, at a random place,
    from photo ``i + 1 + d`` of the batch (cyclically) and moves like a Moving-MNIST digit
    (:func:`trajectories`: straight lines at ``speed`` pixels per frame, bouncing off the
    edges); later patches cover earlier ones. What moves is a piece of a photograph on a
    photograph, so finding it takes the textures and edges the CIFAR-10 probe needs, where
    a white digit on black is found by its brightness alone.
    """
    b, c, h, w = images.shape
    if not 0 < patch_size <= min(h, w):
        raise ValueError(f"{patch_size}-pixel patches do not fit {h}x{w} photos")
    span = min(h, w) - patch_size
    corners = trajectories(b, n_frames, num_patches, span, speed, generator)  # (B, T, D, 2)
    cut = torch.randint(span + 1, (b, num_patches, 2), generator=generator)  # (B, D, 2)
    corners, cut = corners.to(images.device), cut.to(images.device)
    donors = (torch.arange(b, device=images.device)[:, None] + 1 + torch.arange(num_patches,
              device=images.device)) % b  # (B, D)  # fmt: skip
    offsets = torch.arange(patch_size, device=images.device)
    channel = torch.arange(c, device=images.device)[:, None, None]  # (C, 1, 1)
    clips = images[:, None].expand(b, n_frames, c, h, w).clone()  # (B, T, C, H, W)
    clip = torch.arange(b, device=images.device)[:, None, None, None, None]
    frame = torch.arange(n_frames, device=images.device)[:, None, None, None]
    for d in range(num_patches):  # a handful of patches: each one drawn in all frames at once
        rows = (cut[:, d, 0, None] + offsets)[:, None, :, None]  # (B, 1, s, 1)
        cols = (cut[:, d, 1, None] + offsets)[:, None, None, :]  # (B, 1, 1, s)
        patch = images[donors[:, d, None, None, None], channel, rows, cols]  # (B, C, s, s)
        rows = (corners[:, :, d, 0, None] + offsets)[:, :, None, :, None]  # (B, T, 1, s, 1)
        cols = (corners[:, :, d, 1, None] + offsets)[:, :, None, None, :]  # (B, T, 1, 1, s)
        clips[clip, frame, channel, rows, cols] = patch[:, None]
    return clips


# --------------------------------------------------------------------------- your own clips


def load_video_folder(
    folder: str | os.PathLike,
    n_frames: int = 16,
    size: int = FRAME_SIZE,
    stride: int = 1,
    n: int | None = None,
) -> ImageSet:
    """Your own clips as a video set: grey, centre-cropped to squares of ``size`` pixels.

    Each clip is either a video file (``.mp4``, ``.avi``, ..., decoded with PyAV: ``pip install
    av``) or a sub-folder of image files holding its frames in name order. Every clip gives its
    first ``n_frames`` frames, taking every ``stride``-th one (a stride above 1 makes slow footage
    move more per frame). Clips that are too short or unreadable are skipped with one warning.

    Args:
        folder: the folder of clips.
        n_frames: frames per video.
        size: side of the square frames.
        stride: keep every ``stride``-th frame.
        n: keep only the first ``n`` clips (in name order).

    Returns:
        An :class:`~sslbook.data.ImageSet` ``(N, n_frames, size, size)`` uint8, unlabelled.

    Raises:
        DataNotFoundError: ``folder`` holds no clips.
        VideoBackendError: a video file needs PyAV and it is not installed.
        CorruptImageError: no clip could be read.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} is not a directory; pass the folder of your clips.")
    clips = sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() or (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    )[:n]
    if not clips:
        raise DataNotFoundError(
            f"{folder} holds no clips: put video files ({', '.join(VIDEO_SUFFIXES)}) or one "
            "sub-folder of frame images per clip in it."
        )
    needed = (n_frames - 1) * stride + 1
    videos, skipped = [], []
    for clip in clips:
        try:
            frames = _frames_of(clip, needed)  # (T', H, W) uint8
        except (OSError, ValueError) as error:
            skipped.append(f"{clip} ({error})")
            continue
        if len(frames) < needed:
            skipped.append(f"{clip} (only {len(frames)} frames, needs {needed})")
            continue
        videos.append(_square_resize(frames[:needed:stride], size))
    if skipped:
        listed = "\n  ".join(skipped)
        warnings.warn(f"skipped {len(skipped)} clip(s):\n  {listed}", stacklevel=2)
    if not videos:
        raise CorruptImageError(f"none of the {len(clips)} clips in {folder} could be used.")
    labels = torch.full((len(videos),), -1, dtype=torch.long)
    return ImageSet(torch.stack(videos), labels, (), folder.name)


def _frames_of(clip: Path, limit: int) -> torch.Tensor:
    """The first ``limit`` frames of a clip as grey ``(T, H, W)`` uint8."""
    if clip.is_dir():
        from PIL import Image

        files = sorted(p for p in clip.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        frames = []
        for path in files:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("L")))
        if not frames:
            return torch.zeros(0, 1, 1, dtype=torch.uint8)
        return torch.from_numpy(np.stack(frames))
    return _decode_video(clip, limit)


def _decode_video(path: Path, limit: int) -> torch.Tensor:
    """Decode the first ``limit`` frames of a video file with PyAV, as grey ``(T, H, W)``."""
    try:
        import av
    except ImportError:
        raise VideoBackendError(
            f"decoding {path.name} needs PyAV, which is not installed. Install it with "
            "`pip install av`, or convert each clip to a folder of frames (e.g. `ffmpeg -i "
            "clip.mp4 clip/%05d.png`), which load_video_folder reads without PyAV."
        ) from None
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="gray"))
                if len(frames) == limit:
                    break
    except av.error.FFmpegError as error:  # a damaged or unsupported file
        raise ValueError(str(error)) from None
    if not frames:
        return torch.zeros(0, 1, 1, dtype=torch.uint8)
    return torch.from_numpy(np.stack(frames))


def _square_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop grey frames ``(T, H, W)`` to squares and resize them to ``(T, size, size)``."""
    h, w = frames.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = frames[:, None, top : top + side, left : left + side].float()  # (T, 1, side, side)
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True)
    return resized[:, 0].round().clamp(0, 255).to(torch.uint8)
