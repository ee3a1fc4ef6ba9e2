"""Datasets as uint8 tensors: CIFAR-10, MNIST and a folder of your own images.

Every image is decoded once into a ``(N, C, H, W)`` uint8 tensor. Augmentations and pretext
transforms then work on whole batches of tensors (see :mod:`sslbook.transforms`), so no
per-image PIL work sits in the training loop.

Where the data lives is resolved in this order:

1. the ``root`` argument of a loader,
2. the environment variable ``SSLBOOK_DATA``,
3. a per-user cache directory (``platformdirs``).

A dataset found in none of its local layouts below is downloaded into that root, from mirrors
and checked against published checksums (see :mod:`sslbook.download`).

Inside that root, CIFAR-10 is read from PNGs in class folders
(``cifar10/{train,test}/<class>/<index>_<class>.png``), from a few compressed uint8 shards
(``cifar10-shards/{train,test}-<k>.npz``, written from the PNGs by ``python -m sslbook shards``:
the dataset in parts small enough to copy to another machine) or from torchvision's own layout
(``cifar-10-batches-py``); MNIST from torchvision's layout (``MNIST/raw``). Decoding 50,000 PNGs
takes half a minute on two cores, so decoded images are kept in the cache, keyed by the files'
names, sizes and times: a second load takes a fraction of a second.

Bad input fails early with a message that names the file and says what to do: a CIFAR-10 class
folder that is empty or holds an image of the wrong size, a pickle that is not the official file
(never unpickled: a pickle can run code), a photo that cannot be decoded (skipped, with a
warning). Photos are read as a viewer shows them: turned upright by their EXIF orientation, and
16-bit ones scaled to 8 bits rather than clipped to white.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir

DATA_ENV = "SSLBOOK_DATA"
CACHE_ENV = "SSLBOOK_CACHE"

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))
SHARD_DIR = "cifar10-shards"
DECODE_CACHE_MIN = 1000  # sets of at least this many files keep their decoded pixels
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CIFAR10_SIZE = (32, 32)
PICKLE_DIR = "cifar-10-batches-py"
# MD5 of each official pickle, as torchvision publishes them (CIFAR10.train_list / test_list).
# A pickle is only unpickled when its MD5 is in this table: pickle.load can run arbitrary code.
CIFAR10_PICKLE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
STALE_SECONDS = 600  # a staging folder this old belongs to a write that was killed


class DataNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded."""


def cache_dir() -> Path:
    """Per-user cache for downloads, decoded tensors and checkpoints (``$SSLBOOK_CACHE`` wins)."""
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("sslbook"))


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve where datasets live: explicit ``root``, else ``$SSLBOOK_DATA``, else the cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir() / "data"


@dataclass
class ImageSet:
    """Images and labels held in memory.

    Attributes:
        images: ``(N, C, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor; ``-1`` marks an unlabelled image.
        classes: class names, indexed by label.
        name: a short description used in plots and messages.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str = "images"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageSet.images must be a (N, C, H, W) uint8 tensor, got "
                f"{tuple(self.images.shape)} {self.images.dtype}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> ImageSet:
        """A subset with the same classes (``index``: indices, mask or slice)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
        return ImageSet(self.images[index], self.labels[index], self.classes, self.name)

    def stratified(self, n: int | None, seed: int = 0) -> ImageSet:
        """A deterministic class-balanced subset of ``n`` images (all of them when ``None``)."""
        if n is None or n >= len(self):
            return self
        return self[stratified_indices(self.labels, n, seed)]

    def select_classes(self, names: Sequence[str]) -> ImageSet:
        """Keep only ``names``, relabelled ``0..len(names)-1`` in the order given."""
        unknown = [c for c in names if c not in self.classes]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; this set has {list(self.classes)}")
        old = torch.tensor([self.classes.index(c) for c in names])
        keep = torch.isin(self.labels, old)
        remap = torch.full((len(self.classes),), -1, dtype=torch.long)
        remap[old] = torch.arange(len(names))
        return ImageSet(
            self.images[keep], remap[self.labels[keep]], tuple(names), f"{self.name} {names}"
        )


def stratified_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Pick ``n`` indices with (as near as possible) the same count from every class.

    The choice depends only on ``labels``, ``n`` and ``seed``, so every chapter that asks for
    the same subset gets the same images. Returns sorted indices.
    """
    classes = torch.unique(labels)
    if n < len(classes):
        raise ValueError(f"asked for {n} images but there are {len(classes)} classes; ask for more")
    generator = torch.Generator().manual_seed(seed)
    per_class = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    chosen = []
    for count, c in zip(per_class, classes, strict=True):
        members = torch.nonzero(labels == c).flatten()
        if count > len(members):
            raise ValueError(
                f"class {int(c)} has only {len(members)} images; cannot take {count} of it"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values


# --------------------------------------------------------------------------- CIFAR-10


def load_cifar10(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = True,
    classes: Sequence[str] | None = None,
) -> ImageSet:
    """CIFAR-10 as uint8 tensors, optionally a stratified subset of ``n`` images.

    Images are ordered by their official index in either on-disk layout, so the same ``n`` and
    ``seed`` give the same images whether they come from PNG folders or from the pickles.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        n: number of images (class-balanced), or ``None`` for the whole split.
        seed: which subset.
        root: data root (see :func:`data_root`).
        download: when no local layout is found, download the official archive into ``root``
            (see :mod:`sslbook.download`); ``False`` still unpacks an archive already there.
        classes: keep only these classes, relabelled ``0..len(classes)-1`` (only their images
            are decoded).

    Returns:
        An :class:`ImageSet` with ``(n, 3, 32, 32)`` images.

    Raises:
        DataNotFoundError: no layout found and no download possible; the message lists every
            place and URL tried, and how to fix it.
        CorruptImageError: a file is damaged, of the wrong size, or not the official one.
    """
    _check_split(split)
    base = data_root(root)
    png_dir = base / "cifar10" / split
    shard_files = sorted((base / SHARD_DIR).glob(f"{split}-*.npz"))
    pickle_dir = base / PICKLE_DIR
    if not png_dir.is_dir() and shard_files:
        images, labels = _read_shards(shard_files)
        result = ImageSet(images, labels, CIFAR10_CLASSES, f"CIFAR-10 {split}")
        if classes is not None:
            result = result.select_classes(classes)
        return result.stratified(n, seed)
    if png_dir.is_dir():
        files, labels = _cifar_png_files(png_dir)
        keep = torch.arange(len(files))
        if classes is not None:
            keep = torch.nonzero(torch.isin(labels, _class_ids(classes))).flatten()
        if n is not None and n < len(keep):
            keep = keep[stratified_indices(labels[keep], n, seed)]
        images = _decode_pngs([files[i] for i in keep.tolist()])
        result = ImageSet(images, labels[keep], CIFAR10_CLASSES, f"CIFAR-10 {split}")
        return result if classes is None else result.select_classes(classes)
    if not pickle_dir.is_dir():
        _fetch_cifar10(base, [png_dir, base / SHARD_DIR, pickle_dir], download)
    images, labels = _cifar_pickles(pickle_dir, split)
    result = ImageSet(images, labels, CIFAR10_CLASSES, f"CIFAR-10 {split}")
    if classes is not None:
        result = result.select_classes(classes)
    return result.stratified(n, seed)


def _fetch_cifar10(base: Path, searched: list[Path], download: bool) -> None:
    """Unpack the official archive found in ``base``, else downloaded into it."""
    from sslbook import download as dl

    try:
        dl.download_cifar10(base, network=download)
    except DataNotFoundError as error:
        searched = [*searched, base / dl.CIFAR10_ARCHIVE.name]
        raise _not_found("CIFAR-10", base, searched, download, str(error)) from None


def _class_ids(classes: Sequence[str]) -> torch.Tensor:
    unknown = [c for c in classes if c not in CIFAR10_CLASSES]
    if unknown:
        raise ValueError(f"unknown CIFAR-10 classes {unknown}; valid: {list(CIFAR10_CLASSES)}")
    return torch.tensor([CIFAR10_CLASSES.index(c) for c in classes])


def _cifar_png_files(split_dir: Path) -> tuple[list[Path], torch.Tensor]:
    """All PNG paths of one split, in official-index order, with their labels."""
    entries = []
    for label, name in enumerate(CIFAR10_CLASSES):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise DataNotFoundError(
                f"{class_dir} is missing: a CIFAR-10 PNG split needs one folder per class "
                f"({', '.join(CIFAR10_CLASSES)})."
            )
        found = [e for e in os.scandir(class_dir) if e.name.endswith(".png")]
        if not found:  # else a silent 9-class dataset, with one label never seen
            raise DataNotFoundError(
                f"{class_dir} holds no PNG files: the copy of CIFAR-10 in {split_dir.parent} is "
                f"incomplete. Copy that class's images again, or point {DATA_ENV} at a complete "
                "copy."
            )
        entries += [(_official_index(e.name), label, Path(e.path)) for e in found]
    entries.sort()
    return [e[2] for e in entries], torch.tensor([e[1] for e in entries])


def _official_index(filename: str) -> int:
    prefix = filename.split("_", 1)[0]
    return int(prefix) if prefix.isdigit() else -1


def _decode_pngs(files: Sequence[Path]) -> torch.Tensor:
    """Decode image files into one ``(N, 3, H, W)`` uint8 tensor, with threads, or load the
    tensor kept from an earlier decoding of the very same files (see :func:`_decoded_path`)."""
    path = _decoded_path(files)
    if path is not None and path.exists():
        try:
            return torch.from_numpy(np.load(path))
        except (OSError, ValueError):  # damaged: decode again, and replace it
            path.unlink(missing_ok=True)
    images = _decode_files(files)
    if path is not None:
        from sslbook.checkpoint import atomic_write

        atomic_write(path, lambda f: np.save(f, images.numpy()))
    return images


def _decoded_path(files: Sequence[Path]) -> Path | None:
    """Where the decoded tensor of ``files`` is kept: keyed by every file's path, size and
    modification time (a replaced or edited file decodes anew) and by this module's source."""
    if len(files) < DECODE_CACHE_MIN:
        return None  # small sets decode in moments; not worth a file
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for file in files:
        stat = file.stat()
        digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return cache_dir() / "decoded" / f"images-{len(files)}-{digest.hexdigest()[:16]}.npy"


def _decode_files(files: Sequence[Path], size: tuple[int, int] = CIFAR10_SIZE) -> torch.Tensor:
    """Decode ``files``, each of which must be ``size`` (width, height): one stray image of
    another size is named here, rather than failing later in ``np.stack`` with no file name."""
    from PIL import Image

    def decode(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                if image.size == size:
                    return np.asarray(_to_rgb(image))
                found = image.size
        except (OSError, ValueError) as error:
            raise CorruptImageError(
                f"{path} is not a readable image ({error}). The copy of the dataset is damaged: "
                "replace this file (or delete the dataset folder and fetch it again)."
            ) from None
        raise CorruptImageError(
            f"{path} is {found[0]}x{found[1]} pixels, but every image of this dataset is "
            f"{size[0]}x{size[1]}: it does not belong here. Remove it or replace it with the "
            "original file."
        )

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(decode, files))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


def _read_shards(files: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split from its ``.npz`` shards, in official-index order."""
    parts = []
    for file in files:
        try:
            with np.load(file) as shard:
                parts.append((shard["index"], shard["images"], shard["labels"]))
        except (OSError, ValueError, KeyError) as error:
            raise CorruptImageError(
                f"{file} is not a readable CIFAR-10 shard ({error}); write the shards again with "
                "`python -m sslbook shards` or delete them to use the PNG folders."
            ) from None
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    images = np.concatenate([p[1] for p in parts])[order]
    labels = np.concatenate([p[2] for p in parts])[order]
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def write_shards(
    out: str | os.PathLike | None = None, shards: int = 4, root: str | os.PathLike | None = None
) -> list[Path]:
    """Write CIFAR-10 as compressed uint8 shards, ``<out>/cifar10-shards/{train,test}-<k>.npz``
    (``out`` defaults to the data root), each holding ``images`` (n, 3, 32, 32), ``labels`` and
    ``index`` (the official position): the whole dataset in parts of a few tens of megabytes,
    to copy to a machine where it cannot be downloaded. :func:`load_cifar10` reads them.

    Returns:
        The files written, in order.
    """
    from sslbook.checkpoint import atomic_write

    folder = Path(out).expanduser() if out is not None else data_root(root)
    folder = folder / SHARD_DIR
    written = []
    for split in ("train", "test"):
        data = load_cifar10(split, root=root, download=False)
        for k, part in enumerate(np.array_split(np.arange(len(data)), shards)):
            arrays = {
                "images": data.images[part].numpy(),
                "labels": data.labels[part].numpy().astype(np.uint8),
                "index": part,
            }  # a killed write leaves the old shard, never a truncated one
            write = functools.partial(np.savez_compressed, **arrays)
            written.append(atomic_write(folder / f"{split}-{k}.npz", write))
    return written


def _cifar_pickles(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        batch = _load_batch(folder / name)
        try:
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch["labels"])
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptImageError(
                f"{folder / name} is not a CIFAR-10 batch ({error!r}); delete {folder} and load "
                "again to download a fresh copy."
            ) from None
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels)


def _load_batch(path: Path) -> dict:
    """Unpickle one official batch file, only once its MD5 is the published one.

    ``pickle.load`` can run any code a file asks it to, so a damaged or crafted file in the data
    folder must never reach it. The bytes are hashed and unpickled from one read, so the file
    cannot be swapped in between. (MD5 is weak against two files made to collide, but not
    against a file made to match one fixed, published MD5.)
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptImageError(
            f"{path} cannot be read ({error}); delete {path.parent} and load again to download "
            "a fresh copy."
        ) from None
    digest, expected = hashlib.md5(data, usedforsecurity=False).hexdigest(), CIFAR10_PICKLE_MD5
    if expected.get(path.name) != digest:
        raise CorruptImageError(
            f"{path} is not the official CIFAR-10 file (MD5 {digest}, expected "
            f"{expected.get(path.name, 'no such file in the official set')}). It was not opened, "
            f"because a pickle can run code: delete {path.parent} and load again to download a "
            "fresh copy."
        )
    try:
        return pickle.loads(data, encoding="latin1")
    except (pickle.UnpicklingError, EOFError) as error:
        raise CorruptImageError(f"{path} cannot be unpickled ({error}).") from None


# --------------------------------------------------------------------------- MNIST


def load_mnist(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageSet:
    """MNIST as a ``(n, 1, 28, 28)`` uint8 :class:`ImageSet` (torchvision's ``MNIST/raw``).

    The uncompressed files are read; missing ones are decompressed from the ``.gz`` files in the
    same folder, or downloaded when ``download`` (see :mod:`sslbook.download`).
    """
    _check_split(split)
    base = data_root(root)
    raw = base / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"
    needed = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if not all(p.exists() for p in needed):
        _fetch_mnist(base, split, raw, download)
    images = _read_idx(needed[0]).unsqueeze(1)  # (N, 1, 28, 28)
    labels = _read_idx(needed[1]).long()
    return ImageSet(images, labels, MNIST_CLASSES, f"MNIST {split}").stratified(n, seed)


def _read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (the MNIST format: big-endian header, then uint8 data)."""
    data = path.read_bytes()
    if len(data) < 8 or data[2] != 0x08:
        raise CorruptImageError(f"{path} is not an IDX uint8 file; delete it and download again.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise CorruptImageError(f"{path} is truncated; delete it and download again.")
    return torch.from_numpy(body.reshape(shape).copy())


def _fetch_mnist(base: Path, split: str, raw: Path, download: bool) -> None:
    """Decompress the ``.gz`` files found in ``raw``, else downloaded into it."""
    from sslbook import download as dl

    try:
        dl.download_mnist(base, split, network=download)
    except DataNotFoundError as error:
        raise _not_found("MNIST", base, [raw], download, str(error)) from None


# --------------------------------------------------------------------------- your own images


def load_image_folder(
    folder: str | os.PathLike, size: int = 32, n: int | None = None, seed: int = 0
) -> ImageSet:
    """Your own photos as an :class:`ImageSet`, centre-cropped to squares of ``size`` pixels.

    Each sub-folder of ``folder`` is a class (as in ``torchvision.datasets.ImageFolder``), with
    every image anywhere below it: ``cats/2019/a.jpg`` is a cat, so ``cats/2019`` and
    ``dogs/2019`` stay two classes. Images directly in ``folder`` are unlabelled (label ``-1``).
    Sub-folders that are symbolic links (photos kept elsewhere) are followed, a link back to a
    folder above only once. Photos are turned upright by their EXIF orientation, as a viewer
    shows them, and 16-bit images are scaled to 8 bits rather than clipped to white.

    Every file is fully decoded here, once, so a damaged one (unreadable, or a PNG or JPEG cut
    short) is found before training rather than mid-epoch; such files are skipped with one
    warning that lists them, so one bad photo never stops a run.

    Args:
        folder: the folder of images (searched recursively).
        size: side of the square images returned.
        n: keep only ``n`` images (class-balanced when every image has a class).
        seed: which ``n`` images.

    Returns:
        An :class:`ImageSet` with ``(N, 3, size, size)`` images.

    Raises:
        DataNotFoundError: ``folder`` is missing or holds no image files.
        CorruptImageError: none of its image files can be decoded.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} is not a directory; pass the folder of your images.")
    files = _image_files(folder)
    if not files:
        raise DataNotFoundError(
            f"{folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)} in it and its "
            "sub-folders). Copy your photos into it, one sub-folder per class if you want to "
            "probe the features, or pass the folder that holds them."
        )
    class_of = {path: _class_of(path, folder) for path in files}
    classes = tuple(sorted({c for c in class_of.values() if c is not None}))
    images, labels, skipped = [], [], []
    for path in files:
        pixels = _decode_photo(path, size)
        if pixels is None:
            skipped.append(path)
            continue
        images.append(pixels)
        labels.append(-1 if class_of[path] is None else classes.index(class_of[path]))
    if skipped:
        listed = "\n  ".join(str(p) for p in skipped)
        warnings.warn(f"skipped {len(skipped)} unreadable image(s):\n  {listed}", stacklevel=2)
    if not images:
        raise CorruptImageError(
            f"none of the {len(files)} image files in {folder} could be read (the warning above "
            "lists them): they are damaged or in a format Pillow cannot decode. Open one in an "
            "image viewer; re-save your photos as PNG or JPEG."
        )
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    result = ImageSet(tensor, torch.tensor(labels), classes, folder.name)
    if n is None or n >= len(result):
        return result
    if (result.labels < 0).any():
        order = torch.randperm(len(result), generator=torch.Generator().manual_seed(seed))
        return result[order[:n].sort().values]
    return result.stratified(n, seed)


def _image_files(folder: Path) -> list[Path]:
    """Every image file below ``folder``, sorted, following symlinked folders.

    ``Path.rglob`` does not enter a linked folder, and a class folder is often a link to photos
    kept elsewhere. A folder that is its own ancestor (a link back up) is entered only once, so
    the walk ends; two links to the same folder are both followed.
    """
    files, ancestors = [], {str(folder): frozenset()}
    for top, subfolders, names in os.walk(folder, followlinks=True):
        stat = os.stat(top)
        here, above = (stat.st_dev, stat.st_ino), ancestors.pop(top)
        if here in above:
            subfolders.clear()
            continue
        ancestors.update({os.path.join(top, d): above | {here} for d in subfolders})
        files += [Path(top, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return sorted(p for p in files if p.is_file())


def _class_of(path: Path, folder: Path) -> str | None:
    """The class of an image: the sub-folder of ``folder`` it is in, however deep (``None``:
    directly in ``folder``)."""
    parts = path.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else None


def _decode_photo(path: Path, size: int) -> np.ndarray | None:
    """``(size, size, 3)`` uint8 pixels of one file, upright, or ``None`` when it cannot be
    decoded.

    ``Image.open`` reads only the header; ``convert`` decodes every pixel, so a truncated file
    fails here (Pillow raises ``OSError``) and not later.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return _square_resize(_to_rgb(_upright(image)), size)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None


def _upright(image):
    """The image as a viewer shows it: a phone stores a portrait photo sideways, with an EXIF
    tag that says how to turn it. Damaged EXIF leaves the photo as stored, not skipped."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return image


def _to_rgb(image):
    """8-bit RGB of an image in any mode. Pillow's ``convert`` clips 16-bit grey values
    (``I;16``, ``I``: 0..65535) at 255, which turns nearly every pixel white; they are scaled
    to 0..255 first."""
    from PIL import Image

    if image.mode.startswith("I"):
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _square_resize(image, size: int) -> np.ndarray:
    from PIL import Image

    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def split_labelled(data: ImageSet, per_class: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split the labelled images of ``data`` for a probe: ``per_class`` training images of every
    class, and all the other labelled images for testing.

    With a folder of your own photos, the labelled images are usually few; every one that does
    not train the probe measures it, so the test accuracy is as precise as the folder allows.
    Unlabelled images (label ``-1``) are left out of both.

    Args:
        data: images with labels (``-1``: unlabelled).
        per_class: labelled training images per class.
        seed: which images train the probe.

    Returns:
        ``(train, test)``: ``per_class * C`` images, and the remaining labelled ones.

    Raises:
        ValueError: fewer than two classes, or a class with no image left for testing.
    """
    labelled = data[data.labels >= 0]
    counts = torch.bincount(labelled.labels, minlength=len(data.classes))
    if (counts > 0).sum() < 2:
        raise ValueError(
            f"a probe needs labelled images of at least two classes; {data.name} has "
            f"{len(labelled)} labelled image(s). Put the images in sub-folders, one per class."
        )
    short = [f"{data.classes[c]} ({int(k)})" for c, k in enumerate(counts) if 0 < k <= per_class]
    if short:
        raise ValueError(
            f"{per_class} training images per class leave none to test on for: "
            f"{', '.join(short)}. Add images to these classes or lower per_class."
        )
    train_index = stratified_indices(labelled.labels, per_class * int((counts > 0).sum()), seed)
    test_mask = torch.ones(len(labelled), dtype=torch.bool)
    test_mask[train_index] = False
    return labelled[train_index], labelled[test_mask]


DEMO_CLASSES = ("airplane", "automobile", "bird", "cat")
DEMO_MARKER = ".sslbook-demo"


def make_demo_folder(
    path: str | os.PathLike,
    n_per_class: int = 64,
    classes: Sequence[str] = DEMO_CLASSES,
    seed: int = 0,
    corrupt: int = 2,
    root: str | os.PathLike | None = None,
) -> Path:
    """Write a small folder of photos laid out as a reader's would be, from CIFAR-10 test images.

    It stands in for your own photos where there are none (CI, a first try): one sub-folder per
    class of ``n_per_class`` PNGs, plus ``corrupt`` damaged files (alternately a PNG cut in half
    and a text file named ``.jpg``) that :func:`load_image_folder` skips with its warning.

    A folder written earlier by this function is replaced; any other non-empty folder is refused,
    so your own files are never deleted. The new folder is written beside ``path`` and swapped in
    whole (see :func:`swap_in_folder`), so another run reading ``path`` meanwhile sees the old
    folder or the new one, never a half-written one.

    Args:
        path: the folder to write.
        n_per_class: images per class.
        classes: CIFAR-10 class names, one sub-folder each.
        seed: which test images.
        corrupt: how many damaged files to add.
        root: data root of CIFAR-10 (see :func:`data_root`).

    Returns:
        ``path``, holding ``n_per_class * len(classes) + corrupt`` files.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder this function did not write.
    """
    path = Path(path).expanduser()
    _check_replaceable(path)
    photos = load_cifar10("test", n=n_per_class * len(classes), seed=seed, root=root,
                          classes=classes)  # fmt: skip
    staging = staging_folder(path)
    try:
        _write_demo(staging, photos, corrupt)
        swap_in_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already, unless the write failed
    return path


def _check_replaceable(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file; pick a new folder for the demo images.")
    if path.is_dir() and any(path.iterdir()) and not (path / DEMO_MARKER).exists():
        raise FileExistsError(f"{path} is not empty; pick a new folder for the demo images.")


def _write_demo(path: Path, photos: ImageSet, corrupt: int) -> None:
    from PIL import Image

    for name in photos.classes:
        (path / name).mkdir(parents=True, exist_ok=True)
    (path / DEMO_MARKER).write_text("written by sslbook.data.make_demo_folder\n")
    pixels = photos.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3)
    for i, (array, label) in enumerate(zip(pixels, photos.labels.tolist(), strict=True)):
        Image.fromarray(array).save(path / photos.classes[label] / f"{i:05d}.png")
    for i in range(corrupt):
        folder = path / photos.classes[i % len(photos.classes)]
        if i % 2 == 0:
            whole = min(folder.glob("[0-9]*.png")).read_bytes()
            (folder / f"broken-{i}.png").write_bytes(whole[: len(whole) // 2])
        else:
            (folder / f"broken-{i}.jpg").write_text("this is not a photo")


# --------------------------------------------------------------------------- helpers


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _not_found(
    dataset: str, base: Path, searched: list[Path], download: bool, report: str
) -> DataNotFoundError:
    """One error for a dataset found nowhere: every place looked in, then the download's own
    report (each URL tried and why it failed) and how to fix it."""
    looked = "\n  ".join(str(p) for p in searched)
    how = "" if download else " (download=False, so nothing was downloaded)"
    return DataNotFoundError(
        f"{dataset} was not found under {base}{how}; looked in:\n  {looked}\n{report}"
    )


def staging_folder(target: Path) -> Path:
    """A new, empty folder beside ``target`` to build its next version in, for
    :func:`swap_in_folder`; leftovers of killed writes of ``target`` are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.*.building"):
        try:
            if now - leftover.stat().st_mtime > STALE_SECONDS:  # younger: a write running now
                shutil.rmtree(leftover)
        except FileNotFoundError:  # another process cleaned it up first
            continue
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".building"))


def swap_in_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target`` and delete the folder it replaces.

    On Linux the two names are exchanged in one step (``renameat2`` with ``RENAME_EXCHANGE``):
    a reader sees the whole old folder or the whole new one. Elsewhere (or on a file system
    without exchange) the old folder is renamed aside first, which leaves ``target`` missing
    for the instant between two renames, but never half-written.
    """
    if _exchange(new, target):
        shutil.rmtree(new)  # now the old folder
        return
    aside = None
    if target.exists():
        aside = new.with_name(new.name.removesuffix(".building") + ".old.building")
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        if aside is not None:
            os.rename(aside, target)  # put the old folder back
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` atomically; ``False`` where this cannot be done."""
    if not sys.platform.startswith("linux") or not b.exists():
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]  # fmt: skip
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    return renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0
