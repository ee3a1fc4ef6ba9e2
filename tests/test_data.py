import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import sslbook as sb
from sslbook.data import (
    CIFAR10_CLASSES,
    CorruptImageError,
    DataNotFoundError,
    data_root,
    stratified_indices,
)

from .conftest import DATA, needs_data


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("SSLBOOK_DATA")
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "data"


def test_missing_data_offline_error_names_dataset_dirs_and_fix(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        sb.load_cifar10("train", root=tmp_path, download=False)
    message = str(error.value)
    assert "CIFAR-10" in message
    assert str(tmp_path / "cifar10" / "train") in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "SSLBOOK_DATA" in message
    with pytest.raises(DataNotFoundError, match="MNIST"):
        sb.load_mnist("test", root=tmp_path, download=False)


def test_unknown_split_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        sb.load_cifar10("val", root=tmp_path)


def test_stratified_indices_are_balanced_deterministic_and_seeded():
    labels = torch.arange(10).repeat(100)
    a = stratified_indices(labels, 50, seed=1)
    assert torch.equal(a, stratified_indices(labels, 50, seed=1))
    assert not torch.equal(a, stratified_indices(labels, 50, seed=2))
    assert torch.bincount(labels[a]).tolist() == [5] * 10
    assert len(set(a.tolist())) == 50
    with pytest.raises(ValueError, match="classes"):
        stratified_indices(labels, 5)


def _write_png_cifar(root, per_class=3, corrupt=False):
    for split in ("train", "test"):
        for c, name in enumerate(CIFAR10_CLASSES):
            folder = root / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                index = c * per_class + i
                pixels = np.full((32, 32, 3), index, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}_{name}.png")
    if corrupt:
        (root / "cifar10" / "train" / "cat" / "999_cat.png").write_bytes(b"not a png")


def test_png_layout_is_read_in_official_order(tmp_path):
    _write_png_cifar(tmp_path)
    train = sb.load_cifar10("train", root=tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    # pixel value == official index, so official order means increasing values
    assert train.images[:, 0, 0, 0].tolist() == list(range(30))
    assert train.labels.tolist() == [i // 3 for i in range(30)]
    assert train.classes == CIFAR10_CLASSES


def _trust_pickles(monkeypatch, folder):
    """Accept the fake pickles in ``folder`` as if they were the official files."""
    md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(sb.data, "CIFAR10_PICKLE_MD5", md5s)


def test_pickle_layout_matches_png_layout(tmp_path, monkeypatch):
    _write_png_cifar(tmp_path / "png")
    folder = tmp_path / "pkl" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    pixels = np.repeat(np.arange(30, dtype=np.uint8), 3 * 32 * 32).reshape(30, -1)
    labels = [i // 3 for i in range(30)]
    for k in range(1, 6):
        rows = slice((k - 1) * 6, k * 6)
        batch = {"data": pixels[rows], "labels": labels[rows]}
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch))
    _trust_pickles(monkeypatch, folder)
    a = sb.load_cifar10("train", n=20, seed=3, root=tmp_path / "png")
    b = sb.load_cifar10("train", n=20, seed=3, root=tmp_path / "pkl")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_corrupt_png_is_a_clear_error(tmp_path):
    _write_png_cifar(tmp_path, corrupt=True)
    with pytest.raises(CorruptImageError, match=r"999_cat\.png"):
        sb.load_cifar10("train", root=tmp_path)


class _Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_is_refused_before_it_can_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Payload(marker), "labels": []}))
    with pytest.raises(CorruptImageError, match="not the official CIFAR-10 file") as error:
        sb.load_cifar10("test", root=tmp_path)
    assert not marker.exists()
    assert f"delete {folder}" in str(error.value)
    pickle.loads((folder / "test_batch").read_bytes())  # the payload works: the test can fail
    assert marker.exists()


def test_empty_cifar_class_folder_is_an_error_naming_it(tmp_path):
    _write_png_cifar(tmp_path)
    frog = tmp_path / "cifar10" / "train" / "frog"
    for png in frog.iterdir():
        png.unlink()
    with pytest.raises(DataNotFoundError, match="holds no PNG files") as error:
        sb.load_cifar10("train", root=tmp_path)
    assert str(frog) in str(error.value)


def test_cifar_png_of_the_wrong_size_is_an_error_naming_it(tmp_path):
    _write_png_cifar(tmp_path)
    stray = tmp_path / "cifar10" / "train" / "dog" / "998_dog.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(stray)
    with pytest.raises(CorruptImageError, match="64x64 pixels") as error:
        sb.load_cifar10("train", root=tmp_path)
    assert str(stray) in str(error.value)


@needs_data
def test_real_cifar_subset_is_stratified_and_deterministic():
    a = sb.load_cifar10("train", n=100, seed=0)
    b = sb.load_cifar10("train", n=100, seed=0)
    assert a.images.shape == (100, 3, 32, 32)
    assert torch.equal(a.images, b.images)
    assert torch.bincount(a.labels).tolist() == [10] * 10
    assert a.images.float().std() > 20  # real photos, not blank


@needs_data
def test_real_mnist():
    if not (DATA / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST not present")
    test = sb.load_mnist("test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert int(test.labels[0]) == 7


def test_select_classes_relabels():
    images = torch.zeros(6, 3, 4, 4, dtype=torch.uint8)
    s = sb.ImageSet(images, torch.tensor([0, 3, 5, 3, 5, 1]), CIFAR10_CLASSES)
    cd = s.select_classes(["cat", "dog"])
    assert cd.labels.tolist() == [0, 1, 0, 1]
    assert cd.classes == ("cat", "dog")
    with pytest.raises(ValueError, match="unknown classes"):
        s.select_classes(["unicorn"])


def test_image_folder_skips_unreadable_files_with_a_warning(tmp_path):
    for name in ("beach", "forest"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / name / f"{i}.jpg")
    (tmp_path / "forest" / "broken.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="broken.jpg"):
        images = sb.load_image_folder(tmp_path, size=16)
    assert images.images.shape == (4, 3, 16, 16)
    assert images.classes == ("beach", "forest")
    assert images.labels.tolist() == [0, 0, 1, 1]


def test_image_folder_turns_exif_rotated_photos_upright(tmp_path):
    stored = np.zeros((40, 80, 3), np.uint8)  # stored landscape: white top, black bottom
    stored[:20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show": the stored top is the right side
    Image.fromarray(stored).save(tmp_path / "portrait.jpg", exif=exif)
    pixels = sb.load_image_folder(tmp_path, size=16).images[0].float().mean(0)  # (16, 16)
    assert pixels[:, :6].mean() < 30 and pixels[:, -6:].mean() > 225  # black left, white right
    assert abs(pixels[:6].mean() - pixels[-6:].mean()) < 10  # not white top, black bottom


def test_image_folder_scales_16_bit_images_instead_of_clipping_to_white(tmp_path):
    for name, value in (("mid.png", 0x8080), ("dark.png", 0x1010)):
        Image.fromarray(np.full((20, 20), value, np.uint16)).save(tmp_path / name)
    assert Image.open(tmp_path / "mid.png").mode == "I;16"
    images = sb.load_image_folder(tmp_path, size=8).images
    assert images[0].unique().tolist() == [16]  # dark.png, sorted first
    assert images[1].unique().tolist() == [128]


def test_image_folder_follows_symlinked_class_folders(tmp_path):
    _photo_folder(tmp_path / "elsewhere", classes=("cats",), per_class=2)
    photos = _photo_folder(tmp_path / "photos", classes=("dogs",), per_class=2)
    (photos / "cats").symlink_to(tmp_path / "elsewhere" / "cats", target_is_directory=True)
    (photos / "dogs" / "loop").symlink_to(photos, target_is_directory=True)  # a link back up
    images = sb.load_image_folder(photos, size=8)
    assert images.classes == ("cats", "dogs")
    assert images.labels.tolist() == [0, 0, 1, 1]


def test_image_folder_classes_are_the_top_level_sub_folders(tmp_path):
    for path in ("cats/2019/a.png", "cats/2020/b.png", "dogs/2019/c.png", "loose.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / path)
    images = sb.load_image_folder(tmp_path, size=8)
    assert images.classes == ("cats", "dogs")
    assert images.labels.tolist() == [0, 0, 1, -1]


def test_image_folder_empty_is_an_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="holds no images"):
        sb.load_image_folder(tmp_path)


def _photo_folder(root, classes=("beach", "forest"), per_class=3, size=(40, 60)):
    """A folder of small random photos, one sub-folder per class."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder_empty_error_says_what_to_do(tmp_path):
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(DataNotFoundError, match="Copy your photos into it"):
        sb.load_image_folder(tmp_path)


def test_image_folder_skips_truncated_files_at_load_time(tmp_path):
    _photo_folder(tmp_path)
    whole = (tmp_path / "beach" / "0.png").read_bytes()
    (tmp_path / "beach" / "cut.png").write_bytes(whole[: len(whole) // 2])
    jpeg = tmp_path / "forest" / "cut.jpg"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as caught:
        images = sb.load_image_folder(tmp_path, size=16)
    message = str(caught[0].message)
    assert str(tmp_path / "beach" / "cut.png") in message
    assert str(tmp_path / "forest" / "cut.jpg") in message
    assert images.images.shape == (6, 3, 16, 16)
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_with_only_unreadable_files_is_a_clear_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "b.jpg").write_text("not a photo")
    with pytest.warns(UserWarning, match="b.jpg"):
        with pytest.raises(CorruptImageError, match="none of the 2 image files") as error:
            sb.load_image_folder(tmp_path)
    assert "PNG or JPEG" in str(error.value)


def test_split_labelled_keeps_every_other_labelled_image_for_testing():
    labels = torch.tensor([0] * 5 + [1] * 4 + [-1] * 3)
    data = sb.ImageSet(torch.zeros(12, 3, 4, 4, dtype=torch.uint8), labels, ("a", "b"))
    train, test = sb.data.split_labelled(data, per_class=2, seed=0)
    assert torch.bincount(train.labels).tolist() == [2, 2]
    assert torch.bincount(test.labels).tolist() == [3, 2]
    with pytest.raises(ValueError, match=r"b \(4\)"):
        sb.data.split_labelled(data, per_class=4)
    unlabelled = sb.ImageSet(data.images, torch.full((12,), -1), (), "photos")
    with pytest.raises(ValueError, match="sub-folders, one per class"):
        sb.data.split_labelled(unlabelled, per_class=2)


@needs_data
def test_demo_folder_holds_cifar_photos_and_broken_files(tmp_path):
    folder = sb.data.make_demo_folder(tmp_path / "demo", n_per_class=5, corrupt=2)
    sub_folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert sub_folders == sorted(sb.data.DEMO_CLASSES)
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as caught:
        images = sb.load_image_folder(folder)
    assert "broken-0.png" in str(caught[0].message) and "broken-1.jpg" in str(caught[0].message)
    assert images.images.shape == (20, 3, 32, 32)
    assert torch.bincount(images.labels).tolist() == [5] * 4
    cifar = sb.load_cifar10("test", n=20, classes=sb.data.DEMO_CLASSES)
    assert torch.equal(images.images.sort(0).values, cifar.images.sort(0).values)
    # Written again (e.g. a re-run), it is replaced; a reader's folder is never overwritten.
    sb.data.make_demo_folder(folder, n_per_class=2, corrupt=0)
    assert len(sb.load_image_folder(folder)) == 8
    with pytest.raises(FileExistsError, match="not empty"):
        sb.data.make_demo_folder(_photo_folder(tmp_path / "mine"))


def test_training_on_fewer_images_than_a_batch_says_how_to_fix_it():
    tiny = sb.ImageSet(torch.zeros(20, 3, 8, 8, dtype=torch.uint8), torch.zeros(20).long(), ("a",))
    backbone = sb.build_backbone(width=8, depth=1)
    model = sb.PretextModel(backbone, sb.pretext.rotation.build_head(backbone.feature_dim))
    config = sb.get_profile("smoke").train_config(0)  # batch_size 64
    with pytest.raises(ValueError) as error:
        sb.train(model, tiny, sb.pretext.rotation.make_task(), config, progress=False)
    message = str(error.value)
    assert "20 images cannot fill one batch of 64" in message
    assert "add images" in message and "recipe(cfg, seed, batch_size=16)" in message
    assert model.training  # refused before any training step


def _fake_cifar_test(split, n, seed, root, classes):
    """Stands in for ``load_cifar10`` in :func:`make_demo_folder`: ``n`` images of ``classes``."""
    images = torch.full((n, 3, 32, 32), seed, dtype=torch.uint8)
    return sb.ImageSet(images, torch.arange(n) % len(classes), tuple(classes))


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_demo_folder_is_replaced_whole_so_readers_never_see_half(tmp_path, monkeypatch):
    monkeypatch.setattr(sb.data, "load_cifar10", _fake_cifar_test)
    folder = sb.data.make_demo_folder(tmp_path / "demo", n_per_class=3, corrupt=0)
    before = _listing(folder)
    saved = []
    original = Image.Image.save

    def save_and_look(image, path, *args, **kwargs):
        assert _listing(folder) == before  # the old folder, whole, while the new one is written
        saved.append(path)
        return original(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_and_look)
    sb.data.make_demo_folder(folder, n_per_class=2, corrupt=0, seed=7)
    assert len(saved) == 8 and not any(str(folder) in str(p) for p in saved)
    images = sb.load_image_folder(folder)
    assert len(images) == 8 and images.images.unique().tolist() == [7]
    assert os.listdir(tmp_path) == ["demo"]  # nothing left beside it


def test_demo_folder_write_that_fails_keeps_the_old_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sb.data, "load_cifar10", _fake_cifar_test)
    folder = sb.data.make_demo_folder(tmp_path / "demo", n_per_class=3, corrupt=1)
    before = _listing(folder)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        sb.data.make_demo_folder(folder, n_per_class=2, corrupt=0)
    assert _listing(folder) == before
    assert os.listdir(tmp_path) == ["demo"]


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_folder_replaces_the_old_folder(tmp_path, monkeypatch, exchange):
    if not exchange:  # the two-rename path used where the system cannot exchange two names
        monkeypatch.setattr(sb.data, "_exchange", lambda a, b: False)
    target = tmp_path / "target"
    for version in ("one", "two"):
        new = sb.data.staging_folder(target)
        (new / version).write_text(version)
        sb.data.swap_in_folder(new, target)
        assert os.listdir(target) == [version]
        assert os.listdir(tmp_path) == ["target"]


def test_swap_in_folder_never_leaves_the_target_missing_where_linux_allows(tmp_path, monkeypatch):
    probe = [tmp_path / "probe-a", tmp_path / "probe-b"]
    for folder in probe:
        folder.mkdir()
    if not sb.data._exchange(*probe):
        pytest.skip("this system cannot exchange two names in one step (renameat2)")
    target = tmp_path / "target"
    sb.data.swap_in_folder(sb.data.staging_folder(target), target)  # nothing there yet: a rename
    renames = []
    monkeypatch.setattr(os, "rename", lambda *paths: renames.append(paths))
    new = sb.data.staging_folder(target)
    (new / "two").write_text("two")
    sb.data.swap_in_folder(new, target)
    assert renames == []  # exchanged, not renamed aside and back
    assert os.listdir(target) == ["two"]
