"""Students: crossmodal KD from each teacher, compared the way the paper's Table 4 is.

``distill`` plans one row per teacher (No-KD and Regular-KD always, then the derived
teachers at each ratio, and user checkpoints), derives the teachers
(:mod:`cmkd_doctor.teachers.derivation`), and trains the students of *every* row as one stacked
model (:func:`~cmkd_doctor.training.stacked.train_classifiers`): rows x seeds members, each
with Eq. 1 and its own teacher's soft labels. Every row gets the same student seeds (the
same initialisations and minibatch orders), so rows differ only by teacher. The verdict
is :mod:`cmkd_doctor.diagnosis.verdict`'s; results are recorded by the run directory.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmkd_doctor.devices import resolve_device
from cmkd_doctor.diagnosis import seed_schedule
from cmkd_doctor.diagnosis.advice import advise
from cmkd_doctor.diagnosis.comparison import BASELINES, Comparison, Row
from cmkd_doctor.diagnosis.options import (
    COARSE,
    FULL_GRID,
    REFINE_STEP,
    TEACHER_CHOICES,
    DistillOptions,
)
from cmkd_doctor.diagnosis.verdict import (
    check_expectation,
    needed,
    outcome,
    resolve_expectation,
)
from cmkd_doctor.errors import ExpectationFailed, InputError
from cmkd_doctor.io.rundir import Run, RunDir
from cmkd_doctor.io.streaming import RowSet, row_bytes
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.seeds import derive_seed
from cmkd_doctor.teachers.control import Control, entropy_sum
from cmkd_doctor.teachers.derivation import DerivedTeacher, derive_teacher, teacher_metrics
from cmkd_doctor.teachers.masks import (
    DERIVED,
    MODES,
    Teacher,
    TeacherSpec,
    check_ratio,
    load_base,
    n_nullified,
)
from cmkd_doctor.teachers.whole_networks import read_raw, whole_teachers
from cmkd_doctor.training import curves
from cmkd_doctor.training.engine import FitResult, evaluate_rows, predict
from cmkd_doctor.training.stacked import (
    Member,
    Rows,
    SoftLabels,
    TrainOptions,
    members_per_fit,
    require_trainable,
    stack,
    stack_limit,
    train_classifiers,
)
from cmkd_doctor.training.student_networks import Architecture
from cmkd_doctor.wording import verdict


@dataclass(frozen=True)
class Plan:
    """One row to compute: a teacher name, its ratio, and how to derive it (``spec``
    is ``None`` for No-KD and for a checkpoint used as it is)."""

    teacher: str
    ratio: float | None
    spec: TeacherSpec | None

    @property
    def label(self) -> str:
        if self.teacher == "none":
            return "No-KD"
        if self.teacher == "regular":
            return "Regular-KD"
        if self.teacher == "control":
            return "Control"
        if self.teacher in MODES:
            return f"{self.teacher} r={self.ratio:g}"
        return Path(self.teacher).name


def check_ratios(options: DistillOptions, d: int, where: str) -> None:
    """The ratios of ``options`` can make derived teachers of ``d`` channels (those of
    ``where``): each nullifies some but not all, or ``auto`` has ratios to search."""
    if not any(p.spec is not None and p.spec.mode != "regular" for p in plans(options, (0.5,))):
        return  # no derived teacher asked for
    if d < 2:
        raise InputError(f"{where} has {d} channel: derived teachers need at least 2 (some "
                         "nullified, some kept); give more features or --teacher regular")
    if options.auto_ratio:
        if not [r for r in COARSE if 0 < n_nullified(r, d) < d]:
            raise InputError(f"--ratio auto: {where} has {d} channels, too few to search "
                             "nullifying ratios")
        return
    for ratio in options.ratios:
        check_ratio(ratio, d, f"channels of {where}")


def plans(options: DistillOptions, ratios: tuple[float, ...] | None = None) -> list[Plan]:
    """The rows ``options`` ask for, baselines first, each once."""
    ratios = options.ratios if ratios is None else ratios
    names = list(options.teachers)
    if "all" in names:
        names = [n for n in names if n != "all"] + [*BASELINES, *DERIVED]
    names = list(dict.fromkeys([*BASELINES, *names]))
    spec = TeacherSpec(fill=options.fill, source=options.source, refit=options.refit,
                       seed=options.seed)
    found = []
    for name in names:
        if name in ("none", "control"):  # students without a teacher's knowledge
            found.append(Plan(name, None, None))
        elif name == "regular":
            found.append(Plan("regular", None, replace(spec, mode="regular")))
        elif name in MODES:
            found += [Plan(name, r, replace(spec, mode=name, ratio=r)) for r in ratios]
        else:
            found.append(Plan(name, None, None))
    return found


class Students:
    """Computes rows of the comparison on one run: derives their teachers, then trains
    the students of all of them as one stacked model.

    Teachers derived here are kept for the whole call (:func:`derive_teacher`'s cache),
    so a ratio search trains the regular teacher once.
    """

    def __init__(self, run: Run, options: DistillOptions, train: TrainOptions,
                 device: torch.device, progress: Progress = no_progress):
        self.run, self.options, self.train = run, options, train
        self.device, self.progress = device, progress
        # the seeds every row starts with; --seeds auto adds more (more())
        self.start = options.seeds if isinstance(options.seeds, int) else min(
            seed_schedule.START, options.max_seeds)
        self.planned: dict[tuple[str, float | None], Plan] = {}
        self.teacher_rows = run.rows(run.teacher_side, device, train.chunk_rows)
        self.student_rows = run.rows(run.student_side, device, train.chunk_rows)
        self.feature_rows = self.teacher_rows  # the ranked features: the fills' means
        self.cache: dict[str, DerivedTeacher] = {}
        self.architecture: Architecture | None = None
        self.whole_teacher = None
        self._control: Control | None = None
        nets, n = options.networks, len(run.data.labels.y)
        if nets.student is not None:
            raw = read_raw(nets.student_inputs, n, "--student-inputs")
            batch_rows = min(train.batch_size, max(len(self.student_rows.fit), 1))
            self.architecture = Architecture(nets.student, tuple(raw.shape[1:]),
                                             self.student_rows.n_classes).checked(
                                                 batch_rows, device)
            self.student_rows = self.student_rows.with_x(raw.reshape(n, -1))
        if nets.model is not None:
            raw = read_raw(nets.teacher_inputs, n, "--teacher-inputs")
            self.whole_teacher = whole_teachers(nets, self.feature_rows, run, raw,
                                                self.teacher_rows.n_classes, device)
            self.teacher_rows = self.teacher_rows.with_x(raw.reshape(n, -1))
        # wall time of the teachers (derived, evaluated, their soft labels) and students,
        # and the epochs the students trained, summed over members
        self.timings = {"teachers_s": 0.0, "students_s": 0.0, "student_epochs": 0}
        self.members = 0  # students trained so far (rows x seeds)

    @property
    def metric(self) -> str:
        return "micro_f1" if self.student_rows.multilabel else "accuracy"

    def _teacher(self, plan: Plan) -> tuple[torch.nn.Module, str]:
        if self.whole_teacher is not None:  # the user's network, masked after --layer
            model = Path(self.options.networks.model)  # the file (or architecture) masked
            return (self.whole_teacher(plan.spec),
                    str(model.resolve()) if model.suffix else str(model))
        if plan.spec is not None:
            derived = derive_teacher(self.run, plan.spec, self.train, self.device,
                                     self.progress, self.cache)
            return derived.teacher, str(derived.path)
        d = self.teacher_rows.x.shape[1]
        base = load_base(plan.teacher, d, self.teacher_rows.n_classes, self.device)
        keep = torch.ones(d, dtype=torch.bool, device=self.device)
        teacher = Teacher(base, keep, torch.zeros(d, device=self.device)).to(self.device)
        return teacher, str(Path(plan.teacher).resolve())

    def rows(self, todo: list[Plan], first: int = 0, count: int | None = None
             ) -> list[Row]:
        """One row per plan, in order, each with the students of seeds ``first`` to
        ``first + count`` (every row's seed i is the same: paired across rows)."""
        if not todo:
            return []
        count = self.start if count is None else count
        seeds = [derive_seed(self.options.seed, "student", s)
                 for s in range(first, first + count)]
        self.planned.update({(plan.teacher, plan.ratio): plan for plan in todo})
        student, teacher_side = self.student_rows, self.teacher_rows
        start = time.perf_counter()
        taught = [i for i, plan in enumerate(todo) if plan.teacher != "none"]
        teachers = {i: self._teacher(todo[i]) for i in taught
                    if todo[i].teacher != "control"}
        # measured when a row is first computed; more() keeps them as its rows grow
        tmetrics = {} if first else {
            i: _percent(teacher_metrics(teacher, teacher_side))
            for i, (teacher, _) in teachers.items()}
        column = {i: c for c, i in enumerate(taught)}
        n_all = student.x.shape[0]
        soft_bytes = row_bytes([np.empty((0, len(taught), student.n_classes), np.float32)])
        streamed = student.plan(soft_bytes) < len(student.fit) + len(student.val) + len(
            student.test)
        soft = SoftLabels(n_all, len(taught), student.n_classes, streamed) if taught else None
        try:
            for i in taught:
                if i in teachers:
                    soft.fill(column[i], teachers[i][0], teacher_side,
                              [student.fit, student.val])
                else:  # the control: targets from the labels alone
                    soft.fill_targets(column[i], self.control().logits, student,
                                      [student.fit, student.val])
            self.timings["teachers_s"] += time.perf_counter() - start
            start = time.perf_counter()
            members = [Member(seed, rho=1.0 if plan.teacher == "none" else self.options.rho,
                              temperature=self.options.temperature,
                              teacher=column.get(i, 0))
                       for i, plan in enumerate(todo) for seed in seeds]
            per_seed = self._train_apart(student, members, soft, [
                todo[k // len(seeds)].teacher == "control" for k in range(len(members))])
        finally:
            if soft is not None:
                soft.close()
        self.timings["students_s"] += time.perf_counter() - start
        self.members += len(members)
        found = []
        for i, plan in enumerate(todo):
            runs = per_seed[i * len(seeds):(i + 1) * len(seeds)]
            metrics = {name: [m[name] for m in runs] for name in runs[0]}
            teacher_m = tmetrics.get(i)
            found.append(Row(plan.teacher, plan.ratio, plan.label, self.metric,
                             None if teacher_m is None else teacher_m[self.metric],
                             metrics[self.metric], teachers[i][1] if i in teachers else None,
                             teacher_m, metrics,
                             self.control().to_dict() if plan.teacher == "control"
                             else None))
        return found

    def control(self) -> Control:
        """The knowledge-free control's targets (:mod:`cmkd_doctor.teachers.control`): as
        soft as the regular teacher's soft labels on the rows the students fit, measured
        once per call."""
        if self._control is None:
            regular = next(p for p in plans(self.options, ()) if p.teacher == "regular")
            teacher, _ = self._teacher(regular)
            rows, fit = self.teacher_rows, self.student_rows.fit
            total = 0.0
            with torch.no_grad():
                for _, (x,) in RowSet([rows.x], fit, rows.device, rows.plan()).chunks():
                    total += float(entropy_sum(predict(teacher, x),
                                               self.options.temperature, rows.multilabel))
            self._control = Control.matching(total / max(len(fit), 1), rows.n_classes,
                                             rows.multilabel, self.options.temperature)
        return self._control

    def more(self, rows: list[Row], grow: set[str], seeds: int) -> list[Row]:
        """``rows`` with the rows labelled in ``grow`` extended to ``seeds`` seeds (their
        next seeds, trained together; the teachers come from the cache)."""
        todo = [row for row in rows if row.label in grow and len(row.student_runs) < seeds]
        by_count: dict[int, list[Row]] = {}
        for row in todo:  # rows with as many seeds get the same new ones in one stack
            by_count.setdefault(len(row.student_runs), []).append(row)
        grown: dict[str, Row] = {}
        for have, group in by_count.items():
            fresh = self.rows([self.planned[row.teacher, row.ratio] for row in group],
                              first=have, count=seeds - have)
            grown.update({row.label: row.extended(new)
                          for row, new in zip(group, fresh, strict=True)})
        return [grown.get(row.label, row) for row in rows]

    def _train_apart(self, rows: Rows, members: list[Member], soft: SoftLabels | None,
                     apart: list[bool]) -> list[dict[str, float]]:
        """:meth:`_train`, with the members marked ``apart`` (the control's) in stacks of
        their own: adding the control changes no other row's stacks, whose size can
        change a float kernel's blocking (and training amplifies the last digit)."""
        found: list[dict[str, float] | None] = [None] * len(members)
        for side in (False, True):
            part = [k for k, mark in enumerate(apart) if mark is side]
            if part:
                for k, metrics in zip(part, self._train(rows, [members[k] for k in part],
                                                        soft), strict=True):
                    found[k] = metrics
        return found

    def _train(self, rows: Rows, members: list[Member], soft: SoftLabels | None
               ) -> list[dict[str, float]]:
        """Every member's test metrics (%), trained in as few stacks as memory allows."""
        d = rows.x.shape[1]
        hidden = self.train.hidden
        arch = self.architecture
        if arch is None:
            limit = members_per_fit(d, hidden, rows.n_classes, self.train.batch_size,
                                    self.device)
        else:
            limit = stack_limit(arch.member_bytes(self.train.batch_size), self.device)
        test = rows.part(rows.test)
        found: list[dict[str, float]] = []
        fits: list[FitResult] = []
        for start in range(0, len(members), limit):
            group = members[start : start + limit]
            nets = train_classifiers(rows, group, self.train,
                                     soft=None if soft is None else soft.array,
                                     progress=self.progress, task="students", fits=fits,
                                     architecture=arch)
            found += [_percent(m) for m in evaluate_rows(stack(nets), [test], 0, 1,
                                                         rows.multilabel)]
        self.timings["student_epochs"] += sum(sum(f.active) for f in fits)
        return found


def _percent(metrics: dict[str, float] | None) -> dict[str, float] | None:
    return None if metrics is None else {name: 100 * value for name, value in metrics.items()}


def _search(options: DistillOptions, d: int, students: Students
            ) -> tuple[list[Row], dict[str, Any]]:
    """--ratio auto: general teachers on a coarse grid, then at the best ratio +- 0.1;
    the other requested teachers only at the ratio found (the sweet spot)."""
    def valid(r: float) -> bool:  # d counts the informative channels
        return 0 < r < 1 and 0 < n_nullified(r, d) < d

    spec = TeacherSpec(mode="general", fill=options.fill, source=options.source,
                       refit=options.refit, seed=options.seed)
    general: dict[float, Row] = {}

    def with_general(ratios: list[float], extra: list[Plan] = ()) -> list[Row]:
        fresh = [r for r in ratios if valid(r) and r not in general]
        rows = students.rows([*extra, *(Plan("general", r, replace(spec, ratio=r))
                                        for r in fresh)])
        for row in rows[len(extra):]:
            general[row.ratio] = row
        return rows[: len(extra)]

    def best() -> float:
        return max(general, key=lambda r: general[r].student_mean)

    baselines = with_general(list(COARSE), plans(replace(options, teachers=()), ratios=()))
    coarse_best = best()
    with_general([round(coarse_best - REFINE_STEP, 2), round(coarse_best + REFINE_STEP, 2)])
    found = best()
    names = [n for n in options.teachers if n not in ("general", "all")]
    if "all" in options.teachers:
        names += ["specific", "random"]
    others = [n for n in dict.fromkeys(names) if n in DERIVED]
    paths = [n for n in dict.fromkeys(names) if n not in TEACHER_CHOICES]
    extra = students.rows([Plan(n, found, replace(spec, mode=n, ratio=found)) for n in others]
                          + [Plan(p, None, None) for p in paths])
    rows = baselines + [general[r] for r in sorted(general)] + extra
    return rows, {"coarse": [r for r in COARSE if valid(r)],
                  "refined": sorted(set(general) - set(COARSE)),
                  "best_ratio": found, "distillations": len(general),
                  "full_grid": FULL_GRID}


def _sequential(rows: list[Row], students: Students, run: Run
                ) -> tuple[list[Row], dict[str, Any]]:
    """``--seeds auto`` (:mod:`cmkd_doctor.diagnosis.seed_schedule`): at each look of the schedule,
    the rows of the comparisons the verdict needs and has not decided get the seeds of
    that look, until every such comparison is decided, futile, or at ``--max-seeds``."""
    max_seeds = students.options.max_seeds
    schedule = seed_schedule.looks(max_seeds, students.start)
    per_look = seed_schedule.level(schedule)
    final = seed_schedule.threshold(schedule[-1], per_look)
    record: dict[str, Any] = {"rule": "sequential", "alpha": seed_schedule.ALPHA,
                              "looks": list(schedule), "per_look": per_look,
                              "max_seeds": max_seeds}

    def comparisons(rows: list[Row]) -> list[tuple[str, Row, Row, Any]]:
        draft = Comparison(run.path, rows, {}, "", seeding=record)
        return needed(outcome(draft, run.ranking_reliability))

    budget, out_of_time = students.options.seeds_budget, False

    def undecided(rows: list[Row], look: int) -> set[str]:
        """The rows of the needed comparisons not yet decided, when some has fewer than
        ``look`` seeds (with the control: each row is read against it seed by seed)."""
        grow = {row.label for _, a, b, d in comparisons(rows)
                if not d.clear and not seed_schedule.futile(d.z, d.seeds, final, max_seeds)
                for row in (a, b)}
        grow |= {row.label for row in rows if grow and row.teacher == "control"}
        return grow if any(len(r.student_runs) < look for r in rows if r.label in grow) \
            else set()

    def affordable(grow: set[str], look: int) -> bool:
        """Within --seeds-budget: the look's cost, at the seconds per student so far."""
        if budget is None:
            return True
        each = students.timings["students_s"] / max(students.members, 1)
        extra = sum(max(look - len(r.student_runs), 0) for r in rows if r.label in grow)
        return students.timings["students_s"] + extra * each <= budget

    def takes() -> Any:
        """The looks, then the last look reached again while the best row changes: it
        can change at the last look to a row left at an earlier look's seeds, and the
        rows of the comparisons still needed then get the last look's seeds (comparisons
        at a look's seed count, so the per-look level still holds)."""
        yield from schedule[1:]
        last = max(len(row.student_runs) for row in rows)
        yield from [last] * len(rows)

    for look in takes():
        grow = undecided(rows, look)
        if not grow:
            break
        if not affordable(grow, look):
            out_of_time = True
            break
        rows = students.more(rows, grow, look)

    def state(d: Any) -> str:
        if d.clear:
            return "clear"
        if d.seeds >= max_seeds:
            return "budget"
        return "time" if out_of_time and not seed_schedule.futile(
            d.z, d.seeds, final, max_seeds) else "futile"

    record["decisions"] = [
        {"comparison": name, "seeds": d.seeds, "delta": d.delta, "z": d.z,
         "threshold": d.threshold, "state": state(d)}
        for name, _, _, d in comparisons(rows)]
    record["seeds_budget"] = budget
    record["row_seeds"] = {row.label: len(row.student_runs) for row in rows}
    return rows, record


def distill(run_dir: str | Path | RunDir | Run, options: DistillOptions | None = None,
            progress: Progress = no_progress, expect: str | None = None) -> Comparison:
    """Train students with each teacher and compare them (paper Table 4 / Table 8).

    Given a run directory (a path or a :class:`~cmkd_doctor.io.rundir.RunDir`), this is the
    whole ``distill`` command: the teachers it derives and its rows in ``distill.json``
    land together (one :meth:`~cmkd_doctor.io.rundir.RunDir.transaction`), then ``expect`` is
    applied: :class:`~cmkd_doctor.errors.ExpectationFailed` (exit 3) when it fails, with
    the comparison as its ``comparison``. Given a :class:`~cmkd_doctor.io.rundir.Run`
    (``diagnose``'s, in hand, inside its own transaction) it only computes: the caller
    records (:meth:`~cmkd_doctor.io.rundir.RunDir.record`) and applies ``expect``
    (:func:`cmkd_doctor.diagnosis.verdict.check_expectation`). Either way ``expect`` is checked for
    its names before any training.
    """
    options = (options or DistillOptions()).checked()
    if isinstance(run_dir, Run):  # diagnose's, in hand: its inputs were just verified
        return _distill(run_dir, options, progress, expect)
    folder = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    with folder.transaction() as staged:
        found = _distill(staged.load(), options, progress, expect)
        staged.record(found)
    if expect:
        try:
            check_expectation(found, expect)
        except ExpectationFailed as failed:
            failed.comparison = found
            raise
    return found


def _distill(run: Run, options: DistillOptions, progress: Progress, expect: str | None
             ) -> Comparison:
    if not len(run.split.test):
        raise InputError(f"--run {run.path}: the rank run kept no test rows "
                         "(--test-split 0); students need held-out rows: rerun rank with "
                         "--test-split 0.2")
    train = options.train.resolved(run.rank_options["hidden"])
    d = len(run.salience) - len(run.constant)  # the informative channels
    check_ratios(options, d, f"modality {run.teacher_side}")
    if expect:
        ratios = COARSE if options.auto_ratio else None
        resolve_expectation(expect, [(p.teacher, p.ratio, p.label)
                                     for p in plans(options, ratios)])
    device = resolve_device(options.device)
    for side in ("a", "b"):  # a teacher and a student must each fit
        role = "teacher" if side == run.teacher_side else "student"
        if role == "student" and options.networks.student is not None:
            continue  # a network student: its bytes are measured when it is built
        require_trainable(run.features(side).shape[1], train, run.data.labels.n_classes,
                          device, role)
    students = Students(run, options, train, device, progress)
    search = None
    if options.auto_ratio:
        rows, search = _search(options, d, students)
    else:
        rows = students.rows(plans(options))
    seeding = None
    if options.seeds == "auto":
        rows, seeding = _sequential(rows, students, run)
    for row in rows:  # each student's metric, by seed
        for seed, value in enumerate(row.student_runs):
            curves.metrics(f"student {row.label}", {row.metric: value}, seed)
    timings = {k: round(v, 3) for k, v in students.timings.items()}
    comparison = Comparison(run.path, rows,
                            {**asdict(replace(options, train=None)), "train": train.to_dict()},
                            options.key(train), run.run_id, search=search, timings=timings,
                            seeding=seeding)
    comparison.verdict = verdict(comparison, run.ranking_reliability)
    comparison.advice = [step.to_dict() for step in advise(comparison, run.document)]
    return comparison
