"""The method registry: each name maps to a view maker, an id expansion and a loss.

Every method turns a batch ``x`` (B, L, T) with patient codes (B,) (and labels
where needed) into views (N, V, C, S), instance ids (N,) and a loss on the
embeddings (N, V, E). The encoder sees ``C`` channels: 1 for per-lead methods,
L for multi-lead ones.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models.modules.heads import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimCLRProjectionHead,
    VICRegProjectionHead,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from augmentations import (
    Compose,
    LeadViews,
    PeakNoiseSmoothing,
    SegmentLeadViews,
    SegmentViews,
    SplitJoin,
    per_lead_ids,
)
from augmentations.presets import simclr_ecg_augmentation
from losses import ClocsLoss, PatientNTXentLoss, SupConLoss
from ssl_ecg.data.sampler import cross_lead_positive_rate
from ssl_ecg.errors import ConfigError, check_choice

__all__ = ["MethodSpec", "METHODS", "build_method", "Method", "DataNeeds", "INSTANCE_TYPES", "SAMPLERS"]

#: What one loader item is: a record's (L, window) window, or one lead of a record as its own (1, window) item.
INSTANCE_TYPES = ("record", "record_lead")
#: Batch samplers: any records in a seeded shuffle, or several records of each patient per batch (PCLR).
SAMPLERS = ("shuffle", "patient")


@dataclass
class MethodSpec:
    """What a method needs from a recipe."""

    fs: float
    segment_len: float = 4.0
    n_segments: int = 2
    temperature: float = 0.1
    positives: str = "patient"
    gather_distributed: bool = False
    projector_dim: int | None = None  # vicreg/barlowtwins projector width (default 4 x the embedding)


@dataclass(frozen=True)
class DataNeeds:
    """What a method needs from the data, declared once (:meth:`Method.data_needs`) and read by ``run_pretrain``.

    Attributes:
        window_samples: samples per item the loader cuts from a record (at the
            recipe's ``fs``); the method draws its views inside this window.
        input_samples: samples per view, the encoder's input length.
        instances: ``"record"`` (an item is a record's (L, window) window) or
            ``"record_lead"`` (every (record, lead) pair is its own (1, window)
            item, shuffled independently: CLOCS' CMSC batching).
        sampler: ``"shuffle"`` (any records) or ``"patient"`` (several records
            of each patient per batch; only patients with 2+ records are used).
        needs_labels: the method trains on a label column (supervised
            contrastive, sCL-ST): the recipe must name it, unlabelled records
            are left out, and the patients whose labels it used are recorded.
        min_leads: fewest leads the views can be formed from (2 where the views
            ARE other leads).
        in_channels: channels per view the encoder sees.
        instances_per_record: instances (rows of the views) each item becomes.
        lead_specific_ids: with ``"record_lead"`` items, positives must share the
            lead (targets ``patient * L + lead``; CMSC's ``positives: patient_lead``).

    Raises:
        ConfigError: a field is out of range; the message names it.
    """

    window_samples: int
    input_samples: int
    instances: str = "record"
    sampler: str = "shuffle"
    needs_labels: bool = False
    min_leads: int = 1
    in_channels: int = 1
    instances_per_record: int = 1
    lead_specific_ids: bool = False

    def __post_init__(self) -> None:
        for key in ("window_samples", "input_samples", "min_leads", "in_channels", "instances_per_record"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"DataNeeds.{key}: expected an integer >= 1, got {value!r}")
        if self.input_samples > self.window_samples:
            raise ConfigError(f"DataNeeds.input_samples: {self.input_samples} views do not fit in the "
                              f"{self.window_samples}-sample window; expected input_samples <= window_samples")
        check_choice("DataNeeds.instances", self.instances, INSTANCE_TYPES)
        check_choice("DataNeeds.sampler", self.sampler, SAMPLERS)
        if self.lead_specific_ids and self.instances != "record_lead":
            raise ConfigError("DataNeeds.lead_specific_ids: lead-specific targets need instances='record_lead', "
                              f"got {self.instances!r}")


class Method(nn.Module):
    """A pretraining method: ``views``, ``instance_ids`` and ``loss``, and what it needs from the data.

    A method declares its data needs once, through :meth:`data_needs`; by default
    that is assembled from these attributes and methods, so a subclass sets the
    attributes (or overrides :meth:`data_needs` itself):

    - ``sampler``: ``"shuffle"`` (any records) or ``"patient"`` (several
      records of each patient per batch, PCLR);
    - ``instances``: ``"record"`` or ``"record_lead"`` (see :class:`DataNeeds`);
    - ``needs_labels``, ``min_leads``, ``per_lead`` (1 input channel, else L);
    - :meth:`segment_samples` (the encoder input), :meth:`window_samples` (the
      loader's window; default one segment), :meth:`instances_per_record`.
    """

    name: str = ""
    per_lead: bool = True
    needs_labels: bool = False
    sampler: str = "shuffle"
    instances: str = "record"
    min_leads: int = 1

    @property
    def lead_instances(self) -> bool:
        """Every (record, lead) pair is its own instance (``instances == "record_lead"``)."""
        return self.instances == "record_lead"

    def data_needs(self, n_leads: int) -> DataNeeds:
        """What this method needs from data with ``n_leads`` leads (window, instances, sampler, labels, channels).

        Raises:
            ConfigError: ``n_leads`` is not a positive integer, or a declared need is out of range.
        """
        if isinstance(n_leads, bool) or not isinstance(n_leads, int) or n_leads < 1:
            raise ConfigError(f"n_leads: expected an integer >= 1, got {n_leads!r}")
        spec = getattr(self, "spec", None)
        return DataNeeds(window_samples=int(self.window_samples()), input_samples=int(self.segment_samples()),
                         instances=self.instances, sampler=self.sampler, needs_labels=bool(self.needs_labels),
                         min_leads=int(self.min_leads), in_channels=int(self.in_channels(n_leads)),
                         instances_per_record=int(self.instances_per_record(n_leads)),
                         lead_specific_ids=self.instances == "record_lead"
                         and getattr(spec, "positives", "patient") == "patient_lead")

    def in_channels(self, n_leads: int) -> int:
        return 1 if self.per_lead else n_leads

    def segment_samples(self) -> int:
        raise NotImplementedError

    def window_samples(self) -> int:
        """Samples per record the loader cuts; the views are drawn inside it (default: one segment)."""
        return self.segment_samples()

    def views(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def instance_ids(self, ids: Tensor, x: Tensor) -> Tensor:
        return ids

    def loss(self, z: Tensor, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def make_head(self, embed_dim: int) -> nn.Module | None:
        """Projection head trained with the encoder and discarded after pretraining (None: no head)."""
        return None

    def instances_per_record(self, n_leads: int) -> int:
        """Instances (rows of the views) each batch record becomes."""
        return 1

    def attach(self, encoder: nn.Module, head: nn.Module | None) -> None:
        """Called once with the modules being trained (BYOL builds its momentum copies here)."""

    def forward_loss(self, encoder: nn.Module, head: nn.Module | None, views: Tensor, ids: Tensor,
                     step: int = 0, max_steps: int = 1, training: bool = True) -> tuple[Tensor, Tensor]:
        """Loss of one batch of views (N, V, C, S) and the encoder's embeddings (N, V, E).

        ``training=False`` (validation) must leave every state untouched.
        """
        n, v = views.shape[:2]
        z = encoder(views.flatten(0, 1))
        p = z if head is None else head(z)
        return self.loss(p.reshape(n, v, -1), ids), z.reshape(n, v, -1)


class _Patient(Method):
    """CLOCS family: views from segments and/or leads, patient-aware NT-Xent (or the original CLOCS loss).

    Batching follows the CLOCS code (``danikiyasseh/CLOCS``, ``prepare_dataset.py``,
    ``run_experiments.py``):

    - **CMSC** (``lead_instances = True``): every (record, lead) pair is its own
      instance, shuffled independently over the pool
      (:class:`~ssl_ecg.data.dataset.CacheLeadWindows`); a batch is (B, 1, T) and
      the V views are adjacent segments of that one lead. Ids are patient-level
      (``positives: patient``: same patient, any view), so another lead (or
      record) of the patient is a positive only when the shuffle puts it in the
      same batch; :meth:`cross_lead_positive_rate` gives how often that happens.
      ``positives: patient_lead`` makes the ids lead-specific (the dataset's
      ``same_lead``). A multi-lead batch (B, L, T) is still accepted and split
      into B * L per-lead instances with :func:`~augmentations.per_lead_ids`:
      that keeps all leads of a record in the batch with one shared crop, and
      with patient-level ids gives every anchor 2L - 1 positives, 2(L - 1) of
      them from other leads. That is CMSMLC's positive set (the same loss value),
      not CMSC; ``run_pretrain`` never feeds it (only direct callers of the method can).
    - **CMLC / CMSMLC** (and ``clocs``): the views ARE the leads, so all leads of
      a record stay together in one instance (B, L, T), as in CLOCS.

    Where we differ from the CLOCS code: per-lead crops are drawn at random per
    epoch rather than fixed precomputed frames; the default loss is
    :class:`~losses.PatientNTXentLoss` over all N * V embeddings (``clocs`` uses
    :class:`~losses.ClocsLoss`, CLOCS' view-pair loss with its bugs fixed).
    """

    def __init__(self, name: str, spec: MethodSpec, views: nn.Module, samples: int, loss: nn.Module,
                 window: int | None = None, min_leads: int = 1):
        super().__init__()
        self.name, self.spec, self._views, self._samples, self._loss = name, spec, views, samples, loss
        self.per_lead = True
        self.instances = "record_lead" if name == "cmsc" else "record"
        self._window = samples if window is None else int(window)
        self.min_leads = int(min_leads)  # CMLC/CMSMLC: the views are other leads

    def segment_samples(self) -> int:
        return self._samples

    def window_samples(self) -> int:
        """CMSC/CMSMLC: ``n_segments`` adjacent segments; CMLC: one segment (its views are leads)."""
        return self._window

    def views(self, x, generator=None):
        return self._views(x, generator=generator)

    def instances_per_record(self, n_leads):
        """Instances per dataset item: 1 (a per-lead item is one instance; CMLC/CMSMLC keep a record whole)."""
        return 1

    def instance_ids(self, ids, x):
        if self.lead_instances and x.shape[1] > 1:  # a multi-lead batch split into per-lead instances
            return per_lead_ids(ids, x.shape[1], same_lead=self.spec.positives == "patient_lead")
        return ids  # per-lead items carry their own (patient or patient-lead) ids

    def cross_lead_positive_rate(self, n_leads: int, batch_size: int, patients=None, leads=None) -> float:
        """Expected share of anchors with at least one positive from another lead in their batch.

        CMSC on per-lead instances: the closed form of
        :func:`~ssl_ecg.data.sampler.cross_lead_positive_rate` over the pool
        (0 with ``positives: patient_lead``, whose positives share the lead).
        CMLC/CMSMLC: 1 with two or more leads (the other leads are views).

        Args:
            n_leads: leads per record.
            batch_size: instances per batch.
            patients, leads: patient and lead index of each pool instance (CMSC).
        """
        if not self.lead_instances:
            return 1.0 if n_leads > 1 else 0.0
        if self.spec.positives == "patient_lead":
            return 0.0
        if patients is None or leads is None:
            raise ConfigError(f"{self.name}: the cross-lead rate needs the pool's per-instance patients and leads")
        return cross_lead_positive_rate(patients, leads, batch_size)

    def loss(self, z, ids):
        return self._loss(z, ids)


class _CropThen(nn.Module):
    """A random segment (one start shared by all leads), then another view maker.

    For CMLC, whose views are different leads at the same time. SimCLR-family
    views do not use it: each of their views draws its own crop (:class:`_SimCLR`).
    """

    def __init__(self, spec: MethodSpec, then: nn.Module):
        super().__init__()
        self.crop = SegmentViews(1, spec.segment_len, spec.fs, per_lead=False)
        self.then = then

    def forward(self, x, generator=None):
        return self.then(self.crop(x, generator)[:, 0], generator=generator)


class _SimCLR(Method):
    """SimCLR (Chen et al., ICML 2020) on 12-lead segments: lightly's NT-Xent on a projection head.

    Views: each of the two views takes its own random ``segment_len`` crop of the
    record window (all leads, one start per record and view), then its own draw of
    the augmentation; default :func:`augmentations.presets.simclr_ecg_augmentation`
    (Mehari & Strodthoff 2022: random resized crop 50-100 %, then a 20-40 % time
    out). The window the data loader cuts is ``n_segments * segment_len`` (see
    :meth:`window_samples`), so the two crops overlap only partly, as in CMSC.

    Head: lightly's :class:`SimCLRProjectionHead` (SimCLR v1: Linear-BN-ReLU-Linear-BN,
    hidden width = embedding, 128 outputs), trained with the encoder and dropped
    after pretraining. ``supervised=True`` is SupCon (Khosla et al., NeurIPS 2020),
    used by sCL-ST, with the same head.
    """

    head_dim: int = 128  # SimCLR's and SupCon's projection output

    def __init__(self, spec: MethodSpec, augment: Callable | None = None, supervised: bool = False):
        super().__init__()
        self.spec = spec
        self.per_lead = False
        self.crop = SegmentViews(1, spec.segment_len, spec.fs, per_lead=False)
        self.augment = augment or simclr_ecg_augmentation(spec.fs, spec.segment_len)
        self.n_views = 2
        self.needs_labels = supervised
        self._loss = (SupConLoss(spec.temperature, gather_distributed=spec.gather_distributed) if supervised
                      else NTXentLoss(temperature=spec.temperature, gather_distributed=spec.gather_distributed))
        self.name = "sclst" if supervised else "simclr"

    def segment_samples(self):
        return self.crop.segment_samples

    def window_samples(self) -> int:
        """Samples per record the loader should cut: ``n_segments`` segments, each view crops within it."""
        return self.spec.n_segments * self.crop.segment_samples

    def views(self, x, generator=None):
        """(B, L, T) -> (B, 2, L, S): view v is ``augment(crop_v(x))`` with crops drawn independently."""
        b = x.shape[0]
        crops = torch.cat([self.crop(x, generator)[:, 0] for _ in range(self.n_views)])  # (V * B, L, S), view-major
        out = self.augment(crops, generator=generator)
        return out.reshape(self.n_views, b, *out.shape[1:]).transpose(0, 1)

    def make_head(self, embed_dim: int) -> nn.Module:
        return SimCLRProjectionHead(embed_dim, embed_dim, self.head_dim)

    def loss(self, z, ids):
        if self.needs_labels:
            return self._loss(z, ids)
        return self._loss(z[:, 0], z[:, 1])


class _TwoViewRedundancy(_SimCLR):
    """VICReg (Bardes et al., ICLR 2022) or Barlow Twins (Zbontar et al., ICML 2021) from lightly,
    on the SimCLR views, with lightly's projection head (hidden and output ``spec.projector_dim``,
    default 4 x the embedding).

    Their covariance / cross-correlation terms are estimated from the batch: a
    D x D matrix from N samples has rank at most N - 1, so with N < D most
    off-diagonal terms cannot be driven to zero. The first loss whose (gathered)
    batch is smaller than the projector dimension warns, naming both; recipes set
    ``projector_dim`` at or below ``batch_size`` (the papers ran 8192-d projectors at
    batch 2048, so this is our stricter choice for small datasets).
    """

    def __init__(self, spec: MethodSpec, name: str):
        super().__init__(spec)
        self.name = name
        self._loss = (VICRegLoss(gather_distributed=spec.gather_distributed) if name == "vicreg"
                      else BarlowTwinsLoss(gather_distributed=spec.gather_distributed))
        self._warned = False

    def make_head(self, embed_dim: int) -> nn.Module:
        dim = 4 * embed_dim if self.spec.projector_dim is None else int(self.spec.projector_dim)
        if dim < 1:
            raise ConfigError(f"projector_dim: expected a positive integer, got {self.spec.projector_dim}")
        head = VICRegProjectionHead if self.name == "vicreg" else BarlowTwinsProjectionHead
        return head(embed_dim, dim, dim)

    def loss(self, z, ids):
        batch, dim = z.shape[0], z.shape[-1]
        if self.spec.gather_distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
            batch *= torch.distributed.get_world_size()
        if batch < dim and not self._warned:
            self._warned = True
            warnings.warn(f"{self.name}: batch size {batch} is smaller than the projector dimension {dim}, so the "
                          f"{dim} x {dim} covariance terms are estimated from {batch} samples (rank <= {batch - 1}); "
                          f"raise batch_size or lower projector_dim to {batch} or less", UserWarning, stacklevel=2)
        return self._loss(z[:, 0], z[:, 1])


class _BYOL(_SimCLR):
    """BYOL (Grill et al., NeurIPS 2020) from lightly's heads and utilities, on the SimCLR views.

    The online network is encoder -> projection head -> predictor; the target is
    a momentum copy of encoder and projection head, updated before each step
    with momentum rising from 0.99 to 1 on a cosine schedule over the run.
    The loss is the symmetrised negative cosine similarity.
    """

    def __init__(self, spec: MethodSpec, momentum: tuple[float, float] = (0.99, 1.0)):
        super().__init__(spec)
        self.name = "byol"
        self.momentum = momentum
        self.criterion = NegativeCosineSimilarity()

    def make_head(self, embed_dim: int) -> nn.Module:
        self._proj_dim = embed_dim
        return BYOLProjectionHead(embed_dim, 4 * embed_dim, embed_dim)

    def attach(self, encoder, head):
        if head is None:
            raise ConfigError("byol: needs its projection head")
        dim = self._proj_dim
        self.predictor = BYOLPredictionHead(dim, 4 * dim, dim)
        self.momentum_encoder = copy.deepcopy(encoder)
        self.momentum_head = copy.deepcopy(head)
        deactivate_requires_grad(self.momentum_encoder)
        deactivate_requires_grad(self.momentum_head)

    def forward_loss(self, encoder, head, views, ids, step=0, max_steps=1, training=True):
        if training:
            m = cosine_schedule(step, max(max_steps, 1), *self.momentum)
            update_momentum(encoder, self.momentum_encoder, m)
            update_momentum(head, self.momentum_head, m)
        x0, x1 = views[:, 0], views[:, 1]
        z0, z1 = encoder(x0), encoder(x1)
        p0, p1 = self.predictor(head(z0)), self.predictor(head(z1))
        with torch.no_grad():
            t0 = self.momentum_head(self.momentum_encoder(x0))
            t1 = self.momentum_head(self.momentum_encoder(x1))
        loss = 0.5 * (self.criterion(p0.float(), t1.float()) + self.criterion(p1.float(), t0.float()))
        return loss, torch.stack([z0, z1], 1)


class _PCLR(Method):
    """PCLR (Diamant et al., PLOS Comput. Biol. 2022): one multi-lead segment per record, and
    the positives of a record are the other records of the same patient in the batch.

    Needs the patient-aware sampler (``sampler = "patient"``) and patients with
    at least two records; patient-aware NT-Xent on (N, 1, E).
    """

    def __init__(self, spec: MethodSpec):
        super().__init__()
        self.name, self.spec, self.per_lead, self.sampler = "pclr", spec, False, "patient"
        self.crop = SegmentViews(1, spec.segment_len, spec.fs, per_lead=False)
        self._loss = PatientNTXentLoss(spec.temperature, gather_distributed=spec.gather_distributed)

    def segment_samples(self):
        return self.crop.segment_samples

    def views(self, x, generator=None):
        return self.crop(x, generator)  # (B, 1, L, S)

    def loss(self, z, ids):
        return self._loss(z, ids)


def _patient_loss(spec: MethodSpec, clocs: bool) -> nn.Module:
    if clocs:
        return ClocsLoss(spec.temperature, gather_distributed=spec.gather_distributed)
    return PatientNTXentLoss(spec.temperature, gather_distributed=spec.gather_distributed)


def _cmsc(spec, clocs=False):
    v = SegmentViews(spec.n_segments, spec.segment_len, spec.fs, per_lead=True)
    return _Patient("cmsc", spec, v, v.segment_samples, _patient_loss(spec, clocs),
                    window=spec.n_segments * v.segment_samples)


def _cmlc(spec, clocs=False):
    crop = _CropThen(spec, LeadViews())
    return _Patient("cmlc", spec, crop, crop.crop.segment_samples, _patient_loss(spec, clocs), min_leads=2)


def _cmsmlc(spec, clocs=False):
    v = SegmentLeadViews(spec.n_segments, spec.segment_len, spec.fs)
    n = v.segments.segment_samples
    return _Patient("cmsmlc", spec, v, n, _patient_loss(spec, clocs), window=spec.n_segments * n, min_leads=2)


def _clocs(spec):
    return _cmsmlc(spec, clocs=True)


def _sclst(spec):
    # sCL-ST (Le et al., JBHI 2023): supervised contrastive loss on views from the two semantic transforms.
    augment = Compose([SplitJoin(spec.fs, p=0.5), PeakNoiseSmoothing(spec.fs, p=0.5)])
    return _SimCLR(spec, augment=augment, supervised=True)


METHODS: dict[str, Callable[[MethodSpec], Method]] = {
    "cmsc": _cmsc,
    "cmlc": _cmlc,
    "cmsmlc": _cmsmlc,
    "clocs": _clocs,
    "simclr": lambda spec: _SimCLR(spec),
    "vicreg": lambda spec: _TwoViewRedundancy(spec, "vicreg"),
    "barlowtwins": lambda spec: _TwoViewRedundancy(spec, "barlowtwins"),
    "sclst": _sclst,
    "byol": lambda spec: _BYOL(spec),
    "pclr": lambda spec: _PCLR(spec),
}


def build_method(name: str, spec: MethodSpec) -> Method:
    """Build method ``name``; ``clocs`` uses CMSMLC views with :class:`losses.ClocsLoss`."""
    if name not in METHODS:
        raise ConfigError(f"method: {name!r} is unknown; expected one of {sorted(METHODS)}")
    if spec.positives not in ("patient", "patient_lead"):
        raise ConfigError(f"positives: expected 'patient' or 'patient_lead', got {spec.positives!r}")
    if spec.positives == "patient_lead" and name != "cmsc":
        raise ConfigError(f"positives='patient_lead' applies to cmsc only, not {name!r}")
    return METHODS[name](spec)
