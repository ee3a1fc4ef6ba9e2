"""Downloads that are checked before they are used: mirrors, checksums, resume, safe unpacking.

A dataset is fetched only when no local copy exists (see :mod:`sslbook.data`). Each file is
tried from ``$SSLBOOK_MIRROR`` first, then from its own list of mirrors. It goes to a temporary
file beside its final place, and is moved there only after its size and MD5 match the published
ones. A partial or damaged download is deleted, never used. A connection that drops midway is
resumed with an HTTP Range request where the server allows it, and restarted cleanly where it
does not. When every mirror fails, one :class:`~sslbook.data.DataNotFoundError` lists each URL,
why it failed, and how to fix it.

Only the standard library talks to the network (``urllib``), so this works wherever Python
does, behind the same proxies (``https_proxy``) that urllib honours.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sslbook.data import CorruptImageError, DataNotFoundError, staging_folder

MIRROR_ENV = "SSLBOOK_MIRROR"
TIMEOUT = 60.0  # seconds a connection may stay silent before it counts as dropped
ATTEMPTS = 3  # tries per URL; a dropped connection resumes where it stopped
RETRY_PAUSE = 2.0  # seconds before the second try, twice that before the third
CHUNK = 1 << 20
USER_AGENT = "sslbook (Python urllib)"

# Base URLs: the file is at <base><name>. Any mirror is safe to list, because nothing it serves
# is used unless its size and MD5 match the published ones below; a wrong or tampered file is
# deleted and the next mirror is tried. Correct this list here, in one place.
CIFAR10_MIRRORS = (
    "https://www.cs.toronto.edu/~kriz/",  # the original host
    "https://dataset.bj.bcebos.com/cifar/",  # PaddlePaddle's copy (paddle.vision.datasets.Cifar10)
)
MNIST_MIRRORS = (  # torchvision's list (torchvision.datasets.MNIST.mirrors)
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CIFAR10_FOLDER = "cifar-10-batches-py"


@dataclass(frozen=True)
class Remote:
    """One file to download, and what it must be.

    Attributes:
        name: file name, both on the mirrors and on disk.
        size: exact size in bytes.
        md5: published MD5, hex.
        mirrors: base URLs that hold ``name`` (tried after ``$SSLBOOK_MIRROR``).
    """

    name: str
    size: int
    md5: str
    mirrors: tuple[str, ...]

    def urls(self) -> list[str]:
        """Every URL to try, in order: ``$SSLBOOK_MIRROR``'s, then the built-in mirrors."""
        urls = [_join(base, self.name) for base in (*env_mirrors(), *self.mirrors)]
        return list(dict.fromkeys(urls))  # each once, first place kept


CIFAR10_ARCHIVE = Remote(
    "cifar-10-python.tar.gz", 170_498_071, "c58f30108f718f92721af3b95e74349a", CIFAR10_MIRRORS
)
MNIST_FILES = {
    remote.name: remote
    for remote in (
        Remote("train-images-idx3-ubyte.gz", 9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
               MNIST_MIRRORS),
        Remote("train-labels-idx1-ubyte.gz", 28_881, "d53e105ee54ea40749a09fcbcd1e9432",
               MNIST_MIRRORS),
        Remote("t10k-images-idx3-ubyte.gz", 1_648_877, "9fb629c4189551a2d022fa330f9573f3",
               MNIST_MIRRORS),
        Remote("t10k-labels-idx1-ubyte.gz", 4_542, "ec29112dd5afa0611ce80d1b7f02629c",
               MNIST_MIRRORS),
    )
}  # fmt: skip


class _Failed(Exception):
    """This URL cannot deliver the file (message: why); the next mirror is tried."""


class _Interrupted(_Failed):
    """A transient failure (dropped connection, timeout, server error): try this URL again."""

    def __init__(self, message: str, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart  # the bytes kept so far cannot be continued: start again


def env_mirrors() -> list[str]:
    """Base URLs from ``$SSLBOOK_MIRROR``: comma-separated; a plain folder becomes a file URL,
    so a course can point every reader at a shared drive as easily as at a web server."""
    entries = [e.strip() for e in os.environ.get(MIRROR_ENV, "").split(",") if e.strip()]
    return [e if "://" in e else Path(e).expanduser().resolve().as_uri() for e in entries]


def _join(base: str, name: str) -> str:
    if base.endswith("/" + name):  # a mirror given as the file's own URL
        return base
    return base.rstrip("/") + "/" + name


# --------------------------------------------------------------------------- one file


def fetch(
    remote: Remote,
    folder: str | os.PathLike,
    network: bool = True,
    progress: bool = True,
    timeout: float = TIMEOUT,
    hint: Sequence[Remote] | None = None,
) -> Path:
    """The checked file ``folder / remote.name``: the copy already there, else a download.

    A copy already in ``folder`` (e.g. copied there by hand) is used when its size and MD5 are
    right, with no network access at all. Otherwise each of ``remote.urls()`` is tried in turn.

    Args:
        remote: what to fetch.
        folder: where it goes.
        network: ``False``: only look for a local copy.
        progress: show a progress bar.
        timeout: seconds of silence after which a connection counts as dropped.
        hint: the files the error's fix names, for a dataset of several (default ``[remote]``).

    Returns:
        The path of the verified file.

    Raises:
        DataNotFoundError: no good copy and every URL failed; lists each URL and why.
    """
    target = Path(folder) / remote.name
    problem = _check(target, remote) if target.exists() else f"{target} does not exist"
    if problem is None:
        return target
    from sslbook.checkpoint import atomic_write

    failures = [problem]
    for url in remote.urls() if network else []:
        transfer = functools.partial(_transfer, url, remote, timeout=timeout, show=progress)
        try:
            return atomic_write(target, transfer)  # its temporary file goes on any failure
        except _Failed as error:
            failures.append(f"{url}: {error}")
    raise DataNotFoundError(_failure_report(remote, target, failures, network, hint or [remote]))


def _check(path: Path, remote: Remote) -> str | None:
    """``None`` when ``path`` is exactly ``remote``'s file, else what is wrong with it."""
    size = path.stat().st_size
    if size != remote.size:
        return f"{path} has {size:,} bytes, not {remote.size:,}: a partial or different file"
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
    if md5.hexdigest() != remote.md5:
        return f"{path} is damaged (MD5 {md5.hexdigest()}, expected {remote.md5})"
    return None


def _failure_report(
    remote: Remote, target: Path, failures: list[str], network: bool, hint: Sequence[Remote]
) -> str:
    tried = "\n  ".join(failures)
    how = "every download failed" if network else "downloading is off"
    return (
        f"could not get {remote.name} into {target.parent} ({how}):\n  {tried}\n"
        f"{fix_hint(hint, target.parent)}"
    )


def fix_hint(remotes: Sequence[Remote], folder: str | os.PathLike) -> str:
    """What a reader can do when files cannot be downloaded: the three ways to provide them."""
    files = "\n".join(
        f"      {r.name} ({r.size:,} bytes, MD5 {r.md5}), e.g. from {_join(r.mirrors[0], r.name)}"
        for r in remotes
    )
    return (
        "Fix, any one of:\n"
        "  - the dataset is on this machine or a shared drive: export SSLBOOK_DATA=/that/folder "
        "(or pass root=...);\n"
        f"  - a mirror holds the files: export {MIRROR_ENV}=https://host/path/ (or a folder; "
        "several comma-separated), tried first;\n"
        f"  - copy these files by hand into {folder}/; they are checked and unpacked on the next "
        f"load:\n{files}"
    )


# --------------------------------------------------------------------------- HTTP


class _Received:
    """What has arrived of one file: the temporary file, its MD5 so far and the progress bar."""

    def __init__(self, file: BinaryIO, size: int, bar) -> None:
        self.file, self.size, self.bar = file, size, bar
        self.md5 = hashlib.md5(usedforsecurity=False)

    @property
    def count(self) -> int:
        return self.file.tell()

    def restart(self) -> None:
        """Throw away what arrived: the next bytes are the file's first ones."""
        self.file.seek(0)
        self.file.truncate()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.bar.reset(total=self.size)

    def add(self, chunk: bytes) -> None:
        if self.count + len(chunk) > self.size:
            raise _Failed(f"the server sent more than the {self.size:,} bytes expected")
        self.file.write(chunk)
        self.md5.update(chunk)
        self.bar.update(len(chunk))


def _transfer(url: str, remote: Remote, file: BinaryIO, timeout: float, show: bool) -> None:
    """Download ``url`` into ``file``, retrying a dropped connection (resumed where the server
    allows it), then check size and MD5. Raises :class:`_Failed` with the reason."""
    from tqdm.auto import tqdm

    with tqdm(total=remote.size, unit="B", unit_scale=True, unit_divisor=1024,
              desc=remote.name, disable=not show, leave=False) as progress:  # fmt: skip
        received = _Received(file, remote.size, progress)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _request(url, received, timeout)
                break
            except _Interrupted as error:
                if error.restart:
                    received.restart()
                if attempt == ATTEMPTS:
                    raise _Failed(f"failed {ATTEMPTS} times; last: {error}") from None
                time.sleep(RETRY_PAUSE * attempt)
    if received.count != remote.size:
        raise _Failed(f"got {received.count:,} bytes, expected {remote.size:,}")
    if received.md5.hexdigest() != remote.md5:
        raise _Failed(
            f"wrong MD5 {received.md5.hexdigest()} (expected {remote.md5}): a damaged or "
            "different file; it was deleted"
        )


def _request(url: str, received: _Received, timeout: float) -> None:
    """One request for the bytes still missing (a Range request when some are already here).
    Network errors become :class:`_Failed` or :class:`_Interrupted`; disk errors (a full disk)
    are not retried, they propagate as they are."""
    headers = {"User-Agent": USER_AGENT}
    if received.count:
        headers["Range"] = f"bytes={received.count}-"
    with _open(url, headers, timeout) as response:
        _start(response, received)
        while chunk := _read(response):
            received.add(chunk)
    if received.count < received.size:
        raise _Interrupted(f"the connection closed after {received.count:,} bytes")


def _open(url: str, headers: dict[str, str], timeout: float):
    # urllib.request.urlopen is looked up at each call, so a test can forbid the network
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        message = f"HTTP {error.code} {error.reason}"
        if error.code == 416:  # the Range asked for is refused: ask for the whole file
            raise _Interrupted(message, restart=True) from None
        if error.code >= 500 or error.code in (408, 429):
            raise _Interrupted(message) from None
        raise _Failed(message) from None
    except urllib.error.URLError as error:  # no such host, refused, no such file
        if isinstance(error.reason, (TimeoutError, ConnectionResetError)):
            raise _Interrupted(str(error.reason)) from None
        raise _Failed(str(error.reason)) from None
    except (OSError, http.client.HTTPException) as error:  # timed out or cut while connecting
        raise _Interrupted(str(error) or type(error).__name__) from None
    except ValueError as error:  # not a URL at all
        raise _Failed(str(error)) from None


def _start(response, received: _Received) -> None:
    """Check the response's status and headers against what is already here."""
    status = getattr(response, "status", None)  # None for file:// URLs
    if status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != received.count:
            raise _Interrupted("the server resumed at the wrong place", restart=True)
        if match[2] != "*" and int(match[2]) != received.size:
            raise _Failed(f"the server's file has {int(match[2]):,} bytes, not {received.size:,}")
        return
    if received.count:  # the server ignored the Range: the whole file comes again
        received.restart()
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) != received.size:
        raise _Failed(f"the server's file has {int(length):,} bytes, not {received.size:,}")


def _read(response) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as error:
        raise _Interrupted(str(error) or type(error).__name__) from None


# --------------------------------------------------------------------------- datasets


def download_cifar10(root: str | os.PathLike, network: bool = True, progress: bool = True) -> Path:
    """Put torchvision's ``cifar-10-batches-py/`` under ``root``, from the official archive.

    The archive is taken from ``root`` when a good copy is there, else downloaded (see
    :func:`fetch`); it is kept, so unpacking again never needs the network.

    Args:
        root: the data root.
        network: ``False``: only use an archive already in ``root``.
        progress: show a progress bar.

    Returns:
        The folder of the six batch files.
    """
    archive = fetch(CIFAR10_ARCHIVE, root, network=network, progress=progress)
    return extract_cifar10(archive, Path(root))


def extract_cifar10(archive: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Unpack the CIFAR-10 archive into ``root / "cifar-10-batches-py"``, safely.

    Only plain files directly inside ``cifar-10-batches-py/`` are written, and by this code, not
    by ``tarfile``: a member with ``..``, an absolute path, a link or a device is refused before
    anything is written, so no archive can write outside the folder. The files are unpacked into
    a folder beside it that is renamed into place when complete: a reader never sees half.

    Returns:
        The unpacked folder.

    Raises:
        CorruptImageError: the archive holds anything else.
    """
    target = Path(root) / CIFAR10_FOLDER
    staging = staging_folder(target)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                _extract_member(tar, member, staging, Path(archive))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise  # else another process unpacked it first: keep theirs
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path, archive: Path):
    parts = PurePosixPath(member.name).parts
    if member.isdir() and parts == (CIFAR10_FOLDER,):
        return
    plain = len(parts) == 2 and parts[0] == CIFAR10_FOLDER
    if not (member.isfile() and plain and re.fullmatch(r"[\w-][\w.-]*", parts[1])):
        raise CorruptImageError(
            f"{archive} holds {member.name!r}, which is not a plain file in {CIFAR10_FOLDER}/; "
            "it was not unpacked. Delete the archive and load again to download a fresh copy."
        )
    with tar.extractfile(member) as source, open(into / parts[1], "xb") as out:
        shutil.copyfileobj(source, out)


def mnist_remotes(split: str) -> list[Remote]:
    """The two MNIST files (images, labels) of ``split``."""
    prefix = "train" if split == "train" else "t10k"
    return [MNIST_FILES[f"{prefix}-{kind}-ubyte.gz"] for kind in ("images-idx3", "labels-idx1")]


def download_mnist(
    root: str | os.PathLike, split: str, network: bool = True, progress: bool = True
) -> Path:
    """Put the uncompressed MNIST files of ``split`` in torchvision's ``root/MNIST/raw/``.

    Each ``.gz`` is taken from that folder when a good copy is there, else downloaded (see
    :func:`fetch`), then decompressed beside it through a temporary file.

    Returns:
        The ``raw`` folder.
    """
    from sslbook.checkpoint import atomic_write

    raw = Path(root) / "MNIST" / "raw"
    remotes = mnist_remotes(split)
    for remote in remotes:
        plain = raw / remote.name.removesuffix(".gz")
        if not plain.exists():
            packed = fetch(remote, raw, network=network, progress=progress, hint=remotes)
            atomic_write(plain, functools.partial(_gunzip, packed))
    return raw


def _gunzip(path: Path, out: BinaryIO) -> None:
    with gzip.open(path, "rb") as source:
        shutil.copyfileobj(source, out)
