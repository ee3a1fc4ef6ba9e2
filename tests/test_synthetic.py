import pytest
import torch

import sslbook as sb
from sslbook.pretext import synthetic


def small_bank() -> synthetic.Bank:
    return synthetic.Bank.from_renders(sb.render.render_random(12, seed=1))


def test_batch_shapes_and_packing():
    images = torch.rand(4, 3, 32, 32)
    inputs, targets = synthetic.make_pretext_batch(images, torch.Generator().manual_seed(0))
    assert inputs.shape == (8, 3, 32, 32)  # 4 renders, then the 4 real images
    assert targets.depth.shape == (8, 1, 32, 32) and targets.normals.shape == (8, 3, 32, 32)
    assert torch.equal(inputs[4:], images)
    assert targets.rendered.tolist() == [True] * 4 + [False] * 4
    assert targets.domain.tolist() == [0.0] * 4 + [1.0] * 4
    assert (targets.depth[:4] > 0).all()
    assert torch.allclose(targets.normals[:4].norm(dim=1), torch.ones(4, 32, 32), atol=1e-4)
    for geometry in (targets.depth, targets.normals, targets.edges):
        assert (geometry[4:] == 0).all()  # no geometry for real images


def test_batch_is_seeded_and_renders_only_without_adaptation():
    images = torch.rand(3, 3, 32, 32)
    bank = small_bank()
    a = synthetic.make_pretext_batch(images, torch.Generator().manual_seed(5), bank=bank)
    b = synthetic.make_pretext_batch(images, torch.Generator().manual_seed(5), bank=bank)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].depth, b[1].depth)
    inputs, targets = synthetic.make_pretext_batch(
        images, torch.Generator().manual_seed(5), bank=bank, real=False
    )
    assert inputs.shape == (3, 3, 32, 32) and targets.depth.shape == (3, 1, 32, 32)
    assert targets.rendered.all()


def test_flipped_renders_keep_consistent_normals():
    bank = small_bank()
    drawn = synthetic.draw_renders(bank, 64, torch.Generator().manual_seed(0))
    # every drawn render is a bank render, either as it is or mirrored with normal x negated
    bank_images = bank.images.float() / 255
    for image, normals in zip(drawn.images, drawn.normals, strict=True):
        same = (bank_images == image).flatten(1).all(1)
        mirrored = (bank_images.flip(-1) == image).flatten(1).all(1)
        assert same.any() or mirrored.any()
        if not same.any():
            source = bank.normals[mirrored.nonzero()[0, 0]].float().flip(-1)
            assert torch.equal(normals[0], -source[0]) and torch.equal(normals[1:], source[1:])


def test_gradient_reversal_flips_the_gradient_sign():
    x = torch.randn(5, requires_grad=True)
    (synthetic.reverse_gradient(x, 0.5) * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -0.5 * torch.arange(5.0))
    y = torch.randn(5)
    assert torch.equal(synthetic.reverse_gradient(y, 0.5), y)  # identity going forward


def test_discriminator_and_backbone_get_opposite_gradients():
    torch.manual_seed(0)
    backbone = sb.build_backbone(8, 1, seed=0)
    inputs, targets = synthetic.make_pretext_batch(torch.rand(4, 3, 32, 32))
    model = synthetic.SyntheticNet(backbone, synthetic.build_head(backbone.feature_dim))
    grads = {}
    for reversal in (1.0, -1.0):
        model.head.reversal = reversal
        model.zero_grad()
        synthetic.loss_terms(model(inputs), targets)["domain"].backward()
        grads[reversal] = backbone.stages[2][0].conv2.weight.grad.clone()
    assert torch.allclose(grads[1.0], -grads[-1.0], atol=1e-6)


def test_model_outputs_loss_and_scores():
    backbone = sb.build_backbone(8, 1, seed=0)
    model = synthetic.SyntheticNet(backbone, synthetic.build_head(backbone.feature_dim))
    inputs, targets = synthetic.make_pretext_batch(torch.rand(4, 3, 32, 32))
    outputs = model(inputs)
    assert outputs.log_depth.shape == (8, 1, 32, 32) and outputs.domain.shape == (8, 1, 8, 8)
    assert synthetic.loss(outputs, targets).ndim == 0
    parts = outputs.pictures()
    assert parts["depth"].shape == (8, 1, 32, 32) and (parts["depth"] > 0).all()
    assert torch.allclose(parts["normals"].norm(dim=1), torch.ones(8, 32, 32), atol=1e-4)
    assert parts["real"].shape == (8,)
    scores = synthetic.geometry_scores(outputs.detach(), targets)
    assert 0 <= scores["depth_accuracy"] <= 1 and 0 <= scores["domain_accuracy"] <= 1
    assert 0 <= scores["normal_error_degrees"] <= 180 and 0 <= scores["edge_f1"] <= 1


def test_perfect_predictions_score_perfectly():
    _, targets = synthetic.make_pretext_batch(torch.rand(2, 3, 32, 32))
    outputs = synthetic.GeometryOutputs(
        targets.depth.clamp(min=1e-3).log(),
        targets.normals,
        (targets.edges * 2 - 1) * 20,
        ((targets.domain * 2 - 1) * 20).view(-1, 1, 1, 1).expand(-1, 1, 8, 8),
    )
    scores = synthetic.geometry_scores(outputs, targets)
    assert scores["depth_accuracy"] == 1 and scores["edge_f1"] == 1
    assert scores["domain_accuracy"] == 1 and scores["normal_error_degrees"] < 0.1


def test_bank_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path))
    a = synthetic.load_bank(10, seed=2)
    assert list((tmp_path / "synthetic").glob("*.pt"))
    b = synthetic.load_bank(10, seed=2)
    assert torch.equal(a.images, b.images) and len(a) == 10


def test_photo_textured_banks_are_keyed_by_the_photographs(tmp_path, monkeypatch, cifar_small):
    monkeypatch.setenv("SSLBOOK_CACHE", str(tmp_path))
    photos, other = cifar_small
    plain = synthetic.bank_for(photos, synthetic.Settings(bank_size=6))
    pasted = synthetic.bank_for(photos, synthetic.Settings(bank_size=6, photo_textures=1.0))
    elsewhere = synthetic.bank_for(other, synthetic.Settings(bank_size=6, photo_textures=1.0))
    assert torch.equal(plain.depth, pasted.depth)  # the same scenes, other surfaces
    assert not torch.equal(plain.images, pasted.images)
    assert not torch.equal(pasted.images, elsewhere.images)
    assert len(list((tmp_path / "synthetic").glob("*.pt"))) == 3
    with pytest.raises(ValueError, match="photo_textures"):
        synthetic.Settings(photo_textures=1.5)


def test_trains_through_the_book_loop():
    data = sb.ImageSet(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8),
                       torch.zeros(16, dtype=torch.long), ("x",))  # fmt: skip
    backbone = sb.build_backbone(8, 1, seed=0)
    model = synthetic.SyntheticNet(backbone, synthetic.build_head(backbone.feature_dim))
    task = synthetic.make_task(small_bank())
    history = sb.train(model, data, task, sb.TrainConfig(epochs=1, batch_size=8), progress=False)
    assert len(history.step_loss) == 2 and 0 <= history.epoch_metric[0] <= 1


def test_geometry_pictures_are_displayable():
    r = sb.render.render_random(3, seed=0)
    pictures = synthetic.geometry_pictures(r.depth, r.normals, r.edges)
    assert [p.shape[1] for p in pictures] == [1, 3, 1]
    assert all(p.min() >= 0 and p.max() <= 1 for p in pictures)
    fig = synthetic.show_geometry(r.images, r.depth, r.normals, r.edges)
    assert len(fig.axes) == 12


def test_recipe_reverses_the_gradient_at_its_documented_strength_and_refuses_a_string_flag():
    plan = synthetic.recipe(sb.get_profile("smoke"), seed=0)
    assert plan.settings.reversal == synthetic.REVERSAL == plan.model.head.reversal
    with pytest.raises(ValueError, match="adapt must be True or False"):
        synthetic.Settings(adapt="False")  # a truthy string would silently keep adaptation on
