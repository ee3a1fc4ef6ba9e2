import math

import pytest
import torch

import sslbook as sb
from sslbook.checkpoint import CheckpointError
from sslbook.device import pick_precision
from sslbook.models import PretextModel
from sslbook.pretext import rotation
from sslbook.train import TrainConfig, TrainingDivergedError, learning_rate, train


def _model(width=8):
    backbone = sb.build_backbone(width=width, depth=1)
    return PretextModel(backbone, rotation.build_head(backbone.feature_dim))


def test_training_reduces_rotation_loss_on_real_images(cifar_small):
    train_set, _ = cifar_small
    history = train(
        _model(),
        train_set,
        rotation.make_task(),
        TrainConfig(epochs=4, batch_size=32, lr=0.1),
        progress=False,
    )
    assert len(history.epoch_loss) == 4
    assert history.epoch_loss[-1] < history.epoch_loss[0] - 0.05
    assert history.epoch_loss[0] < math.log(4) + 0.3
    assert history.images_seen == 4 * (len(train_set) // 32) * 32
    assert history.inputs_seen == 4 * history.images_seen
    assert history.images_per_second > 0


def test_same_seed_same_weights(cifar_small):
    train_set, _ = cifar_small
    small = train_set[:128]
    config = TrainConfig(epochs=1, batch_size=32, seed=3)
    a, b = _model(), _model()
    b.load_state_dict(a.state_dict())
    ha = train(a, small, rotation.make_task(), config, progress=False)
    hb = train(b, small, rotation.make_task(), config, progress=False)
    assert ha.step_loss == pytest.approx(hb.step_loss, rel=1e-5)


def test_dataset_smaller_than_batch_is_a_clear_error():
    tiny = sb.ImageSet(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.zeros(10).long(), ("a",))
    with pytest.raises(ValueError, match="cannot fill one batch of 32"):
        train(_model(), tiny, rotation.make_task(), TrainConfig(batch_size=32), progress=False)


def test_nan_loss_stops_with_a_clear_error(cifar_small):
    train_set, _ = cifar_small
    model = _model()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="learning rate"):
        train(
            model, train_set[:64], rotation.make_task(), TrainConfig(batch_size=32), progress=False
        )


def test_checkpoint_round_trip_and_resume(tmp_path, cifar_small):
    train_set, _ = cifar_small
    data = train_set[:128]
    path = tmp_path / "rot.pt"
    config = TrainConfig(epochs=2, batch_size=32)
    full = _model()
    initial = {k: v.clone() for k, v in full.state_dict().items()}
    reference = train(full, data, rotation.make_task(), config, progress=False)

    # the first epoch only, then resume to two: same result as training straight through
    resumed = _model()
    resumed.load_state_dict(initial)
    train(resumed, data, rotation.make_task(), TrainConfig(epochs=1, batch_size=32), progress=False)
    partial = _model()
    partial.load_state_dict(initial)
    history = train(partial, data, rotation.make_task(), config, checkpoint=path, progress=False)
    assert history.step_loss == pytest.approx(reference.step_loss, rel=1e-4)

    # a finished checkpoint is loaded, not retrained
    again = _model()
    loaded = train(again, data, rotation.make_task(), config, checkpoint=path, progress=False)
    assert loaded.step_loss == history.step_loss
    for key, value in partial.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_checkpoint_from_another_model_is_rejected(tmp_path, cifar_small):
    train_set, _ = cifar_small
    path = tmp_path / "rot.pt"
    config = TrainConfig(epochs=1, batch_size=32)
    train(_model(8), train_set[:64], rotation.make_task(), config, checkpoint=path, progress=False)
    with pytest.raises(CheckpointError, match="different model config"):
        train(
            _model(16),
            train_set[:64],
            rotation.make_task(),
            config,
            checkpoint=path,
            progress=False,
        )


def test_corrupt_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="delete it"):
        sb.load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "ckpt.pt"
    sb.save_checkpoint(path, {"x": torch.ones(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    assert torch.equal(sb.load_checkpoint(path)["x"], torch.ones(2))


def test_precision_choice():
    cpu = torch.device("cpu")
    assert pick_precision(cpu, "fp32") == "fp32"
    assert pick_precision(cpu, "auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision"):
        pick_precision(cpu, "fp8")


def test_parameter_groups_scale_the_learning_rate(cifar_small):
    train_set, _ = cifar_small
    model = _model()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items() if "weight" in k}
    groups = [
        {"params": list(model.backbone.parameters()), "lr_scale": 0.0},
        {"params": list(model.head.parameters())},
    ]
    head_before = model.head.weight.clone()
    config = TrainConfig(epochs=1, batch_size=32, weight_decay=0.0)
    train(model, train_set[:64], rotation.make_task(), config, parameters=groups, progress=False)
    for key, value in frozen.items():
        if "bn" not in key:  # conv weights: lr 0 means no update
            assert torch.equal(model.backbone.state_dict()[key], value), key
    assert not torch.equal(model.head.weight, head_before)


def test_allocator_setting_is_idempotent():
    from sslbook.train import keep_freed_memory

    assert keep_freed_memory() == keep_freed_memory()


def test_learning_rate_schedules():
    cosine = TrainConfig(lr=0.1, warmup_fraction=0.1)
    constant = TrainConfig(lr=0.1, warmup_fraction=0.1, schedule="constant")
    for config in (cosine, constant):
        assert learning_rate(0, 100, config) == pytest.approx(0.01)  # warm-up: 1/10 of the way
        assert learning_rate(10, 100, config) == pytest.approx(0.1)
    assert learning_rate(99, 100, cosine) < 0.001  # decays to almost zero
    assert learning_rate(99, 100, constant) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="constant"):
        learning_rate(50, 100, TrainConfig(schedule="step"))  # refused when built
