import math

import pytest
import torch

import sslbook as sb
from sslbook.pretext import simclr, simsiam

from .conftest import assert_seeded, losses_on_a_fixed_batch


def _images(b=8, size=16, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _network(seed=0, **settings):
    backbone = sb.build_backbone(width=8, depth=1, seed=seed)
    with sb.recipes.seeded(seed):
        return simsiam.build_model(backbone, simsiam.Settings(**settings))


def _batch(b=8):
    return simsiam.make_pretext_batch(_images(b), torch.Generator().manual_seed(0))


def test_views_are_seeded_pairs():
    views, partners = assert_seeded(simsiam.make_pretext_batch, _images(6))
    assert views.shape == (12, 3, 16, 16)
    assert torch.equal(partners[partners], torch.arange(12))


def test_the_default_views_are_the_ones_the_recipe_trains_on():
    # make_pretext_batch draws SimCLR's recipe views; the SimSiam recipe trains on its own
    # settings' pipeline: the two must agree, or the chapter's figure would show other views.
    recipe_views = simsiam.Settings().pipeline()
    assert recipe_views == simclr.Settings().pipeline()
    drawn, _ = simsiam.make_pretext_batch(_images(4), torch.Generator().manual_seed(1))
    trained, _ = sb.augment.two_views(_images(4), torch.Generator().manual_seed(1), recipe_views)
    assert torch.equal(drawn, trained)


def test_outputs_have_the_projection_size_and_the_loss_its_range():
    net = _network(projection_dim=32, predictor_dim=8)
    views, partners = _batch()
    out = net(views)
    assert out.predictions.shape == out.projections.shape == out.targets.shape == (16, 32)
    loss = simsiam.loss(out, partners)
    assert -1.0 <= loss.item() <= 1.0
    same = simsiam.SiameseOutputs(out.targets, out.projections, out.targets)
    identical = simsiam.loss(same, torch.arange(16))  # each prediction is its own target
    assert identical.item() == pytest.approx(-1.0, abs=1e-5)


def test_the_stop_gradient_keeps_the_gradient_out_of_the_target_branch():
    views, partners = _batch()
    net = _network()
    out = net(views)
    assert not out.targets.requires_grad and out.targets.grad_fn is None
    simsiam.loss(out, partners).backward()
    with_stop = [p.grad.clone() for p in net.backbone.parameters()]
    # the same gradient, written out: only the predictions carry it
    net.zero_grad()
    out = net(views)
    simsiam.negative_cosine(out.predictions, out.projections.detach()[partners]).backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(with_stop, net.backbone.parameters(),
                                                           strict=True))  # fmt: skip
    free = _network(stop_gradient=False)  # no stop-gradient: the targets are differentiated
    out = free(views)
    assert out.targets.requires_grad
    simsiam.loss(out, partners).backward()
    free_grads = [p.grad for p in free.backbone.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(with_stop, free_grads, strict=True))


def test_ema_update_moves_the_target_a_fraction_of_the_way():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    simsiam.ema_update(target, online, momentum=0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    simsiam.ema_update(target, online, momentum=0.0)  # momentum 0: a copy
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters(),
                                                 strict=True))  # fmt: skip


def test_ema_update_agrees_with_lightly():
    utils = pytest.importorskip("lightly.models.utils")
    torch.manual_seed(0)
    online, ours, theirs = (torch.nn.Linear(4, 3) for _ in range(3))
    theirs.load_state_dict(ours.state_dict())
    simsiam.ema_update(ours, online, 0.99)
    utils.update_momentum(online, theirs, 0.99)
    assert all(torch.allclose(a, b) for a, b in zip(ours.parameters(), theirs.parameters(),
                                                    strict=True))  # fmt: skip


def test_the_byol_target_follows_the_online_network_and_takes_no_gradient():
    net = _network(target_momentum=0.9)
    views, partners = _batch()
    target_params = list(net.target.parameters())
    assert all(not p.requires_grad for p in target_params)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()
    loss = simsiam.loss(net(views), partners)  # first step: target == online, unchanged
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in target_params)
    optimizer.step()
    before = [p.clone() for p in target_params]
    online = [*net.backbone.parameters(), *net.head.projector.parameters()]
    net(views)  # the next training forward moves the target towards the new online weights
    for t, b, o in zip(target_params, before, online, strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    moved = [p.clone() for p in target_params]
    net.eval()
    net(views)  # evaluation never moves it
    assert all(torch.equal(a, p) for a, p in zip(moved, target_params, strict=True))


def test_settings_refuse_an_ema_target_without_a_stop_gradient():
    with pytest.raises(ValueError, match="stop_gradient"):
        simsiam.Settings(target_momentum=0.99, stop_gradient=False)
    with pytest.raises(ValueError, match="target_momentum"):
        simsiam.Settings(target_momentum=1.0)
    assert isinstance(_network(predictor=False).head.predictor, torch.nn.Identity)


def test_normalised_std_is_one_over_root_d_when_spread_and_zero_when_collapsed():
    d = 256
    spread = torch.randn(4096, d, generator=torch.Generator().manual_seed(0))
    assert simsiam.normalised_std(spread) == pytest.approx(1 / math.sqrt(d), rel=0.02)
    collapsed = torch.randn(1, d).expand(512, d) + 1e-4 * torch.randn(512, d)
    assert simsiam.normalised_std(collapsed) < 1e-3
    out = simsiam.SiameseOutputs(spread, spread, spread)
    assert simsiam.output_spread(out) == pytest.approx(1.0, rel=0.02)


def test_loss_falls_on_a_fixed_batch_and_embed_gives_both_features():
    torch.manual_seed(0)
    net = _network()
    views, partners = _batch(16)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = losses_on_a_fixed_batch(net, simsiam.loss, views, partners, optimizer)
    assert losses[-1] < losses[0]
    h, z = simsiam.embed(net, (255 * _images(5)).to(torch.uint8))
    d = net.backbone.feature_dim  # the projection keeps the backbone's feature size
    assert h.shape == (5, d) and z.shape == (5, d)
    assert net.head.predictor[0].out_features == d // 4


def test_recipes_build_simsiam_byol_and_the_collapse_run():
    data = sb.ImageSet(torch.zeros(64, 3, 32, 32, dtype=torch.uint8), torch.zeros(64).long(),
                       ("x",))  # fmt: skip
    profile = sb.get_profile("smoke")
    plain = simsiam.recipe(profile, 0, data=data)
    byol = simsiam.recipe(profile, 0, data=data, target_momentum=simsiam.BYOL_MOMENTUM)
    free = simsiam.recipe(profile, 0, data=data, stop_gradient=False)
    assert plain.model.target is None and byol.model.target is not None
    assert plain.augment is None and byol.augment is None  # the views make their own crops
    assert not free.model.stop_gradient
    assert len({plain.fingerprint, byol.fingerprint, free.fingerprint}) == 3
    assert plain.model.config() != byol.model.config()
