"""Downloads: mirror fallback, checksums, resume, $SSLBOOK_MIRROR, safe unpacking, and no network
at all when the data is already on disk. A local HTTP server stands in for the mirrors and tiny
fake files (with their own checksums) for the real datasets."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import sslbook as sb
from sslbook import download as dl
from sslbook.data import CIFAR10_CLASSES, CorruptImageError, DataNotFoundError

STALL = 1.0  # seconds a stalled response waits before its body


class _Routes:
    """What the test server serves, and every request it received."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # this many next responses for a path stop halfway
        self.stall: dict[str, int] = {}  # this many next responses wait STALL seconds
        self.no_range: set[str] = set()  # these are always served whole, ignoring Range
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.url = ""

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def _handler(routes: _Routes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            routes.requests.append((self.path, self.headers.get("Range")))
            data = routes.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start, wanted = 0, self.headers.get("Range")
            if wanted and self.path not in routes.no_range:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if _take(routes.cut, self.path):  # announce it all, send half, hang up
                body = body[: len(body) // 2]
            if _take(routes.stall, self.path):
                time.sleep(STALL)
            try:
                self.wfile.write(body)
            except OSError:  # the client gave up on a stalled response
                pass

        def log_message(self, *args) -> None:
            pass

    return Handler


def _take(counts: dict[str, int], path: str) -> bool:
    if counts.get(path, 0) <= 0:
        return False
    counts[path] -= 1
    return True


@pytest.fixture
def server():
    routes = _Routes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(routes))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    routes.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield routes
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_reader_mirror(monkeypatch):
    """The developer's own $SSLBOOK_MIRROR must not leak in; retries need not wait."""
    monkeypatch.delenv("SSLBOOK_MIRROR", raising=False)
    monkeypatch.setattr(dl, "RETRY_PAUSE", 0.0)


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL or a socket fails the test."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access: {args[:2]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _remote(name: str, data: bytes, *mirrors: str) -> dl.Remote:
    return dl.Remote(name, len(data), hashlib.md5(data).hexdigest(), mirrors)


def _payload(n: int = 100_000) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def _damaged(data: bytes) -> bytes:
    return data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]


# --------------------------------------------------------------------------- mirrors


def test_a_missing_mirror_falls_back_to_the_next(server, tmp_path):
    data = _payload()
    server.files["/b/f.bin"] = data
    remote = _remote("f.bin", data, f"{server.url}/a/", f"{server.url}/b/")
    path = dl.fetch(remote, tmp_path, progress=False)
    assert path == tmp_path / "f.bin" and path.read_bytes() == data
    assert server.paths() == ["/a/f.bin", "/b/f.bin"]
    assert os.listdir(tmp_path) == ["f.bin"]  # no temporary file left behind


def test_a_mirror_with_a_wrong_checksum_is_not_used(server, tmp_path):
    data = _payload()
    server.files["/a/f.bin"] = _damaged(data)  # same size, one byte changed
    server.files["/b/f.bin"] = data
    remote = _remote("f.bin", data, f"{server.url}/a/", f"{server.url}/b/")
    assert dl.fetch(remote, tmp_path, progress=False).read_bytes() == data
    assert server.paths() == ["/a/f.bin", "/b/f.bin"]


def test_a_corrupt_download_is_never_used_and_leaves_no_file(server, tmp_path):
    data = _payload()
    server.files["/a/f.bin"] = _damaged(data)
    server.files["/b/f.bin"] = data[:-1000]  # a different size
    remote = _remote("f.bin", data, f"{server.url}/a/", f"{server.url}/b/")
    with pytest.raises(DataNotFoundError) as error:
        dl.fetch(remote, tmp_path, progress=False)
    message = str(error.value)
    assert f"{server.url}/a/f.bin: wrong MD5" in message
    assert f"{server.url}/b/f.bin: the server's file has 99,000 bytes, not 100,000" in message
    assert os.listdir(tmp_path) == []


def test_an_interrupted_download_is_deleted(server, tmp_path, monkeypatch):
    data = _payload()
    server.files["/a/f.bin"] = data

    def interrupt(self, chunk):
        self.file.write(chunk)
        raise KeyboardInterrupt  # the reader pressed Ctrl-C mid-download

    monkeypatch.setattr(dl._Received, "add", interrupt)
    with pytest.raises(KeyboardInterrupt):
        dl.fetch(_remote("f.bin", data, f"{server.url}/a/"), tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_the_mirror_variable_is_tried_first(server, tmp_path, monkeypatch):
    data = _payload()
    server.files["/course/f.bin"] = data
    server.files["/default/f.bin"] = data
    monkeypatch.setenv("SSLBOOK_MIRROR", f"{server.url}/nothing/, {server.url}/course/")
    remote = _remote("f.bin", data, f"{server.url}/default/")
    assert dl.fetch(remote, tmp_path, progress=False).read_bytes() == data
    assert server.paths() == ["/nothing/f.bin", "/course/f.bin"]


def test_the_mirror_variable_may_name_a_folder(tmp_path, monkeypatch):
    data = _payload()
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "f.bin").write_bytes(data)
    monkeypatch.setenv("SSLBOOK_MIRROR", str(tmp_path / "share"))
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("used the network"))
    remote = _remote("f.bin", data, "http://unreachable.invalid/")
    assert dl.fetch(remote, tmp_path / "data", progress=False).read_bytes() == data


def test_total_failure_lists_every_url_with_its_reason_and_the_fix(server, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    missing_folder = (tmp_path / "nowhere").as_uri() + "/"
    remote = _remote("f.bin", b"data", f"{server.url}/a/", closed, missing_folder)
    with pytest.raises(DataNotFoundError) as error:
        dl.fetch(remote, tmp_path / "data", progress=False)
    message = str(error.value)
    assert f"{server.url}/a/f.bin: HTTP 404" in message
    assert f"{closed}f.bin: [Errno" in message and "refused" in message
    assert f"{missing_folder}f.bin: [Errno 2]" in message
    assert "SSLBOOK_DATA" in message and "SSLBOOK_MIRROR" in message
    assert f"copy these files by hand into {tmp_path / 'data'}" in message


# --------------------------------------------------------------------------- resume


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    data = _payload()
    server.files["/a/f.bin"] = data
    server.cut["/a/f.bin"] = 1
    remote = _remote("f.bin", data, f"{server.url}/a/")
    assert dl.fetch(remote, tmp_path, progress=False).read_bytes() == data
    assert server.requests == [("/a/f.bin", None), ("/a/f.bin", "bytes=50000-")]


def test_a_server_without_range_support_restarts_cleanly(server, tmp_path):
    data = _payload()
    server.files["/a/f.bin"] = data
    server.cut["/a/f.bin"] = 1
    server.no_range.add("/a/f.bin")  # answers a Range request with the whole file
    remote = _remote("f.bin", data, f"{server.url}/a/")
    assert dl.fetch(remote, tmp_path, progress=False).read_bytes() == data
    assert len(server.requests) == 2


def test_a_silent_server_times_out_and_is_retried(server, tmp_path):
    data = _payload()
    server.files["/a/f.bin"] = data
    server.stall["/a/f.bin"] = 1
    remote = _remote("f.bin", data, f"{server.url}/a/")
    assert dl.fetch(remote, tmp_path, progress=False, timeout=0.2).read_bytes() == data
    assert len(server.requests) == 2


def test_a_server_that_keeps_failing_moves_on_to_the_next_mirror(server, tmp_path, monkeypatch):
    data = _payload()
    server.files["/a/f.bin"] = data
    server.files["/b/f.bin"] = data
    monkeypatch.setattr(dl, "ATTEMPTS", 2)
    server.cut["/a/f.bin"] = 99  # every response cut short
    remote = _remote("f.bin", data, f"{server.url}/a/", f"{server.url}/b/")
    assert dl.fetch(remote, tmp_path, progress=False).read_bytes() == data
    assert server.paths() == ["/a/f.bin", "/a/f.bin", "/b/f.bin"]


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_archive(members: dict[str, bytes] | None = None) -> bytes:
    """A tar.gz laid out like the official archive (or holding ``members``)."""
    if members is None:
        members = {f"cifar-10-batches-py/{name}": data for name, data in _batches().items()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _batches() -> dict[str, bytes]:
    """Six tiny pickles: image r of batch k has pixel value 2k + r, and label k + r."""
    names = [*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]
    batches = {}
    for k, name in enumerate(names):
        pixels = np.repeat(np.array([2 * k, 2 * k + 1], np.uint8), 3 * 32 * 32).reshape(2, -1)
        batches[name] = pickle.dumps({"data": pixels, "labels": [k, k + 1]})
    return batches


@pytest.fixture
def fake_cifar(server, monkeypatch):
    """CIFAR-10 on the test server: the archive's and the pickles' checksums swapped in."""
    archive = _cifar_archive()
    server.files["/cifar/cifar-10-python.tar.gz"] = archive
    remote = _remote("cifar-10-python.tar.gz", archive, f"{server.url}/cifar/")
    monkeypatch.setattr(dl, "CIFAR10_ARCHIVE", remote)
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in _batches().items()}
    monkeypatch.setattr(sb.data, "CIFAR10_PICKLE_MD5", md5s)
    return archive


def test_cifar10_is_downloaded_unpacked_and_loaded(fake_cifar, tmp_path):
    train = sb.load_cifar10("train", root=tmp_path)
    assert train.images.shape == (10, 3, 32, 32)
    assert train.images[:, 0, 0, 0].tolist() == list(range(10))
    assert train.labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert sorted(os.listdir(tmp_path / "cifar-10-batches-py")) == sorted(_batches())
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == fake_cifar


def test_a_damaged_archive_on_disk_is_replaced_by_a_good_download(fake_cifar, server, tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(_damaged(fake_cifar))
    assert len(sb.load_cifar10("test", root=tmp_path)) == 2
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == fake_cifar
    assert server.paths() == ["/cifar/cifar-10-python.tar.gz"]


def test_cifar10_download_failure_names_layouts_urls_and_fix(fake_cifar, server, tmp_path):
    server.files.clear()
    with pytest.raises(DataNotFoundError) as error:
        sb.load_cifar10("train", root=tmp_path)
    message = str(error.value)
    for place in ("cifar10/train", "cifar10-shards", "cifar-10-batches-py"):
        assert str(tmp_path / place) in message
    assert f"{server.url}/cifar/cifar-10-python.tar.gz: HTTP 404" in message
    assert "SSLBOOK_MIRROR" in message and "cifar-10-python.tar.gz (" in message


@pytest.mark.parametrize(
    "name",
    ["../evil.txt", "cifar-10-batches-py/../../evil.txt", "/ABS/evil.txt",
     "cifar-10-batches-py/sub/evil.txt", "evil.txt"],
)  # fmt: skip
def test_unpacking_refuses_members_outside_the_folder(tmp_path, name):
    name = name.replace("/ABS", str(tmp_path / "abs"))
    archive = tmp_path / "root" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(_cifar_archive({"cifar-10-batches-py/test_batch": b"x", name: b"evil"}))
    with pytest.raises(CorruptImageError, match="not a plain file in cifar-10-batches-py"):
        dl.extract_cifar10(archive, archive.parent)
    assert not list(tmp_path.rglob("evil*"))
    assert os.listdir(archive.parent) == ["cifar-10-python.tar.gz"]  # nothing half-unpacked


def test_unpacking_refuses_links(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(CorruptImageError, match="test_batch"):
        dl.extract_cifar10(archive, tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()


# --------------------------------------------------------------------------- MNIST


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def fake_mnist(server, monkeypatch):
    """The two MNIST test files on the test server, three images of value 0, 1, 2."""
    images = np.repeat(np.arange(3, dtype=np.uint8), 28 * 28).reshape(3, 28, 28)
    files = {
        "t10k-images-idx3-ubyte.gz": gzip.compress(_idx(images)),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(_idx(np.array([7, 2, 1]))),
    }
    table = dict(dl.MNIST_FILES)
    for name, data in files.items():
        server.files[f"/mnist/{name}"] = data
        table[name] = _remote(name, data, f"{server.url}/mnist/")
    monkeypatch.setattr(dl, "MNIST_FILES", table)
    return files


def test_mnist_is_downloaded_and_decompressed(fake_mnist, tmp_path):
    test = sb.load_mnist("test", root=tmp_path)
    assert test.images.shape == (3, 1, 28, 28)
    assert test.images[:, 0, 0, 0].tolist() == [0, 1, 2] and test.labels.tolist() == [7, 2, 1]
    raw = sorted(os.listdir(tmp_path / "MNIST" / "raw"))
    assert raw == sorted([*fake_mnist, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


# --------------------------------------------------------------------------- offline


def _png_cifar(root):
    for c, name in enumerate(CIFAR10_CLASSES):
        folder = root / "cifar10" / "test" / name
        folder.mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), c, np.uint8)).save(folder / f"{c}_{name}.png")


def test_png_layout_present_uses_no_network(tmp_path, no_network):
    _png_cifar(tmp_path)
    assert sb.load_cifar10("test", root=tmp_path).labels.tolist() == list(range(10))


def test_archive_present_is_unpacked_without_network(fake_cifar, tmp_path, no_network):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(fake_cifar)
    for download in (False, True):  # a hand-copied archive is used even with download=False
        assert torch.equal(sb.load_cifar10("test", root=tmp_path, download=download).labels,
                           torch.tensor([5, 6]))  # fmt: skip


def test_pickles_present_use_no_network(fake_cifar, tmp_path, no_network):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in _batches().items():
        (folder / name).write_bytes(data)
    assert len(sb.load_cifar10("train", root=tmp_path)) == 10


def test_mnist_present_uses_no_network(fake_mnist, tmp_path, no_network):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in fake_mnist.items():  # only the .gz files, as torchvision leaves them
        (raw / name).write_bytes(data)
    assert sb.load_mnist("test", root=tmp_path).labels.tolist() == [7, 2, 1]
    assert sb.load_mnist("test", root=tmp_path, download=False).labels.tolist() == [7, 2, 1]


def test_download_false_with_nothing_on_disk_says_so(tmp_path, no_network):
    with pytest.raises(DataNotFoundError, match="download=False") as error:
        sb.load_cifar10("train", root=tmp_path, download=False)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(error.value)
    with pytest.raises(DataNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz \("):
        sb.load_mnist("test", root=tmp_path, download=False)


# --------------------------------------------------------------------------- the tables


def test_checksums_are_torchvisions():
    from torchvision.datasets import CIFAR10, MNIST

    assert dl.CIFAR10_ARCHIVE.md5 == CIFAR10.tgz_md5
    assert dl.CIFAR10_ARCHIVE.name == CIFAR10.filename
    assert sb.data.CIFAR10_PICKLE_MD5 == dict(CIFAR10.train_list + CIFAR10.test_list)
    assert {r.name: r.md5 for r in dl.MNIST_FILES.values()} == dict(MNIST.resources)
    assert set(MNIST.mirrors) <= set(dl.MNIST_MIRRORS)
    assert CIFAR10.url.removesuffix(CIFAR10.filename) in dl.CIFAR10_MIRRORS
