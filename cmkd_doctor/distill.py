"""Students: crossmodal KD from each teacher, compared the way the paper's Table 4 is.

Each student is the run's network family on the student's modality, trained with Eq. 1
plus a temperature: ``rho * CE(y, s(x_b)) + (1 - rho) * T^2 * KL(softmax(t(x_a)/T) ||
softmax(s(x_b)/T))`` (BCE and per-class sigmoid KD for multi-label tasks). Every teacher
gets the same S student seeds (the same initialisations and shuffles), so the rows
differ only by teacher. The seeds train as one batch (see :mod:`cmkd_doctor.classifiers`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmkd_doctor.classifiers import KD, TrainOptions, train_classifiers
from cmkd_doctor.derive import RunTensors, derive_teacher, run_tensors
from cmkd_doctor.errors import ExpectationFailed, InputError, option_error
from cmkd_doctor.metrics import evaluate
from cmkd_doctor.outputs import write_json
from cmkd_doctor.rundir import Run, load_run
from cmkd_doctor.runtime import Progress, derive_seed, no_progress, resolve_device
from cmkd_doctor.teachers import FILLS, MODES, Teacher, TeacherSpec, load_base, n_nullified
from cmkd_doctor.training import predict

BASELINES = ("none", "regular")
# --ratio auto: a coarse grid, then a refinement around its best (paper Fig. 5's sweet
# spot); a full grid at the refined step would be FULL_GRID distillations.
COARSE, REFINE_STEP = (0.1, 0.3, 0.5, 0.7, 0.9), 0.1
FULL_GRID = 19  # 0.05, 0.10, ..., 0.95
DERIVED = ("general", "specific", "random")
TEACHER_CHOICES = ("none", "regular", *DERIVED, "all")
_SEED_STUDENT = 31


def parse_list(text: str | float | list | tuple, option: str, cast: type) -> tuple:
    """``"a,b"`` -> ``(a, b)`` for comma-list options."""
    if isinstance(text, (list, tuple)):
        return tuple(text)
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        return tuple(cast(p) for p in parts)
    except ValueError:
        raise option_error(option, f"a comma list of {cast.__name__} values", text) from None


@dataclass(frozen=True)
class DistillOptions:
    """Options of ``distill``; defaults are the CLI's.

    Attributes
    ----------
    teachers
        Names from :data:`TEACHER_CHOICES` or checkpoint paths; No-KD and Regular-KD
        rows are always added.
    ratios
        Nullifying ratios; several give a sweep; ``"auto"`` searches for the ratio whose
        general teacher gives the best student (see :data:`COARSE`).
    source, fill, refit
        How derived teachers are made (see :class:`cmkd_doctor.teachers.TeacherSpec`).
    train
        Student (and trained-teacher) training; ``hidden=None`` takes the run's.
    """

    teachers: tuple[str, ...] = ("all",)
    ratios: tuple[float, ...] = (0.5,)
    source: str = "trained"
    fill: str = "mean"
    refit: bool = False
    rho: float = 0.5
    temperature: float = 1.0
    seeds: int = 5
    train: TrainOptions = TrainOptions()
    device: str = "auto"
    seed: int = 0

    @property
    def auto_ratio(self) -> bool:
        return self.ratios in ("auto", ("auto",))

    def checked(self) -> DistillOptions:
        teachers = parse_list(self.teachers, "teacher", str)
        ratios = COARSE if self.auto_ratio else parse_list(self.ratios, "ratio", float)
        if not teachers:
            raise option_error("teacher", "one or more teacher names", self.teachers)
        for name in teachers:
            if name not in TEACHER_CHOICES and Path(name).suffix.lower() not in (
                    ".safetensors", ".onnx"):
                raise option_error("teacher", f"one of {', '.join(TEACHER_CHOICES)} or a "
                                   ".safetensors or .onnx checkpoint", name)
            if name not in TEACHER_CHOICES and not Path(name).is_file():
                raise InputError(f"--teacher {name}: no such file")
        if not ratios or any(not 0 < r < 1 for r in ratios):
            raise option_error("ratio", "a number in (0, 1), or a comma list of them",
                               ",".join(f"{r:g}" for r in ratios) or self.ratios)
        if self.fill not in FILLS:
            raise option_error("fill", f"one of {', '.join(FILLS)}", self.fill)
        if not 0 <= self.rho <= 1:
            raise option_error("rho", "a number in [0, 1]", self.rho)
        if not self.temperature > 0:
            raise option_error("temperature", "a positive number", self.temperature)
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise option_error("seeds", "a whole number >= 1", self.seeds)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise option_error("seed", "a whole number >= 0", self.seed)
        TeacherSpec(source=self.source).checked()  # validates --from
        return replace(self, teachers=teachers,
                       ratios="auto" if self.auto_ratio else tuple(sorted(set(ratios))),
                       train=self.train.checked())

    def key(self, train: TrainOptions) -> str:
        """A short hash of everything that changes a student's result but the teacher."""
        fields = {"rho": self.rho, "temperature": self.temperature, "seeds": self.seeds,
                  "seed": self.seed, "train": train.to_dict(), "fill": self.fill,
                  "refit": self.refit, "source": TeacherSpec(source=self.source).to_dict()[
                      "source"]}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


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
        return float(np.std(self.student_runs, ddof=1)) if len(self.student_runs) > 1 else 0.0

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
                name: {"mean": float(np.mean(runs)),
                       "std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                       "runs": runs}
                for name, runs in self.student_metrics.items()},
        }


@dataclass
class DistillReport:
    """All rows of one ``distill`` call, the verdict, and the options that made them."""

    run: Path
    rows: list[Row]
    options: dict[str, Any]
    key: str
    rank_created: str = ""
    verdict: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] | None = None  # what --ratio auto ran

    @property
    def baselines(self) -> dict[str, Row]:
        return {row.teacher: row for row in self.rows if row.teacher in BASELINES}

    @property
    def metric(self) -> str:
        return self.rows[0].metric

    def to_dict(self) -> dict[str, Any]:
        return {"command": "distill", "run": str(self.run), "metric": self.metric,
                "options": self.options, "options_key": self.key,
                "results": [row.to_dict(self.baselines) for row in self.rows],
                "verdict": self.verdict, "search": self.search}


@dataclass(frozen=True)
class _Plan:
    teacher: str
    ratio: float | None
    spec: TeacherSpec | None  # None: No-KD, or a checkpoint used as is


def _plans(options: DistillOptions, ratios: tuple[float, ...] | None = None) -> list[_Plan]:
    ratios = options.ratios if ratios is None else ratios
    names = list(options.teachers)
    if "all" in names:
        names = [n for n in names if n != "all"] + [*BASELINES, *DERIVED]
    names = list(dict.fromkeys([*BASELINES, *names]))  # baselines first, no repeats
    spec = TeacherSpec(fill=options.fill, source=options.source, refit=options.refit,
                       seed=options.seed)
    plans = []
    for name in names:
        if name == "none":
            plans.append(_Plan("none", None, None))
        elif name == "regular":
            plans.append(_Plan("regular", None, replace(spec, mode="regular")))
        elif name in MODES:
            plans += [_Plan(name, r, replace(spec, mode=name, ratio=r)) for r in ratios]
        else:
            plans.append(_Plan(name, None, None))
    return plans


def _search(options: DistillOptions, d: int, rows_for) -> tuple[list[Row], dict[str, Any]]:
    """--ratio auto: general teachers on a coarse grid, then at the best ratio +- 0.1;
    the other requested teachers only at the ratio found (the sweet spot)."""
    def valid(r: float) -> bool:
        return 0 < r < 1 and 0 < n_nullified(r, d) < d

    spec = TeacherSpec(mode="general", fill=options.fill, source=options.source,
                       refit=options.refit, seed=options.seed)
    general: dict[float, Row] = {}

    def distil(ratios: list[float]) -> None:
        fresh = [r for r in ratios if valid(r) and r not in general]
        for row in rows_for([_Plan("general", r, replace(spec, ratio=r)) for r in fresh]):
            general[row.ratio] = row

    def best() -> float:
        return max(general, key=lambda r: general[r].student_mean)

    distil(list(COARSE))
    coarse_best = best()
    distil([round(coarse_best - REFINE_STEP, 2), round(coarse_best + REFINE_STEP, 2)])
    found = best()
    names = [n for n in options.teachers if n not in ("general", "all")]
    if "all" in options.teachers:
        names += ["specific", "random"]
    others = [n for n in dict.fromkeys(names) if n in DERIVED]
    paths = [n for n in dict.fromkeys(names) if n not in TEACHER_CHOICES]
    baselines = rows_for(_plans(replace(options, teachers=()), ratios=()))
    extra = rows_for([_Plan(n, found, replace(spec, mode=n, ratio=found)) for n in others]
                     + [_Plan(p, None, None) for p in paths])
    rows = baselines + [general[r] for r in sorted(general)] + extra
    return rows, {"coarse": [r for r in COARSE if valid(r)],
                  "refined": sorted(set(general) - set(COARSE)),
                  "best_ratio": found, "distillations": len(general),
                  "full_grid": FULL_GRID}


def _label(plan: _Plan) -> str:
    if plan.teacher == "none":
        return "No-KD"
    if plan.teacher == "regular":
        return "Regular-KD"
    if plan.teacher in MODES:
        return f"{plan.teacher} r={plan.ratio:g}"
    return Path(plan.teacher).name


def distill(run_dir: str | Path | Run, options: DistillOptions | None = None,
            progress: Progress = no_progress, expect: str | None = None) -> DistillReport:
    """Train students with each teacher and compare them (paper Table 4 / Table 8).

    ``expect`` is checked for its names before any training; call
    :func:`check_expectation` on the report to apply it.
    """
    options = (options or DistillOptions()).checked()
    # a Run already in hand (diagnose's) is used as is: its inputs were just verified
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    if not len(run.split.test):
        raise InputError(f"--run {run.path}: the rank run kept no test rows "
                         "(--test-split 0); students need held-out rows: rerun rank with "
                         "--test-split 0.2")
    train = options.train.resolved(run.rank_options["hidden"])
    d = len(run.salience)
    if options.auto_ratio and not [r for r in COARSE if 0 < n_nullified(r, d) < d]:
        raise InputError(f"--ratio auto: modality {run.teacher_side} has {d} channels, too "
                         "few to search nullifying ratios")
    if expect:
        ratios = COARSE if options.auto_ratio else None
        _resolve_expectation(expect, [(p.teacher, p.ratio, _label(p))
                                      for p in _plans(options, ratios)])
    device = resolve_device(options.device)
    tensors = run_tensors(run, device)
    seeds = [derive_seed(options.seed, _SEED_STUDENT, s) for s in range(options.seeds)]

    def rows_for(plans: list[_Plan]) -> list[Row]:
        return [_row(run, plan, options, train, seeds, tensors, device, progress)
                for plan in plans]

    search = None
    if options.auto_ratio:
        rows, search = _search(options, d, rows_for)
    else:
        rows = rows_for(_plans(options))
    report = DistillReport(run.path, rows,
                           {**asdict(replace(options, train=None)), "train": train.to_dict()},
                           options.key(train), run.document["created"], search=search)
    report.verdict = verdict(report)
    return report


def _row(run: Run, plan: _Plan, options: DistillOptions, train: TrainOptions,
         seeds: list[int], t: RunTensors, device: torch.device, progress: Progress) -> Row:
    label = _label(plan)
    teacher_metrics, teacher_file, kd = None, None, None
    if plan.teacher != "none":
        if plan.spec is not None:
            derived = derive_teacher(run, plan.spec, train, device, t, progress)
            teacher, teacher_file = derived.teacher, str(derived.path)
        else:
            d = t.teacher["fit"].shape[1]
            base = load_base(plan.teacher, d, t.n_classes, device)
            teacher = Teacher(base, torch.ones(d, dtype=torch.bool, device=device),
                              torch.zeros(d, device=device)).to(device)
            teacher_file = str(Path(plan.teacher).resolve())
        teacher_metrics = _percent(evaluate(predict(teacher, t.teacher["test"]), t.y["test"],
                                            t.multilabel))
        kd = KD(train=predict(teacher, t.teacher["fit"]),
                val=predict(teacher, t.teacher["val"]) if len(t.teacher["val"]) else None,
                rho=options.rho, temperature=options.temperature)
    nets = train_classifiers(t.student["fit"], t.y["fit"], t.n_classes, t.multilabel, train,
                             seeds, val=(t.student["val"], t.y["val"]), kd=kd,
                             progress=progress, task=f"students {label}")
    per_seed = [_percent(evaluate(predict(net, t.student["test"]), t.y["test"], t.multilabel))
                for net in nets]
    student_metrics = {name: [m[name] for m in per_seed] for name in per_seed[0]}
    return Row(plan.teacher, plan.ratio, label, t.metric,
               None if teacher_metrics is None else teacher_metrics[t.metric],
               student_metrics[t.metric], teacher_file, teacher_metrics, student_metrics)


def _percent(metrics: dict[str, float]) -> dict[str, float]:
    return {name: 100 * value for name, value in metrics.items()}


def paired_se(a: Row, b: Row) -> float:
    """Standard error of mean(a - b) over the seeds both rows share."""
    diff = np.asarray(a.student_runs) - np.asarray(b.student_runs)
    return float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0


def verdict(report: DistillReport) -> dict[str, Any]:
    """Does crossmodal KD help here, and does the MFH ordering hold?

    KD helps when the Regular-KD student beats No-KD on the mean over seeds by more than
    twice the difference's standard error. Every row's students share seeds (the same
    initialisations and shuffles), so the error is that of the per-seed differences:
    their spread / sqrt(S). With one seed, any gain counts.
    The MFH ordering holds at a ratio when general >= random >= specific on the means.
    """
    base = report.baselines
    none, regular = base["none"], base["regular"]
    se = paired_se(regular, none)
    kd_delta = regular.student_mean - none.student_mean
    ordering: dict[str, bool] = {}
    by_mode = {(r.teacher, r.ratio): r for r in report.rows}
    for ratio in sorted({r.ratio for r in report.rows if r.teacher in DERIVED}):
        trio = [by_mode.get((m, ratio)) for m in ("general", "random", "specific")]
        if all(trio):
            g, r, s = (row.student_mean for row in trio)
            ordering[f"{ratio:g}"] = g >= r >= s
    best = max(report.rows, key=lambda row: row.student_mean)
    unit = f"{report.metric} points"
    general_rows = [r for r in report.rows if r.teacher == "general"]
    sweet = max(general_rows, key=lambda r: r.student_mean) if len(general_rows) > 1 else None

    def clear(delta: float, error: float = se) -> bool:
        return abs(delta) > 2 * error

    def strength(delta: float, error: float = se) -> str:
        if error == 0:
            return ""
        return (f" ({abs(delta) / error:.1f} standard errors)" if clear(delta, error)
                else " (within run-to-run noise)")

    kd_helps = kd_delta > 0 and clear(kd_delta)
    said = f"Regular-KD is {kd_delta:+.2f} {unit} against No-KD{strength(kd_delta)}"
    if kd_helps:
        lines = [f"Crossmodal KD helps here: {said}."]
    elif kd_delta < 0 and clear(kd_delta):
        lines = [f"Crossmodal KD with the regular teacher hurts here: {said}."]
    else:
        lines = [f"Crossmodal KD with the regular teacher makes no clear difference here: "
                 f"{said}."]
    if ordering:
        held = [r for r, ok in ordering.items() if ok]
        if len(held) == len(ordering):
            lines.append("The MFH ordering general >= random >= specific holds at r = "
                         f"{', '.join(ordering)}: the teacher's modality-general channels "
                         "are what transfers.")
        else:
            lines.append(f"The MFH ordering general >= random >= specific holds at "
                         f"{len(held)} of {len(ordering)} ratios "
                         f"({', '.join(held) or 'none'}).")
    if sweet is not None:
        lines.append(f"Sweet spot: the modality-general teacher's student is best at r = "
                     f"{sweet.ratio:g} ({sweet.student_mean:.2f}) of the "
                     f"{len(general_rows)} ratios distilled.")
    if best.teacher not in BASELINES:
        gain = best.student_mean - regular.student_mean
        best_se = paired_se(best, regular)
        best_clear = clear(gain, best_se) or best_se == 0
        advice = ("use that teacher" if best_clear
                  else "no teacher is clearly better than the regular one at these seeds; "
                       "more --seeds would tell")
        lines.append(f"Best student: {best.label}, {gain:+.2f} {unit} over Regular-KD"
                     f"{strength(gain, best_se)}; {advice}.")
    elif best.teacher == "none":
        lines.append("No teacher beat training the student alone: the modalities may share "
                     "little label-relevant information; try a modality-general teacher at "
                     "other ratios (a sweep) or skip KD.")
    return {
        "kd_helps": kd_helps,
        "kd_delta": kd_delta,
        "kd_delta_se": se,
        "mfh_ordering": ordering,
        "mfh_ordering_holds": all(ordering.values()) if ordering else None,
        "sweet_spot": None if sweet is None else {"ratio": sweet.ratio,
                                                  "student_mean": sweet.student_mean},
        "best": best.label,
        "best_delta_vs_regular": best.student_mean - regular.student_mean,
        "best_delta_vs_regular_se": paired_se(best, regular),
        "best_is_clear": best.teacher not in BASELINES and (
            best.student_mean - regular.student_mean > 2 * paired_se(best, regular)),
        "text": " ".join(lines),
    }


def record(report: DistillReport) -> Path:
    """Add the report's rows to ``RUN/distill.json``, keyed by teacher, ratio and options.

    The file describes one ranking: results distilled under an earlier ``rank`` in the
    same directory are dropped rather than mixed with the new ones.
    """
    path = report.run / "distill.json"
    rank = {"created": report.rank_created}
    document = {"command": "distill", "rank": rank, "results": {}}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}  # a damaged file is replaced rather than blocking new results
        if previous.get("rank") == rank:
            document = previous
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for row in report.rows:
        key = f"{row.teacher}|{'' if row.ratio is None else f'{row.ratio:g}'}|{report.key}"
        document.setdefault("results", {})[key] = {
            **row.to_dict(report.baselines), "options": report.options,
            "options_key": report.key, "created": created}
    document["last_verdict"] = report.verdict
    return write_json(path, document)


_EXPECT = re.compile(r"^\s*(?P<a>[^<>=\s]+)\s*(?P<op>>=|>)\s*(?P<b>[^<>=\s]+)\s*$")


def _resolve_expectation(text: str, rows: list[tuple[str, float | None, str]]
                         ) -> tuple[int, str, int]:
    """Indices of the two rows an expectation compares, and its operator."""
    match = _EXPECT.match(text)
    if not match:
        raise option_error("expect", "a comparison of two rows such as 'general>regular' or "
                           "'general@0.5>=random@0.5'", text)

    def find(name: str) -> int:
        teacher, _, at = name.partition("@")
        teacher = {"no-kd": "none", "nokd": "none"}.get(teacher.lower(), teacher)
        hits = [i for i, (t, r, label) in enumerate(rows)
                if (t == teacher or Path(t).name == teacher or label == teacher)
                and (not at or (r is not None and math.isclose(r, float(at))))]
        if not hits:
            names = ", ".join(dict.fromkeys(t if r is None else f"{t}@{r:g}"
                                            for t, r, _ in rows))
            raise option_error("expect", f"a comparison of rows this call computes ({names})",
                               text)
        if len(hits) > 1:
            raise option_error("expect", f"unambiguous: {teacher} has several ratios; name "
                               f"one as {teacher}@R", text)
        return hits[0]

    try:
        return find(match["a"]), match["op"], find(match["b"])
    except ValueError:
        raise option_error("expect", "names with numeric ratios, as general@0.5", text) from None


def check_expectation(report: DistillReport, text: str) -> None:
    """Raise :class:`ExpectationFailed` (exit 3) when the comparison fails on the means."""
    rows = report.rows
    a, op, b = _resolve_expectation(text, [(r.teacher, r.ratio, r.label) for r in rows])
    left, right = rows[a], rows[b]
    holds = (left.student_mean >= right.student_mean if op == ">="
             else left.student_mean > right.student_mean)
    if not holds:
        raise ExpectationFailed(
            f"expectation '{text}' failed: {left.label} {left.student_mean:.2f} is not {op} "
            f"{right.label} {right.student_mean:.2f} (student {report.metric} %, mean over "
            f"{len(left.student_runs)} seeds)")
