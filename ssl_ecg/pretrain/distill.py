"""12-lead -> lead-subset knowledge distillation: ``ssl-ecg distill RECIPE.yaml``.

A frozen, pretrained teacher (any method) embeds each unlabelled window of the distillation pool the way its probe
sees it: the window feature of :class:`~ssl_ecg.evaluate.head.WindowFeatures` (for a per-lead teacher the lead
embeddings concatenated), standardised per dimension like the probe's ``StandardScaler`` does, with the mean and
scale of the pool's record features (each record's mean over its tiled windows, exactly as
:func:`~ssl_ecg.evaluate.embed.embed_records` gives the probe; computed once with the frozen teacher, no labels,
stored in ``pretrain.json`` as ``target_standardization``). Without it the cosine on the raw lead concatenation is
dominated by the few highest-variance dimensions, which need not be the ones the probe weighs. A student that sees
only ``student_leads`` (lead II by default) of the same window learns to match that target through a learned
linear map (training only: the saved student is the bare encoder), and optionally the teacher probe's logits
(Hinton et al. 2015) through the same map and the probe's frozen head.

Why windows and not records: the probe sees the record feature, the mean of the record's window features; the
standardisation is affine and the map linear, so a student whose mapped window features equal every window's
target also gives the standardised record feature (the mean of the targets). Random crops give more, varied pairs
per record than whole records would. The embedding loss compares directions (it is scale invariant per window), so
zero loss fixes each mapped window up to a positive factor; where those factors differ the record mean matches
only approximately.

The student's run folder is a pretraining run folder (``encoder.pt``, ``encoder.json`` with provenance,
``split.json``, ``run.json``, ``pretrain.json``), so it goes on the label-efficiency curve beside its teacher with
``leads: [II]``. Under DDP (``devices`` > 1) every rank trains and rank 0 alone writes the run folder.

Provenance: the student has seen the distillation pool's signals and, through the teacher, the teacher's pool, so
its ``pool_patients`` are their union; its ``label_patients`` are the teacher's plus, with logits, the patients
whose labels fitted or selected the teacher's probe. Evaluation's overlap and label checks then apply to it. A pool
holding the teacher's test patients is refused unless ``allow_test_patients: true`` (recorded in the provenance);
those patients are then in the student's ``pool_patients``, so evaluating on that split flags the overlap.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from losses.distill import EmbeddingDistillLoss, LogitDistillLoss
from ssl_ecg.checkpoint import PROVENANCE_VERSION, _config_path, load_encoder, load_provenance, save_encoder
from ssl_ecg.data.prepare import SPLIT_FILE, DataSpec, Prepared, prepare
from ssl_ecg.data.prepare import Split as PatientSplit
from ssl_ecg.data.record import canonical_lead
from ssl_ecg.data.sampler import EpochShuffleSampler
from ssl_ecg.errors import ConfigError, DatasetError, EncoderChangedError
from ssl_ecg.evaluate.challenge import challenge_year
from ssl_ecg.evaluate.embed import embed_records, state_dict_hash
from ssl_ecg.evaluate.head import FittedProbe, WindowFeatures, fit_probe_model, probe_rows
from ssl_ecg.models import build_encoder
from ssl_ecg.models.registry import ENCODERS
from ssl_ecg.paths import run_folder
from ssl_ecg.pretrain.run import RUN_SCHEMA, _cache_keys, _claim_run_folder, _jsonable, _sha256, _write_state
from ssl_ecg.pretrain.train import check_budget, fit
from ssl_ecg.recipe import (
    Devices,
    Fraction,
    Names,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunName,
    load_recipe,
    window_samples,
)
from ssl_ecg.utils import seeded

__all__ = ["DistillConfig", "LogitsSpec", "run_distill", "distill_fingerprint", "DistillModule", "PairedWindows",
           "DISTILL_POOLS", "pool_target_stats"]

#: Typical ``pool`` values ("+"-joined names of the teacher's split, or "all": every record of the data). A pool
#: holding the split's ``test`` patients ("all", or one naming "test") needs ``allow_test_patients: true``.
DISTILL_POOLS = ("train", "train+val", "all")
# Settings that do not change the student's weights (where things are, logging, how to start).
_NOT_RESULT_AFFECTING = ("name", "root", "cache_dir", "num_workers", "wandb", "resume", "overwrite", "teacher")


@dataclass
class LogitsSpec:
    """The ``logits`` block of a distillation recipe: also match the teacher probe's logits.

    The probe is the curve's logistic probe of ``task`` on the frozen teacher, fitted on the ``fraction`` draw
    (``seed``) of the evaluation recipe's training patients with C chosen on its validation patients
    (:func:`~ssl_ecg.evaluate.head.fit_probe_model`); ``recipe`` (an evaluation recipe, ``EvalConfig``) names the
    data and split, by default the teacher's data on the teacher's own split, with every evaluation check.
    """

    task: str = "lad"
    recipe: str | None = None  # an EvalConfig YAML; default: the distillation data on the teacher's split
    fraction: Fraction = 1.0
    seed: NonNegativeInt = 0
    weight: NonNegativeFloat = 1.0  # the logit term's weight beside the embedding term


@dataclass
class DistillConfig:
    """A distillation recipe (``experiments/distill_*.yaml``).

    Data fields left null take the teacher's pretraining settings (its ``encoder.json``: ``pretraining.config``);
    ``fs``, ``window``, ``normalization`` and ``leads`` given explicitly must equal them, since the teacher only
    knows the input it was trained on. The split is always the teacher's own (its provenance).
    """

    name: RunName = "distill"
    teacher: str = "runs/ludb_cmsc"  # the teacher's run folder or encoder.pt (with provenance)
    student: dict | None = None  # encoder config; default: the teacher's architecture with the student's channels
    student_leads: Names = field(default_factory=lambda: ["II"])  # the leads the student sees, in order
    dataset: str | list[dict] | None = None  # default: the teacher's
    root: str | None = None
    dataset_options: dict | None = None
    fs: PositiveFloat | None = None  # must equal the teacher's
    window: PositiveFloat | None = None  # seconds; must equal the teacher's input length
    leads: Names | None = None  # the teacher's input leads; must equal its pretraining leads
    normalization: Literal["record", "lead", "none"] | None = None  # must equal the teacher's
    bad_leads: Literal["zero_lead", "drop_record", "error"] | None = None
    cache_dir: str = "cache"
    pool: str = "train"  # the teacher's split names joined by "+" (e.g. "train+val"), or "all"
    allow_test_patients: bool = False  # let a pool hold the teacher's test patients (recorded; evaluation flags it)
    lead_features: Literal["concat", "mean"] = "concat"  # the teacher feature of a per-lead teacher (as probed)
    loss: Literal["cosine", "mse"] = "cosine"
    temperature: PositiveFloat = 2.0  # of the logit term
    logits: dict | None = None  # LogitsSpec keys: {task, recipe, fraction, seed, weight}; null: embeddings only
    windows_per_record: PositiveInt = 4  # random windows of each pool record per epoch
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    seed: NonNegativeInt = 0
    num_workers: NonNegativeInt = 0
    accelerator: str = "auto"
    devices: Devices = 1
    precision: str | None = None  # default: bf16-mixed on CUDA, else 32-true
    wandb: bool = False
    resume: bool = False  # continue from runs/<name>/checkpoints/last.ckpt
    overwrite: bool = False

    def logits_spec(self) -> LogitsSpec | None:
        """The checked ``logits`` block (None when absent).

        Raises:
            ConfigError: an unknown key or a value of the wrong type, naming ``logits.<key>``.
        """
        if self.logits is None:
            return None
        try:
            return load_recipe(LogitsSpec, None, overrides=dict(self.logits))
        except ConfigError as exc:
            raise ConfigError("logits" + str(exc).removeprefix("overrides")) from None


class PairedWindows(Dataset):
    """Item i: the same random ``window``-sample crop of one record from the teacher's and the student's cache.

    Item i is window ``i % windows_per_record`` of pool record ``i // windows_per_record``; its start is drawn from
    a generator seeded with (seed, epoch, i), so the crops do not depend on the worker layout (call
    :meth:`set_epoch` each epoch).

    Returns:
        ``(teacher_window (L_t, window), student_window (L_s, window))`` float32.
    """

    def __init__(self, teacher_cache, student_cache, teacher_rows: np.ndarray, student_rows: np.ndarray,
                 lengths: np.ndarray, window: int, windows_per_record: int = 1, seed: int = 0):
        if len(teacher_rows) == 0:
            raise DatasetError("pool: no records to distil on")
        short = np.flatnonzero(np.asarray(lengths) < window)
        if len(short):
            raise DatasetError(f"pool: {len(short)} records are shorter than the {window}-sample window")
        self.teacher_cache, self.student_cache = teacher_cache, student_cache
        self.teacher_rows = np.asarray(teacher_rows, dtype=np.int64)
        self.student_rows = np.asarray(student_rows, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.window, self.per_record, self.seed, self.epoch = int(window), int(windows_per_record), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.teacher_rows) * self.per_record

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        j = int(i) // self.per_record
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        start = int(rng.integers(0, self.lengths[j] - self.window + 1))
        xt = self.teacher_cache.segment(int(self.teacher_rows[j]), start, self.window)
        xs = self.student_cache.segment(int(self.student_rows[j]), start, self.window)
        return torch.from_numpy(np.array(xt, dtype=np.float32)), torch.from_numpy(np.array(xs, dtype=np.float32))


class DistillModule(pl.LightningModule):
    """Student + linear map trained to match a frozen teacher's window features (and its probe's logits).

    The teacher (and the probe head) are held outside the module's state dict, in eval mode, with
    ``requires_grad`` off: checkpoints hold only the student, the map and the target's standardisation, and
    Lightning's ``train()`` calls never reach the teacher's BatchNorm statistics.

    Loss per batch, with f_t (N, D_t) the teacher's window feature, f_s (N, D_s) the student's, mu and sigma (D_t,)
    the pool's standardisation (:func:`pool_target_stats`), t = (f_t - mu) / sigma the target, m = map(f_s) and h the
    probe's head (its own standardisation and linear map)::

        EmbeddingDistillLoss(m, t) + weight * LogitDistillLoss(h(sigma * m + mu), h(f_t))

    (the second term only with a probe: ``sigma * m + mu`` is the mapped feature back in the teacher's units). The
    teacher, the targets and both logits are computed in float32 with autocast disabled (the probe saw float32
    features); the student and the map run under the trainer's precision.

    Args:
        student: the student encoder; student_features: its window feature module (D_s).
        teacher_features: the teacher's (D_t); map: Linear(D_s, D_t).
        embed_loss: the embedding term; probe: the teacher's fitted probe model (or None) and logit_loss its term.
        weight: the logit term's weight; lr: Adam's learning rate; seed: seeds torch's RNG per step (dropout).
        target_mean, target_scale: (D_t,) mu and sigma (buffers; default 0 and 1: the raw feature).
    """

    def __init__(self, student: nn.Module, student_features: WindowFeatures, teacher_features: WindowFeatures,
                 map: nn.Linear, embed_loss: EmbeddingDistillLoss, probe: nn.Module | None = None,
                 logit_loss: LogitDistillLoss | None = None, weight: float = 1.0, lr: float = 1e-3, seed: int = 0,
                 target_mean: Tensor | None = None, target_scale: Tensor | None = None):
        super().__init__()
        self.student, self.map = student, map
        self.student_features = student_features
        self._frozen = (teacher_features.eval(), probe.eval() if probe is not None else None)  # not submodules
        for frozen in self._frozen:  # the student's logits pass through the probe head: no gradient piles up there
            for param in (frozen.parameters() if frozen is not None else ()):
                param.requires_grad_(False)
        self.embed_loss, self.logit_loss = embed_loss, logit_loss
        self.weight, self.lr, self.seed = float(weight), float(lr), int(seed)
        d = map.out_features
        mean = torch.zeros(d) if target_mean is None else torch.as_tensor(target_mean, dtype=torch.float32)
        scale = torch.ones(d) if target_scale is None else torch.as_tensor(target_scale, dtype=torch.float32)
        if tuple(mean.shape) != (d,) or tuple(scale.shape) != (d,) or not bool((scale > 0).all()):
            raise ConfigError(f"target_mean, target_scale: expected ({d},) with a positive scale (the map's output "
                              f"dimension), got {tuple(mean.shape)} and {tuple(scale.shape)}")
        self.register_buffer("target_mean", mean.clone())
        self.register_buffer("target_scale", scale.clone())
        self.last_loss: Tensor | None = None

    def _head(self, features: Tensor) -> Tensor:
        probe = self._frozen[1]
        return probe.linear((features - probe.mean) / probe.scale)

    def on_train_batch_start(self, batch, batch_idx):
        torch.manual_seed(self.seed * 1_000_003 + int(self.global_step) + 7919)

    def losses(self, xt: Tensor, xs: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(total, embedding term, logit term or None) for teacher windows (N, L_t, S) and student windows
        (N, L_s, S) of the same crops."""
        teacher, probe = self._frozen
        teacher.to(xt.device).eval()
        if probe is not None:
            probe.to(xt.device)
        # the teacher's side in float32, as the probe saw its features
        with torch.no_grad(), torch.autocast(device_type=xt.device.type, enabled=False):
            ft = teacher(xt.float()).float()
            target = (ft - self.target_mean) / self.target_scale
            target_logits = self._head(ft) if probe is not None else None
        mapped = self.map(self.student_features(xs))
        embed = self.embed_loss(mapped, target)
        if probe is None:
            return embed, embed, None
        with torch.autocast(device_type=xt.device.type, enabled=False):
            logits = self._head(mapped.float() * self.target_scale + self.target_mean)
        logit = self.logit_loss(logits, target_logits)
        return embed + self.weight * logit, embed, logit

    def training_step(self, batch, batch_idx):
        xt, xs = batch
        loss, embed, logit = self.losses(xt, xs)
        self.last_loss = loss.detach()
        n = len(xt)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log("train_embed_loss", embed, on_step=False, on_epoch=True, batch_size=n)
        if logit is not None:
            self.log("train_logit_loss", logit, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam([*self.student.parameters(), *self.map.parameters()], lr=self.lr)


# ----------------------------------------------------------------------------------------------------------------
# The recipe's data, resolved against the teacher


def _teacher_meta(path: str) -> tuple[dict, dict, int | None]:
    """The teacher's ``encoder.json`` pretraining config, its checked provenance and its input length in samples
    (the encoder config's ``input_len``, else the pretraining's ``data_needs.input_samples``: size-agnostic
    encoders such as ResNet1d were trained on that window).

    Raises:
        ConfigError: no provenance (the split and pool are unknown) or no pretraining config.
    """
    prov = load_provenance(path)
    if prov is None:
        raise ConfigError(f"teacher ({path}): has no provenance in its encoder.json, so its split and the patients "
                          "it was pretrained on are unknown; distil from a teacher pretrained by ssl-ecg")
    meta = json.loads(_config_path(path).read_text(encoding="utf-8"))
    config = (meta.get("pretraining") or {}).get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"teacher ({path}): its encoder.json has no pretraining.config (fs, leads, "
                          "normalization), so the distillation data cannot be checked against it")
    input_len = meta["encoder"].get("input_len") if isinstance(meta.get("encoder"), dict) else None
    if not isinstance(input_len, int):
        input_len = ((meta.get("pretraining") or {}).get("data_needs") or {}).get("input_samples")
    return config, prov, input_len if isinstance(input_len, int) else None


def _leads_equal(a, b) -> bool:
    return (None if a is None else [canonical_lead(str(v)) for v in a]) == \
        (None if b is None else [canonical_lead(str(v)) for v in b])


def _resolved_data(cfg: DistillConfig, teacher_cfg: dict, input_len: int | None) -> SimpleNamespace:
    """The distillation data settings: the recipe's, else the teacher's; mismatches refused."""
    source = f"teacher ({cfg.teacher})"
    t_fs = float(teacher_cfg.get("fs") or 0)
    if cfg.fs is not None and float(cfg.fs) != t_fs:
        raise ConfigError(f"fs={cfg.fs!r}: the teacher was pretrained at {t_fs:g} Hz ({source}); expected {t_fs:g} "
                          "or null")
    if cfg.normalization is not None and cfg.normalization != teacher_cfg.get("normalization"):
        raise ConfigError(f"normalization={cfg.normalization!r}: the teacher was pretrained with "
                          f"{teacher_cfg.get('normalization')!r} ({source}); expected that or null")
    if cfg.leads is not None and not _leads_equal(cfg.leads, teacher_cfg.get("leads")):
        raise ConfigError(f"leads={cfg.leads!r}: the teacher was pretrained on leads {teacher_cfg.get('leads')!r} "
                          f"({source}); expected those (in order) or null")
    if input_len is None:
        raise ConfigError(f"{source}: neither its encoder config (input_len) nor its pretraining summary "
                          "(data_needs.input_samples) gives its window; expected an encoder.json written by ssl-ecg")
    if cfg.window is not None and window_samples(cfg.window, t_fs) != input_len:
        raise ConfigError(f"window={cfg.window!r}: {window_samples(cfg.window, t_fs)} samples at {t_fs:g} Hz, but "
                          f"the teacher takes {input_len} ({input_len / t_fs:g} s, {source}); expected that or null")
    own = cfg.dataset is not None
    return SimpleNamespace(
        dataset=cfg.dataset if own else teacher_cfg.get("dataset", "ludb"),
        root=cfg.root if own else teacher_cfg.get("root"),
        dataset_options=(cfg.dataset_options if own else teacher_cfg.get("dataset_options")) or {},
        fs=t_fs, leads=teacher_cfg.get("leads"), normalization=teacher_cfg.get("normalization", "record"),
        bad_leads=cfg.bad_leads or teacher_cfg.get("bad_leads", "zero_lead"), band=teacher_cfg.get("band"),
        cache_dir=cfg.cache_dir, window=input_len)


def _pool_rows(cfg: DistillConfig, prepared: Prepared) -> np.ndarray:
    """The teacher-cache rows of the ``pool`` patients.

    Raises:
        ConfigError: unknown split names, or a pool holding the teacher's test patients without
            ``allow_test_patients``.
    """
    names = None if cfg.pool == "all" else [n.strip() for n in cfg.pool.split("+")]
    if names is not None:
        unknown = [n for n in names if n not in prepared.split.patients]
        if unknown or not all(names):
            raise ConfigError(f"pool={cfg.pool!r}: expected 'all' or names of the teacher's split joined by '+' "
                              f"({sorted(prepared.split.patients)}), e.g. 'train' (the default) or 'train+val'")
    test = prepared.split.patients.get("test") or ()
    if test and (names is None or "test" in names) and not cfg.allow_test_patients:
        raise ConfigError(f"pool={cfg.pool!r}: holds the {len(test)} test patients of the teacher's split "
                          f"{prepared.split.hash[:12]}, whose signals the student would then see; expected a pool "
                          "without them ('train' or 'train+val'), or allow_test_patients: true (recorded, and "
                          "evaluation on that split flags the overlap)")
    rows = np.arange(len(prepared.table)) if names is None else prepared.rows(*names)
    if len(rows) == 0:
        raise DatasetError(f"pool={cfg.pool!r}: none of the {len(prepared.table)} records belongs to those patients "
                           f"of the teacher's split {prepared.split.hash[:12]}; is the data the teacher's?")
    return rows


def _student_config(cfg: DistillConfig, teacher_config: dict, window: int) -> dict:
    """The student's encoder config: the recipe's, else the teacher's architecture; one channel per lead (per-lead
    student) unless the config asks for all the student's leads at once."""
    config = dict(teacher_config if cfg.student is None else cfg.student)
    if cfg.student is None:
        config["in_channels"] = 1 if teacher_config.get("in_channels") == 1 else len(cfg.student_leads)
    config.setdefault("in_channels", 1)
    if config["in_channels"] not in (1, len(cfg.student_leads)):
        raise ConfigError(f"student.in_channels={config['in_channels']!r}: expected 1 (each lead alone) or "
                          f"{len(cfg.student_leads)} (the student_leads {cfg.student_leads} at once)")
    if config.get("name") not in ENCODERS:
        raise ConfigError(f"student.name={config.get('name')!r}: expected one of {sorted(ENCODERS)}")
    if "input_len" in inspect.signature(ENCODERS[config["name"]]).parameters:  # sized encoders (CLOCS CNN)
        config["input_len"] = window
    return config


def _aligned(teacher: Prepared, student: Prepared, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher rows, the student cache's rows of the same records, and their common lengths (records that one
    cache dropped, e.g. under ``bad_leads: drop_record``, are left out)."""
    key = ["dataset", "record_id"]
    where = {k: i for i, k in enumerate(zip(*(student.table[c].astype(str) for c in key)))}
    t_keys = list(zip(*(teacher.table[c].astype(str).to_numpy()[rows] for c in key)))
    pairs = [(r, where[k]) for r, k in zip(rows, t_keys) if k in where]
    if not pairs:
        raise DatasetError("student_leads: none of the pool records is in the student's cache")
    t_rows = np.array([p[0] for p in pairs], dtype=np.int64)
    s_rows = np.array([p[1] for p in pairs], dtype=np.int64)
    lengths = np.minimum(teacher.table["length"].to_numpy(np.int64)[t_rows],
                         student.table["length"].to_numpy(np.int64)[s_rows])
    return t_rows, s_rows, lengths


@dataclass
class _ProbeData:
    """The teacher probe's evaluation, resolved before anything is fitted: the checked recipe, its inputs, the
    challenge year of its data (multi-label scoring), and what decides the probe (:meth:`identity`)."""

    recipe: object  # EvalConfig
    inputs: object  # EvalInputs
    year: int | None

    def identity(self, spec: LogitsSpec) -> dict:
        """What decides the fitted probe besides the teacher's weights: the evaluation recipe's resolved contents
        (not its path: an edited recipe is another probe), its data caches, its split, and the patients and labels
        that fit and select it."""
        inputs = self.inputs
        settings = {k: v for k, v in asdict(self.recipe).items() if k not in _EVAL_NOT_PROBE_AFFECTING}
        rows, y, _ = probe_rows(inputs.table, inputs.splits, spec.task, spec.fraction, spec.seed, self.year)
        used = np.concatenate([rows["train"], rows["val"]])
        patients = inputs.table["patient_id"].astype(str).to_numpy()
        return {"recipe": _json_sha256(settings), "cache_keys": sorted(_cache_keys(inputs.prepared)),
                "split": inputs.split.hash,
                "label_patients": _json_sha256(sorted({patients[i] for i in used})),
                "labels": _json_sha256({"rows": used.tolist(), "y": np.asarray(y)[used].tolist()})}


# Evaluation settings that do not change the probe (the teacher is hashed by its weights, not its path).
_EVAL_NOT_PROBE_AFFECTING = ("name", "root", "cache_dir", "encoders", "wandb")


def _json_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _probe_data(cfg: DistillConfig, spec: LogitsSpec, data: SimpleNamespace) -> _ProbeData:
    """The teacher probe's evaluation through :func:`~ssl_ecg.evaluate.runner.evaluation_inputs` (every provenance
    check of an evaluation)."""
    from ssl_ecg.evaluate.runner import EvalConfig, evaluation_inputs

    forced = {"encoders": {"teacher": cfg.teacher}, "random_init": False, "supervised": False,
              "fractions": [spec.fraction], "tasks": [spec.task], "lead_features": cfg.lead_features}
    if spec.recipe is not None:
        ecfg = load_recipe(EvalConfig, spec.recipe, forced)
    else:
        ecfg = load_recipe(EvalConfig, None, forced, defaults={
            "dataset": data.dataset, "root": data.root, "dataset_options": data.dataset_options, "fs": data.fs,
            "leads": data.leads, "normalization": data.normalization, "bad_leads": data.bad_leads,
            "window": data.window / data.fs, "cache_dir": data.cache_dir})
    inputs = evaluation_inputs(ecfg)
    if spec.task not in inputs.table.columns:
        raise ConfigError(f"logits.task={spec.task!r}: not a column of the evaluation data (columns: "
                          f"{sorted(inputs.table.columns)})")
    if inputs.window != data.window:
        raise ConfigError(f"logits.recipe: its window is {inputs.window} samples, the teacher's {data.window}")
    # the curve's scoring of this data (runner.curve_spec): CinC 2020/2021 multi-label tasks use that year's classes
    return _ProbeData(ecfg, inputs, challenge_year("+".join(inputs.prepared.spec.datasets)))


def _fit_teacher_probe(cfg: DistillConfig, spec: LogitsSpec, probe_data: _ProbeData) -> FittedProbe:
    """The teacher's logistic probe of ``spec.task``, fitted as the curve fits it."""
    inputs = probe_data.inputs
    return fit_probe_model(inputs.arms["teacher"], inputs.signals, inputs.table, inputs.splits, spec.task,
                           inputs.window, inputs.per_lead["teacher"], fraction=spec.fraction, seed=spec.seed,
                           lead_features=cfg.lead_features, challenge_year=probe_data.year)


def distill_fingerprint(cfg: DistillConfig, cache_keys: list[str], split_hash: str, teacher_sha256: str,
                        probe: dict | None = None) -> str:
    """SHA-256 of what decides the student: the recipe's result-affecting settings, the data caches, the split,
    the teacher's weights (not its path), with logits what decides the teacher's probe, and the code.

    Leaves out ``name root cache_dir num_workers wandb resume overwrite teacher`` and the path ``logits.recipe``;
    ``probe`` (the probe's identity: the evaluation recipe's resolved contents, its caches, split, label patients
    and labels) stands for the recipe, so editing that file gives another fingerprint and moving it does not.
    """
    from ssl_ecg import __version__

    settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_RESULT_AFFECTING}
    if isinstance(settings.get("logits"), dict):
        settings["logits"] = {k: v for k, v in settings["logits"].items() if k != "recipe"}
    payload = {"settings": settings, "cache_keys": list(cache_keys), "split": split_hash, "teacher": teacher_sha256,
               "probe": probe, "schema": RUN_SCHEMA, "version": __version__, "kind": "distill"}
    return _json_sha256(payload)


def pool_target_stats(features: WindowFeatures, prepared: Prepared, rows: np.ndarray, window: int,
                      batch_records: int = 64, device: str | torch.device = "cpu") -> dict:
    """The per-dimension standardisation of the teacher's target: the probe's, computed on the unlabelled pool.

    Each pool record is cut to the pool's shortest length (as the evaluation cuts its records) and into
    non-overlapping ``window``-sample windows; its feature is the mean of the frozen teacher's window features
    (:func:`~ssl_ecg.evaluate.embed.embed_records`, the probe's input). mean and scale are scikit-learn's
    ``StandardScaler`` statistics of those (R, D) record features (population standard deviation; a constant
    dimension gets scale 1), the standardisation the probe applies with its labelled draw in place of the pool.

    Args:
        features: the teacher's window feature module (its encoder, lead mode and ``lead_features``).
        prepared: the teacher's prepared data; rows: the pool's rows of it.
        window: samples per window.

    Returns:
        ``{"mean": (D,) list, "scale": (D,) list, "records": R, "windows_per_record": W, "samples": T}``.

    Raises:
        DatasetError: no rows, or a record shorter than ``window``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise DatasetError("pool: no records to standardise the teacher's features on")
    n = int(prepared.table["length"].to_numpy(np.int64)[rows].min())
    if n < window:
        raise DatasetError(f"pool: its shortest record has {n} samples, fewer than the {window}-sample window")
    encoder = features.encoder
    encoder.to(device)
    try:
        feats = np.concatenate([
            embed_records(encoder, prepared.arrays(n, rows[i:i + batch_records]), window, features.per_lead,
                          device=device, lead_features=features.lead_features)
            for i in range(0, len(rows), batch_records)])
    finally:
        encoder.cpu()
    scaler = StandardScaler().fit(feats.astype(np.float64))
    return {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(), "records": int(len(rows)),
            "windows_per_record": n // window, "samples": n}


def _teacher_file(path: str) -> Path:
    p = Path(path)
    return p / "encoder.pt" if p.is_dir() else p


def run_distill(cfg: DistillConfig, runs: str | Path = "runs", progress: bool = True) -> dict:
    """Distil ``cfg.teacher`` into a student on ``cfg.student_leads``; writes ``runs/<name>/`` like pretraining.

    Data: the teacher's data settings (checked against the recipe's), cached twice through the one data path:
    with the teacher's leads (its input) and with ``student_leads`` (the student's input, normalised as an
    evaluation with ``leads: student_leads`` will read it), on the teacher's own split; the windows come from the
    ``pool`` patients only (``train`` by default, so the student never sees the teacher's validation or test
    patients' signals; a pool with test patients needs ``allow_test_patients``), ``windows_per_record`` random
    crops per record and epoch, the same crop for both. The target is the teacher's window feature standardised
    with the pool's statistics (:func:`pool_target_stats`, in the summary as ``target_standardization``).

    Training: Lightning (:func:`~ssl_ecg.pretrain.train.fit`, with its guards: a non-finite loss or weights is a
    :class:`~ssl_ecg.errors.TrainingError`), Adam on the student and the map, seeded. The teacher is frozen (eval
    mode, ``no_grad``); its state-dict hash is checked unchanged afterwards.

    Run folder: ``encoder.pt`` + ``encoder.json`` (the student's config; ``pretraining.config`` holds the data
    settings with ``leads = student_leads``, so evaluation's preprocessing check passes; ``provenance``: the
    distillation pool's patients and fingerprints UNION the teacher's, ``label_patients`` the teacher's UNION the
    probe's train+val patients when logits are used, the teacher's split, ``allow_test_patients``),
    ``split.json``, ``pretrain.json`` (the summary) and ``run.json`` (:func:`distill_fingerprint`), written by
    rank 0 only under DDP. Re-runs follow pretraining: a finished identical run is reused, ``resume`` continues
    one, ``overwrite`` replaces, anything else is refused.

    Raises:
        ConfigError: a bad recipe or one that does not fit the teacher (fs, window, normalization, leads), a
            teacher without provenance, a pool with the teacher's test patients (without
            ``allow_test_patients``), or a taken run folder.
        LeakageError: with logits, the probe's evaluation recipe fails a provenance check.
        TrainingError: the run diverged.
        EncoderChangedError: the teacher's weights changed (a bug: they must be frozen).
    """
    check_budget(cfg.epochs, -1)
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume, overwrite: expected at most one (resume continues the run, overwrite replaces it)")
    logits = cfg.logits_spec()
    out = run_folder(runs, cfg.name)
    teacher_path = _teacher_file(cfg.teacher)
    teacher = load_encoder(teacher_path)  # names a missing or unsafe file
    teacher_cfg, teacher_prov, input_len = _teacher_meta(str(teacher_path))
    data = _resolved_data(cfg, teacher_cfg, input_len)
    student_config = _student_config(cfg, teacher.config, data.window)
    split = PatientSplit.from_dict(teacher_prov["split"], source=f"teacher ({teacher_path}) provenance split")
    spec = DataSpec.from_config(data)
    prepared = prepare(spec, split=split, progress=progress)
    student_prepared = prepare(DataSpec.from_config(SimpleNamespace(**{**vars(data), "leads": cfg.student_leads})),
                               split=split, progress=progress)
    n_leads = prepared.cache.n_leads
    teacher_per_lead = teacher.config.get("in_channels") == 1
    if not teacher_per_lead and teacher.config.get("in_channels") != n_leads:
        raise ConfigError(f"teacher ({teacher_path}): takes {teacher.config.get('in_channels')} channels, the data "
                          f"has {n_leads} leads")
    rows = _pool_rows(cfg, prepared)
    t_rows, s_rows, lengths = _aligned(prepared, student_prepared, rows)
    windows = PairedWindows(prepared.cache, student_prepared.cache, t_rows, s_rows, lengths, data.window,
                            cfg.windows_per_record, cfg.seed)
    cache_keys = sorted({*_cache_keys(prepared), *_cache_keys(student_prepared)})
    teacher_sha = _sha256(teacher_path)
    probe_data = _probe_data(cfg, logits, data) if logits is not None else None
    fingerprint = distill_fingerprint(cfg, cache_keys, split.hash, teacher_sha,
                                      probe_data.identity(logits) if probe_data is not None else None)
    rank0 = (rank_zero_only.rank or 0) == 0  # under DDP the other ranks re-run this; rank 0 owns the folder
    if rank0:
        existing = _claim_run_folder(out, cfg, fingerprint)
        if existing is not None:
            return existing
    probe = _fit_teacher_probe(cfg, logits, probe_data) if probe_data is not None else None

    teacher_hash = state_dict_hash(teacher)
    teacher_features = WindowFeatures(teacher, teacher_per_lead, cfg.lead_features)
    with torch.no_grad():
        probe_x = torch.zeros(1, n_leads, data.window)
        teacher_dim = int(teacher_features.eval()(probe_x).shape[-1])
    pool_rows = np.unique(t_rows)
    gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    target = pool_target_stats(teacher_features, prepared, pool_rows, data.window, device="cuda" if gpu else "cpu")
    with seeded(cfg.seed):
        try:
            student = build_encoder(student_config)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ConfigError(f"student={student_config}: cannot be built ({exc})") from None
        student_features = WindowFeatures(student, student_config["in_channels"] == 1, "concat")
        with torch.no_grad():
            student_dim = int(student_features.eval()(torch.zeros(1, len(cfg.student_leads), data.window)).shape[-1])
        student_features.train()
        mapping = nn.Linear(student_dim, teacher_dim)
        module = DistillModule(student, student_features, teacher_features, mapping, EmbeddingDistillLoss(cfg.loss),
                               probe=probe.model if probe is not None else None,
                               logit_loss=LogitDistillLoss(cfg.temperature, probe.model.kind) if probe else None,
                               weight=logits.weight if logits else 0.0, lr=cfg.lr, seed=cfg.seed,
                               target_mean=torch.tensor(target["mean"]), target_scale=torch.tensor(target["scale"]))

    provenance = _provenance(prepared, student_prepared, pool_rows, s_rows, teacher_prov,
                             probe.label_patients if probe is not None else [], cfg.allow_test_patients)
    if rank0:
        _write_state(out, {"fingerprint": fingerprint, "status": "running"})
        split.save(out / SPLIT_FILE)

    def loader(world_size: int, rank: int) -> DataLoader:
        sampler = EpochShuffleSampler(len(windows), seed=cfg.seed, num_replicas=world_size, rank=rank)
        return DataLoader(windows, batch_size=cfg.batch_size, sampler=sampler,
                          drop_last=len(sampler) > cfg.batch_size, num_workers=cfg.num_workers)

    ckpt = out / "checkpoints" / "last.ckpt"
    losses, seconds = fit(module, loader, out, epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
                          precision=cfg.precision, wandb=cfg.wandb, run_name=cfg.name, progress=progress,
                          seed=cfg.seed, ckpt_path=str(ckpt) if cfg.resume else None)
    teacher.cpu()
    if state_dict_hash(teacher) != teacher_hash:
        raise EncoderChangedError(f"teacher ({teacher_path}): its weights changed during distillation; expected "
                                  "a frozen teacher")
    student.cpu().eval()
    data_config = {"dataset": data.dataset, "root": data.root, "dataset_options": data.dataset_options,
                   "fs": data.fs, "leads": list(cfg.student_leads), "teacher_leads": data.leads,
                   "normalization": data.normalization, "bad_leads": data.bad_leads, "band": data.band,
                   "cache_dir": data.cache_dir, "window": data.window / data.fs}
    summary = {"config": {**asdict(cfg), **data_config}, "method": "distill", "teacher": str(teacher_path),
               "teacher_sha256": teacher_sha, "teacher_state_hash": teacher_hash, "teacher_dim": teacher_dim,
               "student_dim": student_dim, "student_encoder": student_config,
               "data_needs": {"input_samples": data.window}, "records": int(len(t_rows)),
               "instances": int(len(windows)), "split": str(out / SPLIT_FILE), "split_hash": split.hash,
               "pool": cfg.pool, "pool_patients": len(provenance["pool_patients"]),
               "distill_pool_patients": len(prepared.patients(pool_rows)),
               "label_patients": len(provenance["label_patients"]),
               "probe": _probe_summary(probe, logits), "allow_test_patients": cfg.allow_test_patients,
               "target_standardization": target, "bad_leads": _jsonable(prepared.bad_leads),
               "student_bad_leads": _jsonable(student_prepared.bad_leads), "losses": losses,
               "seconds": round(seconds, 1)}
    path = out / "encoder.pt"
    if rank0:
        path = save_encoder(student, path, extra={"method": "distill", "pretraining": summary,
                                                  "provenance": provenance})
        (out / "pretrain.json").write_text(json.dumps(summary, indent=2, default=str))
        _write_state(out, {"fingerprint": fingerprint, "status": "complete", "encoder_sha256": _sha256(path)})
    return {"encoder": path, **summary, "reused": False}


def _probe_summary(probe: FittedProbe | None, spec: LogitsSpec | None) -> dict | None:
    if probe is None or spec is None:
        return None
    return {**asdict(spec), "kind": probe.model.kind, "classes": probe.model.classes,
            "val_auroc": float(probe.result.val_auroc), "test_auroc": float(probe.result.test_auroc),
            "label_patients": len(probe.label_patients)}


def _provenance(teacher_data: Prepared, student_data: Prepared, rows: np.ndarray, student_rows: np.ndarray,
                teacher_prov: dict, probe_label_patients: list[str], allow_test_patients: bool = False) -> dict:
    """The student's provenance: what it saw (the pool) and what its teacher saw, the labels both used, and
    whether its pool was allowed to hold the teacher's test patients."""
    datasets = set(teacher_data.table["dataset"].astype(str).to_numpy()[rows].tolist())
    cache_keys = [*_cache_keys(teacher_data), *_cache_keys(student_data)]
    return {"version": PROVENANCE_VERSION,
            "datasets": sorted(datasets | set(teacher_prov.get("datasets", []))),
            "cache_keys": sorted(set(cache_keys) | set(teacher_prov.get("cache_keys", []))),
            "pool_patients": sorted(teacher_data.patients(rows) | set(teacher_prov["pool_patients"])),
            "pool_fingerprints": sorted(teacher_data.fingerprints(rows) | student_data.fingerprints(student_rows)
                                        | set(teacher_prov["pool_fingerprints"])),
            "label_patients": sorted(set(teacher_prov["label_patients"]) | set(map(str, probe_label_patients))),
            "allow_test_patients": bool(allow_test_patients),
            "split": teacher_data.split.to_dict()}
