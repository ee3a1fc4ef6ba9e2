"""Adversaries: a discriminator, the GAN losses, and a check that the game stays healthy.

Super-resolution (Ledig et al. 2017, SRGAN, arXiv 1609.04802) and inpainting (Pathak et al.
2016, context encoders, arXiv 1604.07379) sharpen their reconstructions with a discriminator
(Goodfellow et al. 2014, arXiv 1406.2661). To keep the book's comparison fair, the discriminator
is the shared backbone too, with a single real/fake logit on top, so it can be probed like every
other network.

An :class:`Adversary` bundles a discriminator with its losses and optimiser settings; it
satisfies :class:`sslbook.pretext.base.Adversary`. Hand one to :func:`sslbook.train.train`
(``adversary=``) and the one training loop alternates a discriminator step and a generator step.
:func:`diagnose` reads the resulting history and says plainly when the game has diverged or
collapsed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslbook.models import build_backbone

View = Callable[[torch.Tensor, object], tuple[torch.Tensor, torch.Tensor]]
ContentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Discriminator(nn.Module):
    """The shared backbone with a linear real/fake head: ``(B, C, H, W)`` → logits ``(B,)``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, 1)

    def config(self) -> dict:
        return {"backbone": self.backbone.config(), "head": "Linear"}

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone's maps, for the feature-matching content loss."""
        return self.backbone.feature_maps(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(-1)


def build_discriminator(
    width: int = 16,
    depth: int = 2,
    in_channels: int = 3,
    seed: int | None = None,
    stem_stride: int = 1,
) -> Discriminator:
    """A :class:`Discriminator` on a fresh shared backbone (same seed, same initial weights as
    every other network of the chapter); with ``seed`` its real/fake head is seeded too."""
    backbone = build_backbone(width, depth, in_channels, seed=seed, stem_stride=stem_stride)
    if seed is None:
        return Discriminator(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(backbone)


# --- losses ----------------------------------------------------------------------------------


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: real images should score 1, generated ones 0."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real + fake) / 2


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss, ``-log D(G(x))``: strong gradients even when the
    discriminator easily spots the fakes (Goodfellow et al. 2014)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Fraction of real and fake images the discriminator classifies correctly."""
    correct = (real_logits > 0).float().sum() + (fake_logits <= 0).float().sum()
    return (correct / (len(real_logits) + len(fake_logits))).item()


def feature_matching_loss(
    discriminator: Discriminator, fake: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """SRGAN's content loss without downloaded weights: mean squared distance between the
    discriminator's feature maps of the generated and the real images, averaged over blocks.

    SRGAN compares VGG features; the discriminator's own features are a learned, offline
    alternative (feature matching, Salimans et al. 2016, arXiv 1606.03498).
    """
    fake_maps = discriminator.feature_maps(fake)
    with torch.no_grad():
        real_maps = discriminator.feature_maps(real)
    losses = [F.mse_loss(fake_maps[k], real_maps[k]) for k in fake_maps]
    return torch.stack(losses).mean()


VGG_LAYER = 36  # torchvision's vgg19.features[:36] ends with relu5_4: SRGAN's phi_5,4
VGG_RESCALE = 1 / 12.75  # SRGAN rescales the VGG feature maps by this factor


def vgg_weights_cached() -> bool:
    """Whether torchvision's VGG19 ImageNet weights are already on disk (nothing is downloaded)."""
    from torchvision.models import VGG19_Weights

    name = VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).exists()


def vgg_content_loss() -> ContentLoss:
    """SRGAN's perceptual loss ("VGG54"): the squared distance between the ImageNet-trained
    VGG19's feature maps after its 4th convolution of the 5th block, both rescaled by 1/12.75
    (Ledig et al. 2017, eq. 5).

    Needs the torchvision weights (downloaded once, ~550 MB); the book's default, the SRGAN-MSE
    variant, does not.

    Raises:
        RuntimeError: the weights cannot be loaded (offline, no cache), with what to do instead.
    """
    from torchvision.models import VGG19_Weights, vgg19

    try:
        features = vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features[:VGG_LAYER].eval()
    except Exception as error:  # any download or cache failure means the same to the reader
        raise RuntimeError(
            "VGG19 ImageNet weights could not be loaded (no internet and no cached copy: "
            f'{type(error).__name__}: {error}). Use the default content loss, content="mse" '
            '(the paper\'s SRGAN-MSE), or content="features", which need no download.'
        ) from error
    features.requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        net = features.to(fake.device)
        m, s = mean.to(fake.device), std.to(fake.device)
        with torch.no_grad():
            target = net((real - m) / s) * VGG_RESCALE
        return F.mse_loss(net((fake.float() - m) / s) * VGG_RESCALE, target)

    return loss


# --- the adversary the training loop understands ---------------------------------------------


def _identity_view(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return outputs, targets


class Adversary(nn.Module):
    """A discriminator, its losses and its optimiser, for :func:`sslbook.train.train`.

    Every step the loop calls :meth:`discriminator_step_loss` on the detached generator outputs
    and steps the discriminator with its own optimiser (:meth:`make_optimizer`); then it adds
    :meth:`generator_loss` to the task's loss and steps the generator.

    Args:
        discriminator: a :class:`Discriminator`.
        view: ``(outputs, targets) -> (fake, real)`` images the discriminator compares (e.g. the
            image with its hole filled by the generator vs the original); default: outputs and
            targets as they are.
        weight: weight of the adversarial term in the generator's loss.
        content_weight: weight of the content loss (0: none).
        content: ``(fake, real) -> loss``; default :func:`feature_matching_loss` on this
            discriminator (no downloaded weights).
        lr: Adam learning rate of the discriminator (betas 0.5, 0.999 as in DCGAN).
        name: recorded in checkpoints.
    """

    def __init__(
        self,
        discriminator: Discriminator,
        view: View | None = None,
        weight: float = 1e-2,
        content_weight: float = 0.0,
        content: ContentLoss | None = None,
        lr: float = 2e-4,
        name: str = "discriminator",
    ) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.view = view or _identity_view
        self.weight = weight
        self.content_weight = content_weight
        self.content = content
        self.lr = lr
        self.name = name

    def config(self) -> dict:
        return {
            "name": self.name,
            "discriminator": self.discriminator.config(),
            "weight": self.weight,
            "content_weight": self.content_weight,
            "content": "feature matching" if self.content is None else self.content.__name__,
            "lr": self.lr,
        }

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=(0.5, 0.999))

    def discriminator_step_loss(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """``(loss, accuracy)`` of the discriminator on real vs generated images; pass detached
        ``outputs`` so this step does not train the generator."""
        fake, real = self.view(outputs, targets)
        logits = self.discriminator(torch.cat([real, fake]))  # one batch: shared BN statistics
        real_logits, fake_logits = logits[: len(real)], logits[len(real) :]
        return discriminator_loss(real_logits, fake_logits), discriminator_accuracy(
            real_logits.detach().float(), fake_logits.detach().float()
        )

    def generator_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What the generator adds to the task's loss: fool the discriminator (+ content)."""
        fake, real = self.view(outputs, targets)
        loss = self.weight * generator_adversarial_loss(self.discriminator(fake))
        if self.content_weight:
            if self.content is None:
                content = feature_matching_loss(self.discriminator, fake, real)
            else:
                content = self.content(fake, real)
            loss = loss + self.content_weight * content
        return loss

    def check(self, history) -> str | None:
        """A warning for the loop to raise when the game went wrong (see :func:`diagnose`)."""
        status = diagnose(history)
        return None if status.ok else status.message


# --- is the game healthy? --------------------------------------------------------------------


@dataclass(frozen=True)
class GANStatus:
    """Outcome of :func:`diagnose`: ``state`` is ``"healthy"``, ``"diverged"`` or
    ``"collapsed"``; ``message`` says what happened and what to try."""

    state: str
    message: str

    @property
    def ok(self) -> bool:
        return self.state == "healthy"


def diagnose(history, window: int = 20, stuck_at: float = 0.98) -> GANStatus:
    """Read a training :class:`~sslbook.train.History` for the two classic GAN failures.

    - **Divergence**: a NaN or infinite loss (generator or discriminator).
    - **Collapse of the game**: the discriminator is right about (almost) every image over the
      last ``window`` steps (mean accuracy at least ``stuck_at``). It then saturates, its gradient
      carries no information, and the generator stops learning from it (or has collapsed to
      outputs that are trivially fake).

    Args:
        history: needs ``step_loss``, ``step_adversary_loss`` and ``step_adversary_accuracy``.
        window: how many final steps to look at.
        stuck_at: mean discriminator accuracy counted as "stuck at 100 %".
    """
    losses = list(history.step_loss) + list(history.step_adversary_loss)
    if any(not math.isfinite(v) for v in losses):
        return GANStatus(
            "diverged",
            "GAN DIVERGED: a loss became NaN or infinite. Lower the learning rates or the "
            "adversarial weight, and check the inputs for NaNs.",
        )
    accuracy = np.asarray(history.step_adversary_accuracy, dtype=float)
    if len(accuracy) == 0:
        return GANStatus("healthy", "no adversary was trained")
    if len(accuracy) >= window and accuracy[-window:].mean() >= stuck_at:
        return GANStatus(
            "collapsed",
            f"GAN COLLAPSED: the discriminator was right about {accuracy[-window:].mean():.1%} of "
            f"the images over the last {window} steps, so its gradient no longer teaches the "
            "generator. "
            "Lower the discriminator's learning rate, or raise the adversarial weight.",
        )
    recent = accuracy[-window:].mean()
    return GANStatus(
        "healthy",
        f"GAN healthy: discriminator accuracy {recent:.0%} over the last "
        f"{min(window, len(accuracy))} steps (50% = it cannot tell; 100% = it always can).",
    )
