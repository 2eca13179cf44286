"""Few-shot evaluation with Siamese relation heads (Koch, Zemel & Salakhutdinov, ICML DL workshop 2015).

A head learns, from balanced same-class / different-class pairs of frozen
embeddings, whether two items share a class. N-way K-shot episodes then take K
support patients per class (one item each) and query items from other
patients; each query goes to the class whose prototype (mean support
embedding) the head scores highest. A nearest-prototype cosine baseline runs
on the same episodes. Head-training patients and episode patients are
disjoint, and within an episode no patient is both support and query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import f1_score
from torch import Tensor, nn

from losses import ContrastivePairLoss
from ssl_ecg.data.splits import check_no_leakage
from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate.curve import array_digest, environment, result_fingerprint
from ssl_ecg.utils import seeded

__all__ = ["PairSampler", "SiameseHead", "train_siamese_head", "Episode", "sample_episodes", "FewShotResult",
           "evaluate_episodes", "run_fewshot"]


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
                    n_episodes: int = 200, classes: Sequence | None = None, seed: int = 0,
                    max_tries: int = 50) -> list[Episode]:
    """Draw episodes whose support and query patients are disjoint.

    Each episode takes ``n_way`` classes; for each, K support patients (one
    random item each) and ``n_query`` query items from the class's other
    patients, none of them a support patient of any class in the episode.

    Raises:
        SplitError: a requested class has fewer than K + 1 patients (named, with
            its count), or fewer than ``n_way`` classes qualify.
    """
    labels, patients = np.asarray(labels), np.asarray(patients, dtype=str)
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
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        for _ in range(max_tries):
            ep = _one_episode(rng, eligible, by_class, items, n_way, k_shot, n_query)
            if ep is not None:
                episodes.append(ep)
                break
        else:
            raise SplitError(f"{n_way}-way {k_shot}-shot: could not draw support and query patients disjoint "
                             f"across classes in {max_tries} tries; the classes share too many patients")
    return episodes


def _one_episode(rng, eligible, by_class, items, n_way, k_shot, n_query):
    chosen = rng.choice(len(eligible), n_way, replace=False)
    cls = [eligible[i] for i in chosen]
    support_pat = {c: rng.choice(by_class[c], k_shot, replace=False) for c in cls}
    taken = set(np.concatenate(list(support_pat.values())).tolist())
    support, query, qlab = [], [], []
    for pos, c in enumerate(cls):
        support.append([rng.choice(items[(c, p)]) for p in support_pat[c]])
        others = [p for p in by_class[c] if p not in taken]
        if not others:
            return None
        pool = np.concatenate([items[(c, p)] for p in others])
        q = rng.choice(pool, n_query, replace=len(pool) < n_query)
        query.append(q)
        qlab.append(np.full(n_query, pos))
    return Episode(np.asarray(cls), np.asarray(support), np.concatenate(query), np.concatenate(qlab))


@dataclass
class FewShotResult:
    """Per-method accuracy and macro F1 over episodes: mean and 95% t-interval.

    ``fingerprint`` keys the result as a ``curve.csv`` row is keyed (see
    :func:`run_fewshot`): a stored result may stand in for a new run only when
    the fingerprints are equal. ``provenance`` records where it was computed
    (:func:`ssl_ecg.evaluate.curve.environment`); it is not part of the key.
    """

    n_way: int
    k_shot: int
    n_episodes: int
    summary: dict = field(default_factory=dict)  # method -> {"accuracy": (mean, lo, hi), "macro_f1": (...)}
    per_episode: dict = field(default_factory=dict)  # method -> {"accuracy": array, "macro_f1": array}
    fingerprint: str = ""
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON-ready record of this result: ways, shots, episodes, summary, fingerprint, provenance."""
        return {"n_way": self.n_way, "k_shot": self.k_shot, "n_episodes": self.n_episodes, "summary": self.summary,
                "fingerprint": self.fingerprint, "provenance": self.provenance}


def _ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    m = float(values.mean())
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return m, m - half, m + half


@torch.no_grad()
def evaluate_episodes(features: np.ndarray, episodes: list[Episode], head: SiameseHead | None = None) -> dict:
    """Accuracy and macro F1 per episode for the relation head (if given) and the cosine baseline."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    out: dict = {m: {"accuracy": [], "macro_f1": []} for m in (["siamese"] if head is not None else []) + ["cosine"]}
    for ep in episodes:
        protos = x[torch.as_tensor(ep.support)].mean(1)  # (N, D)
        q = x[torch.as_tensor(ep.query)]  # (Q, D)
        preds = {"cosine": (nn.functional.normalize(q, dim=1) @ nn.functional.normalize(protos, dim=1).T)}
        if head is not None:
            n, nq = len(protos), len(q)
            preds["siamese"] = head(q.repeat_interleave(n, 0), protos.repeat(nq, 1)).reshape(nq, n)
        for m, scores in preds.items():
            p = scores.argmax(1).numpy()
            out[m]["accuracy"].append(float((p == ep.query_labels).mean()))
            out[m]["macro_f1"].append(float(f1_score(ep.query_labels, p, labels=np.arange(len(protos)),
                                                     average="macro", zero_division=0)))
    return {m: {k: np.asarray(v) for k, v in d.items()} for m, d in out.items()}


def run_fewshot(features: np.ndarray, labels: Sequence, patients: Sequence, head_patients: Sequence,
                episode_patients: Sequence, n_way: int, k_shot: int, n_query: int = 5, n_episodes: int = 200,
                train_classes: Sequence | None = None, episode_classes: Sequence | None = None,
                mode: str = "bce", head_steps: int = 1000, seed: int = 0, encoder_hash: str | None = None,
                split_hash: str = "", inputs: np.ndarray | None = None) -> FewShotResult:
    """Train a Siamese head on ``head_patients`` and evaluate N-way K-shot episodes on ``episode_patients``.

    The result's ``fingerprint`` covers the encoder (``encoder_hash``), the
    split (``split_hash``), the items' input signals (a digest of ``inputs``'
    bytes, so the data's preprocessing: rate, leads, normalisation, band,
    bad-lead policy), the items' labels and patients, the head and episode
    patient sets, every setting of this call and
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
    """
    labels, patients = np.asarray(labels), np.asarray(patients, dtype=str)
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
    per = evaluate_episodes(features[eval_idx], episodes, head)
    summary = {m: {k: _ci(v) for k, v in d.items()} for m, d in per.items()}
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
                     "mode": mode, "head_steps": head_steps, "seed": seed},
    })
    return FewShotResult(n_way, k_shot, n_episodes, summary, per, fingerprint=fingerprint, provenance=environment())
