"""The contract every registered technique keeps, checked by registering it.

For each name in ``sb.pretext.TECHNIQUES``: the module has the common shape, its recipe builds a
model, a :class:`~sslbook.pretext.Task` and (for the GAN chapters) an adversary, one training step
runs with a finite loss, the first batch is a pure function of the seed, and the checkpoint key
follows every setting. Then the exercises of the chapters: changing a setting retrains, changing
nothing loads.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import sslbook as sb
from sslbook.pretext import TECHNIQUES, technique
from sslbook.train import draw_batch, start_run, train_step
from sslbook.transforms import random_crop_flip

from .conftest import HAS_CIFAR

TINY = sb.get_profile("smoke", n_unlabelled=64, batch_size=32, epochs=1)
NEEDS_MNIST = {"frameorder"}  # its videos are made from MNIST digits


def random_images(n: int = 64, seed: int = 0) -> sb.ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return sb.ImageSet(images, torch.arange(n) % 10, tuple(f"c{i}" for i in range(10)), "random")


def techniques_available():
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name in NEEDS_MNIST and not HAS_CIFAR, reason="needs the data folder"
            ),
        )
        for name in TECHNIQUES
    ]


def first_batch(plan: sb.Recipe, seed: int = 0):
    """The ``(inputs, targets)`` of the recipe's first batch, as the training loop makes them."""
    run = start_run(plan.model, plan.task, plan.config, "cpu", adversary=plan.adversary,
                    n_images=len(plan.data))  # fmt: skip
    if plan.task.on_epoch_start is not None:
        plan.task.on_epoch_start(plan.model, plan.data, 0)
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(plan.config.batch_size)
    batch = draw_batch(run, plan.data, index, random_crop_flip, generator)
    return run, *plan.task.make_batch(batch, generator)


def tensors_of(value) -> list[torch.Tensor]:
    """Every tensor inside a batch's inputs or targets (a tensor or a dataclass of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [getattr(value, f.name) for f in dataclasses.fields(value)]


@pytest.mark.parametrize("name", techniques_available())
def test_every_technique_module_has_the_common_shape(name):
    module = technique(name)
    for attribute in ("NAME", "TITLE", "PAPER", "Settings", "make_pretext_batch", "build_head",
                      "loss", "make_task", "recipe"):  # fmt: skip
        assert hasattr(module, attribute), f"{name} lacks {attribute}"
    assert module.NAME == name
    assert "arxiv" in module.__doc__.lower() and "arxiv" in module.PAPER.lower()
    assert dataclasses.is_dataclass(module.Settings())


@pytest.mark.parametrize("name", techniques_available())
def test_every_recipe_trains_one_step_on_the_shared_backbone(name):
    plan = technique(name).recipe(TINY, seed=0, data=random_images())
    assert plan.technique == name
    assert isinstance(plan.task, sb.pretext.Task)
    assert plan.adversary is None or isinstance(plan.adversary, sb.pretext.Adversary)
    features = plan.backbone(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, plan.backbone.feature_dim)
    run, inputs, targets = first_batch(plan)
    step = train_step(run, inputs, targets, epoch=0, step=0)
    assert math.isfinite(step.loss)
    if plan.adversary is not None:
        assert 0.0 <= step.adversary_accuracy <= 1.0


@pytest.mark.parametrize("name", techniques_available())
def test_the_first_batch_is_a_pure_function_of_the_seed(name):
    batches = [first_batch(technique(name).recipe(TINY, seed=0, data=random_images()))[1:]
               for _ in range(2)]  # fmt: skip
    for a, b in zip(*batches, strict=True):
        for x, y in zip(tensors_of(a), tensors_of(b), strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("name", techniques_available())
def test_the_checkpoint_key_follows_the_seed_and_every_setting(name):
    module = technique(name)
    data = random_images()
    key = module.recipe(TINY, seed=0, data=data).fingerprint
    assert module.recipe(TINY, seed=0, data=data).fingerprint == key, "same recipe, same key"
    assert module.recipe(TINY, seed=1, data=data).fingerprint != key
    assert module.recipe(TINY, seed=0, data=data, lr=0.123).fingerprint != key
    if name not in NEEDS_MNIST:  # frame order makes its own videos
        assert module.recipe(TINY, seed=0, data=random_images(seed=1)).fingerprint != key
    for field in dataclasses.fields(module.Settings):
        value = getattr(module.Settings(), field.name)
        if isinstance(value, bool):
            changed = module.recipe(TINY, seed=0, data=data, **{field.name: not value})
            assert changed.fingerprint != key, f"{name}.{field.name} is not in the key"


@pytest.mark.parametrize("name", techniques_available())
def test_an_unknown_override_names_the_valid_ones(name):
    with pytest.raises(ValueError, match="its settings") as error:
        technique(name).recipe(TINY, seed=0, data=random_images(), epochz=3)
    assert "epochs" in str(error.value) and "'epochz'" in str(error.value)


def test_an_unknown_technique_lists_the_registry():
    with pytest.raises(ValueError, match="rotation, colorization"):
        technique("rotatoin")


EXERCISES = [  # (technique, the override an exercise asks for)
    ("colorization", {"rebalance_lambda": 1.0}),  # colorization: no rebalancing
    ("jigsaw", {"criterion": "min"}),  # jigsaw: the max-min permutation set
    ("inpainting", {"overlap": 0}),  # inpainting: no border weight
    ("context", {"colour": "keep"}),  # context: the chromatic shortcut left open
    ("superres", {"factor": 2}),  # super-resolution: a milder shrink
]


@pytest.mark.parametrize(("name", "change"), EXERCISES, ids=[e[0] for e in EXERCISES])
def test_an_exercise_retrains_and_an_unchanged_rerun_loads(name, change, monkeypatch):
    data = random_images()
    module = technique(name)
    trained = []
    real_epoch = sb.train.__globals__["train_epoch"]

    def counting_epoch(*args, **kwargs):
        trained.append(name)
        return real_epoch(*args, **kwargs)

    monkeypatch.setitem(sb.train.__globals__, "train_epoch", counting_epoch)
    module.recipe(TINY, seed=0, data=data).train(progress=False)
    assert len(trained) == 1
    module.recipe(TINY, seed=0, data=data).train(progress=False)
    assert len(trained) == 1, "nothing changed: the checkpoint must load"
    module.recipe(TINY, seed=0, data=data, **change).train(progress=False)
    assert len(trained) == 2, f"{change} must train a new model"
