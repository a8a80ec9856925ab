"""An estimate of gamma, the share of modality-general decisive information (paper Sec. 4),
and the pairing check that goes with it.

The paper defines ``gamma = d0 / (d0 + d_sa + d_sb)``: decisive features both modalities
hold, over all decisive features, and leaves separating them in real data to future work
(Sec. 4.3, App. B.4). Crossmodal KD passes the teacher's output *on each row* to the
student *on the same row*, so what counts is what a and b hold about the same row. Two
views that share only the class (an image and a random recording of the same digit:
App. B.1's explanation of AV-MNIST) both predict the label, yet the teacher's soft labels
then carry nothing the student's row can see beyond the class. This module measures
the pair-level share, and keeps the older label-level figure beside it.

**Pair-level gamma** (``value``, ``low``, ``high``), in three steps:

1. *Decisive scores.* ``s_a`` is a's held-out prediction of the label (one-hot or
   multi-hot, centred): a ridge regression on a's standardised features, leave-one-out
   (closed form from one SVD, the ridge chosen the same way). ``s_b`` likewise. Under
   MVD (Sec. 4.1) with a linear decision rule, ``s_a`` is proportional to a's decisive
   score ``w0.z0 + wa.z_sa``.
2. *Same row.* ``Q_ab``: the share of ``s_a``'s variance that a ridge regression on b's
   features predicts, held out (its ridge chosen by generalised cross-validation, as for
   every regression of this step), divided by the share of ``s_a``'s variance that is signal
   rather than estimation noise (the noise from the ridge's leverages: row i's
   leave-one-out prediction carries ``sigma^2 sum_{j != i} H_ij^2 / (1 - H_ii)^2`` of the
   label's residual variance ``sigma^2``). Under MVD, ``Q_ab = d0 / (d0 + d_sa)``: the
   share of a's decisive information that b holds.
3. *Beyond the label.* ``Q0_ab``: the same with b's rows shuffled within each class
   (:data:`NULL_DRAWS` draws, mean), what a row of the same class predicts. The share
   beyond it, chance-corrected as a kappa is: ``q_ab = (Q_ab - Q0_ab) / (1 - Q0_ab)``,
   clipped to [0, 1]. Likewise ``q_ba``. Then, since ``q_ab = d0 / (d0 + d_sa)`` and
   ``q_ba = d0 / (d0 + d_sb)``::

       gamma = 1 / (1 / q_ab + 1 / q_ba - 1)     (0 when either is 0)

Rows paired only by class give ``Q = Q0`` and gamma 0. On the paper's Gaussian data the
label-level part of a paired row's prediction is subtracted too, so the estimate sits a
little below the count ratio where b's class predicts much of a's score
(``benchmarks/bench_gamma.py``).

**Label-level gamma** (``label_level``), the earlier estimate: a partial information
decomposition without synergy over the label variance each view explains (Williams and
Beer 2010; Liang et al., NeurIPS 2023), ``(V_a + V_b - V_ab) / V_ab`` with ``V_S`` the
held-out share of the label's variance a ridge regression on ``S`` explains. It counts
the label information both views predict, whether or not the rows are paired.

**Pairing check** (:class:`Pairing`): ``score`` is the mean of ``Q_ab`` and ``Q_ba``,
``null`` the mean of ``Q0_ab`` and ``Q0_ba``, ``z = (score - null) / SE`` with the
standard error from the bootstrap. Rows are ``paired`` when ``z`` exceeds
:data:`PAIRED_Z`: each view predicts the other's decisive score on the same row better
than on another row of its class.

The intervals are a bootstrap over rows (each draw also takes one of the within-class
shuffles, so they carry the null's noise). They cover the sampling of rows, not the
choice of estimator.

Where it breaks: information a modality holds only non-linearly counts as missing
(extract features from a trained network's last layers first, where classes are close
to linearly separable); specific information that is redundant with the other
modality's specific information looks general; synergy (decisive only in the pair) is
not counted. For multi-label tasks a "class" is a label set: rows whose set is unique
cannot be shuffled, which pulls the null towards the paired score (``shuffled_share``
says how many rows could be).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cmkd_doctor.io.streaming import read_rows
from cmkd_doctor.seeds import derive_seed

METHOD = ("pair-level: q_ab = (Q_ab - Q0_ab) / (1 - Q0_ab), where Q_ab is the share of a's "
          "held-out label prediction that a ridge regression on b predicts on the same row "
          "(noise-corrected) and Q0_ab the same with b's rows shuffled within class; gamma "
          "= 1 / (1/q_ab + 1/q_ba - 1)")
LABEL_METHOD = ("label-level: partial information decomposition without synergy, gamma = "
                "(V_a + V_b - V_ab) / V_ab, V = label variance a ridge regression explains "
                "(leave-one-out)")
MAX_ROWS = 3000  # rows the estimate uses at most (a seeded sample beyond)
BOOTSTRAP = 1000
NULL_DRAWS = 8  # within-class shuffles of b's rows
RIDGE_GRID = np.logspace(-6, 1, 29)  # times the largest squared singular value
LOW_GAMMA = 0.2  # an interval whose upper end is below this: little to transfer
# the pairing score must exceed the within-class null by this many standard errors:
# stricter than the verdict's 2, since one check decides how a whole run is read (on 360
# class-only Gaussian data sets, z > 2 in 6 and z > 3 in none; benchmarks/bench_gamma.py)
PAIRED_Z = 3.0
# a decisive score with less signal than this share of its variance is not compared
MIN_RELIABILITY = 0.1


@dataclass(frozen=True)
class Pairing:
    """Do the rows of a and b share more than their class?

    ``score``: how much of each view's decisive score the other view's same row predicts
    (mean of ``Q_ab`` and ``Q_ba``); ``null``: the same with b's rows shuffled within
    class; ``z = (score - null) / SE``; ``paired`` when ``z > PAIRED_Z``.
    """

    score: float
    null: float
    z: float | None
    paired: bool
    draws: int
    shuffled_share: float  # rows in a class (label set) of two or more

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "null": self.null, "z": self.z, "paired": self.paired,
                "threshold": PAIRED_Z, "draws": self.draws,
                "shuffled_share": self.shuffled_share,
                "rule": "z = (score - null) / bootstrap SE above the threshold"}


@dataclass(frozen=True)
class GammaEstimate:
    """The pair-level estimate with its 95% bootstrap interval, the label-level one, the
    cross-predictions behind them and the pairing check."""

    value: float
    low: float
    high: float
    label_level: dict[str, Any]  # value, low, high, explained {a, b, ab}, explained_low
    cross: dict[str, dict[str, float]]  # a_to_b / b_to_a: same_row, same_class, beyond
    pairing: Pairing
    n_rows: int

    @property
    def little(self) -> bool:
        """Little modality-general decisive information: the interval lies below
        :data:`LOW_GAMMA`."""
        return self.high < LOW_GAMMA

    @property
    def explained(self) -> dict[str, float]:
        """V_a, V_b, V_ab: the held-out shares of the label variance each view explains."""
        return self.label_level["explained"]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "method": METHOD,
                "label_level": self.label_level, "cross": self.cross,
                "n_rows": self.n_rows, "bootstrap": BOOTSTRAP, "null_draws": NULL_DRAWS,
                "little_to_transfer": self.little, "threshold": LOW_GAMMA}


def combine(v_a: np.ndarray | float, v_b: np.ndarray | float, v_ab: np.ndarray | float
            ) -> np.ndarray:
    """Label-level gamma from the three explained variances, clipped to [0, 1] (0 where
    the pair explains nothing)."""
    v_a, v_b, v_ab = (np.asarray(v, dtype=np.float64) for v in (v_a, v_b, v_ab))
    with np.errstate(divide="ignore", invalid="ignore"):
        found = (v_a + v_b - v_ab) / v_ab
    return np.where(v_ab > 0, np.clip(found, 0.0, 1.0), 0.0)


def combine_shares(q_ab: np.ndarray | float, q_ba: np.ndarray | float) -> np.ndarray:
    """Pair-level gamma from the shares of each view's decisive information the other
    holds: ``q_ab = d0 / (d0 + d_sa)`` and ``q_ba = d0 / (d0 + d_sb)`` give
    ``d0 / (d0 + d_sa + d_sb)`` (0 when either share is 0)."""
    q_ab, q_ba = (np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0) for q in (q_ab, q_ba))
    with np.errstate(divide="ignore", invalid="ignore"):
        found = 1.0 / (1.0 / q_ab + 1.0 / q_ba - 1.0)
    return np.where((q_ab > 0) & (q_ba > 0), found, 0.0)


class Ridge:
    """Ridge regressions on one set of features, leave-one-out in closed form from one SVD
    (columns standardised, constant columns dropped, both sides centred)."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(axis=0)
        scale = x.std(axis=0)
        x = x[:, scale > 0] / scale[scale > 0]
        self.n = len(x)
        if x.shape[1] == 0:  # nothing to regress on
            self.u, self.s2 = np.zeros((self.n, 0)), np.zeros(0)
        else:
            self.u, s, _ = np.linalg.svd(x, full_matrices=False)  # u: (n, r)
            self.s2 = s**2
        self.u2 = self.u**2

    def loo(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """Leave-one-out residuals of ``y`` (n, K) with the ridge from :data:`RIDGE_GRID`
        that makes them smallest, and that ridge (one product per block of ridges)."""
        y = y - y.mean(axis=0)
        n, k = y.shape
        if not len(self.s2):  # the mean alone, left out
            return y * n / (n - 1), 0.0
        uy = self.u.T @ y  # (r, K)
        best, best_sse, best_lam = y * n / (n - 1), np.inf, 0.0
        lams = RIDGE_GRID * self.s2[0]
        block = max(1, (1 << 23) // (n * k))  # ridges per product (64 MiB)
        for start in range(0, len(lams), block):
            lam = lams[start: start + block]  # (c,)
            shrink = self.s2[:, None] / (self.s2[:, None] + lam[None, :])  # (r, c)
            fitted = (self.u @ (shrink[:, :, None] * uy[:, None, :]).reshape(
                len(self.s2), -1)).reshape(n, len(lam), k)
            residual = (y[:, None] - fitted) / (1.0 - self.leverage(shrink))[:, :, None]
            sse = (residual**2).sum(axis=(0, 2))  # (c,)
            j = int(np.argmin(sse))
            if sse[j] < best_sse:
                best, best_sse, best_lam = residual[:, j], sse[j], float(lam[j])
        return best, best_lam

    def loo_gcv(self, ys: list[np.ndarray]) -> list[np.ndarray]:
        """Leave-one-out residuals of several targets (n, K), each with the ridge of the
        grid with the smallest generalised cross-validation error (Golub, Heath and Wahba
        1979: leave-one-out with every leverage replaced by their mean, computed from the
        singular values alone), so only the chosen ridge's residuals are formed."""
        n = self.n
        ys = [y - y.mean(axis=0) for y in ys]
        if not len(self.s2):  # the mean alone, left out
            return [y * n / (n - 1) for y in ys]
        lams = RIDGE_GRID * self.s2[0]
        shrink = self.s2[:, None] / (self.s2[:, None] + lams[None, :])  # (r, L)
        df = shrink.sum(axis=0) + 1.0  # the centring: one more parameter
        found = []
        for y in ys:
            uy = self.u.T @ y  # (r, K)
            energy = (uy**2).sum(axis=1)  # (r,)
            outside = float((y**2).sum() - energy.sum())  # beyond the span of x
            sse = outside + ((1.0 - shrink) ** 2).T @ energy  # (L,)
            lam = lams[int(np.argmin(sse / (n - df) ** 2))]
            found.append(self._residual(y, uy, lam))
        return found

    def _residual(self, y: np.ndarray, uy: np.ndarray, lam: float) -> np.ndarray:
        """Leave-one-out residuals of centred ``y`` (n, K) with ridge ``lam``; ``uy`` is
        ``u.T @ y``."""
        shrink = self.s2 / (self.s2 + lam)
        return (y - self.u @ (shrink[:, None] * uy)) / (1.0 - self.leverage(shrink))[:, None]

    def leverage(self, shrink: np.ndarray) -> np.ndarray:
        """H_ii, the centring counting as one more fitted parameter (1/n); ``shrink`` (r,)
        or (r, c) for c ridges."""
        return self.u2 @ shrink + 1.0 / self.n

    def prediction_noise(self, lam: float) -> np.ndarray:
        """Per row, ``sum_{j != i} H_ij^2 / (1 - H_ii)^2``: how much of the target's
        residual variance enters row i's leave-one-out prediction."""
        if not len(self.s2):
            return np.full(self.n, 1.0 / (self.n - 1))
        shrink = self.s2 / (self.s2 + lam)
        h = self.leverage(shrink)
        square = self.u2 @ shrink**2 + 1.0 / self.n  # (H^2)_ii
        return (square - h**2) / (1.0 - h) ** 2


def loo_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out residuals of a ridge regression of ``y`` (n, K) on ``x`` (n, d), with
    the ridge that makes them smallest (columns standardised, both centred)."""
    return Ridge(x).loo(y)[0]


def explained(residual: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
              spread: np.ndarray | None = None) -> np.ndarray:
    """Held-out share of ``y``'s variance explained, over every row (``weights`` ``None``)
    or, for a bootstrap, each row of ``weights`` (B, n): how often each row was drawn
    (:func:`bootstrap_weights`); gives B values. ``spread``: ``_spread(y, weights)`` when
    already known."""
    if weights is None:
        weights = np.ones((1, len(y)))
    if spread is None:
        spread = _spread(y, weights)
    return 1.0 - weights @ (residual**2).sum(axis=1) / np.maximum(spread, 1e-300)


def _spread(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The sum of squares of ``y`` (n, K) about its mean, over each draw's rows -> (B,)."""
    m = weights.sum(axis=1)
    return weights @ (y**2).sum(axis=1) - ((weights @ y) ** 2).sum(axis=1) / m


def bootstrap_weights(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` rows occurs in each draw of row indices (B, m) -> (B, n)."""
    flat = (np.arange(len(draws))[:, None] * n + draws).reshape(-1)
    return np.bincount(flat, minlength=len(draws) * n).reshape(len(draws), n).astype(
        np.float64)


def within_class_shuffles(groups: np.ndarray, draws: int, rng: np.random.Generator
                          ) -> list[np.ndarray]:
    """``draws`` permutations of the rows that move each row only within its group."""
    found = []
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    members = np.split(order, bounds)
    for _ in range(draws):
        p = np.arange(len(groups))
        for m in members:
            p[m] = m[rng.permutation(len(m))]
        found.append(p)
    return found


class _Direction:
    """How much of one view's decisive score the other view predicts, on the same row
    and on a row of the same class (steps 2 and 3 of the module docstring)."""

    def __init__(self, score: np.ndarray, noise: np.ndarray, other: Ridge,
                 shuffles: list[np.ndarray]):
        score = score - score.mean(axis=0)  # (n, K)
        # shares of variance and ridge fits are the same in any orthonormal basis of the
        # score's columns: keep the components that hold all but 1e-6 of its variance
        # (with many classes, far fewer columns than K)
        u, sv, _ = np.linalg.svd(score, full_matrices=False)
        energy = np.cumsum(sv**2) / max(float((sv**2).sum()), 1e-300)
        keep = int(np.searchsorted(energy, 1.0 - 1e-6)) + 1
        self.score = u[:, :keep] * sv[:keep]  # (n, q)
        self.noise = noise  # (n,): row i's estimation-noise variance, summed over K
        # every regression chooses its own ridge, the same way: a ridge chosen on the
        # same rows and reused for the shuffles would favour the same rows. b's row p[i]
        # beside a's row i: regress the score moved back, and move the residuals forward
        found = other.loo_gcv([self.score] + [self.score[np.argsort(p)] for p in shuffles])
        self.same_row = found[0]
        self.same_class = [moved[p] for moved, p in zip(found[1:], shuffles, strict=True)]

    def shares(self, rows: np.ndarray, draw: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Q and Q0 over the rows of each bootstrap draw (``rows``: weights (B, n), see
        :func:`bootstrap_weights`), each divided by the score's reliability there; Q0 from
        shuffle ``draw[k]`` for draw k (their mean when ``draw`` is ``None``)."""
        spread = _spread(self.score, rows)
        reliability = 1.0 - rows @ self.noise / np.maximum(spread, 1e-300)
        q = explained(self.same_row, self.score, rows, spread)
        nulls = np.stack([explained(r, self.score, rows, spread) for r in self.same_class])
        q0 = (nulls.mean(axis=0) if draw is None
              else nulls[draw, np.arange(len(rows))])
        scale = np.where(reliability < MIN_RELIABILITY, np.inf, reliability)
        return np.minimum(q / scale, 1.0), np.minimum(q0 / scale, 1.0)


def _beyond(q: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """The kappa-style share beyond what a row of the same class predicts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        found = (q - q0) / (1.0 - q0)
    return np.clip(np.where(q0 < 1.0, found, 0.0), 0.0, 1.0)


def class_groups(y: np.ndarray, multilabel: bool) -> np.ndarray:
    """One group id per row: its class, or for multi-label tasks its label set."""
    if not multilabel:
        return np.asarray(y)
    return np.unique(np.asarray(y), axis=0, return_inverse=True)[1].reshape(-1)


def gamma_bytes(n_rows: int, d_a: int, d_b: int) -> int:
    """Host memory :func:`estimate_gamma` holds at its peak, estimated from its sizes
    before any work: float64 copies and SVDs of each view and of both together (at most
    :data:`MAX_ROWS` rows), the bootstrap weights, and the ridge products' fixed blocks.
    Measured with tracemalloc on 1,000-3,000 rows of 100-9,000 features (``python
    benchmarks/bench_gamma.py --memory``): the peaks are 11-75% of it, the wider the
    larger."""
    n = min(n_rows, MAX_ROWS)
    width = d_a + d_b
    return (1 << 28) + 8 * n * (4 * width + 2 * min(n, width)) + 32 * BOOTSTRAP * n


def estimate_gamma(xa: np.ndarray, xb: np.ndarray, y: np.ndarray, n_classes: int,
                   multilabel: bool, seed: int, rows: np.ndarray | None = None
                   ) -> GammaEstimate:
    """Estimate gamma from paired features and labels (see the module docstring).

    ``y`` holds class ids, or a multi-hot matrix when ``multilabel``; ``rows`` picks the
    rows to use (every row when ``None``), of which at most :data:`MAX_ROWS`, drawn with
    ``seed``.
    """
    rng = np.random.default_rng(derive_seed(seed, "gamma"))
    rows = np.arange(len(y)) if rows is None else np.asarray(rows)
    if len(rows) > MAX_ROWS:
        rows = np.sort(rng.choice(rows, MAX_ROWS, replace=False))
    # read_rows: a sparse sample gathered through a memory map would map in the whole file
    a, b = read_rows(xa, rows), read_rows(xb, rows)
    labels = np.asarray(y[rows])
    target = (labels.astype(np.float64) if multilabel else np.eye(n_classes)[labels])
    target = target - target.mean(axis=0)
    n = len(rows)
    draws = bootstrap_weights(rng.integers(0, n, size=(BOOTSTRAP, n)), n)

    ridge_a, ridge_b = Ridge(a), Ridge(b)
    label_level, (res_a, lam_a), (res_b, lam_b) = label_level_gamma(ridge_a, ridge_b, a, b,
                                                                     target, draws)
    # steps 2 and 3: each view's decisive score (step 1: the label regressions' held-out
    # predictions) predicted from the other view, on the same row and on rows of its class
    groups = class_groups(labels, multilabel)
    _, counts = np.unique(groups, return_counts=True)
    shuffled_share = float(counts[counts > 1].sum() / n)
    shuffles = within_class_shuffles(groups, NULL_DRAWS, rng)
    sigma2 = [float((r**2).mean(axis=0).sum()) for r in (res_a, res_b)]
    directions = {
        "a_to_b": _Direction(target - res_a, sigma2[0] * ridge_a.prediction_noise(lam_a),
                             ridge_b, shuffles),
        "b_to_a": _Direction(target - res_b, sigma2[1] * ridge_b.prediction_noise(lam_b),
                             ridge_a, [np.argsort(p) for p in shuffles])}
    pick = np.arange(BOOTSTRAP) % NULL_DRAWS  # the shuffle each bootstrap draw takes
    point = {k: d.shares(np.ones((1, n))) for k, d in directions.items()}  # (Q, Q0)
    boot = {k: d.shares(draws, pick) for k, d in directions.items()}
    beyond = {k: _beyond(*point[k]) for k in directions}
    beyond_boot = {k: _beyond(*boot[k]) for k in directions}
    value = float(combine_shares(beyond["a_to_b"], beyond["b_to_a"])[0])
    low, high = np.quantile(combine_shares(beyond_boot["a_to_b"], beyond_boot["b_to_a"]),
                            [0.025, 0.975])
    cross = {k: {"same_row": float(point[k][0][0]), "same_class": float(point[k][1][0]),
                 "beyond_label": float(beyond[k][0]),
                 "beyond_label_low": float(np.quantile(beyond_boot[k], 0.025)),
                 "beyond_label_high": float(np.quantile(beyond_boot[k], 0.975))}
             for k in directions}

    # the pairing check: the same-row shares against the within-class shuffles'
    score = float(np.mean([c["same_row"] for c in cross.values()]))
    null = float(np.mean([c["same_class"] for c in cross.values()]))
    gap = sum(q - q0 for q, q0 in boot.values()) / 2
    se = float(gap.std(ddof=1))
    z = (score - null) / se if se > 0 else None
    pairing = Pairing(score, null, z, z is not None and z > PAIRED_Z, NULL_DRAWS,
                      shuffled_share)
    return GammaEstimate(value, min(float(low), value), max(float(high), value),
                         label_level, cross, pairing, n)


def label_level_gamma(ridge_a: Ridge, ridge_b: Ridge, a: np.ndarray, b: np.ndarray,
                      target: np.ndarray, draws: np.ndarray
                      ) -> tuple[dict[str, Any], tuple[np.ndarray, float],
                                 tuple[np.ndarray, float]]:
    """The label-level estimate ``(V_a + V_b - V_ab) / V_ab`` with its bootstrap interval
    (``draws``: weights (B, n)), and a's and b's leave-one-out residuals of ``target``
    with their ridges."""
    found_a, found_b = ridge_a.loo(target), ridge_b.loo(target)
    residuals = [found_a[0], found_b[0], Ridge(np.hstack([a, b])).loo(target)[0]]
    v = [float(explained(r, target)[0]) for r in residuals]
    spread = _spread(target, draws)
    boot_v = [explained(r, target, draws, spread) for r in residuals]
    value = float(combine(*v))
    low, high = np.quantile(combine(*boot_v), [0.025, 0.975])
    v_low = [float(np.quantile(s, 0.025)) for s in boot_v]
    return ({"value": value, "low": min(float(low), value),
             "high": max(float(high), value), "method": LABEL_METHOD,
             "explained": {"a": v[0], "b": v[1], "ab": v[2]},
             "explained_low": {"a": v_low[0], "b": v_low[1], "ab": v_low[2]}},
            found_a, found_b)
