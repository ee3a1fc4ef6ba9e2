"""Shared pieces of the reconstruction chapters: encoder-decoders, discriminators, GAN losses.

Super-resolution (Ledig et al. 2017, SRGAN, arXiv 1609.04802) and inpainting (Pathak et al.
2016, context encoders, arXiv 1604.07379) both learn by *reconstructing* pixels, and both sharpen
their reconstructions with a discriminator (Goodfellow et al. 2014, arXiv 1406.2661). To keep the
book's comparison fair, every network that we later probe is the book's shared backbone:

- the **encoder** of the generator is the backbone (its ``feature_maps``), followed by a separate
  :class:`Decoder` that upsamples with sub-pixel convolutions (``nn.PixelShuffle``);
- the **discriminator** is the backbone too, with a single real/fake logit on top.

An :class:`Adversary` bundles a discriminator with its losses and optimiser settings. Hand one to
:func:`sslbook.train.train` (``adversary=``) and the one training loop alternates a discriminator
step and a generator step. :func:`diagnose` reads the resulting history and says plainly when the
game has diverged or collapsed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslbook.models import build_backbone

View = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
ContentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- generator: shared backbone as encoder, separate decoder --------------------------------


class ChannelwiseFC(nn.Module):
    """A fully connected layer per channel over the spatial positions (Pathak et al. 2016).

    It lets every position of a feature map see every other one at a fraction of the cost of a
    full fully connected layer: the decoder can then fill a hole from context far away.
    """

    def __init__(self, channels: int, spatial: int) -> None:
        super().__init__()
        self.spatial = spatial
        n = spatial * spatial
        self.weight = nn.Parameter(torch.randn(channels, n, n) / math.sqrt(n))
        self.bias = nn.Parameter(torch.zeros(channels, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if (h, w) != (self.spatial, self.spatial):
            raise ValueError(
                f"ChannelwiseFC was built for {self.spatial}x{self.spatial} maps, got {h}x{w}: "
                "build the decoder with spatial= the size of the backbone's block3 map."
            )
        flat = x.reshape(b, c, h * w)  # (B, C, HW)
        out = torch.einsum("bcn,cnm->bcm", flat, self.weight) + self.bias  # (B, C, HW)
        return out.reshape(b, c, h, w)


class Decoder(nn.Module):
    """From the backbone's ``block3`` map (1/4 resolution) back to an image, by two sub-pixel
    upsamplings (Shi et al. 2016, arXiv 1609.05158): a convolution makes 4x the channels and
    ``nn.PixelShuffle(2)`` rearranges them into a map twice as wide and high.

    Args:
        in_channels: channels of ``block3`` (the backbone's ``feature_dim``).
        out_channels: image channels.
        hidden: channels after the first upsampling (halved after the second).
        spatial: side of the ``block3`` map; with it, a :class:`ChannelwiseFC` bottleneck is used.

    Input ``(B, in_channels, h, w)``; output ``(B, out_channels, 4h, 4w)``, unbounded (the
    :class:`EncoderDecoder` adds it to its input).
    """

    def __init__(
        self, in_channels: int, out_channels: int = 3, hidden: int = 32, spatial: int | None = None
    ) -> None:
        super().__init__()
        self.bottleneck = ChannelwiseFC(in_channels, spatial) if spatial else nn.Identity()
        self.up1 = _upsample(in_channels, hidden)
        self.up2 = _upsample(hidden, hidden // 2)
        self.out = nn.Conv2d(hidden // 2, out_channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # start as the identity: output = input
        nn.init.zeros_(self.out.bias)

    def config(self) -> str:
        """``"Decoder"``, or ``"Decoder + ChannelwiseFC"`` with the bottleneck (for checkpoints)."""
        if isinstance(self.bottleneck, ChannelwiseFC):
            return "Decoder + ChannelwiseFC"
        return "Decoder"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(x)  # (B, C, h, w)
        x = self.up2(self.up1(x))  # (B, hidden/2, 4h, 4w)
        return self.out(x)


def _upsample(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 4 * out_channels, 3, 1, 1, bias=False),
        nn.PixelShuffle(2),  # (B, 4*out, h, w) -> (B, out, 2h, 2w)
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class EncoderDecoder(nn.Module):
    """The generator: shared backbone (encoder) + :class:`Decoder`, predicting a correction.

    ``forward(x) = x + decoder(backbone.feature_maps(x)["block3"])``: the network only has to
    learn what is *missing* from its input (high frequencies for super-resolution, the content of
    the hole for inpainting). Input and output ``(B, C, H, W)``.
    """

    def __init__(self, backbone: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def config(self) -> dict:
        decoder = self.decoder
        name = decoder.config() if hasattr(decoder, "config") else type(decoder).__name__
        return {"backbone": self.backbone.config(), "decoder": name}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.feature_maps(x)["block3"]  # (B, 4w, H/4, W/4)
        return x + self.decoder(features)  # (B, C, H, W)


# --- discriminator: shared backbone + one logit ----------------------------------------------


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
    width: int = 16, depth: int = 2, in_channels: int = 3, seed: int | None = None
) -> Discriminator:
    """A :class:`Discriminator` on a fresh shared backbone (same seed, same initial weights as
    every other network of the chapter)."""
    return Discriminator(build_backbone(width, depth, in_channels, seed=seed))


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


def vgg_weights_cached() -> bool:
    """Whether torchvision's VGG16 ImageNet weights are already on disk (nothing is downloaded)."""
    from torchvision.models import VGG16_Weights

    name = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).exists()


def vgg_content_loss(layer: int = 9) -> ContentLoss:
    """SRGAN's perceptual loss: squared distance of ImageNet-trained VGG16 features.

    Needs the torchvision weights (downloaded once, ~530 MB). The default path of the book does
    not: it uses :func:`feature_matching_loss`.

    Raises:
        RuntimeError: the weights cannot be loaded (offline, no cache), with what to do instead.
    """
    from torchvision.models import VGG16_Weights, vgg16

    try:
        features = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features[:layer].eval()
    except Exception as error:  # any download or cache failure means the same to the reader
        raise RuntimeError(
            "VGG16 ImageNet weights could not be loaded (no internet and no cached copy: "
            f"{type(error).__name__}: {error}). Use the default content loss, "
            'content="discriminator" (feature matching), which needs no download.'
        ) from error
    features.requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        net = features.to(fake.device)
        m, s = mean.to(fake.device), std.to(fake.device)
        with torch.no_grad():
            target = net((real - m) / s)
        return F.mse_loss(net((fake - m) / s), target)

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
            "content": "feature matching" if self.content is None else "custom",
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


# --- shared evaluation helpers ---------------------------------------------------------------


def image_quality(restored: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``restored`` vs ``reference`` ``(B, C, H, W)`` in [0, 1],
    computed per image with scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for x, y in zip(restored.detach().cpu().clamp(0, 1), reference.cpu(), strict=True):
        a, b = x.permute(1, 2, 0).double().numpy(), y.permute(1, 2, 0).double().numpy()
        psnr.append(peak_signal_noise_ratio(b, a, data_range=1.0))
        ssim.append(structural_similarity(b, a, data_range=1.0, channel_axis=-1, win_size=7))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def psnr(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Batch-mean PSNR in dB of images in [0, 1] (outputs clamped): a cheap training metric."""
    mse = (outputs.clamp(0, 1) - targets).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (-10 * torch.log10(mse)).mean().item()


def generate(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Run a generator in eval mode over ``inputs`` ``(N, C, H, W)`` in batches; CPU output."""
    from sslbook.evaluate import predict  # imported here: evaluate imports the pretext tasks

    return predict(model, inputs, batch_size)


def plot_gan_history(history, metric_name: str, title: str | None = None):
    """Generator loss, the pretext metric per epoch and the discriminator's accuracy per step."""
    has_adversary = bool(history.step_adversary_accuracy)
    fig, axes = plt.subplots(1, 2 + has_adversary, figsize=(4.6 * (2 + has_adversary), 3.2))
    axes[0].plot(history.step_loss, alpha=0.4)
    axes[0].set(xlabel="step", ylabel="loss", title="generator loss", yscale="log")
    epochs = np.arange(1, len(history.epoch_metric) + 1)
    axes[1].plot(epochs, history.epoch_metric, marker="o")
    axes[1].set(xlabel="epoch", ylabel=metric_name, title=f"{metric_name} (training)")
    if has_adversary:
        acc = np.asarray(history.step_adversary_accuracy)
        window = max(1, len(acc) // 20)
        axes[2].plot(acc, alpha=0.3, color="#d62728")
        smooth = np.convolve(acc, np.ones(window) / window, mode="valid")
        axes[2].plot(np.arange(window - 1, len(acc)), smooth, color="#d62728")
        axes[2].axhline(0.5, color="black", linestyle=":", linewidth=1)
        axes[2].set(xlabel="step", ylabel="accuracy", title="discriminator accuracy", ylim=(0, 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
