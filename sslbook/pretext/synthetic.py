"""Multi-task learning from synthetic imagery, with domain adaptation.

Ren & Lee (2018). *Cross-Domain Self-supervised Multi-task Feature Learning using Synthetic
Imagery.* CVPR 2018, arXiv 1711.09082.

The seed idea: what if we prepared pairs of (rendered image, its depth, surface normals and
object edges)? A renderer knows the geometry behind every pixel it draws, so these labels are
exact and free. To predict them, a network has to understand 3D shape, occlusion and shading.
But a network trained only on renders learns features of *renders* (flat colours, perfect edges),
which transfer badly to photos. So, as in the paper, a domain discriminator tries to tell the
backbone's features of real images (CIFAR-10) from those of renders, and the backbone is trained
to fool it: features that cannot tell the two domains apart are features that transfer.

The renders come from :mod:`sslbook.render` (SUNCG, the paper's dataset of synthetic indoor
scenes, is no longer distributed). Two departures from the paper, for the sake of one training
loop and one backward pass: the paper trains the domain discriminator and the base network in
alternation, the network's step with flipped domain labels, and feeds the discriminator from
pools of past images; here the backbone fools it through a gradient reversal layer (Ganin &
Lempitsky 2015, arXiv 1409.7495), the identity going forward and the gradient times
``-lambda`` going back, so one backward pass trains the discriminator to separate the domains
and the backbone to merge them (the same minimax objective, optimised jointly instead of in
turns). The edge loss is class-balanced, as in the paper: edge pixels are few, and unweighted the
head would learn to predict "no edge" everywhere.

The batch holds ``B`` renders then ``B`` real images; the targets are a :class:`SceneTargets`
(the geometry of the renders and every row's domain) and the model's outputs a
:class:`GeometryOutputs` (one field per head).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sslbook import plot, render
from sslbook.checkpoint import atomic_write, cache_path
from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.fingerprint import data_digest, fingerprint
from sslbook.pretext.base import PretextTask
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled
from sslbook.transforms import to_float

NAME = "synthetic"
TITLE = "Synthetic imagery with domain adaptation"
PAPER = "Ren & Lee (2018), arXiv 1711.09082"

#: Weight of each loss term (the domain term's gradient reaches the backbone reversed).
LOSS_WEIGHTS = {"depth": 1.0, "normals": 1.0, "edges": 1.0, "domain": 1.0}
#: The gradient reversal's ``lambda`` in the recipe. At full strength (1) the backbone's effort to
#: hide the domain outweighs the geometry it learns within the profile's budget: in the book's
#: development runs the probe stayed at random init's level, and a tenth of it probed higher.
REVERSAL = 0.1


@dataclass
class SceneTargets:
    """What the network must predict for a batch of renders followed by real images.

    Attributes:
        depth: ``(N, 1, H, W)`` true depth of the rendered rows (zero for real ones).
        normals: ``(N, 3, H, W)`` unit normals of the rendered rows (zero for real ones).
        edges: ``(N, 1, H, W)`` 1.0 on object edges of the rendered rows.
        domain: ``(N,)`` 1.0 for a real image, 0.0 for a render.
        rendered: ``(N,)`` bool, the rows whose geometry is known.
    """

    depth: torch.Tensor
    normals: torch.Tensor
    edges: torch.Tensor
    domain: torch.Tensor
    rendered: torch.Tensor

    def __getitem__(self, index) -> SceneTargets:
        return SceneTargets(*(getattr(self, f.name)[index] for f in fields(self)))


@dataclass
class GeometryOutputs:
    """What the :class:`SyntheticNet` predicts, one field per head (raw, before activations).

    Attributes:
        log_depth: ``(N, 1, H, W)`` log of the depth.
        normals: ``(N, 3, H, W)`` normals, not yet of unit length.
        edges: ``(N, 1, H, W)`` edge logits.
        domain: ``(N, 1, H/4, W/4)`` the discriminator's logits at every location (1: real).
    """

    log_depth: torch.Tensor
    normals: torch.Tensor
    edges: torch.Tensor
    domain: torch.Tensor

    def __getitem__(self, index) -> GeometryOutputs:
        return GeometryOutputs(*(getattr(self, f.name)[index] for f in fields(self)))

    def __len__(self) -> int:
        return len(self.log_depth)

    def detach(self) -> GeometryOutputs:
        return GeometryOutputs(*(getattr(self, f.name).detach() for f in fields(self)))

    def pictures(self) -> dict[str, torch.Tensor]:
        """``depth`` ``(N, 1, H, W)`` (metres), unit ``normals`` ``(N, 3, H, W)``, ``edges``
        probabilities ``(N, 1, H, W)`` and ``real``, the probability of a real image ``(N,)``."""
        return {
            "depth": self.log_depth.float().exp(),
            "normals": F.normalize(self.normals.float(), dim=1),
            "edges": self.edges.float().sigmoid(),
            "real": self.domain.float().mean((-3, -2, -1)).sigmoid(),
        }


# --- the data: a bank of renders --------------------------------------------------------------


@dataclass
class Bank:
    """Pre-rendered scenes the task draws from (see :func:`load_bank`).

    Stored compactly (a 5,000-scene bank is about 40 MB): ``images`` ``(N, 3, H, W)`` uint8,
    ``depth`` ``(N, 1, H, W)`` and ``normals`` ``(N, 3, H, W)`` float16, ``edges``
    ``(N, 1, H, W)`` uint8; :func:`draw_renders` turns what it draws into float32.
    """

    images: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    edges: torch.Tensor

    @classmethod
    def from_renders(cls, renders: render.Renders) -> Bank:
        """Quantise :class:`~sslbook.render.Renders` for storage."""
        return cls(
            (renders.images * 255).round().to(torch.uint8), renders.depth.half(),
            renders.normals.half(), renders.edges.to(torch.uint8),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.images)


def load_bank(
    n: int,
    seed: int = 0,
    size: int = 32,
    photos: ImageSet | None = None,
    photo_probability: float = 0.0,
) -> Bank:
    """``n`` rendered scenes from ``seed``, cached on disk (rendering is cheap, but not free);
    with ``photos``, each surface shows one of their images with ``photo_probability``
    (:func:`sslbook.render.render_random`).

    Rendering 5,000 scenes takes seconds on an idle CPU; the cache makes re-running a notebook
    instant. The file is keyed by the settings, the photographs and the package source, so a
    change to any of them renders a new bank; a damaged file is rendered again, with a warning.
    """
    pictures = photos.images if photos is not None and photo_probability > 0 else None
    key = fingerprint(n, seed, size, photo_probability if pictures is not None else 0.0,
                      data_digest(photos) if pictures is not None else None)  # fmt: skip
    path = cache_path("synthetic", "bank", key, suffix=".pt")
    if path.exists():
        try:
            return Bank(**torch.load(path, weights_only=True))
        except Exception as error:  # a truncated or foreign file: render it again
            warnings.warn(
                f"{path} could not be read ({type(error).__name__}); rendering the bank again",
                stacklevel=2,
            )
    renders = render.render_random(n, seed, size, photos=pictures,
                                   photo_probability=photo_probability)  # fmt: skip
    bank = Bank.from_renders(renders)
    atomic_write(path, lambda f: torch.save(vars(bank), f))
    return bank


def draw_renders(
    bank: Bank | None, n: int, generator: torch.Generator | None, size: int = 32
) -> Bank:
    """``n`` renders with their geometry: drawn from ``bank`` (with a random horizontal flip), or
    rendered now from a seed drawn from ``generator`` when ``bank`` is ``None``."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if bank is None:
        seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        r = render.render_random(n, seed, size)
        return Bank(r.images, r.depth, r.normals, r.edges)
    index = torch.randint(len(bank), (n,), generator=g)
    flip = (torch.rand(n, generator=g) < 0.5)[:, None, None, None]
    mirror = torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)  # a mirrored normal flips its x

    def pick(x: torch.Tensor, sign: torch.Tensor | float = 1.0) -> torch.Tensor:
        x = x[index].float()
        return torch.where(flip, x.flip(-1) * sign, x)

    images = pick(bank.images) / 255 if bank.images.dtype == torch.uint8 else pick(bank.images)
    return Bank(images, pick(bank.depth), pick(bank.normals, mirror), pick(bank.edges))


def make_pretext_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    bank: Bank | None = None,
    real: bool = True,
) -> tuple[torch.Tensor, SceneTargets]:
    """Renders with their geometry, followed by the real images with only their domain.

    Args:
        images: ``(B, 3, H, W)`` real images in [0, 1] (their content is never a label).
        generator: draws the renders (same generator state, same batch).
        bank: pre-rendered scenes to draw from (see :func:`load_bank`); ``None`` renders anew.
        real: include the real images (``False``: renders only, no domain adaptation).

    Returns:
        inputs ``(2B, 3, H, W)`` (``(B, ...)`` without ``real``): ``B`` renders, then the real
        images; targets: a :class:`SceneTargets` for those rows.
    """
    b, _, h, _ = images.shape
    device = images.device
    drawn = draw_renders(bank, b, generator, h)
    ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
    renders = SceneTargets(
        drawn.depth.to(device), drawn.normals.to(device), drawn.edges.to(device), zeros,
        ones.bool(),
    )  # fmt: skip
    if not real:
        return drawn.images.to(device), renders  # (B, 3, H, W)
    blank = torch.zeros_like(renders.depth)
    inputs = torch.cat([drawn.images.to(device), images])  # (2B, 3, H, W)
    targets = SceneTargets(
        torch.cat([renders.depth, blank]),
        torch.cat([renders.normals, blank.expand(-1, 3, -1, -1)]),
        torch.cat([renders.edges, blank]),
        torch.cat([zeros, ones]),
        torch.cat([ones, zeros]).bool(),
    )  # fmt: skip
    return inputs, targets


# --- the model ---------------------------------------------------------------------------------


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``-lambda`` backward (Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, but the gradient flowing back through it is ``-lam`` times its own."""
    return GradientReversal.apply(x, lam)


class DenseHead(nn.Module):
    """A small decoder for one dense task: ``block3`` (1/4 resolution) upsampled onto ``block2``
    (1/2), each through a 1x1 convolution, summed, then a 3x3 convolution to ``out_channels``
    and a bilinear upsampling to full size.

    Deliberately small and fed from the deep blocks only, so the backbone does the geometry.
    """

    def __init__(self, feature_dim: int, out_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.lateral3 = nn.Conv2d(feature_dim, hidden, 1)
        self.lateral2 = nn.Conv2d(feature_dim // 2, hidden, 1, bias=False)
        self.out = nn.Sequential(
            nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, out_channels, 3, padding=1)
        )

    def forward(self, maps: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """``maps`` of the backbone → ``(B, out_channels, *size)``."""
        up = F.interpolate(self.lateral3(maps["block3"]), scale_factor=2, mode="nearest")
        x = self.out(up + self.lateral2(maps["block2"]))  # (B, out, H/2, W/2)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class GeometryHeads(nn.Module):
    """Depth, normal and edge decoders plus the domain discriminator, as one head module.

    The discriminator sees the backbone's ``block3`` map through a gradient reversal layer and
    classifies every location (1x1 convolutions): a local discriminator, so no region of the
    feature map can keep a "this is a render" signature.

    Args:
        feature_dim: the backbone's ``feature_dim`` (channels of ``block3``; ``block2`` has half).
        reversal: the ``lambda`` of the gradient reversal (0: the discriminator still learns, but
            the backbone ignores it).
    """

    def __init__(self, feature_dim: int, reversal: float = REVERSAL, hidden: int = 32) -> None:
        super().__init__()
        self.reversal = reversal
        self.depth = DenseHead(feature_dim, 1, hidden)
        self.normals = DenseHead(feature_dim, 3, hidden)
        self.edges = DenseHead(feature_dim, 1, hidden)
        self.discriminator = nn.Sequential(
            nn.Conv2d(feature_dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, maps: dict[str, torch.Tensor], size: tuple[int, int]) -> GeometryOutputs:
        """Backbone ``maps`` → a :class:`GeometryOutputs` at ``size`` (the domain at 1/4)."""
        features = reverse_gradient(maps["block3"], self.reversal)
        return GeometryOutputs(
            self.depth(maps, size), self.normals(maps, size), self.edges(maps, size),
            self.discriminator(features),  # (B, 1, H/4, W/4)
        )  # fmt: skip


class SyntheticNet(nn.Module):
    """The shared backbone and the :class:`GeometryHeads`: ``(B, 3, H, W)`` → a
    :class:`GeometryOutputs`."""

    def __init__(self, backbone: nn.Module, head: GeometryHeads) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def config(self) -> dict:
        return {"backbone": self.backbone.config(), "head": type(self.head).__name__,
                "reversal": self.head.reversal}  # fmt: skip

    def forward(self, x: torch.Tensor) -> GeometryOutputs:
        return self.head(self.backbone.feature_maps(x), x.shape[-2:])


def build_head(feature_dim: int, reversal: float = REVERSAL) -> GeometryHeads:
    """The decoders and the discriminator (wrap them with the backbone in :class:`SyntheticNet`)."""
    return GeometryHeads(feature_dim, reversal)


# --- objectives and metrics -----------------------------------------------------------------


def loss_terms(outputs: GeometryOutputs, targets: SceneTargets) -> dict[str, torch.Tensor]:
    """Each term of the objective, geometry on rendered rows only.

    - depth: L1 on log-depth (errors relative to the distance, as in depth estimation);
    - normals: 1 - cosine between predicted and true normals;
    - edges: class-balanced binary cross-entropy per pixel (:func:`balanced_bce`);
    - domain: binary cross-entropy of the discriminator, real vs rendered, at every location.
    """
    o, t = outputs[targets.rendered], targets[targets.rendered]
    cosine = F.cosine_similarity(o.normals.float(), t.normals.float(), dim=1)
    domain = targets.domain.float().view(-1, 1, 1, 1).expand_as(outputs.domain)
    return {
        "depth": F.l1_loss(o.log_depth.float(), t.depth.float().clamp(min=1e-3).log()),
        "normals": (1 - cosine).mean(),
        "edges": balanced_bce(o.edges.float(), t.edges.float()),
        "domain": F.binary_cross_entropy_with_logits(outputs.domain.float(), domain),
    }


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with each class weighted by the other's share of the pixels (the
    class-balanced loss of HED, Xie & Tu 2015, arXiv 1504.06375, which Ren & Lee use for
    contours): the rare edge pixels weigh as much in total as all the others."""
    edge_share = targets.mean().clamp(1e-3, 1 - 1e-3)
    weights = torch.where(targets > 0.5, 1 - edge_share, edge_share) * 2
    return F.binary_cross_entropy_with_logits(logits, targets, weight=weights)


def loss(
    outputs: GeometryOutputs, targets: SceneTargets, weights: dict[str, float] | None = None
) -> torch.Tensor:
    """Weighted sum of :func:`loss_terms` (default :data:`LOSS_WEIGHTS`)."""
    weights = LOSS_WEIGHTS if weights is None else weights
    return sum(weights[name] * value for name, value in loss_terms(outputs, targets).items())


def depth_accuracy(
    outputs: GeometryOutputs, targets: SceneTargets, threshold: float = 1.25
) -> float:
    """The standard depth metric ``delta < 1.25``: the fraction of rendered pixels whose
    predicted depth is within a factor 1.25 of the truth (1.0 is perfect)."""
    predicted = outputs.log_depth[targets.rendered].float().exp()
    truth = targets.depth[targets.rendered].float()
    ratio = torch.maximum(predicted / truth, truth / predicted)
    return (ratio < threshold).float().mean().item()


def geometry_scores(outputs: GeometryOutputs, targets: SceneTargets) -> dict[str, float]:
    """Held-out scores of every head.

    Returns:
        ``depth_accuracy`` (delta < 1.25), ``normal_error_degrees`` (mean angle), ``edge_f1``
        (edges thresholded at 0.5), ``domain_accuracy`` (the discriminator's, 0.5 = fooled).
    """
    p, t = outputs[targets.rendered].pictures(), targets[targets.rendered]
    cosine = (p["normals"] * t.normals.float()).sum(1).clamp(-1, 1)
    edge, truth = p["edges"] > 0.5, t.edges > 0.5
    hits = (edge & truth).sum().item()
    f1 = 2 * hits / max(1, edge.sum().item() + truth.sum().item())
    real = outputs.pictures()["real"] > 0.5
    return {
        "depth_accuracy": depth_accuracy(outputs, targets),
        "normal_error_degrees": math.degrees(cosine.acos().mean().item()),
        "edge_f1": f1,
        "domain_accuracy": (real == (targets.domain > 0.5)).float().mean().item(),
    }


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> GeometryOutputs:
    """The :class:`SyntheticNet`'s predictions for ``images`` ``(N, 3, H, W)`` (uint8 or float),
    in eval mode and batches, as one :class:`GeometryOutputs` on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = [
        model(to_float(images[i : i + batch_size]).to(device))
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    columns = [[getattr(p, f.name).float().cpu() for p in parts] for f in fields(GeometryOutputs)]
    return GeometryOutputs(*(torch.cat(column) for column in columns))


def geometry_pictures(
    depth: torch.Tensor, normals: torch.Tensor, edges: torch.Tensor
) -> list[torch.Tensor]:
    """Depth ``(N, 1, H, W)``, normals ``(N, 3, H, W)`` and edges ``(N, 1, H, W)`` as pictures in
    [0, 1]: inverse depth on a fixed scale (near is bright, the same scale for truth and
    prediction), normals as colours (x → red, y → green, z → blue), edges as they are."""
    return [(1 / depth.clamp(min=1)), normals * 0.5 + 0.5, edges]


def show_geometry(
    images: torch.Tensor,
    depth: torch.Tensor,
    normals: torch.Tensor,
    edges: torch.Tensor,
    suptitle: str | None = None,
    row_names: tuple = (),
):
    """A grid with one column per image: the image, then its depth, normals and edges (each
    ``(N, C, H, W)``). ``row_names`` label the rows (default: image, depth, normals, edges)."""
    names = row_names or ("image", "depth", "normals", "edges")
    rows = [images, *geometry_pictures(depth, normals, edges)]
    n = len(images)
    pictures = [row[i].expand(3, -1, -1) for row in rows for i in range(n)]
    titles = [name if i == 0 else "" for name in names for i in range(n)]
    return plot.show_images(pictures, titles, ncols=n, suptitle=suptitle)


@dataclass(frozen=True)
class Settings:
    """The synthetic-imagery recipe's own settings.

    Attributes:
        adapt: domain adaptation: real images join every batch and a discriminator, behind a
            gradient reversal layer, pushes the backbone to make the two domains look alike.
        reversal: the gradient reversal's ``lambda`` (:data:`REVERSAL`).
        bank_size: rendered scenes drawn from (``None``: as many as there are real images).
        photo_textures: probability that a rendered surface shows one of the unlabelled
            photographs instead of a procedural texture (0: the renders of pure random numbers;
            :func:`sslbook.render.render`). The geometry, and so every label, stays exact.
    """

    adapt: bool = True
    reversal: float = REVERSAL
    bank_size: int | None = None
    photo_textures: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.adapt, bool):
            raise ValueError(f"adapt must be True or False, got {self.adapt!r}")
        if not 0 <= self.photo_textures <= 1:
            raise ValueError(f"photo_textures must be in [0, 1], got {self.photo_textures}")


def bank_for(data: ImageSet, settings: Settings = Settings(), seed: int = 0) -> Bank:
    """The renders a recipe draws from: ``settings.bank_size`` scenes (default: one per real
    image) from ``seed``, at the real images' size, their surfaces textured with the real
    images themselves with probability ``settings.photo_textures`` (:func:`load_bank`)."""
    return load_bank(settings.bank_size or len(data), seed=seed, size=data.images.shape[-1],
                     photos=data, photo_probability=settings.photo_textures)  # fmt: skip


def make_task(
    bank: Bank | None = None, settings: Settings = Settings(), name: str = NAME
) -> PretextTask:
    """The task for :func:`sslbook.train.train`, drawing renders from ``bank``.

    ``settings.adapt=False`` is the ablation without domain adaptation: batches hold renders
    only and the loss has no domain term (the model's discriminator is then idle).
    """
    weights = LOSS_WEIGHTS if settings.adapt else {**LOSS_WEIGHTS, "domain": 0.0}
    head = partial(build_head, reversal=settings.reversal)
    return PretextTask(
        name,
        partial(make_pretext_batch, bank=bank, real=settings.adapt),
        head,
        partial(loss, weights=weights),
        metric=depth_accuracy,
        metric_name="depth accuracy (δ < 1.25)",
    )


#: The learning rate of SGD for this task (the smoke profile's; the adversarial domain game is
#: the first to suffer from a large step).
LR = 0.05


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting: depth, normals and edges of rendered scenes, with domain
    adaptation towards the real (unlabelled) images by gradient reversal, trained by SGD at
    :data:`LR` whatever the profile's rate: at the ``cpu`` profile's 0.2 the reversed gradient
    of the domain classifier pushed the features below random init's (``benchmarks/README.md``).

    Args:
        profile: sizes the run.
        seed: initial weights, the rendered scenes and every random choice.
        data: unlabelled real images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides, lr=LR)
    data = unlabelled(data, profile, seed)
    task = make_task(bank_for(data, settings, seed), settings)
    backbone = shared_backbone(profile, seed)
    with seeded(seed):
        model = SyntheticNet(backbone, task.build_head(backbone.feature_dim))
    return Recipe(NAME, model, task, config, data, settings=settings)
