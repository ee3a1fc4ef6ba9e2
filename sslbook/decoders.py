"""Decoders that turn the shared backbone into an image-to-image network.

The reconstruction chapters (super-resolution, inpainting, and the masked-image-modelling chapter)
predict pixels. To keep the book's comparison fair, the encoder that is later probed is the
shared backbone itself (its ``feature_maps``); a separate :class:`Decoder` brings its deepest map
back to full resolution with sub-pixel convolutions (``nn.PixelShuffle``), and
:class:`EncoderDecoder` joins the two, predicting a correction to its input.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


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
    """From the backbone's ``block3`` map back to an image, by sub-pixel upsamplings (Shi et al.
    2016, arXiv 1609.05158): a convolution makes 4x the channels and ``nn.PixelShuffle(2)``
    rearranges them into a map twice as wide and high; one such step per halving of the
    resolution in the backbone (two for a ``block3`` at 1/4, three at 1/8).

    Args:
        in_channels: channels of ``block3`` (the backbone's ``feature_dim``).
        out_channels: image channels.
        hidden: channels after the first upsampling (halved after each further one, to 8 at
            least).
        spatial: side of the ``block3`` map; with it, a :class:`ChannelwiseFC` bottleneck is used.
        stride: how much smaller ``block3`` is than the image (the backbone's ``stride``).

    Input ``(B, in_channels, h, w)``; output ``(B, out_channels, stride * h, stride * w)``,
    unbounded (the :class:`EncoderDecoder` adds it to its input).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 3,
        hidden: int = 32,
        spatial: int | None = None,
        stride: int = 4,
    ) -> None:
        super().__init__()
        steps = stride.bit_length() - 1
        if stride < 2 or 2**steps != stride:
            raise ValueError(f"stride must be a power of two >= 2, got {stride}")
        self.bottleneck = ChannelwiseFC(in_channels, spatial) if spatial else nn.Identity()
        channels = [in_channels] + [max(8, hidden // 2**i) for i in range(steps)]
        self.upsample = nn.Sequential(
            *(_upsample(a, b) for a, b in itertools.pairwise(channels))
        )  # (B, C, h, w) -> (B, channels[-1], stride * h, stride * w)
        self.out = nn.Conv2d(channels[-1], out_channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # start as the identity: output = input
        nn.init.zeros_(self.out.bias)

    def config(self) -> str:
        """``"Decoder"``, or ``"Decoder + ChannelwiseFC"`` with the bottleneck (for checkpoints)."""
        if isinstance(self.bottleneck, ChannelwiseFC):
            return "Decoder + ChannelwiseFC"
        return "Decoder"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(x)  # (B, C, h, w)
        return self.out(self.upsample(x))  # (B, out_channels, stride * h, stride * w)


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
        features = self.backbone.feature_maps(x)["block3"]  # (B, 4w, H/s, W/s)
        return x + self.decoder(features)  # (B, C, H, W)
