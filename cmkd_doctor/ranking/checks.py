"""How far to trust a ranking: the checks ``rank`` runs on what Algorithm 1 computed
(the aligned networks' agreement, stability over restarts, significantly negative
channels, a modality at chance). Each returns its figures; :mod:`cmkd_doctor.ranking.findings`
reads them into findings and :mod:`cmkd_doctor.wording` words them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from cmkd_doctor.choices import Z
from cmkd_doctor.teachers.masks import n_nullified


def at_chance(side: str, label_level: dict[str, Any], metrics: dict[str, Any],
              labels: Any, rows: np.ndarray) -> dict[str, Any]:
    """Does modality ``side`` predict the labels at all? At chance when a linear read-out
    explains none of the label variance held out (the 95% interval of V reaches 0) and,
    for single-label tasks, the aligned network's accuracy on ``rows`` is within 2
    binomial standard errors of always guessing the commonest class there."""
    low = label_level["explained_low"][side]
    found: dict[str, Any] = {"at_chance": bool(low <= 0), "explained": label_level[
        "explained"][side], "explained_low": low}
    part = "test" if metrics.get("test") else "train"
    if not labels.multilabel and metrics.get(part):
        y = np.asarray(labels.y[rows])
        base = float(np.bincount(y, minlength=labels.n_classes).max() / len(y))
        accuracy = metrics[part]["accuracy"]
        se = math.sqrt(max(base * (1 - base), 1e-12) / len(y))
        found.update(metric="accuracy", value=accuracy, chance=base, rows=part)
        found["at_chance"] = found["at_chance"] and accuracy - base <= Z * se
    return found


# Alignment below this is flagged: the salience then measures noise more than shared
# information (chosen from measurements, see docs/data.md, "Real data").
ALIGNMENT_THRESHOLD = 0.5


def alignment(f1: torch.Tensor, f2: torch.Tensor, rows: str) -> dict[str, Any]:
    """How much of f1's output variation f2 reproduces on the same rows (R^2).

    Both ``(n, K)`` logits are centred per row (softmax ignores a shift shared by a row's
    logits), then ``score = 1 - sum((f1 - f2)^2) / sum((f1 - mean_rows(f1))^2)``: 1 when
    f2 reproduces f1 exactly, 0 when it does no better than f1's average output, negative
    when worse. Algorithm 1 reads the networks' disagreement after permuting a channel as
    modality-general information only if they agree before it.
    """
    a = f1.double() - f1.double().mean(-1, keepdim=True)
    b = f2.double() - f2.double().mean(-1, keepdim=True)
    spread = float((a - a.mean(0)).square().sum())
    score = 1.0 - float((a - b).square().sum()) / spread if spread > 0 else 0.0
    return {"score": score, "reliable": score >= ALIGNMENT_THRESHOLD,
            "threshold": ALIGNMENT_THRESHOLD, "rows": rows}


# A ranking is unstable when restarts agree on fewer of the channels that matter than
# this (chosen from measurements, see docs/data.md, "Real data").
STABILITY_THRESHOLD = 0.6


# The channels that matter: salience significantly above zero (Benjamini-Hochberg at this
# false discovery rate over the informative channels) and not negligible (at least this
# share of the most salient channel's: a network that learned a tiny weight on a noise
# channel raises Dist by a tiny but consistent amount when it is permuted).
DECISIVE_FDR = 0.05


DECISIVE_MIN_SALIENCE = 0.05


def decisive_channels(increase: np.ndarray, salience: np.ndarray,
                      informative: np.ndarray) -> np.ndarray:
    """The informative channels whose permutation significantly and not negligibly raises
    Dist (sorted).

    ``increase`` is (d, n): the per-repeat increases of every restart together. A channel's
    one-sided p-value comes from ``z = mean / SE`` over its n values (normal
    approximation); the Benjamini-Hochberg step-up at :data:`DECISIVE_FDR` keeps the
    expected share of noise channels among those found at or below 5%. Of those, the
    channels whose ``salience`` (max 1) reaches :data:`DECISIVE_MIN_SALIENCE` matter.
    """
    values = np.asarray(increase, dtype=np.float64)[informative]
    if values.shape[1] < 2 or not len(values):
        return informative[:0]
    mean = values.mean(axis=1)
    se = values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, mean / se, np.where(mean > 0, np.inf, 0.0))
    p = 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))
    order = np.argsort(p, kind="stable")
    passed = np.flatnonzero(p[order] <= DECISIVE_FDR * np.arange(1, len(p) + 1) / len(p))
    found = np.sort(informative[order[: passed[-1] + 1]]) if len(passed) else informative[:0]
    return found[np.asarray(salience)[found] >= DECISIVE_MIN_SALIENCE]


def ranking_stability(saliences: list[np.ndarray], constant: np.ndarray,
                      increase: np.ndarray, auto: bool = False) -> dict[str, Any]:
    """How much the rankings of several restarts agree on the channels that matter.

    The channels that matter (``decisive``) are those whose salience is significantly
    and not negligibly above zero (:func:`decisive_channels`, on every restart's repeats
    together and their mean salience); with k
    of them, ``top_overlap`` is the mean pairwise share of their k most salient channels
    that two restarts have in common, and ``kendall_tau`` the mean pairwise Kendall tau-b
    of the decisive channels' salience. Channels the networks ignore are left out, so
    their arbitrary order does not count. Unstable when the overlap is below
    :data:`STABILITY_THRESHOLD`, or when no channel matters. ``all_channels`` keeps the
    same figures over every informative channel (the overlap of the half a general
    teacher keeps at r = 0.5).
    """
    found: dict[str, Any] = {"restarts": len(saliences), "auto": auto,
                             "threshold": STABILITY_THRESHOLD, "fdr": DECISIVE_FDR,
                             "min_salience": DECISIVE_MIN_SALIENCE,
                             "rule": "top-k overlap over the k channels whose salience is "
                                     "significantly above zero (Benjamini-Hochberg) and at "
                                     "least min_salience"}
    informative = np.setdiff1d(np.arange(len(saliences[0])), constant)
    if len(saliences) < 2 or len(informative) < 2:
        return {**found, "kendall_tau": None, "top_overlap": None, "stable": None,
                "decisive": None, "all_channels": None}
    mean = np.mean(saliences, axis=0)
    decisive = decisive_channels(increase, mean / max(float(np.abs(mean).max()), 1e-300),
                                 informative)
    pairs = [(i, j) for i in range(len(saliences)) for j in range(i + 1, len(saliences))]

    def agreement(channels: np.ndarray, keep: int) -> tuple[float | None, float | None]:
        if keep == 0:
            return None, None
        taus, overlaps = [], []
        for i, j in pairs:
            a, b = saliences[i][informative], saliences[j][informative]
            top_a = set(np.argsort(-a, kind="stable")[:keep].tolist())
            top_b = set(np.argsort(-b, kind="stable")[:keep].tolist())
            overlaps.append(len(top_a & top_b) / keep)
            if len(channels) >= 2:
                taus.append(kendall_tau(saliences[i][channels], saliences[j][channels]))
        return (float(np.mean(taus)) if taus else None), float(np.mean(overlaps))

    tau, overlap = agreement(decisive, len(decisive))
    all_tau, all_overlap = agreement(informative,
                                     len(informative) - n_nullified(0.5, len(informative)))
    return {**found, "kendall_tau": tau, "top_overlap": overlap,
            "stable": overlap is not None and overlap >= STABILITY_THRESHOLD,
            "decisive": len(decisive), "decisive_channels": decisive.tolist(),
            "all_channels": {"kendall_tau": all_tau, "top_overlap": all_overlap}}


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (ties counted as in tau-b; 0 when either is
    constant), by scipy's O(n log n) algorithm in O(n) memory."""
    from scipy.stats import kendalltau

    tau = kendalltau(np.asarray(a, np.float64), np.asarray(b, np.float64)).statistic
    return 0.0 if math.isnan(tau) else float(tau)


def negative_channels(increase: np.ndarray) -> dict[str, Any]:
    """Channels whose permutation brings the networks significantly closer: the mean
    increase over repeats below -2 standard errors (over the repeats)."""
    repeats = increase.shape[1]
    if repeats < 2:
        return {"count": None, "channels": [], "rule": "needs M >= 2 repeats"}
    se = increase.std(axis=1, ddof=1) / np.sqrt(repeats)
    found = np.flatnonzero(increase.mean(axis=1) < -Z * se)
    return {"count": int(len(found)), "channels": found.tolist(),
            "rule": "mean increase over the repeats below -2 standard errors"}

