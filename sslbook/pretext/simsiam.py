"""Learning without negatives: SimSiam, and BYOL's moving-average target.

Chen & He (2021). *Exploring Simple Siamese Representation Learning.* CVPR 2021,
arXiv 2011.10566. Grill, Strub, Altché, Tallec, Richemond et al. (2020). *Bootstrap Your Own
Latent: A New Approach to Self-Supervised Learning.* NeurIPS 2020, arXiv 2006.07733.

The seed idea: what if we prepared pairs of (view, view) of the same image, as SimCLR does, but
only pulled the two views together, with no negatives to push the other images away? The loss
then has a trivial minimum: a network that outputs the same vector for every image matches every
pair perfectly and has learned nothing (*collapse*). Two asymmetries between the two branches
keep the network away from it, and this module has a switch for each:

- a **predictor**, a small MLP on one branch only, that must predict the other branch's output;
- a **stop-gradient** on the other branch: its output is a fixed target for this step, so the
  loss can only move the predicting branch towards it, never both towards each other (SimSiam);
  or, BYOL's original form of the idea, a **target network** that is an exponential moving
  average (EMA) of the online one and is never trained by gradients (``target_momentum > 0``).

Whether a run collapsed is measured, not assumed: the standard deviation over the batch of the
L2-normalised outputs, per dimension, is about ``1 / sqrt(d)`` for outputs spread over the sphere
and 0 for a collapsed network (SimSiam, Fig. 2); :func:`output_spread` reports it times
``sqrt(d)``, so 1 is healthy and 0 collapsed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import ViewSettings
from sslbook.config import Profile
from sslbook.data import ImageSet
from sslbook.inference import predict
from sslbook.pretext.base import PretextTask
from sslbook.pretext.simclr import make_pretext_batch  # the same pairs: SimCLR's two views
from sslbook.recipes import Recipe, resolve, seeded, shared_backbone, unlabelled

NAME = "simsiam"
TITLE = "Learning without negatives (SimSiam and BYOL)"
PAPER = "Chen & He (2021), arXiv 2011.10566; Grill et al. (2020), arXiv 2006.07733"

#: The BYOL variant's momentum: the target moves 1 % of the way to the online network per step.
#: BYOL starts at 0.996 and raises it to 1 over a run of hundreds of thousands of steps; ours
#: are a few thousand steps long, so a target that moves faster keeps up with the online one.
BYOL_MOMENTUM = 0.99


@dataclass(frozen=True)
class Settings(ViewSettings):
    """The SimSiam recipe's own settings: the views, SimCLR's
    (:class:`~sslbook.augment.ViewSettings`), and these.

    Attributes:
        stop_gradient: treat the target branch as a constant (SimSiam's key ingredient; ``False``
            lets the gradient flow into both branches, which collapses).
        predictor: put the predictor MLP on the online branch (``False``: none, which collapses
            too, SimSiam Table 1).
        target_momentum: 0 for SimSiam (the target branch is the online network itself, under a
            stop-gradient); above 0, BYOL's EMA target network with this momentum
            (:data:`BYOL_MOMENTUM`).
        projection_dim: output size ``d`` of the projector and the predictor (``None``: the
            backbone's feature size, as SimSiam keeps its ResNet's 2048).
        predictor_dim: hidden width of the predictor (``None``: ``d / 4``, SimSiam's
            bottleneck).
    """

    stop_gradient: bool = True
    predictor: bool = True
    target_momentum: float = 0.0
    projection_dim: int | None = None
    predictor_dim: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.target_momentum < 1:
            raise ValueError(f"target_momentum must be in [0, 1), got {self.target_momentum}")
        if self.target_momentum and not self.stop_gradient:
            raise ValueError(
                "an EMA target network (target_momentum > 0) is never trained by gradients, so "
                "stop_gradient=False only applies to SimSiam (target_momentum=0)"
            )
        super().__post_init__()


@dataclass
class SiameseOutputs:
    """What the siamese network computes for a batch of ``2B`` views.

    Attributes:
        predictions: ``(2B, d)`` the predictor's outputs ``p`` on the online branch.
        projections: ``(2B, d)`` the online projections ``z`` (what collapse is measured on).
        targets: ``(2B, d)`` what each view's partner must predict: ``z`` itself (detached under
            a stop-gradient) or the EMA target network's projection.
    """

    predictions: torch.Tensor
    projections: torch.Tensor
    targets: torch.Tensor


def build_projector(feature_dim: int, dim: int = 256) -> nn.Module:
    """SimSiam's CIFAR projector: linear, BN, ReLU, linear, BN (no affine), ``(N, feature_dim)``
    -> ``(N, dim)``. The last batch norm keeps every output dimension centred and scaled over the
    batch."""
    return nn.Sequential(
        nn.Linear(feature_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
    )  # fmt: skip


def build_predictor(dim: int = 256, hidden: int = 64) -> nn.Module:
    """The predictor ``h``: a bottleneck MLP (linear, BN, ReLU, linear), ``(N, dim)`` ->
    ``(N, dim)``."""
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, dim),
    )  # fmt: skip


class SiameseHead(nn.Module):
    """Projector and predictor, the two MLPs on top of the backbone."""

    def __init__(self, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.projector = projector
        self.predictor = predictor


def build_head(
    feature_dim: int,
    projection_dim: int | None = None,
    predictor_dim: int | None = None,
    predictor: bool = True,
) -> SiameseHead:
    """The projector and (unless ``predictor=False``) the predictor for ``feature_dim``
    backbone features; ``projection_dim`` defaults to ``feature_dim`` and ``predictor_dim`` to a
    quarter of it, SimSiam's proportions (2048 and 512 on a ResNet-50)."""
    dim = projection_dim or feature_dim
    hidden = predictor_dim or max(8, dim // 4)
    head = build_predictor(dim, hidden) if predictor else nn.Identity()
    return SiameseHead(build_projector(feature_dim, dim), head)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Move every parameter of ``target`` towards ``online``'s: ``t <- m t + (1 - m) o``.

    Buffers (batch-norm statistics) are left alone: the target computes its own as it runs.
    """
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


class SiameseNetwork(nn.Module):
    """The backbone and its head on the online branch, and the target branch.

    With ``target_momentum == 0`` (SimSiam) the target branch *is* the online network: the
    targets are the online projections, detached when ``stop_gradient``. With
    ``target_momentum > 0`` (BYOL) the target is a copy of backbone and projector whose weights
    follow the online ones by :func:`ema_update`, once per training step: a forward pass in
    training mode first updates it, which is right after the previous optimiser step (the
    training loop has no other hook there). The copy is trained by nothing else: its parameters
    do not require gradients, so the optimiser leaves them alone.

    Input ``(2B, C, H, W)`` views; output :class:`SiameseOutputs`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: SiameseHead,
        stop_gradient: bool = True,
        target_momentum: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.stop_gradient = stop_gradient
        self.target_momentum = target_momentum
        self.target: nn.ModuleDict | None = None
        if target_momentum > 0:
            online = nn.ModuleDict({"backbone": backbone, "projector": head.projector})
            self.target = copy.deepcopy(online).requires_grad_(False)

    def config(self) -> dict:
        """What a checkpoint must match (the backbone, the head, the kind of target)."""
        kind = "EMA network" if self.target is not None else "online network"
        return {"backbone": self.backbone.config(), "head": type(self.head).__name__,
                "predictor": not isinstance(self.head.predictor, nn.Identity),
                "target": kind}  # fmt: skip

    def update_target(self) -> None:
        """One EMA step of the target network (BYOL only)."""
        if self.target is not None:
            online = {"backbone": self.backbone, "projector": self.head.projector}
            for name, module in online.items():
                ema_update(self.target[name], module, self.target_momentum)

    def forward(self, views: torch.Tensor) -> SiameseOutputs:
        z = self.head.projector(self.backbone(views))  # (2B, d)
        p = self.head.predictor(z)  # (2B, d)
        if self.target is None:
            return SiameseOutputs(p, z, z.detach() if self.stop_gradient else z)
        if self.training:
            self.update_target()
        with torch.no_grad():
            targets = self.target["projector"](self.target["backbone"](views))  # (2B, d)
        return SiameseOutputs(p, z, targets)


def negative_cosine(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Minus the mean cosine similarity of matching rows of ``(N, d)`` and ``(N, d)``."""
    return -F.cosine_similarity(predictions.float(), targets.float(), dim=1).mean()


def loss(outputs: SiameseOutputs, targets: torch.Tensor) -> torch.Tensor:
    """The symmetrised loss: every view's prediction against its partner's target,
    ``-(cos(p1, z2) + cos(p2, z1)) / 2`` averaged over the batch (in [-1, 1]).

    Args:
        outputs: the network's :class:`SiameseOutputs` for ``2B`` views.
        targets: ``(2B,)`` the index of each view's partner.
    """
    return negative_cosine(outputs.predictions, outputs.targets[targets])


def normalised_std(projections: torch.Tensor) -> float:
    """SimSiam's collapse measure: the standard deviation over the batch of the L2-normalised
    projections, per dimension, averaged over the ``d`` dimensions. About ``1 / sqrt(d)`` when
    the outputs are spread over the sphere, 0 when every image gets the same output.

    Args:
        projections: ``(N, d)``.
    """
    return F.normalize(projections.float(), dim=1).std(dim=0).mean().item()


def output_spread(outputs: SiameseOutputs, targets: torch.Tensor | None = None) -> float:
    """:func:`normalised_std` of the online projections times ``sqrt(d)``: near 1 for healthy
    outputs, near 0 for collapsed ones (the training metric)."""
    del targets
    d = outputs.projections.shape[1]
    return normalised_std(outputs.projections) * math.sqrt(d)


def embed(
    model: SiameseNetwork, images: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's pooled features ``h`` and the online projections ``z`` of every image, in
    eval mode, on the CPU: ``(N, feature_dim)`` and ``(N, d)``."""
    features = predict(model.backbone, images, batch_size)  # (N, feature_dim)
    return features, predict(model.head.projector, features, batch_size)


def make_task(settings: Settings = Settings()) -> PretextTask:
    """The siamese task: two views per image, the symmetrised negative cosine loss."""
    batch = partial(make_pretext_batch, pipeline=settings.pipeline())
    head = partial(build_head, projection_dim=settings.projection_dim,
                   predictor_dim=settings.predictor_dim, predictor=settings.predictor)  # fmt: skip
    return PretextTask(NAME, batch, head, loss, metric=output_spread,
                       metric_name="output spread (std x sqrt(d))")  # fmt: skip


def build_model(backbone: nn.Module, settings: Settings) -> SiameseNetwork:
    """The :class:`SiameseNetwork` of ``settings`` on ``backbone`` (head from the global
    generator: wrap the call in :func:`sslbook.recipes.seeded`)."""
    head = make_task(settings).build_head(backbone.feature_dim)
    return SiameseNetwork(backbone, head, settings.stop_gradient, settings.target_momentum)


def recipe(profile: Profile, seed: int = 0, data: ImageSet | None = None, **overrides) -> Recipe:
    """The chapter's headline setting, SimSiam: SimCLR's CIFAR-10 views, projector and
    predictor, stop-gradient, SGD at the profile's learning rate and batch size, and, as for
    SimCLR, the training loop's own crop and flip off (the views make their own).
    ``target_momentum=BYOL_MOMENTUM`` is the BYOL variant, ``stop_gradient=False`` the collapse.

    Args:
        profile: sizes the run.
        seed: initial weights and every random choice.
        data: unlabelled images (default: the profile's pretraining images).
        **overrides: :class:`Settings` fields or :class:`~sslbook.train.TrainConfig` fields.
    """
    settings, config = resolve(NAME, Settings(), profile, seed, overrides)
    task = make_task(settings)
    backbone = shared_backbone(profile, seed)
    with seeded(seed):
        model = build_model(backbone, settings)
    data = unlabelled(data, profile, seed)
    # the views make their own crops and flips: the loop's random crop would only add borders
    return Recipe(NAME, model, task, config, data, settings=settings, augment=None)
