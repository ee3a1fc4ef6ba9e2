import pytest
import torch

import sslbook as sb
from sslbook.pretext import colorization as col


def test_lab_round_trip_recovers_the_image():
    images = torch.rand(4, 3, 8, 8)
    lightness, ab = col.rgb_to_l_ab(images)
    assert lightness.shape == (4, 1, 8, 8) and ab.shape == (4, 2, 8, 8)
    assert 0 <= lightness.min() and lightness.max() <= 100
    assert torch.allclose(col.l_ab_to_rgb(lightness, ab), images, atol=1e-4)


def test_lab_of_known_colours():
    white_red_grey = torch.tensor([[1.0, 1.0, 0.5], [1.0, 0.0, 0.5], [1.0, 0.0, 0.5]])
    lightness, ab = col.rgb_to_l_ab(white_red_grey.view(1, 3, 1, 3))
    assert lightness[0, 0, 0, 0] == pytest.approx(100, abs=0.01)
    assert ab[0, :, 0, 0].abs().max() < 0.01  # white has no colour
    assert ab[0, :, 0, 2].abs().max() < 0.01  # nor has grey
    assert ab[0, 0, 0, 1] > 70 and ab[0, 1, 0, 1] > 60  # red: large a and b (~80, ~67)


def test_grey_input_has_the_lightness_and_no_colour():
    images = torch.rand(3, 3, 8, 8)
    inputs, targets = col.make_pretext_batch(images)
    assert inputs.shape == (3, 3, 8, 8) and targets.shape == (3, 2, 2, 2)
    assert torch.equal(inputs[:, 0], inputs[:, 1]) and torch.equal(inputs[:, 0], inputs[:, 2])
    grey_l, grey_ab = col.rgb_to_l_ab(inputs)
    assert torch.allclose(grey_l, col.rgb_to_l_ab(images)[0], atol=0.05)
    assert grey_ab.abs().max() < 0.05
    _, ab = col.rgb_to_l_ab(images)
    assert torch.allclose(targets[:, :, 0, 0], ab[:, :, :4, :4].mean((-2, -1)), atol=1e-4)


def test_pretext_batch_is_deterministic_and_checks_its_input():
    images = torch.rand(2, 3, 8, 8)
    a = col.make_pretext_batch(images, torch.Generator().manual_seed(0))
    b = col.make_pretext_batch(images, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="multiple of 4"):
        col.make_pretext_batch(torch.rand(2, 3, 10, 10))
    with pytest.raises(ValueError, match="colour images"):
        col.make_pretext_batch(torch.rand(2, 1, 8, 8))


def test_bins_cover_the_srgb_gamut_on_the_grid():
    bins = col.ab_bins()
    assert 200 < len(bins) < 330  # the paper's gamut gives 313; sRGB a little less
    assert torch.equal(bins % col.GRID_SIZE, torch.zeros_like(bins))
    assert len(torch.unique(bins, dim=0)) == len(bins)
    assert (bins == 0).all(1).any()  # grey is a colour
    # every colour of random sRGB pixels is within half a grid diagonal of some bin
    _, ab = col.rgb_to_l_ab(torch.rand(1, 3, 64, 64))
    nearest = bins[col.quantize(ab, bins).flatten()]
    pixels = ab.movedim(1, -1).reshape(-1, 2)
    assert (pixels - nearest).norm(dim=1).max() <= col.GRID_SIZE * 2**0.5 / 2 + 1e-3


def test_quantize_picks_the_nearest_bin():
    bins = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    ab = torch.tensor([[1.0, 8.0, 3.0], [2.0, 1.0, 9.0]]).view(1, 2, 1, 3)
    assert col.quantize(ab, bins).flatten().tolist() == [0, 1, 2]


def test_soft_encoding_is_a_distribution_peaked_on_the_nearest_bin():
    _, ab = col.rgb_to_l_ab(torch.rand(2, 3, 4, 4))
    bins = col.ab_bins()
    soft = col.soft_encode(ab, bins)
    assert soft.shape == (2, len(bins), 4, 4)
    assert torch.allclose(soft.sum(1), torch.ones(2, 4, 4))
    assert ((soft > 0).sum(1) == col.SOFT_NEIGHBOURS).all()
    assert torch.equal(soft.argmax(1), col.quantize(ab, bins))
    # a colour exactly on a bin centre keeps most mass there; a tiny sigma makes it one-hot
    centre = bins[5].view(1, 2, 1, 1)
    assert col.soft_encode(centre, bins)[0, 5, 0, 0] > 0.3
    assert col.soft_encode(centre, bins, sigma=0.1)[0, 5, 0, 0] == pytest.approx(1.0)


def test_prior_and_rebalancing_weights():
    images = torch.rand(8, 3, 8, 8) * 0.2 + 0.4  # dull colours only
    bins = col.ab_bins()
    raw = col.ab_prior(images, bins, sigma=0)
    smooth = col.ab_prior(images, bins)
    assert raw.sum() == pytest.approx(1.0) and smooth.sum() == pytest.approx(1.0)
    assert (smooth > 0).sum() > (raw > 0).sum()  # smoothing spreads the mass
    weights = col.rebalance_weights(smooth)
    assert (weights > 0).all()
    assert (smooth * weights).sum() == pytest.approx(1.0, abs=1e-5)  # expected weight is 1
    # rare colours weigh more than common ones
    assert weights[smooth.argmin()] > weights[smooth.argmax()]
    # lam=1 is no rebalancing at all
    assert torch.allclose(col.rebalance_weights(smooth, lam=1.0), torch.ones(len(bins)))
    with pytest.raises(ValueError, match="lam"):
        col.rebalance_weights(smooth, lam=1.5)


def test_annealed_mean_goes_from_mean_to_mode():
    bins = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).view(1, 3, 1, 1)
    mean = col.annealed_mean(logits, 1.0, bins)[0, :, 0, 0]
    assert torch.allclose(mean, torch.tensor([15.0, 10.0]), atol=1e-4)
    mode = col.annealed_mean(logits, 0.01, bins)[0, :, 0, 0]
    assert torch.allclose(mode, torch.zeros(2), atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        col.annealed_mean(logits, 0.0, bins)


def test_accuracy_auc_and_chroma():
    ab = torch.randn(2, 2, 4, 4) * 30
    assert col.ab_accuracy_auc(ab, ab) == pytest.approx(1.0)
    assert col.ab_accuracy_auc(ab + 1000, ab) == 0.0
    assert 0 < col.ab_accuracy_auc(torch.zeros_like(ab), ab) < 1
    assert col.chroma(torch.zeros(1, 2, 3, 3)) == 0.0


def test_models_losses_and_a_few_steps_of_learning():
    backbone = sb.build_backbone(width=8, depth=1, seed=0)
    images = torch.rand(4, 3, 16, 16)
    inputs, targets = col.make_pretext_batch(images)
    for task in (col.make_task(), col.make_task(col.Settings(regression=True))):
        model = col.ColorizationNet(backbone, task.build_head(backbone.feature_dim))
        outputs = model(inputs)
        assert outputs.shape == (4, model.head.num_outputs, 4, 4)
        assert task.loss(outputs, targets).ndim == 0
        assert 0 <= task.metric(outputs, targets) <= 1
        assert col.decode(outputs).shape == (4, 2, 4, 4)
    model = col.ColorizationNet(backbone, col.build_head(backbone.feature_dim))
    rebalanced = col.make_task(prior=col.ab_prior(images))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = rebalanced.loss(model(inputs), targets).item()
    for _ in range(20):
        optimizer.zero_grad()
        rebalanced.loss(model(inputs), targets).backward()
        optimizer.step()
    assert rebalanced.loss(model(inputs), targets).item() < first


def test_colorize_with_the_true_colours_gives_the_image_back():
    images = torch.rand(2, 3, 8, 8)
    _, ab = col.rgb_to_l_ab(images)
    assert torch.allclose(col.colorize(images, ab), images, atol=1e-4)
    assert col.colorize(images, torch.zeros(2, 2, 2, 2)).shape == (2, 3, 8, 8)
