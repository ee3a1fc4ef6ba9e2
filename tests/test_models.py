import torch

import sslbook as sb
from sslbook.models import BLOCK_NAMES, PretextModel, linear_head


def test_backbone_shapes_on_cpu():
    net = sb.build_backbone(width=8, depth=1)
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 32)
    assert net.feature_dim == 32
    maps = net.feature_maps(x)
    assert list(maps) == list(BLOCK_NAMES)
    assert maps["block1"].shape == (2, 8, 32, 32)
    assert maps["block2"].shape == (2, 16, 16, 16)
    assert maps["block3"].shape == (2, 32, 8, 8)


def test_grayscale_backbone():
    net = sb.build_backbone(width=8, depth=1, in_channels=1)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 32)


def test_siamese_inputs_share_the_backbone():
    net = sb.build_backbone(width=8, depth=1).eval()
    model = PretextModel(net, linear_head(3 * net.feature_dim, 5)).eval()
    x = torch.rand(2, 3, 3, 32, 32)  # (B, K, C, H, W)
    assert model(x).shape == (2, 5)
    # concatenated features = backbone applied to each of the K inputs
    features = torch.cat([net(x[:, k]) for k in range(3)], dim=1)
    torch.testing.assert_close(model.head(features), model(x))


def test_width_knob_scales_parameters():
    small = sum(p.numel() for p in sb.build_backbone(width=8).parameters())
    large = sum(p.numel() for p in sb.build_backbone(width=16).parameters())
    assert 3.5 < large / small < 4.1
