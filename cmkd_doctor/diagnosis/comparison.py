"""The student comparison, in the shape of the paper's Table 4: one row per teacher.

Every row's students share the same seeds (the same initialisations and minibatch
orders), so rows differ only by their teacher, and a difference between two rows is
taken seed by seed, over the seeds both rows have (:func:`difference`). That one
paired difference is the number every table, report, JSON document and verdict shows
for a comparison; :mod:`cmkd_doctor.diagnosis.verdict` reads what it means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from cmkd_doctor import choices
from cmkd_doctor.diagnosis.seed_schedule import ALPHA, has_spread, level, seeds_needed, threshold
from cmkd_doctor.schemas import stamp

# the rows every comparison has: No-KD, Regular-KD, and the knowledge-free control
# (cmkd_doctor.teachers.control): soft targets as soft as Regular-KD's, from the labels
BASELINES = ("none", "regular", "control")


# The one rule every comparison of the verdict uses: a difference between two rows is
# clear when its mean over seeds is more than Z paired standard errors from zero.
Z = choices.Z  # declared in cmkd_doctor.choices (the help reads it there)


def paired(a: Row, b: Row) -> np.ndarray:
    """Row a minus row b, seed by seed, over the seeds both have (every row's seeds are
    the same list, so the first n of each; ``--seeds auto`` gives some rows more)."""
    n = min(len(a.student_runs), len(b.student_runs))
    return np.asarray(a.student_runs[:n]) - np.asarray(b.student_runs[:n])


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (0 with fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def paired_se(a: Row, b: Row) -> float:
    """Standard error of mean(a - b) over the seeds both rows share."""
    return standard_error(paired(a, b))


@dataclass(frozen=True)
class Difference:
    """Row a minus row b, seed by seed: mean, standard error and z = mean / SE.

    ``z`` is ``None`` with one seed (no error estimate). When every seed gives the same
    difference the spread estimates no error (SE 0, common with few seeds and coarse
    accuracies), and ``z`` is the sign test's instead: all n seeds on one side has
    two-sided p = 2^(1 - n), given as the normal deviate with that p (:func:`sign_z`), so
    identical differences are clear from 6 seeds on, never on 2.

    ``threshold`` is the |z| to pass: :data:`Z` for a fixed number of seeds, or the
    sequential rule's for its seeds (``--seeds auto``, :mod:`cmkd_doctor.diagnosis.seed_schedule`).
    """

    delta: float
    se: float
    z: float | None
    seeds: int
    threshold: float = Z
    p: float = 1.0  # the two-sided p value its rule compares (1 with one seed)

    @property
    def gain(self) -> bool:
        return self.z is not None and self.z > self.threshold

    @property
    def loss(self) -> bool:
        return self.z is not None and self.z < -self.threshold

    @property
    def clear(self) -> bool:
        return self.gain or self.loss

    def seeds_to_settle(self) -> int | None:
        """Roughly how many seeds would make this difference clear, if it stays the same
        size (z grows with the square root of the seeds); ``None`` when it cannot say."""
        if self.z is None or self.z == 0:
            return None
        if self.se == 0:  # the sign test: the fewest seeds that all agreeing would settle
            return next(n for n in range(max(self.seeds, 2), 64)
                        if sign_z(n) > self.threshold)
        return seeds_needed(self.z, self.seeds, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "se": self.se, "z": self.z, "seeds": self.seeds,
                "clear": self.clear, "threshold": self.threshold}


def difference(a: Row, b: Row, per_look: float | None = None, fixed: float = Z
               ) -> Difference:
    """:class:`Difference` of row ``a`` minus row ``b`` over their shared seeds; with
    ``per_look`` (``--seeds auto``'s level) clear by the sequential rule, else beyond
    ``fixed`` (:data:`Z`, or :func:`split_rule`'s for one of several comparisons)."""
    return seedwise(paired(a, b), per_look, fixed)


def seedwise(diff: np.ndarray, per_look: float | None = None, fixed: float = Z
             ) -> Difference:
    """:class:`Difference` of paired differences ``diff``, one per seed (see
    :func:`difference`)."""
    diff = np.asarray(diff, dtype=np.float64)
    delta = float(diff.mean())
    if len(diff) < 2:
        return Difference(delta, 0.0, None, len(diff), fixed)
    se = standard_error(diff)
    if not has_spread(delta, se * math.sqrt(len(diff))):
        se = 0.0  # every seed gave the same difference (up to rounding): the sign test
    z = delta / se if se > 0 else math.copysign(sign_z(len(diff)), delta) if delta else 0.0
    needed = fixed if per_look is None else threshold(len(diff), per_look, spread=se > 0)
    return Difference(delta, se, z, len(diff), needed, _p(z, len(diff), se > 0, per_look))


def _p(z: float, seeds: int, spread: bool, per_look: float | None) -> float:
    """The two-sided p value the rule compares: the normal's for the fixed rule (its z
    is compared with :data:`Z`), the paired t test's (or the sign test's) for the
    sequential rule's."""
    if per_look is None or not spread:
        return 2 * NormalDist().cdf(-abs(z))
    from scipy import special  # where used: the CLI's help reads this module

    return float(2 * special.stdtr(seeds - 1, -abs(z)))  # scipy.stats.t.sf's own function


# the fixed rule's two-sided level: |z| > Z of a normal
FIXED_LEVEL = 2 * NormalDist().cdf(-Z)


def split_rule(seeding: dict[str, Any] | None, share: int = 1) -> tuple[float | None, float]:
    """The rule for one of ``share`` comparisons that compete for one call, each at
    1/share of the rule's level (Bonferroni's split, Holm's steps: :func:`cmkd_doctor.
    diagnosis.verdict.holm`): ``(per_look, fixed)`` for :func:`difference`. Under
    ``--seeds auto`` (``seeding``) the per-look level whose false-clear rate over every
    look is ``alpha / share`` (:func:`~cmkd_doctor.diagnosis.seed_schedule.level`); for
    a fixed number of seeds the normal deviate with two-sided level
    :data:`FIXED_LEVEL` / share."""
    if seeding:
        if share == 1:
            return seeding["per_look"], Z
        alpha = seeding.get("alpha", ALPHA)
        return level(tuple(seeding["looks"]), alpha / share), Z
    return None, Z if share == 1 else NormalDist().inv_cdf(1 - FIXED_LEVEL / (2 * share))


def sign_z(seeds: int) -> float:
    """The sign test as a z: every one of ``seeds`` paired differences on one side has
    two-sided p = 2^(1 - seeds) (no difference: each side has probability 1/2); returned
    as the normal deviate with that two-sided p."""
    p = 2.0 ** (1 - seeds)
    return 0.0 if p >= 1 else NormalDist().inv_cdf(1 - p / 2)


def versus_cell(found: dict[str, Any] | None, own_seeds: int) -> str:
    """A paired difference (:meth:`Difference.to_dict`) as a table cell, the terminal's
    and the report's: signed to two decimals, with the seeds it is over in brackets where
    the baseline has fewer than the row's ``own_seeds``; empty for none."""
    if found is None:
        return ""
    delta = found["delta"] + 0.0 if abs(found["delta"]) >= 0.005 else 0.0  # never -0.00
    fewer = found["seeds"] < own_seeds
    return f"{delta:+.2f}" + (f" ({found['seeds']})" if fewer else "")


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@dataclass
class Row:
    """One line of the comparison: a teacher and the students it taught."""

    teacher: str  # none, regular, general, specific, random, or the checkpoint path
    ratio: float | None
    label: str
    metric: str
    teacher_metric: float | None  # %, on the test rows
    student_runs: list[float]  # %, one per seed
    teacher_file: str | None = None
    # every metric of the task (the headline one included), %: teacher value, student runs
    teacher_metrics: dict[str, float] | None = None
    student_metrics: dict[str, list[float]] = field(default_factory=dict)
    control: dict[str, Any] | None = None  # the control row's targets (Control.to_dict)

    @property
    def student_mean(self) -> float:
        return float(np.mean(self.student_runs))

    @property
    def student_std(self) -> float:
        return _std(self.student_runs)

    def extended(self, more: Row) -> Row:
        """This row with the students of ``more`` (the same teacher, later seeds) added."""
        return replace(self, student_runs=[*self.student_runs, *more.student_runs],
                       student_metrics={k: [*v, *more.student_metrics[k]]
                                        for k, v in self.student_metrics.items()})

    def to_dict(self, versus: dict[str, Difference | None]) -> dict[str, Any]:
        """The row as JSON; ``versus`` holds its paired differences with the baselines
        (``none`` and ``regular``; ``None`` for a baseline against itself)."""
        def delta(name: str) -> float | None:
            found = versus.get(name)
            return None if found is None else found.delta

        def against(name: str) -> dict[str, Any] | None:
            found = versus.get(name)
            return None if found is None else found.to_dict()

        return {
            "teacher": self.teacher, "ratio": self.ratio, "label": self.label,
            "metric": self.metric, "unit": "%", "teacher_metric": self.teacher_metric,
            "student_mean": self.student_mean, "student_std": self.student_std,
            "student_runs": self.student_runs,
            "delta_vs_none": delta("none"), "delta_vs_regular": delta("regular"),
            "delta_vs_control": delta("control"),
            "vs_none": against("none"), "vs_regular": against("regular"),
            "vs_control": against("control"),
            **({"control": self.control} if self.control is not None else {}),
            "teacher_file": self.teacher_file,
            "teacher_metrics": self.teacher_metrics,
            "student_metrics": {
                name: {"mean": float(np.mean(runs)), "std": _std(runs), "runs": runs}
                for name, runs in self.student_metrics.items()},
        }


@dataclass
class Comparison:
    """All rows of one ``distill`` call, the verdict, and the options that made them."""

    run: Path
    rows: list[Row]
    options: dict[str, Any]
    key: str
    run_id: str = ""
    verdict: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] | None = None  # what --ratio auto ran
    timings: dict[str, float] = field(default_factory=dict)
    # --seeds auto: the sequential rule (its looks and per-look level) and the seeds each
    # row got; None for a fixed number of seeds
    seeding: dict[str, Any] | None = None
    # what to try next (:func:`cmkd_doctor.diagnosis.advice.advise`), each a step with its command
    advice: list[dict[str, Any]] = field(default_factory=list)

    @property
    def baselines(self) -> dict[str, Row]:
        return {row.teacher: row for row in self.rows if row.teacher in BASELINES}

    @property
    def metric(self) -> str:
        return self.rows[0].metric

    @property
    def per_look(self) -> float | None:
        """The sequential rule's per-look level under ``--seeds auto``, else ``None``
        (the fixed-seed rule, :data:`Z`)."""
        return (self.seeding or {}).get("per_look")

    def difference(self, a: Row, b: Row) -> Difference:
        """Row ``a`` minus row ``b`` over the seeds both share, clear by this call's rule."""
        return difference(a, b, self.per_look)

    def versus(self, row: Row) -> dict[str, Difference | None]:
        """``row`` against each baseline it has (``None`` for a baseline against itself;
        rows recorded before the control existed have none to be compared with)."""
        base = self.baselines
        return {name: None if base[name] is row else self.difference(row, base[name])
                for name in BASELINES if name in base}

    def to_dict(self) -> dict[str, Any]:
        return stamp("comparison", {
            "command": "distill", "run": str(Path(self.run).absolute()), "metric": self.metric,
            "options": self.options, "options_key": self.key,
            "results": [row.to_dict(self.versus(row)) for row in self.rows],
            "verdict": self.verdict, "advice": self.advice, "search": self.search,
            "timings": self.timings,
            **({"seeds": self.seeding} if self.seeding is not None else {})})
