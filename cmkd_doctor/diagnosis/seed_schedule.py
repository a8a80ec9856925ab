"""``--seeds auto``: student seeds added where the verdict needs them, with a guard
against optional stopping.

A fixed number of seeds spends as many on a comparison that is clear at once as on one
that is close. The sequential rule trains :data:`START` seeds per row, then, at each
*look* of a schedule growing by half (4, 6, 9, 14, 21, ... up to ``--max-seeds``), adds
seeds only to the rows whose comparisons the verdict needs and cannot yet decide
(:func:`cmkd_doctor.diagnosis.verdict.undecided`). Every row gets the same seeds in the same
order, so a difference between two rows stays paired over the seeds they share.

Looking again and again until a difference looks clear would call differences clear that
are not there far more often than one look does (optional stopping). The guard is a
Pocock-style boundary: at every look a difference is clear only when its paired t test's
two-sided p value (or, when every seed gives the same difference, the sign test's) is
under one *per-look level*, chosen so that a difference with no true effect is called
clear at *some* look of the schedule in at most :data:`ALPHA` of runs. The per-look level
has no closed form for t statistics with so few degrees of freedom, so :func:`level`
finds it by simulation (paired differences drawn with no true difference: the level is
the ALPHA quantile of each run's smallest p over the looks), deterministic for a
schedule. With the
default schedule (4 to 20 seeds, five looks) it is about 0.0135: a difference needs
about 5.2 standard errors at 4 seeds and 2.7 at 20. The fixed-seed rule (clear beyond
2 standard errors, ``--seeds N``) calls a null difference clear in about 12% of runs at
5 seeds (its z is a t with 4 degrees of freedom); the sequential rule in at most 5%
(``tests/test_seed_schedule.py`` checks both by a fresh simulation).
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from cmkd_doctor.choices import SEEDS_MAX, SEEDS_PRACTICAL, SEEDS_PRACTICAL_WHY, SEEDS_START

START = SEEDS_START  # seeds every row starts with (declared in cmkd_doctor.choices)
MAX_SEEDS = SEEDS_MAX  # --max-seeds' default
GROWTH = 1.5  # each look has about this many times the seeds of the one before
ALPHA = 0.05  # false 'clear' calls on a null difference, over all looks
DRAWS = 40_000  # simulated null runs behind level()
FUTILE = 2.0  # stop adding seeds when a difference would need this times --max-seeds
# --max-seeds at most: beyond, a difference is too small to settle in practice (and the
# simulation behind level() grows with it)
PRACTICAL, PRACTICAL_WHY = SEEDS_PRACTICAL, SEEDS_PRACTICAL_WHY


def looks(max_seeds: int, start: int = START) -> tuple[int, ...]:
    """The seed counts at which the verdict is read: ``start``, then about
    :data:`GROWTH` times more each look, ending at ``max_seeds``."""
    found = [min(start, max_seeds)]
    while found[-1] < max_seeds:
        found.append(min(max_seeds, max(found[-1] + 1, round(found[-1] * GROWTH))))
    return tuple(found)


def has_spread(mean: np.ndarray | float, sd: np.ndarray | float) -> np.ndarray | bool:
    """Do paired differences vary at all? Identical accuracies subtracted in floating
    point leave a spread of rounding error (1e-17), which must count as none, or the t
    statistic would be astronomically large."""
    return sd > 1e-12 * np.maximum(np.abs(mean), 1.0)


def p_values(diffs: np.ndarray) -> np.ndarray:
    """Two-sided p of each row of paired differences ``(runs, n)``: the paired t test's,
    or the sign test's when every difference is the same (no spread to estimate)."""
    from scipy import stats  # imported where used: the CLI's help reads this module

    n = diffs.shape[1]
    if n < 2:
        return np.ones(len(diffs))
    mean, sd = diffs.mean(axis=1), diffs.std(axis=1, ddof=1)
    spread = has_spread(mean, sd)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(spread, mean / (sd / math.sqrt(n)), 0.0)
    p_t = 2 * stats.t.sf(np.abs(t), n - 1)
    p_sign = np.where(mean != 0, 2.0 ** (1 - n), 1.0)  # all n on one side
    return np.where(spread, p_t, p_sign)


def smallest_p(diffs: np.ndarray, schedule: tuple[int, ...]) -> np.ndarray:
    """Each run's smallest p value over the looks of ``schedule`` (``diffs``:
    ``(runs, >= max(schedule))`` paired differences, looked at after the first n of each):
    a run is called clear at some look exactly when this is under the per-look level."""
    return np.min([p_values(diffs[:, :n]) for n in schedule], axis=0)


def false_clear_rate(diffs: np.ndarray, schedule: tuple[int, ...], per_look: float
                     ) -> float:
    """Share of the runs ``diffs`` (no true difference) called clear at some look of
    ``schedule`` at the per-look level ``per_look``."""
    return float((smallest_p(diffs, schedule) < per_look).mean())


@lru_cache(maxsize=64)
def level(schedule: tuple[int, ...], alpha: float = ALPHA) -> float:
    """The per-look level of ``schedule`` whose false 'clear' rate over all its looks is
    ``alpha``: the ``alpha`` quantile of the smallest p value over the looks, in
    :data:`DRAWS` simulated runs of Gaussian paired differences with no true difference
    (the t and sign statistics do not depend on their scale). One look is the plain
    test at ``alpha``."""
    if len(schedule) == 1:
        return alpha
    draws = np.random.default_rng(0).standard_normal((DRAWS, max(schedule)))
    return float(np.quantile(smallest_p(draws, schedule), alpha, method="lower"))


@lru_cache(maxsize=4096)
def threshold(seeds: int, per_look: float, spread: bool = True) -> float:
    """The |z| a difference over ``seeds`` seeds must pass to be clear at ``per_look``:
    the t quantile with ``seeds - 1`` degrees of freedom, or (``spread`` false: every
    seed gave the same difference) the normal deviate that the sign test's z is
    compared with."""
    from scipy import stats

    if not spread:
        return NormalDist().inv_cdf(1 - per_look / 2)
    return float(stats.t.isf(per_look / 2, seeds - 1)) if seeds > 1 else math.inf


def seeds_needed(z: float, seeds: int, needed: float) -> int:
    """Seeds at which a difference at ``z`` over ``seeds`` seeds would pass ``needed``, if
    it kept its size (z grows with the square root of the seeds); ``z`` not 0."""
    return math.ceil(seeds * (needed / abs(z)) ** 2)


def futile(z: float | None, seeds: int, final: float, max_seeds: int) -> bool:
    """Would a difference at ``z`` over ``seeds`` seeds still need more than
    :data:`FUTILE` times ``max_seeds`` to pass ``final`` (the last look's threshold), if
    it kept its size? Then adding seeds for it is not worth their time. Stopping early
    for futility never calls anything clear, so it cannot raise the false-clear rate."""
    if z is None:
        return False
    return z == 0 or seeds_needed(z, seeds, final) > FUTILE * max_seeds
