"""Batch sampling: a seeded epoch shuffle, patient-aware batches (k items per patient), and the
expected and measured rate of cross-lead positives when each (record, lead) is its own instance."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from scipy.stats import hypergeom
from torch.utils.data import Sampler

from ssl_ecg.errors import DatasetError

__all__ = ["PatientBatchSampler", "EpochShuffleSampler", "positive_share", "cross_lead_positive_rate",
           "cross_lead_share"]


def positive_share(patients: Sequence) -> float:
    """Share of batch items that have at least one other item of the same patient."""
    _, inverse, counts = np.unique(np.asarray(patients, dtype=str), return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean()) if len(inverse) else 0.0


def _other_lead_counts(patients: Sequence, leads: Sequence) -> np.ndarray:
    """Per instance: how many other instances have the same patient and a different lead."""
    patients = np.asarray(patients, dtype=str)
    leads = np.asarray(leads)
    if patients.shape != leads.shape or patients.ndim != 1:
        raise DatasetError(f"patients, leads: expected two 1-D sequences of one length, got shapes "
                           f"{patients.shape} and {leads.shape}")
    _, p_inv, p_counts = np.unique(patients, return_inverse=True, return_counts=True)
    pairs = np.stack([p_inv, np.unique(leads, return_inverse=True)[1]], axis=1)
    _, pl_inv, pl_counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    return p_counts[p_inv] - pl_counts[pl_inv.reshape(-1)]


def cross_lead_positive_rate(patients: Sequence, leads: Sequence, batch_size: int) -> float:
    """Expected share of anchors whose batch holds another lead of the same patient.

    For per-lead instances (CLOCS batching: every (record, lead) pair is an item
    and an epoch is a uniform shuffle of the pool, cut into batches), a batch is
    a uniformly random subset of ``B = batch_size`` of the ``P`` pool items. An
    anchor whose patient has ``m`` other items on other leads (other leads of
    its record, and any lead but its own of the patient's other records) then
    shares its batch with at least one of them with probability

        1 - C(P - 1 - m, B - 1) / C(P - 1, B - 1)

    (the hypergeometric chance of no hit among the B - 1 other batch slots);
    this returns the mean over the pool's anchors. ``B >= P`` (one batch holds
    everything) gives 1 for every anchor with ``m > 0``.

    Args:
        patients: patient of each pool item.
        leads: lead index (or name) of each pool item.
        batch_size: items per batch (the batch the loss sees; under DDP with
            gathered losses, ``batch_size * world_size``).
    """
    if batch_size < 1:
        raise DatasetError(f"batch_size: expected >= 1, got {batch_size}")
    m = _other_lead_counts(patients, leads)
    if len(m) == 0:
        raise DatasetError("patients: the pool is empty")
    pool = len(m)
    draws = min(int(batch_size), pool) - 1
    miss = hypergeom.pmf(0, pool - 1, m, draws) if pool > 1 else np.ones(1)
    return float(np.mean(1.0 - miss))


def cross_lead_share(patients: Sequence, leads: Sequence, batch: Sequence[int]) -> float:
    """Measured share of the items of ``batch`` (indices into patients/leads) that have another
    item of the same patient on another lead in the same batch."""
    batch = np.asarray(batch, dtype=np.int64)
    if len(batch) == 0:
        return float("nan")
    m = _other_lead_counts(np.asarray(patients, dtype=str)[batch], np.asarray(leads)[batch])
    return float((m > 0).mean())


class PatientBatchSampler(Sampler[list[int]]):
    """Batches holding ``k`` records of each sampled patient (for CMSC / PCLR across records).

    Each epoch shuffles the patients (seeded by seed and epoch); each patient
    contributes ``min(k, its records)`` records drawn without replacement, and
    consecutive patients fill the batches. With ``num_replicas > 1`` (DDP), rank
    r takes every num_replicas-th batch, and all ranks get the same number.
    ``last_positive_share`` reports the share of items with a same-patient
    partner in the last epoch's batches.

    Cost: grouping is one sort of the ids, and each epoch's draw is one
    permutation of the patients and one sort of the items (uniform keys: a
    patient's ``min(k, n)`` items with the smallest keys are a uniform draw
    without replacement), O(N log N) with no per-patient Python loop; the
    length is counted without drawing.

    Args:
        patient_ids: patient of each dataset item.
        batch_size: items per batch.
        k: records per patient per batch (>= 2).
        seed: base seed; call :meth:`set_epoch` each epoch.
        drop_last: drop a final incomplete batch.
        num_replicas, rank: for distributed training.
    """

    def __init__(self, patient_ids: Sequence, batch_size: int, k: int = 2, seed: int = 0, drop_last: bool = True,
                 num_replicas: int = 1, rank: int = 0):
        if k < 2:
            raise DatasetError(f"k: need at least 2 records per patient for positives, got {k}")
        if batch_size < k:
            raise DatasetError(f"batch_size: {batch_size} is smaller than k = {k}")
        if not 0 <= rank < num_replicas:
            raise DatasetError(f"rank: {rank} is not in [0, {num_replicas})")
        ids = np.asarray(patient_ids, dtype=str)
        if len(ids) == 0:
            raise DatasetError("patient_ids: no items to sample")
        _, self._group_of, counts = np.unique(ids, return_inverse=True, return_counts=True)
        self._group_of = self._group_of.reshape(-1)
        self._counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.ids = ids
        self.batch_size, self.k, self.seed, self.drop_last = batch_size, k, seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.last_positive_share = float("nan")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def groups(self) -> list[np.ndarray]:
        """The item indices (ascending) of each patient, patients in sorted id order."""
        order = np.argsort(self._group_of, kind="stable")
        return np.split(order, self._starts[1:])

    def _n_batches(self) -> int:
        """Batches of one epoch shared by all ranks (before the rank's stride)."""
        total = int(np.minimum(self._counts, self.k).sum())
        n = total // self.batch_size if self.drop_last else -(-total // self.batch_size)
        return n - n % self.num_replicas

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        patient_order = rng.permutation(len(self._counts))  # this epoch's order of the patients
        position = np.empty(len(self._counts), dtype=np.int64)
        position[patient_order] = np.arange(len(self._counts))
        keys = rng.random(len(self.ids))
        order = np.lexsort((keys, position[self._group_of]))  # by patient position, then key
        sizes = self._counts[patient_order]  # group sizes in that order
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rank_in_group = np.arange(len(order)) - np.repeat(first, sizes)
        flat = order[rank_in_group < self.k]
        usable = self._n_batches()
        return [flat[i * self.batch_size:(i + 1) * self.batch_size].tolist() for i in range(usable)]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        mine = batches[self.rank::self.num_replicas]
        shares = [positive_share(self.ids[b]) for b in mine]
        self.last_positive_share = float(np.mean(shares)) if shares else float("nan")
        return iter(mine)

    def __len__(self) -> int:
        return self._n_batches() // self.num_replicas


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch, drawn from (seed, epoch): resumable, worker-independent.

    Over a :class:`~ssl_ecg.data.dataset.CacheLeadWindows` pool this is CLOCS'
    CMSC batching: every (record, lead) pair is shuffled independently, so the
    leads of one record land in different batches except by chance (see
    :func:`cross_lead_positive_rate`).

    Unlike ``shuffle=True`` with one generator, a run resumed at epoch e draws
    the same order as an uninterrupted run. Call :meth:`set_epoch` each epoch.
    With ``num_replicas > 1`` (DDP) every rank draws the same permutation, drops
    its tail to a multiple of ``num_replicas`` and takes every num_replicas-th
    item from position ``rank``, so the ranks' items are disjoint and equal in number.
    """

    def __init__(self, n: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if n < 1:
            raise DatasetError("n: nothing to sample")
        if not 0 <= rank < num_replicas:
            raise DatasetError(f"rank: {rank} is not in [0, {num_replicas})")
        if n < num_replicas:
            raise DatasetError(f"n: {n} items cannot be shared by {num_replicas} replicas")
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.num_replicas, self.rank = int(num_replicas), int(rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.n)
        return iter(order[: len(self) * self.num_replicas][self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.n // self.num_replicas
