"""The single data path: a data specification -> cache-backed arrays and a saved patient split.

Every recipe (pretraining, probes, fine-tuning, curves, few-shot, the demo)
describes its data with one :class:`DataSpec`, and :func:`prepare` turns it
into a :class:`Prepared`: the memmap record cache (one dataset, or a
:class:`~ssl_ecg.data.cache.CachePool` of several mapped to one lead set and
rate), its table with patient keys, signal fingerprints and split names, and
the :class:`Split` artefact that run folders store as ``split.json``.

Patients are keyed by dataset and patient id (:func:`patient_key`), since LUDB
"100" is not MIT-BIH "100". Records carry a fingerprint of their signal
(:func:`~ssl_ecg.data.cache.record_fingerprint`), computed when the cache is
built, since one recording can appear under two ids (PTB-XL 145 and 463) or in
two datasets (CinC 2020/2021 hold PTB-XL, CPSC 2018, INCART records).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
import warnings
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ssl_ecg.data.cache import CacheParams, CachePool, RecordCache, keyed_patient_id, open_cache, record_fingerprint
from ssl_ecg.data.download import dataset_root
from ssl_ecg.data.index import load_index
from ssl_ecg.data.shards import STORAGE_DTYPES, ShardCache
from ssl_ecg.data.splits import RecordLevelIdsWarning, official_patient_split, patient_split, record_level_ids
from ssl_ecg.errors import ConfigError, DatasetError, RecordError, SplitError, check_choice

__all__ = ["DataSpec", "Split", "Prepared", "prepare", "patient_key", "patient_groups", "bad_leads_line", "CachePool",
           "record_fingerprint", "SPLIT_FILE", "SPLIT_NAMES"]

#: File name of the split artefact in a run folder.
SPLIT_FILE = "split.json"
#: Names of a drawn split's parts, in the order of the shares.
SPLIT_NAMES = ("train", "val", "test")
_MEMBER_KEYS = ("dataset", "root", "dataset_options")
_SPEC_FIELDS = ("dataset", "root", "dataset_options", "fs", "leads", "normalization", "bad_leads", "band", "split",
                "split_seed", "cache_dir", "skip_bad_records", "cache_backend", "cache_dtype")
#: Record cache backends: the float32 memmap file (default), or int16/float16 safetensors shards.
CACHE_BACKENDS = ("memmap", "shards")


def patient_key(dataset: str, patient_id: Any) -> str:
    """The patient's key across datasets: ``"<dataset>:<patient id>"`` (``patient_key("ludb", 100) == "ludb:100"``).

    The dataset name is lower-cased. A patient id that already carries a dataset
    prefix (any registered dataset name, or ``"ptb"``; see
    :func:`~ssl_ecg.data.cache.keyed_patient_id`) is kept as it is: INCART's
    ``"incart:7"``, and CinC's ids of PTB-XL, INCART and PTB patients
    (``"ptbxl:123"``), which thus equal PTB-XL's own keys. Keying is idempotent.

    Raises:
        ConfigError: an empty dataset name or patient id.
    """
    name = str(dataset).strip().lower()
    pid = str(patient_id).strip()
    if not name or not pid or pid.lower() == "nan":
        raise ConfigError(f"patient_key: expected a dataset name and a patient id, got {dataset!r}, {patient_id!r}")
    return keyed_patient_id(name, pid)


# ----------------------------------------------------------------------------------------------------------------
# The data specification


def _member(value: Any, k: int) -> dict:
    where = f"DataSpec.dataset[{k}]"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping with keys {list(_MEMBER_KEYS)}, got {value!r}")
    unknown = sorted(set(map(str, value)) - set(_MEMBER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; expected {list(_MEMBER_KEYS)}")
    name = value.get("dataset")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.dataset: expected a dataset name, got {name!r}")
    root = value.get("root")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ConfigError(f"{where}.root: expected a folder path or null, got {root!r}")
    options = value.get("dataset_options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.dataset_options: expected a mapping of adapter options, got {options!r}")
    return {"dataset": name.strip().lower(), "root": None if root is None else str(root),
            "dataset_options": dict(options)}


@dataclass(frozen=True)
class DataSpec:
    """One data specification, shared by every recipe.

    Attributes:
        dataset: a dataset name (see :func:`ssl_ecg.data.load_index`), or a pool:
            a sequence of ``{"dataset", "root", "dataset_options"}`` mappings,
            all cached with this spec's ``fs``, ``leads`` and preprocessing
            (stored as a tuple of dicts).
        root: the dataset folder (single dataset only); default: found under
            ``$SSL_ECG_DATA`` (:func:`ssl_ecg.data.download.dataset_root`).
        dataset_options: adapter options (single dataset only), e.g. ``{"fs": 500}`` for PTB-XL.
        fs: sampling rate of the cache in Hz.
        leads: lead names to keep, in order; ``None`` keeps all (a pool then
            needs datasets with one lead set).
        normalization: ``"record"``, ``"lead"`` or ``"none"``.
        bad_leads: the bad-lead policy, ``"zero_lead"`` (the one default), ``"drop_record"`` or
            ``"error"``; its counts are in :attr:`Prepared.bad_leads`.
        band: optional ``(low, high)`` band-pass in Hz.
        split: train/val/test shares of patients (summing to 1), or
            ``"official"`` for the index's own ``split`` column.
        split_seed: seed of a drawn split.
        cache_dir: the cache root folder.
        skip_bad_records: skip unreadable records when building the cache.
        cache_backend: ``"memmap"`` (one float32 file and a pandas index: the default, and the faster
            for small sets) or ``"shards"`` (:mod:`ssl_ecg.data.shards`: int16/float16 safetensors
            shards whose readers hold no per-record objects, for large sets; one dataset, not a pool).
            Both give the same records, ids, fingerprints and split; the backend and dtype are part of
            the cache key, so runs on the two backends have different fingerprints.
        cache_dtype: the shards' storage dtype, ``"int16"`` or ``"float16"`` (ignored by ``"memmap"``).

    Raises:
        ConfigError: a field is invalid; the message names it.
    """

    dataset: str | tuple = "ludb"
    root: str | None = None
    dataset_options: dict = field(default_factory=dict)
    fs: float = 100.0
    leads: tuple[str, ...] | None = None
    normalization: str = "record"
    bad_leads: str = "zero_lead"
    band: tuple | None = None
    split: tuple | str = (0.6, 0.2, 0.2)
    split_seed: int = 0
    cache_dir: str = "cache"
    skip_bad_records: bool = False
    cache_backend: str = "memmap"
    cache_dtype: str = "int16"

    def __post_init__(self) -> None:
        ds = self.dataset
        if isinstance(ds, str):
            if not ds.strip():
                raise ConfigError("DataSpec.dataset: expected a dataset name or a list of datasets, got ''")
            object.__setattr__(self, "dataset", ds.strip().lower())
            if self.root is not None and not isinstance(self.root, (str, os.PathLike)):
                raise ConfigError(f"DataSpec.root: expected a folder path or null, got {self.root!r}")
            if not isinstance(self.dataset_options, Mapping):
                raise ConfigError(f"DataSpec.dataset_options: expected a mapping, got {self.dataset_options!r}")
            object.__setattr__(self, "root", None if self.root is None else str(self.root))
            object.__setattr__(self, "dataset_options", dict(self.dataset_options))
        elif isinstance(ds, Sequence) and not isinstance(ds, (bytes, Mapping)):
            members = tuple(_member(m, k) for k, m in enumerate(ds))
            if not members:
                raise ConfigError("DataSpec.dataset: expected at least one dataset in the pool, got []")
            names = [m["dataset"] for m in members]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(f"DataSpec.dataset: {dup[0]!r} appears twice in the pool {names}; expected each "
                                  "dataset once")
            if self.root is not None or self.dataset_options:
                raise ConfigError("DataSpec.root, dataset_options: a pool sets them per dataset "
                                  "({dataset, root, dataset_options}); expected null and {} at the top level")
            object.__setattr__(self, "dataset", members)
        else:
            raise ConfigError(f"DataSpec.dataset: expected a dataset name or a list of "
                              f"{{dataset, root, dataset_options}} mappings, got {ds!r}")
        if self.leads is not None:
            if isinstance(self.leads, str) or not isinstance(self.leads, Sequence):
                raise ConfigError(f"DataSpec.leads: expected a list of lead names or null, got {self.leads!r}")
            object.__setattr__(self, "leads", tuple(self.leads))
        if self.band is not None and isinstance(self.band, Sequence) and not isinstance(self.band, str):
            object.__setattr__(self, "band", tuple(self.band))
        object.__setattr__(self, "split", self._checked_split())
        seed = self.split_seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"DataSpec.split_seed: expected an integer >= 0, got {seed!r}")
        object.__setattr__(self, "split_seed", int(seed))
        if not isinstance(self.cache_dir, (str, os.PathLike)) or not str(self.cache_dir):
            raise ConfigError(f"DataSpec.cache_dir: expected a folder path, got {self.cache_dir!r}")
        object.__setattr__(self, "cache_dir", str(self.cache_dir))
        check_choice("DataSpec.cache_backend", self.cache_backend, CACHE_BACKENDS)
        check_choice("DataSpec.cache_dtype", self.cache_dtype, STORAGE_DTYPES)
        if self.cache_backend == "shards" and self.is_pool:
            raise ConfigError("DataSpec.cache_backend: 'shards' caches one dataset; a pool of "
                              f"{len(self.dataset)} datasets needs cache_backend 'memmap'")
        self.cache_params()  # validates fs, leads, normalization, bad_leads, band, skip_bad_records

    def _checked_split(self) -> tuple[float, ...] | str:
        split = self.split
        if isinstance(split, str):
            if split != "official":
                raise ConfigError(f"DataSpec.split: expected train/val/test shares or 'official', got {split!r}")
            return split
        if not isinstance(split, Sequence) or len(split) != len(SPLIT_NAMES):
            raise ConfigError(f"DataSpec.split: expected {len(SPLIT_NAMES)} shares (train, val, test) or "
                              f"'official', got {split!r}")
        bad = [s for s in split if isinstance(s, bool) or not isinstance(s, Real) or not math.isfinite(float(s))
               or float(s) < 0]
        if bad or not math.isclose(sum(float(s) for s in split), 1.0, abs_tol=1e-6):
            raise ConfigError(f"DataSpec.split: expected non-negative shares summing to 1, got {list(split)}")
        return tuple(float(s) for s in split)

    @property
    def members(self) -> tuple[dict, ...]:
        """Every dataset of the spec as ``{"dataset", "root", "dataset_options"}`` (one for a single dataset)."""
        if isinstance(self.dataset, str):
            return ({"dataset": self.dataset, "root": self.root, "dataset_options": dict(self.dataset_options)},)
        return tuple(dict(m, dataset_options=dict(m["dataset_options"])) for m in self.dataset)

    @property
    def is_pool(self) -> bool:
        """True when ``dataset`` is a pool of datasets (even of one)."""
        return not isinstance(self.dataset, str)

    @property
    def datasets(self) -> list[str]:
        """The dataset names, in order."""
        return [m["dataset"] for m in self.members]

    def cache_params(self) -> CacheParams:
        """The cache's preprocessing parameters (every pool member gets the same)."""
        return CacheParams(fs=self.fs, leads=self.leads, normalization=self.normalization,
                           bad_lead_policy=self.bad_leads, band=self.band, skip_bad_records=self.skip_bad_records)

    def as_dict(self) -> dict:
        """JSON-ready fields (for run records)."""
        return {"dataset": self.dataset if isinstance(self.dataset, str) else [dict(m) for m in self.dataset],
                "root": self.root, "dataset_options": dict(self.dataset_options), "fs": float(self.fs),
                "leads": list(self.leads) if self.leads is not None else None, "normalization": self.normalization,
                "bad_leads": self.bad_leads, "band": list(self.band) if self.band is not None else None,
                "split": self.split if isinstance(self.split, str) else list(self.split),
                "split_seed": self.split_seed, "cache_dir": self.cache_dir, "skip_bad_records": self.skip_bad_records,
                "cache_backend": self.cache_backend, "cache_dtype": self.cache_dtype}

    @classmethod
    def from_config(cls, cfg: Any) -> DataSpec:
        """The spec of a recipe: its fields of the same names (``dataset``, ``root``, ``dataset_options``,
        ``fs``, ``leads``, ``normalization``, ``bad_leads``, ``band``, ``split``, ``split_seed``,
        ``cache_dir``, ``skip_bad_records``), read from a mapping or as attributes; absent or ``None``
        ones take the defaults (``root`` and ``leads`` stay ``None``)."""
        if isinstance(cfg, Mapping):
            def get(key):
                return cfg.get(key)
        else:
            def get(key):
                return getattr(cfg, key, None)
        values = {key: get(key) for key in _SPEC_FIELDS}
        return cls(**{k: v for k, v in values.items() if v is not None})


# ----------------------------------------------------------------------------------------------------------------
# The split artefact


def _canonical(value: Any, source: str, what: str) -> Any:
    """A JSON round trip (tuples become lists), or a DatasetError naming ``source``."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{source}: {what} is not plain JSON data ({exc})") from exc


def _checked_parts(patients: Any, rule: Any, cache_key: Any, source: str) -> tuple[dict, dict, str]:
    if not isinstance(patients, Mapping):
        raise DatasetError(f"{source}: 'patients' must map split names to lists of patient keys, "
                           f"got {type(patients).__name__}")
    parts: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, members in patients.items():
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{source}: split name {name!r} is not a non-empty string")
        if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
            raise DatasetError(f"{source}: split {name!r} must be a list of patient keys, got {members!r}")
        members = list(members)
        bad = [p for p in members if not isinstance(p, str) or not p]
        if bad:
            raise DatasetError(f"{source}: split {name!r} holds {bad[0]!r}; expected patient keys such as 'ludb:1'")
        for p in members:
            if p in seen and seen[p] != name:
                raise SplitError(f"{source}: patient {p!r} is in both split {seen[p]!r} and {name!r}; expected "
                                 "each patient in one split")
            seen[p] = name
        parts[name] = tuple(sorted(set(members)))
    if not isinstance(rule, Mapping):
        raise DatasetError(f"{source}: 'rule' must be a mapping such as {{'split': [0.6, 0.2, 0.2], 'seed': 0, "
                           f"'datasets': ['ludb']}}, got {rule!r}")
    rule = _canonical(dict(rule), source, "'rule'")
    if not isinstance(cache_key, str):
        raise DatasetError(f"{source}: 'cache_key' must be a string, got {cache_key!r}")
    return parts, rule, cache_key


def _split_hash(patients: Mapping[str, Sequence[str]], rule: Mapping) -> str:
    body = {"patients": {k: list(v) for k, v in patients.items()}, "rule": rule}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Split:
    """The patient split artefact (``split.json`` in every run folder).

    Attributes:
        patients: split name ("train"/"val"/"test", or the official subset
            names) -> sorted patient keys (:func:`patient_key`); no patient in
            two splits.
        rule: how it was drawn, e.g. ``{"split": [0.6, 0.2, 0.2], "seed": 0,
            "datasets": ["ludb"]}`` or ``{"split": "official", "seed": None, ...}``.
        cache_key: the key of the cache it was drawn on; informational, not part
            of :attr:`hash`.

    Raises:
        DatasetError: malformed fields; SplitError (a DatasetError) when a
            patient is in two splits.
    """

    patients: Mapping[str, tuple[str, ...]]
    rule: Mapping
    cache_key: str = ""
    _hash: str = field(default="", init=False, repr=False, compare=False)
    _where: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts, rule, key = _checked_parts(self.patients, self.rule, self.cache_key, "split")
        object.__setattr__(self, "patients", parts)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "cache_key", key)
        object.__setattr__(self, "_hash", _split_hash(parts, rule))
        object.__setattr__(self, "_where", {p: name for name, members in parts.items() for p in members})

    def __hash__(self) -> int:
        return hash(self._hash)

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``{"patients", "rule"}``: independent of key and list order."""
        return self._hash

    @property
    def names(self) -> tuple[str, ...]:
        """The split names, in order."""
        return tuple(self.patients)

    def of(self, key: str) -> str | None:
        """The split name of a patient key, ``None`` when the patient is in no split."""
        return self._where.get(key)

    def to_dict(self) -> dict:
        """``{"patients", "rule", "cache_key", "hash"}`` (JSON-ready)."""
        return {"patients": {k: list(v) for k, v in self.patients.items()}, "rule": json.loads(json.dumps(self.rule)),
                "cache_key": self.cache_key, "hash": self.hash}

    @classmethod
    def from_dict(cls, d: Any, source: str = "split") -> Split:
        """Rebuild a split from :meth:`to_dict`'s output, checking its hash.

        Raises:
            DatasetError: not a mapping, a missing or malformed field, a patient
                in two splits, or a ``hash`` that does not match the contents
                (an edited or corrupted file); the message names ``source``.
        """
        if not isinstance(d, Mapping):
            raise DatasetError(f"{source}: expected a JSON object with patients, rule, cache_key and hash, "
                               f"got {type(d).__name__}")
        missing = [k for k in ("patients", "rule", "hash") if k not in d]
        if missing:
            raise DatasetError(f"{source}: missing fields {missing}; expected patients, rule, cache_key and hash "
                               "(as written by Split.save)")
        parts, rule, key = _checked_parts(d["patients"], d["rule"], d.get("cache_key", ""), source)
        split = cls(parts, rule, key)
        if d["hash"] != split.hash:
            raise DatasetError(f"{source}: stored hash {d['hash']!r} does not match its patients and rule "
                               f"({split.hash}); the split was edited or corrupted")
        return split

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``split.json`` atomically; ``path`` is the file, or a folder to write ``split.json`` into."""
        path = Path(path)
        if path.is_dir():
            path = path / SPLIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
        try:
            part.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(part, path)
        finally:
            if part.exists():
                part.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        """Read a ``split.json`` (or the one in a folder).

        Raises:
            DatasetError: the file is missing, unreadable, not JSON, malformed,
                or its hash does not match; the message names the file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / SPLIT_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DatasetError(f"{path}: split file not found; expected a split.json written by Split.save") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read the split file ({exc})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc}); expected a split.json written by Split.save") \
                from exc
        return cls.from_dict(data, source=str(path))


# ----------------------------------------------------------------------------------------------------------------
# Prepared data


@dataclass
class Prepared:
    """What :func:`prepare` returns: the cache, its table, the split and the bad-lead counts.

    Attributes:
        spec: the data specification.
        cache: the record cache: memmap (:class:`RecordCache`, or :class:`CachePool` for a pool), or a
            :class:`~ssl_ecg.data.shards.ShardCache` (``cache_backend: shards``).
        table: one row per cached record, aligned with ``cache``: the index columns
            plus ``dataset``, ``patient_key``, ``fingerprint`` and ``split`` (the
            patient's split name, ``""`` when in none). Where the index had its own
            ``split`` column, it is kept as ``index_split``.
        split: the split artefact.
        bad_leads: ``{"policy", "zeroed_leads", "dropped_records", "nonfinite_samples",
            "skipped_records", "by_dataset": {name: the same counts}}`` from the cache manifests.
    """

    spec: DataSpec
    cache: RecordCache | CachePool | ShardCache
    table: pd.DataFrame
    split: Split
    bad_leads: dict

    def _rows(self, rows) -> np.ndarray:
        if rows is None:
            return np.arange(len(self.table))
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self.table),):
                raise ConfigError(f"rows: a boolean mask must have {len(self.table)} entries, got {rows.shape}")
            return np.flatnonzero(rows)
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(rows.dtype, np.integer):
            raise ConfigError(f"rows: expected row indices (integers) or a boolean mask, got dtype {rows.dtype}")
        rows = rows.reshape(-1).astype(np.int64)
        if rows.min() < 0 or rows.max() >= len(self.table):
            raise ConfigError(f"rows: indices must lie in [0, {len(self.table)}), got {int(rows.min())}.."
                              f"{int(rows.max())}")
        return rows

    def rows(self, *names: str) -> np.ndarray:
        """Row indices (ascending) of the records whose patient is in any of the named splits.

        Raises:
            ConfigError: no name, or a name the split does not have.
        """
        if not names:
            raise ConfigError(f"rows: name at least one split of {list(self.split.names)}")
        unknown = [n for n in names if n not in self.split.patients]
        if unknown:
            raise ConfigError(f"rows: split {unknown[0]!r} is not in the split (it has {list(self.split.names)})")
        return np.flatnonzero(self.table["split"].isin(names).to_numpy())

    def arrays(self, n_samples: int, rows=None) -> np.ndarray:
        """The first ``n_samples`` of each record, read from the record cache.

        Args:
            n_samples: samples per record (at the cache's ``fs``).
            rows: row indices or a boolean mask; default all rows.

        Returns:
            float32 ``(R, L, n_samples)``, rows in the order given.

        Raises:
            ConfigError: ``n_samples`` is not a positive integer, or bad ``rows``.
            RecordError: a record is shorter than ``n_samples``; the message names it.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
            raise ConfigError(f"n_samples: expected a positive number of samples, got {n_samples!r}")
        n_samples = int(n_samples)
        rows = self._rows(rows)
        lengths = self.table["length"].to_numpy(dtype=np.int64)[rows]
        short = np.flatnonzero(lengths < n_samples)
        if len(short):
            k = int(rows[short[0]])
            row = self.table.iloc[k]
            raise RecordError(f"{row['dataset']} record {row['record_id']} (row {k}): {int(row['length'])} samples at "
                              f"{self.cache.fs:g} Hz, shorter than the {n_samples} samples asked for "
                              f"({len(short)} records are too short)")
        out = np.empty((len(rows), self.cache.n_leads, n_samples), dtype=np.float32)
        for j, i in enumerate(rows):
            out[j] = self.cache.record(int(i))[:, :n_samples]
        return out

    def patients(self, rows=None) -> set[str]:
        """The patient keys of ``rows`` (default all)."""
        return set(self.table["patient_key"].to_numpy()[self._rows(rows)].tolist())

    def fingerprints(self, rows=None) -> set[str]:
        """The signal fingerprints of ``rows`` (default all)."""
        return set(self.table["fingerprint"].to_numpy()[self._rows(rows)].tolist())

    def describe(self) -> str:
        """One line: records, patients, split sizes and the bad-lead counts (for printing)."""
        b = self.bad_leads
        sizes = ", ".join(f"{n} {len(v)}" for n, v in self.split.patients.items())
        return (f"{'+'.join(self.spec.datasets)}: {len(self.table)} records of "
                f"{self.table['patient_key'].nunique()} patients at {self.cache.fs:g} Hz, {self.cache.n_leads} leads; "
                f"split {self.split.hash[:12]} ({sizes} patients); {bad_leads_line(b)}")


def bad_leads_line(counts: Mapping[str, Any]) -> str:
    """``"bad leads (<policy>): N leads zeroed, ..."``: :attr:`Prepared.bad_leads` in one line (for printing)."""
    return (f"bad leads ({counts.get('policy', '?')}): {int(counts.get('zeroed_leads', 0))} leads zeroed, "
            f"{int(counts.get('dropped_records', 0))} records dropped, {int(counts.get('nonfinite_samples', 0))} "
            f"non-finite samples, {int(counts.get('skipped_records', 0))} unreadable records skipped")


def _bad_lead_counts(manifest: Mapping) -> dict:
    return {"zeroed_leads": int(manifest.get("zeroed_leads", 0) or 0),
            "dropped_records": int(manifest.get("dropped_bad_leads", 0) or 0),
            "nonfinite_samples": int(manifest.get("nonfinite_samples", 0) or 0),
            "skipped_records": int(manifest.get("n_skipped", 0) or 0)}


def patient_groups(table: pd.DataFrame) -> dict[str, list[str]]:
    """Patient keys that must share a split part: those linked by a record with the same signal fingerprint.

    A recording held twice under two patient keys (PTB-XL 145 and 463, a CinC copy of a record keyed under
    another id) joins the two keys into one group (connected components over key-fingerprint links), so a
    split drawn over the groups never puts the two copies in two parts.

    Args:
        table: one row per record with ``patient_key`` and (optionally) ``fingerprint``.

    Returns:
        ``{representative: sorted keys of its group}``; the representative is the group's first key (so a
        table without shared fingerprints gives one singleton group per key, named by the key).
    """
    keys = table["patient_key"].astype(str).to_numpy()
    unique, key_idx = np.unique(keys, return_inverse=True)
    if "fingerprint" not in table.columns or len(unique) == 0:
        return {k: [k] for k in unique.tolist()}
    fps = table["fingerprint"].fillna("").astype(str).to_numpy()
    known = (fps != "") & (fps != "nan")  # a record without a fingerprint links nothing
    _, fp_idx = np.unique(fps[known], return_inverse=True)
    n_keys, n_fps = len(unique), int(fp_idx.max()) + 1 if len(fp_idx) else 0
    links = coo_matrix((np.ones(int(known.sum()), dtype=np.int8), (key_idx[known], n_keys + fp_idx)),
                       shape=(n_keys + n_fps, n_keys + n_fps))
    _, label = connected_components(links, directed=False)
    groups: dict[int, list[str]] = {}
    for k, key in enumerate(unique.tolist()):  # unique is sorted: the first key of a group is its smallest
        groups.setdefault(int(label[k]), []).append(key)
    return {members[0]: members for members in groups.values()}


def _draw_split(spec: DataSpec, table: pd.DataFrame, members: Sequence[tuple[str, pd.DataFrame]],
                cache_key: str) -> Split:
    names = [name for name, _ in members]
    if spec.split == "official":
        lacking = [name for name, t in members if "split" not in t.columns]
        if lacking:
            raise ConfigError(f"split: 'official' needs every dataset to have an official split column; "
                              f"{', '.join(lacking)} has none (use train/val/test shares instead)")
        column = table["index_split"] if "index_split" in table.columns else table["split"]
        parts = official_patient_split(table["patient_key"].tolist(), column.tolist(), dataset="+".join(names))
        rule = {"split": "official", "seed": None, "datasets": names}
    else:
        for name, t in members:
            note = record_level_ids(t, name)
            if note is not None:
                warnings.warn(note["message"], RecordLevelIdsWarning, stacklevel=3)
        groups = patient_groups(table)
        drawn = patient_split(sorted(groups), list(spec.split), seed=spec.split_seed, names=SPLIT_NAMES)
        parts = {name: sorted(k for rep in reps for k in groups[rep]) for name, reps in drawn.items()}
        rule = {"split": list(spec.split), "seed": spec.split_seed, "datasets": names}
    return Split(parts, rule, cache_key)


def _open_shards(index, spec: DataSpec, params: CacheParams) -> ShardCache:
    """The finished sharded cache of ``index`` (built here, in one process, if missing or unfinished), with the
    shard size of a cache already built with these parameters (``--shard-records``), else the default."""
    from ssl_ecg.data.shard_build import DEFAULT_SHARD_RECORDS, build_shards, built_shard_sizes

    sizes = built_shard_sizes(index, spec.cache_dir, params, dtype=spec.cache_dtype)
    built = build_shards(index, spec.cache_dir, params, dtype=spec.cache_dtype,
                         shard_records=sizes[0] if sizes else DEFAULT_SHARD_RECORDS)
    if built.cache is None:  # another node's shards are unfinished (a multi-node build in progress)
        raise DatasetError(f"{built.folder}: {built.pending} of {built.n_shards} shards are unfinished (a multi-node "
                           "build in progress?); finish it with ssl-ecg cache build --format shards")
    return built.cache


def prepare(spec: DataSpec, split: Split | str | os.PathLike | None = None, progress: bool = False) -> Prepared:
    """Build or open the cache(s) of ``spec`` and attach a patient split.

    Each dataset is indexed (:func:`ssl_ecg.data.load_index` with its options)
    and cached under ``spec.cache_dir`` with ``spec.cache_params()``
    (:func:`ssl_ecg.data.cache.open_cache`); a pool's caches are read as one
    :class:`CachePool`. With ``cache_backend: shards`` the dataset is cached as
    shards instead (:func:`ssl_ecg.data.shard_build.build_shards` in this
    process, or reopened when ``ssl-ecg cache build --format shards`` built it
    with the same parameters and dtype, at any ``--shard-records``), and its
    table comes from the shards' ``records.jsonl``. Build a large cache before a
    multi-rank run (``--workers N``): ranks that find it unfinished each build
    the missing shards (identical files, renamed atomically), which is correct
    but repeats the work.

    Args:
        spec: the data specification.
        split: a :class:`Split`, or a path to a ``split.json`` (or its folder), used
            as it is: records of patients outside it get split ``""``. ``None``
            draws one from ``spec.split`` and ``spec.split_seed`` on patient keys
            (``"official"``: the index's own ``split`` column, which every
            dataset of a pool must have).
        progress: print one line per dataset opened and :meth:`Prepared.describe`.

    Raises:
        ConfigError: a bad spec or ``split`` argument, ``"official"`` for a dataset
            without an official split, or pool members with different leads.
        DatasetError: a dataset cannot be found or indexed, a bad ``split.json``,
            or a cache without fingerprints.
        SplitError: a drawn split leaves a part empty, or an official split puts
            one patient in two subsets.
        RecordError: a record cannot be read (without ``skip_bad_records``).
    """
    if not isinstance(spec, DataSpec):
        raise ConfigError(f"spec: expected a DataSpec, got {type(spec).__name__}")
    if split is not None and not isinstance(split, (Split, str, os.PathLike)):
        raise ConfigError(f"split: expected a Split, a path to split.json or None, got {type(split).__name__}")
    if isinstance(split, (str, os.PathLike)):
        split = Split.load(split)  # a bad file fails before any cache is built
    params = spec.cache_params()
    caches: list[RecordCache | ShardCache] = []
    for m in spec.members:
        root = dataset_root(m["dataset"], m["root"])
        index = load_index(m["dataset"], root, **m["dataset_options"])
        cache = (open_cache(index, spec.cache_dir, params) if spec.cache_backend == "memmap"
                 else _open_shards(index, spec, params))
        if "fingerprint" not in cache.table.columns:
            raise DatasetError(f"{cache.folder / 'records.json'}: no record fingerprints (a cache of an older "
                               "format); rebuild it (ssl-ecg cache build --rebuild)")
        caches.append(cache)
        if progress:
            print(f"{m['dataset']}: {len(cache)} records at {cache.fs:g} Hz, {cache.n_leads} leads "
                  f"(cache {cache.folder})", flush=True)
    names = spec.datasets
    if spec.is_pool:
        cache: RecordCache | CachePool = CachePool(caches, names)
        table = cache.table.copy()
        table["patient_key"] = table["patient_id"].astype(str)
    else:
        cache = caches[0]
        table = cache.table.copy()
        table.insert(0, "dataset", names[0])
        table["patient_key"] = [patient_key(names[0], p) for p in table["patient_id"].astype(str)]
    if "split" in table.columns:
        table["index_split"] = table["split"]
    cache_key = str(cache.manifest.get("key", ""))
    if split is None:
        split = _draw_split(spec, table, list(zip(names, [c.table for c in caches])), cache_key)
    table["split"] = table["patient_key"].map(lambda k: split.of(k) or "")
    by_dataset = {name: _bad_lead_counts(c.manifest) for name, c in zip(names, caches)}
    bad = {"policy": spec.bad_leads,
           **{k: sum(v[k] for v in by_dataset.values()) for k in next(iter(by_dataset.values()))},
           "by_dataset": by_dataset}
    prepared = Prepared(spec, cache, table, split, bad)
    if progress:
        print(prepared.describe(), flush=True)
    return prepared
