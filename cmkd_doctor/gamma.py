"""An estimate of gamma, the share of modality-general decisive information (paper Sec. 4).

The paper defines ``gamma = d0 / (d0 + d_sa + d_sb)``: decisive features both modalities
hold, over all decisive features, and leaves separating them in real data to future work
(Sec. 4.3, App. B.4). This module estimates it from the data, as the redundancy of a
partial information decomposition over the union of what the two modalities know about
the label (Williams and Beer 2010; Liang et al., NeurIPS 2023), with MVD's assumption that
nothing decisive exists only in the pair (no synergy):

    R = V_a + V_b - V_ab,    gamma = R / V_ab

where ``V_S`` is how much of the label the features ``S`` predict: the variance of the
(one-hot or multi-hot) labels that a ridge regression on ``S`` explains on held-out rows
(leave-one-out, in closed form from one SVD, the ridge chosen the same way). ``V_a = R +
U_a``, ``V_b = R + U_b`` and ``V_ab = R + U_a + U_b``, so the general part is counted
once and each specific part once.

Why linear: a linear predictor of the label from features that hold part of a latent
decisive score ``s`` is proportional to that part (for Gaussian features,
``Cov(g(s), x) = E[g'(s)] Cov(s, x)``), so explained variances add over independent
parts, as decisive features do in Sec. 4, and do not saturate as accuracy and mutual
information do once one modality alone predicts the label well.

The interval is a bootstrap over rows of the three regressions' held-out residuals
(resampled together). It covers the sampling of rows, not the choice of estimator.

Where it breaks: information a modality holds only non-linearly in its features counts
as missing (extract features from a trained network's last layers first, where classes
are linearly separable); specific information that is itself redundant with the other
modality's specific information is indistinguishable from general; synergy (decisive
only in the pair) makes ``V_ab`` larger than MVD allows and gamma smaller; and with few
rows per feature the held-out ``V_ab`` is shrunk more than ``V_a`` and ``V_b``, which
pushes the estimate up (it is clipped to [0, 1]). On the paper's Gaussian data (App. B.2)
the parts are shares of the hyperplane's variance: with ``delta ~ N(0, I)`` the estimate
follows the weighted gamma that ``truth.json`` records, and with ``--delta ones`` the
count ratio ``|J1 & J2| / |J1 u J2|`` itself (``benchmarks/bench_gamma.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cmkd_doctor.seeds import derive_seed

METHOD = ("partial information decomposition without synergy: gamma = (V_a + V_b - "
          "V_ab) / V_ab, V = label variance a ridge regression explains (leave-one-out)")
MAX_ROWS = 3000  # rows the estimate uses at most (a seeded sample beyond)
BOOTSTRAP = 1000
RIDGE_GRID = np.logspace(-6, 1, 29)  # times the largest squared singular value
LOW_GAMMA = 0.2  # an interval whose upper end is below this: little to transfer


@dataclass(frozen=True)
class GammaEstimate:
    """The estimate, its 95% bootstrap interval and the three explained variances."""

    value: float
    low: float
    high: float
    explained: dict[str, float]  # V_a, V_b, V_ab as shares of the label variance
    n_rows: int

    @property
    def little(self) -> bool:
        """Little modality-general decisive information: the interval lies below
        :data:`LOW_GAMMA`."""
        return self.high < LOW_GAMMA

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "method": METHOD,
                "explained": self.explained, "n_rows": self.n_rows,
                "bootstrap": BOOTSTRAP, "little_to_transfer": self.little,
                "threshold": LOW_GAMMA}


def combine(v_a: np.ndarray | float, v_b: np.ndarray | float, v_ab: np.ndarray | float
            ) -> np.ndarray:
    """gamma from the three explained variances, clipped to [0, 1] (0 where the pair
    explains nothing)."""
    v_a, v_b, v_ab = (np.asarray(v, dtype=np.float64) for v in (v_a, v_b, v_ab))
    with np.errstate(divide="ignore", invalid="ignore"):
        found = (v_a + v_b - v_ab) / v_ab
    return np.where(v_ab > 0, np.clip(found, 0.0, 1.0), 0.0)


def loo_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out residuals of a ridge regression of ``y`` (n, K) on ``x`` (n, d), with
    the ridge that makes them smallest (columns standardised, both centred)."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    x = x[:, scale > 0] / scale[scale > 0]
    y = y - y.mean(axis=0)
    n = len(y)
    if x.shape[1] == 0:  # nothing to regress on: the mean alone, left out
        return y * n / (n - 1)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    uy = u.T @ y  # (r, K)
    best, best_sse = y * n / (n - 1), np.inf
    for lam in RIDGE_GRID * s[0] ** 2:
        shrink = s**2 / (s**2 + lam)
        fitted = u @ (shrink[:, None] * uy)
        # the centring counts as one more fitted parameter per row (1/n of leverage)
        leverage = (u**2) @ shrink + 1.0 / n
        residual = (y - fitted) / (1.0 - leverage)[:, None]
        sse = float((residual**2).sum())
        if sse < best_sse:
            best, best_sse = residual, sse
    return best


def explained(residual: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None
              ) -> np.ndarray:
    """Held-out share of ``y``'s variance explained, over ``rows`` (every row when
    ``None``; a (B, n) array of row indices, a bootstrap, gives B values)."""
    if rows is None:
        rows = np.arange(len(y))[None]
    e2 = (residual**2).sum(axis=1)
    y2 = (y**2).sum(axis=1)
    found = []
    for chunk in np.array_split(rows, max(1, len(rows) // 50)):
        sums = y[chunk].sum(axis=1)  # (c, K)
        total = y2[chunk].sum(axis=1) - (sums**2).sum(axis=1) / chunk.shape[1]
        found.append(1.0 - e2[chunk].sum(axis=1) / np.maximum(total, 1e-300))
    return np.concatenate(found)


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
    a, b = np.asarray(xa[rows]), np.asarray(xb[rows])
    target = (np.asarray(y[rows], np.float64) if multilabel
              else np.eye(n_classes)[np.asarray(y[rows])])
    target = target - target.mean(axis=0)
    residuals = [loo_residuals(x, target) for x in (a, b, np.hstack([a, b]))]
    v = [float(explained(r, target)[0]) for r in residuals]
    draws = rng.integers(0, len(rows), size=(BOOTSTRAP, len(rows)))
    spread = combine(*(explained(r, target, draws) for r in residuals))
    low, high = np.quantile(spread, [0.025, 0.975])
    value = float(combine(*v))
    return GammaEstimate(value, min(float(low), value), max(float(high), value),
                         {"a": v[0], "b": v[1], "ab": v[2]}, len(rows))
