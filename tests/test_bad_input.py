"""The bad-input and fault matrix: what a new user did wrong, or what went wrong around them.

One test per finding of the new-user audit, each reproducing it the way a reader would meet it
and checking the two things that matter: the message says what happened and what to do, and
nothing is lost (the previous checkpoint survives, no half-written file is read, no temporary file
stays behind).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

import sslbook as sb
from sslbook.__main__ import main
from sslbook.checkpoint import (
    STALE_SECONDS,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from sslbook.evaluate import Evaluation, evaluate_backbone
from sslbook.models import PretextModel
from sslbook.pretext import rotation
from sslbook.pretext.synthetic import load_bank
from sslbook.results import read_summaries, write_json
from sslbook.train import TrainConfig, TrainingDivergedError, resume, start_run, train

from .conftest import REPO


def _model(width: int = 8) -> PretextModel:
    backbone = sb.build_backbone(width=width, depth=1)
    return PretextModel(backbone, rotation.build_head(backbone.feature_dim))


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def _notebook(path: Path, parameters: str, *cells: str) -> Path:
    """A notebook at ``path``: a ``parameters`` cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


# --- (a) a finite but huge learning rate ------------------------------------------------------


def test_a_huge_learning_rate_stops_before_saving_broken_statistics(tmp_path, cifar_small):
    train_set, _ = cifar_small
    path = tmp_path / "rotation.pt"
    # In fp32 the loss stays finite and BN's statistics do not; under bf16 autocast (the default
    # on a CPU with native bf16) the loss itself overflows first, another check's message.
    config = TrainConfig(epochs=2, batch_size=64, lr=1e3, precision="fp32")
    with pytest.raises(TrainingDivergedError, match=r"NaN or infinite.*Lower the") as caught:
        train(_model(), train_set[:256], rotation.make_task(), config, checkpoint=path,
              progress=False)  # fmt: skip
    failed = int(re.search(r"after epoch (\d+)", str(caught.value)).group(1))
    if failed == 1:
        assert not path.exists()
    else:  # the last good epoch's checkpoint is kept, and holds finite numbers only
        state = load_checkpoint(path)
        assert state["epoch"] == failed - 1
        assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    assert _temporaries(tmp_path) == []


# --- (b) batch_size=0 -------------------------------------------------------------------------


def test_batch_size_zero_is_refused_by_name():
    with pytest.raises(ValueError, match=r"batch_size must be at least 1, .*batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="batch_size=0"):  # before any image is loaded
        rotation.recipe(sb.get_profile("smoke"), 0, batch_size=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        sb.get_profile("smoke", batch_size=0).train_config()


# --- (c) -p seed=abc on the command line ------------------------------------------------------


def test_a_seed_that_is_not_a_number_is_refused_by_name():
    for refuse in (lambda: TrainConfig(seed="abc"), lambda: sb.seed_everything("abc"),
                   lambda: sb.get_profile("smoke").train_config("abc")):  # fmt: skip
        with pytest.raises(ValueError, match="seed must be a whole number, got 'abc'"):
            refuse()
    sb.seed_everything(np.int64(3))  # a NumPy integer is a whole number too


def test_cli_seed_abc_names_the_seed(tmp_path, capsys):
    chapter = _notebook(
        tmp_path / "chapter.ipynb", "seed = 0", "import sslbook as sb\nsb.seed_everything(seed)"
    )  # as every set-up cell
    code = main(["run", str(chapter), "-p", "seed=abc", "-o", str(tmp_path / "out.ipynb")])
    assert code == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.endswith("ValueError: seed must be a whole number, got 'abc'"), first


# --- (d) two writers of one file --------------------------------------------------------------


def _race(write, read, writers: int = 2, writes: int = 200) -> tuple[int, list[Exception]]:
    """``writers`` threads each call ``write(writer, n)`` ``writes`` times while one thread
    reads in a loop; returns how many reads there were and every error they raised."""
    errors: list[Exception] = []
    reads, done = 0, threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                read()
            except Exception as error:
                errors.append(error)
            reads += 1

    def writer(i: int) -> None:
        try:
            for n in range(writes):
                write(i, n)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    return reads, errors


def test_concurrent_json_writers_never_tear_a_file(tmp_path):
    path = tmp_path / "rotation-cpu-seed0.json"
    write_json(path, {"writer": -1, "n": 0, "text": "x" * 20_000})

    def read() -> None:
        data = json.loads(path.read_text())
        assert len(data["text"]) == 20_000

    def write(i: int, n: int) -> None:
        write_json(path, {"writer": i, "n": n, "text": "x" * 20_000})

    reads, errors = _race(write, read)
    assert errors == []
    assert reads > 0
    assert json.loads(path.read_text())["n"] == 199
    assert _temporaries(tmp_path) == []


def test_concurrent_checkpoint_writers_never_tear_a_file(tmp_path):
    path = tmp_path / "rotation.pt"
    save_checkpoint(path, {"writer": -1, "x": torch.arange(20_000.0)})

    def read() -> None:
        assert torch.equal(load_checkpoint(path)["x"], torch.arange(20_000.0))

    def write(i: int, n: int) -> None:
        save_checkpoint(path, {"writer": i, "n": n, "x": torch.arange(20_000.0)})

    reads, errors = _race(write, read, writes=100)
    assert errors == []
    assert reads > 0
    assert _temporaries(tmp_path) == []


# --- (e) a corrupt evaluation cache -----------------------------------------------------------


def test_a_damaged_evaluation_cache_is_measured_again(tmp_path, monkeypatch, cifar_small):
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path))
    probes = []  # the real probe takes seconds per block; what is tested here is the cache

    def probe(*args, seed=0):
        probes.append(seed)
        return SimpleNamespace(accuracy=0.5, weight_decay=1e-3, validation=0.4)

    monkeypatch.setattr(sb.evaluate, "linear_probe", probe)
    train_set, test_set = cifar_small[0][:100], cifar_small[1][:100]
    backbone = sb.build_backbone(width=8, depth=1, seed=0).eval()
    first = evaluate_backbone(backbone, train_set, test_set)
    (cached,) = (tmp_path / "evaluations").glob("probe-*.json")
    assert evaluate_backbone(backbone, train_set, test_set) == first
    measured = len(probes)
    for damage in (b"", cached.read_bytes()[:40], b'{"technique": "rotation"}', b"\xff\x00"):
        cached.write_bytes(damage)
        with pytest.warns(UserWarning, match=r"is damaged .*measuring again"):
            again = evaluate_backbone(backbone, train_set, test_set)
        assert again == first
        assert len(probes) > measured  # measured again, not guessed
        measured = len(probes)
        assert Evaluation(**json.loads(cached.read_text())) == first  # and the cache repaired


# --- (f) a corrupt summary --------------------------------------------------------------------


@pytest.mark.parametrize("damage", [b'{"technique": "jigs', b"", b"\xff\xfe\x00garbage"])
def test_a_damaged_summary_is_named(tmp_path, damage):
    write_json(tmp_path / "rotation-cpu-seed0.json", {"technique": "rotation"})
    broken = tmp_path / "jigsaw-cpu-seed0.json"
    broken.write_bytes(damage)
    with pytest.raises(ValueError, match=re.escape(str(broken)) + ".*delete it and re-run"):
        read_summaries(tmp_path)
    assert broken.exists()  # reported, never deleted behind the reader's back


# --- (g) a truncated render bank --------------------------------------------------------------


def test_a_truncated_render_bank_is_rendered_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path))
    bank = load_bank(8, seed=0, size=16)
    (cached,) = (tmp_path / "synthetic").glob("bank-*.pt")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with pytest.warns(UserWarning, match="could not be read .*rendering the bank again"):
        again = load_bank(8, seed=0, size=16)
    assert torch.equal(again.images, bank.images) and torch.equal(again.depth, bank.depth)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was repaired: no warning the third time
        load_bank(8, seed=0, size=16)


# --- (h) every unreadable checkpoint is a CheckpointError -------------------------------------


class _Malicious:
    """Unpickling this would create a folder: a stand-in for any code a pickle can run."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _wrong_payloads(state: dict) -> list[tuple[str, bytes]]:
    """Valid torch files holding the wrong thing: every top-level entry replaced by values of
    the wrong type or deleted, damaged insides, and no dict at all."""
    variants = []
    for key in state:
        for bad in (None, "x", 7, -3, [], {}, torch.zeros(2)):
            variants.append((f"{key}={bad!r}", _saved({**state, key: bad})))
        variants.append((f"no {key}", _saved({k: v for k, v in state.items() if k != key})))
    model, optimizer = state["model"], state["optimizer"]
    first = next(iter(model))
    insides = {
        "a weight of the wrong shape": {"model": {**model, first: torch.zeros(1)}},
        "a weight missing": {"model": {k: v for k, v in model.items() if k != first}},
        "a weight that is a string": {"model": {**model, first: "x"}},
        "optimizer without groups": {"optimizer": {**optimizer, "param_groups": []}},
        "optimizer with an empty group": {"optimizer": {**optimizer, "param_groups": [{}]}},
        "optimizer state a string": {"optimizer": {**optimizer, "state": "x"}},
        "history with an unknown entry": {"history": {**state["history"], "loss": 1}},
        "epoch far beyond the run": {"epoch": 10**9},
        "epoch not a number": {"epoch": "abc"},
        "a tensor in the model config": {"model_config": {"width": torch.zeros(2)}},
    }
    variants += [(name, _saved({**state, **change})) for name, change in insides.items()]
    for top in (None, [], "checkpoint", 1, torch.zeros(3), {"format": 99}):
        variants.append((f"top level {top!r}", _saved(top)))
    return variants


def _damaged_variants(raw: bytes, state: dict, sentinel: Path) -> list[tuple[str, bytes]]:
    """About 300 ways a checkpoint file can be damaged, from ``raw`` (a real one)."""
    rng = random.Random(0)
    variants = [("empty", b""), ("one byte short", raw[:-1])]
    variants += [("truncated", raw[: rng.randrange(1, len(raw))]) for _ in range(90)]
    for _ in range(90):
        flipped = bytearray(raw)
        for _ in range(rng.randint(1, 16)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append(("bytes flipped", bytes(flipped)))
    for _ in range(44):
        noise = rng.randbytes(rng.randrange(1, 4096))
        variants.append(("random bytes", noise if rng.random() < 0.5 else b"PK\x03\x04" + noise))
    variants += _wrong_payloads(state)
    foreign = io.BytesIO()
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
        archive.writestr("archive/data.pkl", b"\x80\x04garbage")
    variants.append(("a zip of something else", foreign.getvalue()))
    evil = _Malicious(sentinel)
    variants += [
        ("malicious pickle", pickle.dumps(evil, protocol=2)),
        ("malicious object in a torch file", _saved({**state, "model": evil})),
        ("malicious torch file", _saved(evil)),
    ]
    return variants


def test_fuzzed_checkpoints_raise_checkpoint_error_or_load(tmp_path, cifar_small):
    train_set, _ = cifar_small
    config, task = TrainConfig(epochs=1, batch_size=32), rotation.make_task()
    real = tmp_path / "real.pt"
    train(_model(), train_set[:32], task, config, checkpoint=real, progress=False)  # one step
    sentinel = tmp_path / "the-pickle-ran"
    variants = _damaged_variants(real.read_bytes(), load_checkpoint(real), sentinel)
    assert len(variants) >= 300
    outcomes, wrong = {"CheckpointError": 0, "loaded": 0}, []
    path = tmp_path / "damaged.pt"
    run = start_run(_model(), task, config, n_images=32)  # resume replaces all it restores
    for kind, blob in variants:
        path.write_bytes(blob)
        try:
            assert resume(run, path, progress=False) in (0, 1)
            outcomes["loaded"] += 1
        except CheckpointError as error:
            assert "delete" in str(error).lower(), (kind, error)
            outcomes["CheckpointError"] += 1
        except Exception as error:
            wrong.append(f"{kind}: {type(error).__name__}: {str(error)[:120]}")
    assert wrong == []
    assert not sentinel.exists(), "a checkpoint's pickle ran code"
    assert outcomes["CheckpointError"] > 150  # most damage is found, not loaded
    path.unlink()
    path.mkdir()  # not even a file
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


# --- (i) interrupted saves leave no temporary file forever ------------------------------------


def _killed_mid_write(path: Path) -> None:
    """A run killed (SIGKILL: no clean-up runs) half-way through writing ``path``."""

    def write(f) -> None:
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_write(path, write)


def test_a_killed_save_keeps_the_checkpoint_and_its_leftover_goes_later(tmp_path):
    path = tmp_path / "rotation.pt"
    save_checkpoint(path, {"epoch": 1})
    child = multiprocessing.get_context("fork").Process(target=_killed_mid_write, args=(path,))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    (leftover,) = _temporaries(tmp_path)
    assert load_checkpoint(path)["epoch"] == 1  # the previous checkpoint survives the kill

    save_checkpoint(path, {"epoch": 2})
    assert _temporaries(tmp_path) == [leftover]  # young: it might be a write still running
    old = time.time() - STALE_SECONDS - 60
    os.utime(leftover, (old, old))
    save_checkpoint(path, {"epoch": 3})
    assert _temporaries(tmp_path) == []
    assert load_checkpoint(path)["epoch"] == 3


def test_a_failed_write_removes_its_own_temporary_file(tmp_path):
    path = tmp_path / "rotation.pt"
    save_checkpoint(path, {"epoch": 1})

    def interrupted(f) -> None:  # Ctrl-C in the middle of a save
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert _temporaries(tmp_path) == []
    assert load_checkpoint(path)["epoch"] == 1


# --- (j) another photo folder of the same name and size ---------------------------------------


def _photos(folder: Path, seed: int, n: int = 64) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return folder


def test_other_photos_in_a_folder_of_the_same_name_never_reuse_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path / "cache"))
    profile = sb.get_profile("smoke")
    mine = _photos(tmp_path / "monday" / "photos", seed=1)
    theirs = _photos(tmp_path / "tuesday" / "photos", seed=2)
    copied = shutil.copytree(mine, tmp_path / "backup" / "photos")
    recipes = {
        name: rotation.recipe(profile, 0, data=sb.load_image_folder(folder))
        for name, folder in {"mine": mine, "theirs": theirs, "copied": copied}.items()
    }
    recipes["mine"].train(progress=False)
    assert recipes["mine"].checkpoint_path.exists()
    assert recipes["theirs"].checkpoint_path != recipes["mine"].checkpoint_path
    assert not recipes["theirs"].checkpoint_path.exists()  # trains on its own images
    assert recipes["copied"].checkpoint_path == recipes["mine"].checkpoint_path  # same images


# --- (k) the CLI names the cell's own error first ---------------------------------------------


def test_cli_prints_the_cells_own_error_first(tmp_path):
    failing = "raise FileNotFoundError(f'{photos} holds no images: copy some in')"
    chapter = _notebook(tmp_path / "chapter.ipynb", "photos = 'photos/'", failing)
    result = subprocess.run(
        [sys.executable, "-m", "sslbook", "run", str(chapter), "-o", str(tmp_path / "out.ipynb")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error in {chapter}, cell ")
    assert first.endswith("FileNotFoundError: photos/ holds no images: copy some in"), first
    assert "Traceback" not in result.stderr
    assert "--traceback prints it" in result.stderr
