import math

import pytest
import torch

import sslbook as sb
from sslbook import adversarial
from sslbook.adversarial import build_discriminator, diagnose
from sslbook.decoders import EncoderDecoder
from sslbook.pretext import inpainting, superres
from sslbook.train import History, TrainConfig, TrainingDivergedError, train


def _generator(head_module, width=8):
    backbone = sb.build_backbone(width=width, depth=1, seed=0)
    return EncoderDecoder(backbone, head_module.build_head(backbone.feature_dim))


def test_discriminator_is_the_shared_backbone_with_one_logit():
    d = build_discriminator(8, 1, seed=0)
    assert isinstance(d.backbone, type(sb.build_backbone(8, 1)))
    reference = sb.build_backbone(8, 1, seed=0)
    for a, b in zip(d.backbone.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)  # same seed, same initial weights as the random-init baseline
    assert d(torch.rand(5, 3, 32, 32)).shape == (5,)


def test_losses_and_accuracy():
    sure = torch.full((4,), 20.0)
    assert adversarial.discriminator_loss(sure, -sure) < 1e-6
    assert adversarial.discriminator_accuracy(sure, -sure) == 1.0
    assert adversarial.discriminator_accuracy(-sure, sure) == 0.0
    assert adversarial.generator_adversarial_loss(sure) < 1e-6
    assert adversarial.generator_adversarial_loss(-sure) > 10
    d = build_discriminator(8, 1, seed=0)
    x = torch.rand(4, 3, 32, 32)
    assert adversarial.feature_matching_loss(d, x, x) < 1e-10
    assert adversarial.feature_matching_loss(d, x, torch.rand(4, 3, 32, 32)) > 0


def test_gan_training_records_the_discriminator_and_changes_both_players(cifar_small):
    train_set, _ = cifar_small
    model = _generator(superres)
    adversary = superres.build_adversary(8, 1, seed=0)
    d_before = [p.clone() for p in adversary.parameters()]
    history = train(
        model, train_set[:128], superres.make_task(), TrainConfig(epochs=2, batch_size=32),
        adversary=adversary, progress=False,
    )  # fmt: skip
    assert len(history.step_adversary_accuracy) == len(history.step_loss) == 8
    assert len(history.step_adversary_loss) == 8
    assert len(history.epoch_adversary_accuracy) == 2
    assert all(0.0 <= a <= 1.0 for a in history.step_adversary_accuracy)
    assert all(math.isfinite(v) for v in history.step_adversary_loss)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, adversary.parameters(), strict=True))
    assert all(p.requires_grad for p in adversary.parameters())
    assert not adversary.training and not model.training


def test_discriminator_learns_to_spot_blurry_fakes(cifar_small):
    """With the generator frozen (lr 0), the discriminator alone learns: bicubic inputs are easy
    to tell from the originals, so its accuracy must climb well above chance."""
    train_set, _ = cifar_small
    adversary = superres.build_adversary(8, 1, seed=0, lr=2e-3)
    history = train(
        _generator(superres), train_set[:256], superres.make_task(),
        TrainConfig(epochs=3, batch_size=16, lr=1e-8), adversary=adversary, progress=False,
    )  # fmt: skip
    assert history.epoch_adversary_accuracy[-1] > 0.8
    assert history.epoch_adversary_accuracy[-1] > history.epoch_adversary_accuracy[0]


def test_without_adversary_history_has_no_discriminator(cifar_small):
    train_set, _ = cifar_small
    history = train(
        _generator(inpainting), train_set[:64], inpainting.make_task(),
        TrainConfig(epochs=1, batch_size=32), progress=False,
    )  # fmt: skip
    assert history.step_adversary_accuracy == [] and len(history.step_loss) == 2
    assert diagnose(history).ok


class _Interrupted(Exception):
    pass


def test_gan_checkpoint_resumes_both_players(tmp_path, cifar_small):
    train_set, _ = cifar_small
    data = train_set[:64]

    def run(path=None, on_epoch_end=None):
        adversary = inpainting.build_adversary(8, 1, seed=0)
        history = train(
            _generator(inpainting), data, inpainting.make_task(),
            TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=2e-3),
            adversary=adversary, checkpoint=path,
            progress=False, on_epoch_end=on_epoch_end,
        )  # fmt: skip
        return history, adversary

    def interrupt_in_second_epoch(model, epoch):
        if epoch == 1:
            raise _Interrupted

    reference, _ = run()
    path = tmp_path / "gan.pt"
    with pytest.raises(_Interrupted):
        run(path, interrupt_in_second_epoch)  # the checkpoint holds the first epoch only
    history, resumed = run(path)  # resumed: the same as straight through
    assert history.step_loss == pytest.approx(reference.step_loss, rel=1e-4)
    assert history.step_adversary_loss == pytest.approx(reference.step_adversary_loss, rel=1e-4)
    again, loaded = run(path)  # finished: loaded, not retrained
    assert again.step_adversary_accuracy == history.step_adversary_accuracy
    for a, b in zip(loaded.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a.cpu(), b.cpu())


def test_checkpoint_of_another_adversary_is_refused(tmp_path, cifar_small):
    train_set, _ = cifar_small
    path = tmp_path / "gan.pt"
    config = TrainConfig(epochs=1, batch_size=32)
    train(_generator(inpainting), train_set[:32], inpainting.make_task(), config,
          adversary=inpainting.build_adversary(8, 1, weight=0.01), checkpoint=path,
          progress=False)  # fmt: skip
    with pytest.raises(sb.CheckpointError, match="train config"):
        train(_generator(inpainting), train_set[:32], inpainting.make_task(), config,
              adversary=inpainting.build_adversary(8, 1, weight=0.5), checkpoint=path,
              progress=False)  # fmt: skip


def test_nan_discriminator_stops_with_a_clear_error(cifar_small):
    train_set, _ = cifar_small
    adversary = inpainting.build_adversary(8, 1)
    with torch.no_grad():
        adversary.discriminator.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="discriminator"):
        train(_generator(inpainting), train_set[:64], inpainting.make_task(),
              TrainConfig(batch_size=32), adversary=adversary, progress=False)  # fmt: skip


def _history(accuracy, loss=0.1):
    return History(
        step_loss=[loss] * len(accuracy), step_adversary_loss=[0.5] * len(accuracy),
        step_adversary_accuracy=list(accuracy),
    )  # fmt: skip


def test_diagnose_healthy_collapsed_and_diverged():
    assert diagnose(_history([0.6, 0.7] * 20)).state == "healthy"
    collapsed = diagnose(_history([0.6] * 10 + [1.0] * 20))
    assert collapsed.state == "collapsed" and "COLLAPSED" in collapsed.message
    # a discriminator that still errs now and then is not stuck
    assert diagnose(_history([1.0] * 20 + [0.9, 1.0] * 10)).state == "healthy"
    assert diagnose(_history([0.6] * 20 + [0.97, 1.0] * 10)).state == "collapsed"
    assert diagnose(_history([1.0] * 5)).state == "healthy"  # too short to tell
    diverged = diagnose(_history([0.6] * 30, loss=float("nan")))
    assert diverged.state == "diverged" and "NaN" in diverged.message
    assert not diverged.ok and not collapsed.ok


def test_collapse_is_detected_and_warned_after_real_training(cifar_small):
    """A discriminator with a huge learning rate against a frozen generator wins every step;
    the loop must say so."""
    train_set, _ = cifar_small
    adversary = superres.build_adversary(8, 1, seed=0, lr=1e-2)
    with pytest.warns(RuntimeWarning, match="COLLAPSED"):
        history = train(
            _generator(superres), train_set[:256], superres.make_task(),
            TrainConfig(epochs=4, batch_size=16, lr=1e-8), adversary=adversary, progress=False,
        )  # fmt: skip
    assert diagnose(history).state == "collapsed"


def test_vgg_content_loss_without_weights_says_what_to_do(monkeypatch):
    import torchvision.models

    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(torchvision.models, "vgg19", offline)
    superres._vgg.cache_clear()
    with pytest.raises(RuntimeError, match='content="mse"'):
        superres.recipe(sb.get_profile("smoke"), data=_random_images(), content="vgg")
    superres._vgg.cache_clear()


def _random_images(n: int = 64) -> sb.ImageSet:
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    return sb.ImageSet(images, torch.zeros(n, dtype=torch.long), ("x",))


def test_the_features_content_loss_comes_from_the_discriminator():
    plan = superres.recipe(
        sb.get_profile("smoke"), data=_random_images(), content="features",
        adversarial_weight=superres.SRGAN_WEIGHT,
    )  # fmt: skip
    assert plan.adversary.content_weight == 1.0
    x = torch.rand(2, 3, 32, 32)
    assert plan.task.loss(x, torch.rand(2, 3, 32, 32)) == 0  # no pixel loss of its own
    srgan = superres.recipe(
        sb.get_profile("smoke"), data=_random_images(), adversarial_weight=superres.SRGAN_WEIGHT
    )
    assert srgan.adversary.weight == 1e-3 and srgan.adversary.content_weight == 0.0
    default = superres.recipe(sb.get_profile("smoke"), data=_random_images())
    assert default.adversary is None  # the headline is SRResNet: the pixel MSE alone


def test_image_quality_uses_psnr_and_ssim():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    perfect = sb.metrics.image_quality(x, x)
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["psnr"] > 90
    noisy = sb.metrics.image_quality((x + 0.1 * torch.randn_like(x)).clamp(0, 1), x)
    assert 15 < noisy["psnr"] < 25 and noisy["ssim"] < 0.95
