"""Few-shot evaluation with Siamese relation heads (Koch, Zemel & Salakhutdinov, ICML DL workshop 2015).

A head learns, from balanced same-class / different-class pairs of frozen
embeddings, whether two items share a class. N-way K-shot episodes then take K
support patients per class (one item each) and query items from other
patients. Head-training patients and episode patients are disjoint, and within
an episode no patient is both support and query.

Scoring (:data:`SCORING`). The head is trained on pairs of single items, so a
query is scored the way it was trained by ``"siamese"``: the head's
same-class score of the query against each support item, averaged over the K
items of a class (for ``bce`` the mean same-class probability). For K > 1,
``"siamese_prototype"`` feeds the head the class prototype (the mean support
embedding), a pair it never saw in training; with K = 1 the two coincide. A
nearest-prototype cosine baseline (``"cosine"``) runs on the same episodes.

Intervals. Queries of one patient are not independent, and 200 episodes reuse
a few DS2 patients many times, both as queries and as supports, so a t-interval
over episodes is far too narrow. :func:`episode_bootstrap_design` resamples the
episode *patients* with replacement (Field & Welsh 2007, "Bootstrapping
clustered data", JRSS-B 69(3)) and redraws the episodes from the resampled
pool; :func:`episode_bootstrap` scores them with the frozen embeddings and the
head already trained on the head patients (not resampled, so the variance of
head training and of the single pretraining run is not covered). Every arm is
scored on one design, so :func:`paired_differences` pairs arms replicate by
replicate (bootstrap p, Holm). :func:`query_patient_bootstrap` (supports held
fixed) and the t-interval over episodes are kept as secondary fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse, stats
from sklearn.metrics import f1_score
from torch import Tensor, nn

from losses import ContrastivePairLoss
from ssl_ecg.data.splits import check_no_leakage
from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate.curve import array_digest, environment, result_fingerprint
from ssl_ecg.evaluate.stats import (
    PATIENT_BOOTSTRAP,
    BootstrapResult,
    bootstrap_p_value,
    cluster_counts,
    holm,
    percentile_interval,
    task_rng,
)
from ssl_ecg.utils import seeded

__all__ = ["PairSampler", "SiameseHead", "train_siamese_head", "Episode", "sample_episodes", "FewShotResult",
           "QueryPredictions", "predict_episodes", "evaluate_episodes", "query_patient_bootstrap", "run_fewshot",
           "SCORING", "EPISODE_BOOTSTRAP", "EpisodeBootstrap", "episode_bootstrap_design", "episode_bootstrap",
           "paired_differences"]

#: How each few-shot method scores a query against a class (the keys of a result's summary).
SCORING = {
    "siamese": "pairwise, as the head was trained: the head's same-class score of the query and each of the class's "
               "K support items (bce: sigmoid probability; contrastive: minus the projected distance), averaged "
               "over the K items",
    "siamese_prototype": "the head's score of the query and the class prototype (mean support embedding), a pair "
                         "unlike its training pairs for K > 1; equal to siamese for K = 1",
    "cosine": "cosine similarity of the query and the class prototype (mean support embedding), no head",
}


class PairSampler:
    """Balanced pairs from a labelled pool: half same-class, half different-class.

    Classes are drawn uniformly (not by frequency), so rare classes are seen as
    often as common ones; the two items of a same-class pair are distinct.

    Args:
        labels: class of each item (n,).
        patients: patient of each item (n,); kept to check disjointness from episodes.
    """

    def __init__(self, labels: Sequence, patients: Sequence):
        self.labels = np.asarray(labels)
        self.patients = np.asarray(patients, dtype=str)
        if len(self.labels) != len(self.patients):
            raise ConfigError(f"labels, patients: lengths differ ({len(self.labels)} vs {len(self.patients)})")
        classes, counts = np.unique(self.labels, return_counts=True)
        self.members = {c: np.flatnonzero(self.labels == c) for c in classes}
        self.same_classes = classes[counts >= 2]
        if len(classes) < 2 or len(self.same_classes) == 0:
            raise SplitError(f"pair sampler: need 2+ classes and a class with 2+ items, got counts "
                             f"{dict(zip(classes.tolist(), counts.tolist()))}")
        self.classes = classes

    def sample(self, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, same): item indices of ``n_pairs`` pairs and 1 for same-class pairs."""
        n_same = n_pairs // 2
        n_diff = n_pairs - n_same
        c_same = rng.choice(self.same_classes, n_same)
        i_s, j_s = np.empty(n_same, np.int64), np.empty(n_same, np.int64)
        for c in np.unique(c_same):
            rows = np.flatnonzero(c_same == c)
            m = self.members[c]
            a = rng.integers(0, len(m), len(rows))
            b = (a + rng.integers(1, len(m), len(rows))) % len(m)  # a different member
            i_s[rows], j_s[rows] = m[a], m[b]
        k = len(self.classes)
        ca = rng.integers(0, k, n_diff)
        cb = (ca + rng.integers(1, k, n_diff)) % k
        i_d, j_d = np.empty(n_diff, np.int64), np.empty(n_diff, np.int64)
        for side, cls in ((i_d, ca), (j_d, cb)):
            for c in np.unique(cls):
                rows = np.flatnonzero(cls == c)
                m = self.members[self.classes[c]]
                side[rows] = m[rng.integers(0, len(m), len(rows))]
        same = np.r_[np.ones(n_same), np.zeros(n_diff)].astype(np.float32)
        return np.r_[i_s, i_d], np.r_[j_s, j_d], same


class SiameseHead(nn.Module):
    """Relation head on a pair of embeddings: higher scores mean "same class".

    ``mode="bce"``: score = MLP(|e1 - e2|), a logit trained with binary
    cross-entropy. ``mode="contrastive"``: score = -||g(e1) - g(e2)|| with g an
    MLP projection trained with :class:`losses.ContrastivePairLoss` (margin).
    Inputs are standardised with the training pool's statistics (buffers).

    Args:
        dim: embedding size.
        hidden: MLP width.
        mode: ``"bce"`` or ``"contrastive"``.
    """

    def __init__(self, dim: int, hidden: int = 128, mode: str = "bce"):
        super().__init__()
        if mode not in ("bce", "contrastive"):
            raise ConfigError(f"mode: expected 'bce' or 'contrastive', got {mode!r}")
        self.mode = mode
        out = 1 if mode == "bce" else hidden
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def _norm(self, e: Tensor) -> Tensor:
        return (e - self.mean) / self.std

    def project(self, e: Tensor) -> Tensor:
        """g(e) for the contrastive mode."""
        return self.mlp(self._norm(e))

    def forward(self, e1: Tensor, e2: Tensor) -> Tensor:
        """Scores (B,) of pairs (B, D) x (B, D)."""
        if self.mode == "bce":
            return self.mlp((self._norm(e1) - self._norm(e2)).abs()).squeeze(-1)
        return -(self.project(e1) - self.project(e2)).norm(dim=-1)


def train_siamese_head(features: np.ndarray, labels: Sequence, patients: Sequence, mode: str = "bce",
                       hidden: int = 128, steps: int = 1000, batch_pairs: int = 256, lr: float = 1e-3,
                       margin: float = 1.0, seed: int = 0) -> SiameseHead:
    """Train a :class:`SiameseHead` on balanced pairs from the pool (features (n, D))."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    sampler = PairSampler(labels, patients)
    rng = np.random.default_rng(seed)
    with seeded(seed):
        head = SiameseHead(x.shape[1], hidden, mode)
    head.mean.copy_(x.mean(0))
    head.std.copy_(x.std(0, unbiased=False).clamp_min(1e-6))
    opt = torch.optim.Adam(head.mlp.parameters(), lr=lr)
    bce, contrastive = nn.BCEWithLogitsLoss(), ContrastivePairLoss(margin)
    for _ in range(steps):
        i, j, same = sampler.sample(batch_pairs, rng)
        y = torch.from_numpy(same)
        if mode == "bce":
            loss = bce(head(x[i], x[j]), y)
        else:
            loss = contrastive(head.project(x[i]), head.project(x[j]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@dataclass
class Episode:
    """One N-way K-shot episode: item indices and episode class positions."""

    classes: np.ndarray  # (N,) the dataset classes, in episode order
    support: np.ndarray  # (N, K) item indices, one per support patient
    query: np.ndarray  # (Q,) item indices
    query_labels: np.ndarray  # (Q,) positions in ``classes``


def _class_patients(labels, patients, classes):
    return {c: np.unique(patients[labels == c]) for c in classes}


def sample_episodes(labels: Sequence, patients: Sequence, n_way: int, k_shot: int, n_query: int = 5,
                    n_episodes: int = 200, classes: Sequence | None = None, seed: int | np.random.Generator = 0,
                    max_tries: int = 50, origins: Sequence | None = None) -> list[Episode]:
    """Draw episodes whose support and query patients are disjoint.

    Each episode takes ``n_way`` classes; for each, K support patients (one
    random item each) and ``n_query`` query items from the class's other
    patients, none of them a support patient of any class in the episode.

    ``origins`` (the real patient of each item; default ``patients``) serves
    the episode bootstrap, whose ``patients`` are bootstrap identities (copies
    of a real patient): supports are K distinct identities, while a query may
    not come from the *real* patient of any support in the episode.

    Raises:
        SplitError: a requested class has fewer than K + 1 patients (named, with
            its count), or fewer than ``n_way`` classes qualify.
    """
    labels, patients = np.asarray(labels), np.asarray(patients, dtype=str)
    origins = patients if origins is None else np.asarray(origins, dtype=str)
    if len(origins) != len(patients):
        raise ConfigError(f"origins: {len(origins)} ids for {len(patients)} items; expected one per item")
    if k_shot < 1 or n_way < 2 or n_query < 1 or n_episodes < 1:
        raise ConfigError(f"episodes: need n_way >= 2, k_shot >= 1, n_query >= 1, n_episodes >= 1; got "
                          f"{n_way}, {k_shot}, {n_query}, {n_episodes}")
    pool = np.unique(labels) if classes is None else np.asarray(classes)
    by_class = _class_patients(labels, patients, pool)
    short = {c: len(p) for c, p in by_class.items() if len(p) < k_shot + 1}
    if classes is not None and short:
        c, n = next(iter(short.items()))
        c = c.item() if isinstance(c, np.generic) else c
        raise SplitError(f"class {c!r} has {n} patient(s) in the episode pool; {k_shot}-shot episodes need at least "
                         f"{k_shot + 1} (K support patients and 1+ query patient)")
    eligible = [c for c in pool if c not in short]
    if len(eligible) < n_way:
        raise SplitError(f"{n_way}-way {k_shot}-shot: only {len(eligible)} class(es) have {k_shot + 1}+ patients "
                         f"(patients per class: { {c: len(p) for c, p in by_class.items()} })")
    items = {(c, p): np.flatnonzero((labels == c) & (patients == p)) for c in eligible for p in by_class[c]}
    origin_of = dict(zip(patients.tolist(), origins.tolist()))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        for _ in range(max_tries):
            ep = _one_episode(rng, eligible, by_class, items, n_way, k_shot, n_query, origin_of)
            if ep is not None:
                episodes.append(ep)
                break
        else:
            raise SplitError(f"{n_way}-way {k_shot}-shot: could not draw support and query patients disjoint "
                             f"across classes in {max_tries} tries; the classes share too many patients")
    return episodes


def _one_episode(rng, eligible, by_class, items, n_way, k_shot, n_query, origin_of):
    chosen = rng.choice(len(eligible), n_way, replace=False)
    cls = [eligible[i] for i in chosen]
    support_pat = {c: rng.choice(by_class[c], k_shot, replace=False) for c in cls}
    taken = {origin_of[p] for p in np.concatenate(list(support_pat.values())).tolist()}
    support, query, qlab = [], [], []
    for pos, c in enumerate(cls):
        support.append([rng.choice(items[(c, p)]) for p in support_pat[c]])
        others = [p for p in by_class[c] if origin_of[p] not in taken]
        if not others:
            return None
        pool = np.concatenate([items[(c, p)] for p in others])
        q = rng.choice(pool, n_query, replace=len(pool) < n_query)
        query.append(q)
        qlab.append(np.full(n_query, pos))
    return Episode(np.asarray(cls), np.asarray(support), np.concatenate(query), np.concatenate(qlab))


@dataclass
class QueryPredictions:
    """Every query of every episode with each method's predicted class.

    Attributes:
        episode: (Q,) episode index of each query.
        item: (Q,) item index of each query (into the features given).
        patient: (Q,) the query's patient.
        true: (Q,) true class, as a position in its episode's ``classes``.
        predicted: method -> (Q,) predicted position.
        n_way: classes per episode.
        classes: (E, N) each episode's dataset classes, in episode order (None: unknown).
    """

    episode: np.ndarray
    item: np.ndarray
    patient: np.ndarray
    true: np.ndarray
    predicted: dict
    n_way: int
    classes: np.ndarray | None = None

    def frame(self) -> pd.DataFrame:
        """One row per (method, query): episode, item, patient, true, predicted, correct (tidy, for a CSV).

        ``true`` and ``predicted`` are the dataset's class names when ``classes`` is known, else positions.
        """
        rows = []
        names = None if self.classes is None else np.asarray(self.classes).astype(str)
        for method, pred in self.predicted.items():
            true, got = self.true, pred
            if names is not None:
                true, got = names[self.episode, self.true], names[self.episode, pred]
            rows.append(pd.DataFrame({"method": method, "episode": self.episode, "item": self.item,
                                      "patient": self.patient, "true": true, "predicted": got,
                                      "correct": pred == self.true}))
        return pd.concat(rows, ignore_index=True)


@dataclass
class FewShotResult:
    """Per-method accuracy and macro F1 over episodes with episode-bootstrap intervals.

    ``summary[method]`` holds ``accuracy`` and ``macro_f1`` as (estimate, low, high): the mean over the
    original episodes and the 95% percentile interval of :func:`episode_bootstrap` (episode patients resampled,
    episodes redrawn), with ``n_patients`` (episode patients resampled), ``n_boot``, ``boot_episodes`` (episodes
    per replicate), ``n_redrawn`` and ``interval``. Secondary fields: ``*_query_patient_bootstrap`` (the
    earlier interval, :func:`query_patient_bootstrap`: supports held fixed, too narrow) with
    ``n_query_patients``, and ``*_t_over_episodes`` (episodes treated as independent: far too narrow).
    The estimate is one draw of episodes, so with few episodes it may fall outside the interval of redrawn ones.
    ``scoring`` says how each method scores a query (:data:`SCORING`). ``bootstrap`` keeps the replicates
    (method -> metric -> :class:`~ssl_ecg.evaluate.stats.BootstrapResult`) and ``bootstrap_key`` names their
    design, for :func:`paired_differences`.

    ``fingerprint`` keys the result as a ``curve.csv`` row is keyed (see
    :func:`run_fewshot`): a stored result may stand in for a new run only when
    the fingerprints are equal. ``provenance`` records where it was computed
    (:func:`ssl_ecg.evaluate.curve.environment`); it is not part of the key.
    """

    n_way: int
    k_shot: int
    n_episodes: int
    summary: dict = field(default_factory=dict)  # method -> {"accuracy": (mean, lo, hi), "macro_f1": (...), ...}
    per_episode: dict = field(default_factory=dict)  # method -> {"accuracy": array, "macro_f1": array}
    fingerprint: str = ""
    provenance: dict = field(default_factory=dict)
    predictions: QueryPredictions | None = None
    n_patients: int = 0  # episode patients the bootstrap resamples
    scoring: dict = field(default_factory=lambda: dict(SCORING))
    bootstrap: dict = field(default_factory=dict)  # method -> metric -> BootstrapResult (episode bootstrap)
    bootstrap_key: str = ""
    design: EpisodeBootstrap | None = None  # the replicate episodes, to score another arm on

    def to_dict(self) -> dict:
        """The JSON-ready record of this result: ways, shots, episodes, summary, episode patients, scoring,
        fingerprint, provenance (the per-query predictions go to a CSV: :meth:`QueryPredictions.frame`)."""
        return {"n_way": self.n_way, "k_shot": self.k_shot, "n_episodes": self.n_episodes, "summary": self.summary,
                "n_patients": self.n_patients, "scoring": self.scoring, "fingerprint": self.fingerprint,
                "provenance": self.provenance}


def _ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-interval over episodes (treats episodes as independent: too narrow, kept for comparison)."""
    m = float(values.mean())
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return m, m - half, m + half


@torch.no_grad()
def predict_episodes(features: np.ndarray, episodes: list[Episode], head: SiameseHead | None = None,
                     patients: Sequence | None = None) -> QueryPredictions:
    """Each method's predicted class for every query of every episode (methods: :data:`SCORING`).

    Args:
        features: embeddings (n, D) of the items the episodes index.
        episodes: from :func:`sample_episodes`, all with the same ``n_way``.
        head: the relation head; None scores the cosine baseline only.
        patients: (n,) patient of each item (default: the item index as a string).
    """
    if not episodes:
        raise ConfigError("episodes: expected at least one episode to score, got none")
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    pats = np.arange(len(x)).astype(str) if patients is None else np.asarray(patients, dtype=str)
    if len(pats) != len(x):
        raise ConfigError(f"patients: {len(pats)} ids for {len(x)} items; expected one per item")
    n_way = len(episodes[0].classes)
    methods = (["siamese", "siamese_prototype"] if head is not None else []) + ["cosine"]
    preds: dict = {m: [] for m in methods}
    for ep in episodes:
        if len(ep.classes) != n_way:
            raise ConfigError(f"episodes: expected {n_way}-way episodes throughout, got one with {len(ep.classes)}")
        support = x[torch.as_tensor(ep.support)]  # (N, K, D)
        n, k = support.shape[:2]
        protos = support.mean(1)  # (N, D)
        q = x[torch.as_tensor(ep.query)]  # (Q, D)
        nq = len(q)
        scores = {"cosine": nn.functional.normalize(q, dim=1) @ nn.functional.normalize(protos, dim=1).T}
        if head is not None:
            pair = head(q.repeat_interleave(n * k, 0), support.reshape(n * k, -1).repeat(nq, 1)).reshape(nq, n, k)
            # bce: average probabilities (a logit mean is not a probability); contrastive: mean -distance
            scores["siamese"] = (torch.sigmoid(pair) if head.mode == "bce" else pair).mean(2)
            scores["siamese_prototype"] = head(q.repeat_interleave(n, 0), protos.repeat(nq, 1)).reshape(nq, n)
        for m in methods:
            preds[m].append(scores[m].argmax(1).numpy())
    cat = np.concatenate
    return QueryPredictions(
        episode=cat([np.full(len(ep.query), e) for e, ep in enumerate(episodes)]),
        item=cat([ep.query for ep in episodes]).astype(np.int64), patient=pats[cat([ep.query for ep in episodes])],
        true=cat([ep.query_labels for ep in episodes]).astype(np.int64),
        predicted={m: cat(v).astype(np.int64) for m, v in preds.items()}, n_way=n_way,
        classes=np.stack([np.asarray(ep.classes) for ep in episodes]))


def _weighted_scores(pred: QueryPredictions, method: str, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 of every weight vector at once: weights (B, Q) -> two (B,) arrays.

    Accuracy: sum(w * correct) / sum(w) over all queries (with w = 1 and equal queries per episode, the mean of
    the per-episode accuracies). Macro F1: per episode, F1 of each class from weighted counts
    (2 TP / (2 TP + FP + FN)), averaged over the classes with weighted true queries (a class whose query
    patients all left the replicate has no F1; scoring it 0 would bias every replicate down, while predictions
    into it still count as misses of the true classes); episodes are then averaged with weights sum(w) over their
    queries (w = 1: every class has queries, and this is the plain mean over episodes of sklearn's macro F1 with
    ``labels=range(N)``).
    """
    p, t, e = pred.predicted[method], pred.true, pred.episode
    n_ep, n_way, n_q = int(e.max()) + 1, pred.n_way, len(t)
    correct = (p == t).astype(np.float64)
    total = weights.sum(1)
    acc = weights @ correct / total

    def cells(cls: np.ndarray, mask: np.ndarray) -> sparse.csr_matrix:  # (Q, E * N) indicator of (episode, class)
        rows = np.flatnonzero(mask)
        return sparse.csr_matrix((np.ones(len(rows)), (rows, e[rows] * n_way + cls[rows])), shape=(n_q, n_ep * n_way))

    def counts(m: sparse.csr_matrix) -> np.ndarray:  # (B, E, N)
        return np.asarray((m.T @ weights.T).T).reshape(len(weights), n_ep, n_way)

    tp = counts(cells(t, p == t))
    true = counts(cells(t, np.ones(n_q, bool)))
    denom = true + counts(cells(p, np.ones(n_q, bool)))  # 2TP + FP + FN
    present = true > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
    per_episode = f1.sum(2) / np.maximum(present.sum(2), 1)  # (B, E)
    ep_weight = np.asarray((sparse.csr_matrix((np.ones(n_q), (np.arange(n_q), e)), shape=(n_q, n_ep)).T
                            @ weights.T).T)  # (B, E)
    macro = (per_episode * ep_weight).sum(1) / ep_weight.sum(1)
    return acc, macro


def query_patient_bootstrap(predictions: QueryPredictions, method: str, n_boot: int = 1000,
                            seed: int | np.random.Generator = 0,
                            confidence: float = 0.95) -> dict[str, BootstrapResult]:
    """Percentile intervals of few-shot accuracy and macro F1 from resampling the query patients.

    Replicate b draws P patients with replacement from the P distinct query patients (row b of
    ``rng.integers(0, P, (B, P))``, patients in sorted id order: :func:`~ssl_ecg.evaluate.stats.cluster_counts`);
    every query of a drawn patient, in every episode, counts with the patient's multiplicity, and accuracy and
    macro F1 are recomputed from the weighted queries (see :func:`_weighted_scores`). Duplicating a patient's
    queries changes neither the estimates nor the interval (the cluster is the unit), and every replicate lies
    in [0, 1]. The same seed gives every method the same replicates, so methods (and encoders scored on the
    same episodes) are paired.

    Args:
        predictions: from :func:`predict_episodes`.
        method: a key of ``predictions.predicted``.
        n_boot: replicates.
        seed: seed or ``numpy.random.Generator``.
        confidence: interval coverage.

    Returns:
        ``{"accuracy": BootstrapResult, "macro_f1": BootstrapResult}``.
    """
    if method not in predictions.predicted:
        raise ConfigError(f"method: {method!r} has no predictions; expected one of {sorted(predictions.predicted)}")
    patients, codes = np.unique(np.asarray(predictions.patient, dtype=str), return_inverse=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    weights = cluster_counts(len(patients), n_boot, rng)[:, codes.ravel()].astype(np.float64)  # (B, Q)
    reps = _weighted_scores(predictions, method, weights)
    est = _weighted_scores(predictions, method, np.ones((1, len(codes))))
    return {name: BootstrapResult(float(e[0]), *percentile_interval(r, confidence), r)
            for name, e, r in zip(("accuracy", "macro_f1"), est, reps)}


#: How the few-shot intervals are made (the ``interval`` of a result's summary).
EPISODE_BOOTSTRAP = "episode bootstrap: episode patients resampled, episodes redrawn (percentile)"


@dataclass
class EpisodeBootstrap:
    """The replicate episodes of :func:`episode_bootstrap_design`: one design shared by every arm.

    Item indices point into the episode pool given to :func:`episode_bootstrap_design` (its *original* items;
    a copy of a patient indexes its real items). Queries of every episode are ``n_query`` per class in class
    order, so their true positions are ``np.repeat(np.arange(n_way), n_query)``.

    Attributes:
        support: (B, E, N, K) support item of each class and shot.
        query: (B, E, N * n_query) query items.
        n_redrawn: patient resamples drawn and discarded (see :func:`episode_bootstrap_design`).
        n_patients: distinct episode patients resampled.
        key: digest of the pool (labels, patients) and every setting: arms may share a design only if equal.
    """

    n_way: int
    k_shot: int
    n_query: int
    support: np.ndarray
    query: np.ndarray
    n_redrawn: int
    n_patients: int
    key: str

    @property
    def n_boot(self) -> int:
        return int(self.support.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.support.shape[1])


def _eligible(labels: np.ndarray, patients: np.ndarray, k_shot: int, classes: Sequence | None) -> list:
    """Classes with K + 1 patients, as :func:`sample_episodes` takes them (``classes``: in the order given)."""
    pool = np.unique(labels) if classes is None else np.asarray(classes)
    by_class = _class_patients(labels, patients, pool)
    return [c for c in pool if len(by_class[c]) >= k_shot + 1]


def episode_bootstrap_design(labels: Sequence, patients: Sequence, n_way: int, k_shot: int, n_query: int = 5,
                             n_episodes: int = 200, n_boot: int = 1000, classes: Sequence | None = None,
                             seed: int = 0, max_tries: int = 50) -> EpisodeBootstrap:
    """Replicate episodes of a patient bootstrap over the episode pool (resample patients, then redraw episodes).

    Field & Welsh (2007, "Bootstrapping clustered data", JRSS-B 69(3)) with the patient as the cluster, applied
    to the whole episode design: replicate b draws P patients with replacement from the P distinct episode
    patients (sorted ids; ``rng.integers(0, P, P)``, ``rng = task_rng(seed, "episode bootstrap")``), each drawn
    patient bringing all its items, and then draws ``n_episodes`` episodes from that pool with
    :func:`sample_episodes` on the same generator. Support patients, support items, query patients, query items
    and class choices are therefore all redrawn, so the interval covers the variance of which patients act as
    supports, not only of the queries (:func:`query_patient_bootstrap` holds the supports fixed).

    Copies. A patient drawn m times enters as m bootstrap patients (identity ``f"{patient}#{c}"``, c < m), each
    with a copy of every item: copies count as distinct patients for K distinct supports, for the K + 1 patients
    a class needs, and for the query pool's weight (a twice-drawn patient's items are twice as likely queries).
    They share their real patient for support/query disjointness (``origins`` of :func:`sample_episodes`): a query
    never comes from the real patient of a support in its episode, exactly as in the original design. Treating
    copies as strangers there would score a patient's beats against its own beats and bias every replicate up.

    Redraws. A replicate whose eligible classes (K + 1 bootstrap patients, 2+ real patients) differ from the
    original pool's, or whose episodes cannot be drawn disjoint in ``max_tries`` tries, is discarded and the
    patients redrawn (``n_redrawn`` counts them), so every replicate estimates the same N-way problem; the
    interval is conditional on that (as :func:`ssl_ecg.evaluate.stats.patient_bootstrap` is on class presence).

    Args:
        labels, patients: class and patient of each episode-pool item (n,).
        n_way, k_shot, n_query, n_episodes, classes, max_tries: as :func:`sample_episodes` (``n_episodes`` per
            replicate: fewer than the original's is faster but widens the interval by the extra episode noise).
        n_boot: replicates.
        seed: seed of the generator.

    Returns:
        An :class:`EpisodeBootstrap`; score it with :func:`episode_bootstrap` for each arm.

    Raises:
        SplitError: the original pool cannot form episodes, or more than ``10 * n_boot + 100`` resamples had to be
            discarded (the pool is too small for the design).
    """
    labels, patients = np.asarray(labels), np.asarray(patients, dtype=str)
    if n_boot < 1:
        raise ConfigError(f"n_boot: expected an integer >= 1, got {n_boot}")
    sample_episodes(labels, patients, n_way, k_shot, n_query, 1, classes=classes, seed=0)  # the design is valid
    target = _eligible(labels, patients, k_shot, classes)
    ids, codes = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(codes == r) for r in range(len(ids))]
    rng = task_rng(seed, "episode bootstrap")
    support = np.empty((n_boot, n_episodes, n_way, k_shot), np.int64)
    query = np.empty((n_boot, n_episodes, n_way * n_query), np.int64)
    b = redrawn = 0
    while b < n_boot:
        if redrawn > 10 * n_boot + 100:
            raise SplitError(f"episode bootstrap: {redrawn} patient resamples discarded for {b} kept; the "
                             f"{len(ids)} episode patients are too few for {n_way}-way {k_shot}-shot episodes")
        mult = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        copies = [(r, c) for r in range(len(ids)) for c in range(mult[r])]
        src = np.concatenate([members[r] for r, _ in copies])  # replicate item -> original item
        ident = np.concatenate([np.full(len(members[r]), f"{ids[r]}#{c}") for r, c in copies])
        rep_labels, origin = labels[src], patients[src]
        if _eligible(rep_labels, ident, k_shot, target) != target or any(
                len(np.unique(origin[rep_labels == c])) < 2 for c in target):
            redrawn += 1
            continue
        try:
            eps = sample_episodes(rep_labels, ident, n_way, k_shot, n_query, n_episodes, classes=target, seed=rng,
                                  max_tries=max_tries, origins=origin)
        except SplitError:
            redrawn += 1
            continue
        support[b] = src[np.stack([ep.support for ep in eps])]
        query[b] = src[np.stack([ep.query for ep in eps])]
        b += 1
    key = _design_key(labels, patients, n_way, k_shot, n_query, n_episodes, n_boot, classes, seed, max_tries)
    return EpisodeBootstrap(n_way, k_shot, n_query, support, query, redrawn, len(ids), key)


def _design_key(labels, patients, *settings) -> str:
    """Digest of an episode pool and the design's settings (arms share a design only when it matches)."""
    return result_fingerprint({"kind": "episode bootstrap",
                               "items": array_digest(np.stack([np.asarray(labels).astype(str),
                                                               np.asarray(patients, dtype=str)])),
                               "settings": [None if v is None else [str(c) for c in v] if not np.isscalar(v) else v
                                            for v in settings]})


@torch.no_grad()
def _pair_matrix(x: Tensor, head: SiameseHead, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 16) -> Tensor:
    """(len(rows), len(cols)) pairwise score as ``"siamese"`` averages it (bce: probability; contrastive: -distance)."""
    q, s = x[torch.as_tensor(rows)], x[torch.as_tensor(cols)]
    out = torch.empty(len(rows) * len(cols))
    for start in range(0, len(out), chunk):
        flat = torch.arange(start, min(start + chunk, len(out)))
        score = head(q[flat // len(cols)], s[flat % len(cols)])
        out[flat] = torch.sigmoid(score) if head.mode == "bce" else score
    return out.reshape(len(rows), len(cols))


@torch.no_grad()
def _design_predictions(x: Tensor, head: SiameseHead | None, support: np.ndarray, query: np.ndarray,
                        pairs: tuple[Tensor, np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Predicted positions (M, Q) of each method for M episodes (support (M, N, K), query (M, Q)) at once."""
    m, n, k = support.shape
    nq = query.shape[1]
    sup, q = x[torch.as_tensor(support)], x[torch.as_tensor(query)]  # (M, N, K, D), (M, Q, D)
    protos = sup.mean(2)  # (M, N, D)
    cos = torch.einsum("mqd,mnd->mqn", nn.functional.normalize(q, dim=-1), nn.functional.normalize(protos, dim=-1))
    out = {"cosine": cos.argmax(-1).numpy()}
    if head is not None:
        matrix, row_of, col_of = pairs
        pair = matrix[torch.as_tensor(row_of[query])[:, :, None, None], torch.as_tensor(col_of[support])[:, None]]
        out["siamese"] = pair.mean(-1).argmax(-1).numpy()  # (M, Q, N, K) -> (M, Q)
        if k == 1:
            out["siamese_prototype"] = out["siamese"]
        else:
            d = x.shape[1]
            proto_score = head(q[:, :, None].expand(m, nq, n, d).reshape(-1, d),
                               protos[:, None].expand(m, nq, n, d).reshape(-1, d)).reshape(m, nq, n)
            out["siamese_prototype"] = proto_score.argmax(-1).numpy()
    return out


def _episode_scores(pred: np.ndarray, n_way: int, n_query: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and sklearn's macro F1 (``labels=range(N)``, ``zero_division=0``) of episodes (..., N * n_query)."""
    true = np.repeat(np.arange(n_way), n_query)
    acc = (pred == true).mean(-1)
    f1 = np.zeros(pred.shape[:-1])
    for c in range(n_way):
        tp = ((pred == c) & (true == c)).sum(-1)
        f1 += 2 * tp / ((pred == c).sum(-1) + n_query)  # 2TP + FP + FN = predicted c + true c (n_query > 0)
    return acc, f1 / n_way


def episode_bootstrap(features: np.ndarray, design: EpisodeBootstrap, head: SiameseHead | None = None,
                      confidence: float = 0.95, estimates: dict | None = None,
                      chunk: int = 4096) -> dict[str, dict[str, BootstrapResult]]:
    """Score the replicate episodes of ``design`` with frozen embeddings and a trained head; percentile intervals.

    Each replicate's statistic is the mean over its episodes of the episode accuracy and macro F1 (sklearn's,
    ``labels=range(N)``), every method of :data:`SCORING` scored as :func:`predict_episodes` scores it. The head
    is the one already trained on the head patients: those are not resampled, so the head's training variance
    (and the single pretraining run's) is not in the interval. Arms scored on one design are paired replicate by
    replicate (:func:`paired_differences`).

    Args:
        features: embeddings (n, D) of the episode pool the design indexes.
        design: from :func:`episode_bootstrap_design`.
        head: the relation head; None scores the cosine baseline only.
        confidence: interval coverage.
        estimates: method -> {"accuracy": float, "macro_f1": float}, the point estimates on the original episodes
            (default: the mean over replicates).
        chunk: episodes scored at once (memory: chunk x N x Q x K pair scores).

    Returns:
        method -> ``{"accuracy": BootstrapResult, "macro_f1": BootstrapResult}`` (``method``:
        :data:`EPISODE_BOOTSTRAP`, ``n_redrawn``: the design's).
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if int(max(design.support.max(), design.query.max())) >= len(x):
        raise ConfigError(f"features: {len(x)} rows, but the bootstrap design indexes item "
                          f"{int(max(design.support.max(), design.query.max()))}; expected the design's episode pool")
    b, e = design.support.shape[:2]
    support = design.support.reshape(b * e, design.n_way, design.k_shot)
    query = design.query.reshape(b * e, -1)
    pairs = None
    if head is not None:  # every (query item, support item) score once; episodes gather from it
        rows, cols = np.unique(query), np.unique(support)
        row_of, col_of = np.zeros(len(x), np.int64), np.zeros(len(x), np.int64)
        row_of[rows], col_of[cols] = np.arange(len(rows)), np.arange(len(cols))
        pairs = (_pair_matrix(x, head, rows, cols), row_of, col_of)
    preds: dict = {}
    for start in range(0, b * e, chunk):
        part = _design_predictions(x, head, support[start:start + chunk], query[start:start + chunk], pairs)
        for method, p in part.items():
            preds.setdefault(method, []).append(p)
    out = {}
    for method, p in preds.items():
        acc, f1 = _episode_scores(np.concatenate(p).reshape(b, e, -1), design.n_way, design.n_query)
        reps = {"accuracy": acc.mean(1), "macro_f1": f1.mean(1)}
        est = estimates[method] if estimates is not None else {k: float(v.mean()) for k, v in reps.items()}
        out[method] = {k: BootstrapResult(float(est[k]), *percentile_interval(r, confidence), r, design.n_redrawn,
                                          EPISODE_BOOTSTRAP) for k, r in reps.items()}
    return out


def paired_differences(results: dict, reference: str = "random_init", confidence: float = 0.95) -> dict:
    """Each arm minus ``reference``, per method and metric, from the same episode-bootstrap replicates.

    Every arm must have been scored on one :class:`EpisodeBootstrap` (same resampled patients and episodes, so
    the replicate differences are paired) and on the same original episodes. The difference's estimate is the
    difference of the point estimates, its interval the percentile interval of the per-replicate differences,
    ``p`` the two-sided bootstrap p-value (:func:`~ssl_ecg.evaluate.stats.bootstrap_p_value`) and ``p_holm``
    Holm's adjustment (:func:`~ssl_ecg.evaluate.stats.holm`) over the whole family given: every arm x method x
    metric (call once per K). At K = 1 ``siamese_prototype`` repeats ``siamese`` and still counts (conservative).

    Args:
        results: arm -> :class:`FewShotResult` of one K (with ``bootstrap`` replicates).
        reference: the arm subtracted.
        confidence: interval coverage.

    Returns:
        ``{"reference": reference, "family": comparisons Holm adjusted over, "arms": {arm: {method: {metric:
        {"difference": (estimate, low, high), "p": float, "p_holm": float}}}}}``.
    """
    if reference not in results:
        raise ConfigError(f"reference: arm {reference!r} is not among the results {sorted(results)}")
    ref = results[reference]
    if not ref.bootstrap:
        raise ConfigError(f"results[{reference!r}]: no episode-bootstrap replicates to pair")
    out: dict = {}
    flat = []
    for arm, res in results.items():
        if arm == reference:
            continue
        if res.bootstrap_key != ref.bootstrap_key or not np.array_equal(res.predictions.item, ref.predictions.item):
            raise ConfigError(f"results[{arm!r}]: scored on other episodes or bootstrap replicates than "
                              f"{reference!r}; paired differences need one design")
        for method, metrics in res.bootstrap.items():
            for metric, boot in metrics.items():
                other = ref.bootstrap[method][metric]
                diff = boot.replicates - other.replicates
                cell = {"difference": (boot.estimate - other.estimate, *percentile_interval(diff, confidence)),
                        "p": bootstrap_p_value(diff)}
                out.setdefault(arm, {}).setdefault(method, {})[metric] = cell
                flat.append(cell)
    for cell, adjusted in zip(flat, holm([c["p"] for c in flat])):
        cell["p_holm"] = float(adjusted)
    return {"reference": reference, "family": len(flat), "arms": out}


def evaluate_episodes(features: np.ndarray, episodes: list[Episode], head: SiameseHead | None = None,
                      predictions: QueryPredictions | None = None) -> dict:
    """Accuracy and macro F1 per episode for each method of :data:`SCORING` (the head's only if it is given)."""
    pred = predictions if predictions is not None else predict_episodes(features, episodes, head)
    out: dict = {}
    for m, p in pred.predicted.items():
        acc, f1 = [], []
        for e in range(len(episodes)):
            rows = pred.episode == e
            acc.append(float((p[rows] == pred.true[rows]).mean()))
            f1.append(float(f1_score(pred.true[rows], p[rows], labels=np.arange(pred.n_way), average="macro",
                                     zero_division=0)))
        out[m] = {"accuracy": np.asarray(acc), "macro_f1": np.asarray(f1)}
    return out


def run_fewshot(features: np.ndarray, labels: Sequence, patients: Sequence, head_patients: Sequence,
                episode_patients: Sequence, n_way: int, k_shot: int, n_query: int = 5, n_episodes: int = 200,
                train_classes: Sequence | None = None, episode_classes: Sequence | None = None,
                mode: str = "bce", head_steps: int = 1000, seed: int = 0, encoder_hash: str | None = None,
                split_hash: str = "", inputs: np.ndarray | None = None, n_boot: int = 1000,
                boot_episodes: int | None = None, design: EpisodeBootstrap | None = None) -> FewShotResult:
    """Train a Siamese head on ``head_patients`` and evaluate N-way K-shot episodes on ``episode_patients``.

    Every query's prediction is kept (``result.predictions``); the intervals come from
    :func:`episode_bootstrap` on :func:`episode_bootstrap_design` (seeded by ``seed``; the head, trained on the
    head patients, is not resampled), the query-patient bootstrap and the t-intervals over episodes are extra
    fields. Pass one arm's ``result.design`` as ``design`` to score another arm on the same replicates (it must
    match this pool and these settings) and pair them with :func:`paired_differences`.

    The result's ``fingerprint`` covers the encoder (``encoder_hash``), the
    split (``split_hash``), the items' input signals (a digest of ``inputs``'
    bytes, so the data's preprocessing: rate, leads, normalisation, band,
    bad-lead policy), the items' labels and patients, the head and episode
    patient sets, every setting of this call (``n_boot`` and the scoring too) and
    :data:`~ssl_ecg.evaluate.curve.RESULTS_SCHEMA`; the git commit, library
    versions and hardware go to ``provenance`` instead.

    Args:
        features: frozen embeddings (n, D) of every item.
        labels, patients: class and patient of every item.
        head_patients, episode_patients: disjoint patient sets (checked).
        train_classes: classes the head trains on (default all); classes left
            out are held out, seen only in episodes.
        episode_classes: classes the episodes draw from (default: all with K+1 patients).
        encoder_hash: the encoder's weights hash
            (:func:`~ssl_ecg.evaluate.embed.state_dict_hash`) and, for the
            caller, whatever else decides the features (window, lead mode). None:
            the features' bytes stand in for it (exact, but then a result
            computed on other hardware never matches).
        split_hash: the hash of the run's ``split.json`` (patients only: it does not name the preprocessing).
        inputs: the items' input signals as given to the encoder (e.g. ``(n, L, T)`` from the record cache).
            None: the features' bytes stand in for them (exact, but then a result computed on other hardware
            never matches), so a caller that has the inputs should pass them.
        n_boot: episode-bootstrap (and query-patient bootstrap) replicates.
        boot_episodes: episodes per bootstrap replicate (default ``n_episodes``; fewer is faster and widens the
            interval by their extra episode noise).
        design: replicate episodes drawn for another arm on the same pool (default: drawn here).
    """
    labels, patients = np.asarray(labels), np.asarray(patients, dtype=str)
    if n_boot < 1:
        raise ConfigError(f"n_boot: expected an integer >= 1, got {n_boot}")
    boot_episodes = n_episodes if boot_episodes is None else boot_episodes
    if boot_episodes < 1:
        raise ConfigError(f"boot_episodes: expected an integer >= 1, got {boot_episodes}")
    head_patients = set(map(str, head_patients))
    episode_patients = set(map(str, episode_patients))
    check_no_leakage({"head": head_patients, "episodes": episode_patients})
    in_head = np.isin(patients, list(head_patients))
    if train_classes is not None:
        in_head &= np.isin(labels, list(train_classes))
    in_eval = np.isin(patients, list(episode_patients))
    if not in_head.any() or not in_eval.any():
        raise SplitError(f"few-shot: {int(in_head.sum())} head items and {int(in_eval.sum())} episode items; "
                         "both must be non-empty")
    head = train_siamese_head(features[in_head], labels[in_head], patients[in_head], mode=mode, steps=head_steps,
                              seed=seed)
    eval_idx = np.flatnonzero(in_eval)
    episodes = sample_episodes(labels[eval_idx], patients[eval_idx], n_way, k_shot, n_query, n_episodes,
                               classes=episode_classes, seed=seed)
    pred = predict_episodes(features[eval_idx], episodes, head, patients[eval_idx])
    pred.item = eval_idx[pred.item]  # indices into the caller's items
    per = evaluate_episodes(features[eval_idx], episodes, head, predictions=pred)
    design_args = (labels[eval_idx], patients[eval_idx], n_way, k_shot, n_query, boot_episodes, n_boot,
                   episode_classes, seed, 50)
    if design is None:
        design = episode_bootstrap_design(*design_args[:7], classes=episode_classes, seed=seed)
    elif design.key != _design_key(*design_args):
        raise ConfigError("design: drawn for another episode pool or other settings (ways, shots, queries, "
                          "episodes, n_boot, classes, seed); expected the design of this pool")
    estimates = {m: {k: float(v.mean()) for k, v in d.items()} for m, d in per.items()}
    boots = episode_bootstrap(features[eval_idx], design, head, estimates=estimates)
    n_query_patients = len(np.unique(pred.patient))
    summary = {}
    for m, d in per.items():
        query_boot = query_patient_bootstrap(pred, m, n_boot=n_boot, seed=seed)
        summary[m] = {**{k: (b.estimate, b.low, b.high) for k, b in boots[m].items()},
                      "n_patients": design.n_patients, "n_boot": n_boot, "boot_episodes": boot_episodes,
                      "n_redrawn": design.n_redrawn, "interval": EPISODE_BOOTSTRAP,
                      **{f"{k}_query_patient_bootstrap": (b.estimate, b.low, b.high) for k, b in query_boot.items()},
                      "n_query_patients": n_query_patients,
                      **{f"{k}_t_over_episodes": _ci(v) for k, v in d.items()}}
    fingerprint = result_fingerprint({
        "kind": "fewshot", "encoder": encoder_hash if encoder_hash is not None else array_digest(features),
        "split_hash": split_hash, "label_dtype": labels.dtype.str,
        "inputs": (array_digest(inputs) if inputs is not None
                   else array_digest(features) if encoder_hash is not None else None),
        "items": array_digest(np.stack([labels.astype(str), patients])),
        "head_patients": sorted(head_patients), "episode_patients": sorted(episode_patients),
        "settings": {"n_way": n_way, "k_shot": k_shot, "n_query": n_query, "n_episodes": n_episodes,
                     "train_classes": None if train_classes is None else sorted(map(str, train_classes)),
                     "episode_classes": None if episode_classes is None else [str(c) for c in episode_classes],
                     "mode": mode, "head_steps": head_steps, "seed": seed, "n_boot": n_boot,
                     "boot_episodes": boot_episodes, "scoring": SCORING,
                     "interval": [EPISODE_BOOTSTRAP, f"{PATIENT_BOOTSTRAP} over query patients", "t over episodes"]},
    })
    return FewShotResult(n_way, k_shot, n_episodes, summary, per, fingerprint=fingerprint, provenance=environment(),
                         predictions=pred, n_patients=design.n_patients, bootstrap=boots, bootstrap_key=design.key,
                         design=design)
