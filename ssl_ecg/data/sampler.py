"""Patient-aware batch sampling: k items per patient in each batch where the patient has them."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from ssl_ecg.errors import DatasetError

__all__ = ["PatientBatchSampler", "EpochShuffleSampler", "positive_share"]


def positive_share(patients: Sequence) -> float:
    """Share of batch items that have at least one other item of the same patient."""
    _, inverse, counts = np.unique(np.asarray(patients, dtype=str), return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean()) if len(inverse) else 0.0


class PatientBatchSampler(Sampler[list[int]]):
    """Batches holding ``k`` records of each sampled patient (for CMSC / PCLR across records).

    Each epoch shuffles the patients (seeded by seed and epoch); each patient
    contributes ``min(k, its records)`` records drawn without replacement, and
    consecutive patients fill the batches. With ``num_replicas > 1`` (DDP), rank
    r takes every num_replicas-th batch, and all ranks get the same number.
    ``last_positive_share`` reports the share of items with a same-patient
    partner in the last epoch's batches.

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
        self.groups = [np.flatnonzero(ids == p) for p in np.unique(ids)]
        self.ids = ids
        self.batch_size, self.k, self.seed, self.drop_last = batch_size, k, seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.last_positive_share = float("nan")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        flat: list[int] = []
        for g in rng.permutation(len(self.groups)):
            members = self.groups[g]
            take = min(self.k, len(members))
            flat.extend(rng.choice(members, size=take, replace=False).tolist())
        batches = [flat[i:i + self.batch_size] for i in range(0, len(flat), self.batch_size)]
        if batches and (self.drop_last and len(batches[-1]) < self.batch_size):
            batches.pop()
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[:usable]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        mine = batches[self.rank::self.num_replicas]
        shares = [positive_share(self.ids[b]) for b in mine]
        self.last_positive_share = float(np.mean(shares)) if shares else float("nan")
        return iter(mine)

    def __len__(self) -> int:
        return len(self._all_batches()) // self.num_replicas


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch, drawn from (seed, epoch): resumable, worker-independent.

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
