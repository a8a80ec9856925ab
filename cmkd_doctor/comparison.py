"""The student comparison, in the shape of the paper's Table 4: one row per teacher.

Every row's students share the same seeds (the same initialisations and minibatch
orders), so rows differ only by their teacher, and differences between two rows can be
taken seed by seed (:mod:`cmkd_doctor.verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.schemas import stamp

BASELINES = ("none", "regular")


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

    def to_dict(self, baselines: dict[str, Row]) -> dict[str, Any]:
        return {
            "teacher": self.teacher, "ratio": self.ratio, "label": self.label,
            "metric": self.metric, "unit": "%", "teacher_metric": self.teacher_metric,
            "student_mean": self.student_mean, "student_std": self.student_std,
            "student_runs": self.student_runs,
            "delta_vs_none": self.student_mean - baselines["none"].student_mean,
            "delta_vs_regular": self.student_mean - baselines["regular"].student_mean,
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

    @property
    def baselines(self) -> dict[str, Row]:
        return {row.teacher: row for row in self.rows if row.teacher in BASELINES}

    @property
    def metric(self) -> str:
        return self.rows[0].metric

    def to_dict(self) -> dict[str, Any]:
        return stamp("comparison", {
            "command": "distill", "run": str(Path(self.run).absolute()), "metric": self.metric,
            "options": self.options, "options_key": self.key,
            "results": [row.to_dict(self.baselines) for row in self.rows],
            "verdict": self.verdict, "search": self.search, "timings": self.timings,
            **({"seeds": self.seeding} if self.seeding is not None else {})})
