"""What the comparison means: the verdict, its statistics, the advice, and ``--expect``.

All of it reads rows of a :class:`~cmkd_doctor.diagnosis.comparison.Comparison` and nothing else,
so it is tested on hand-built rows. Every row's students share seeds, so a difference
between two rows is taken seed by seed: its standard error is the spread of the per-seed
differences over sqrt(seeds) (:func:`~cmkd_doctor.diagnosis.comparison.difference`, the one number
the table and the verdict both show).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmkd_doctor.choices import DERIVED, MFH_ORDER
from cmkd_doctor.diagnosis.comparison import (  # noqa: F401 - the verdict's rule, re-exported
    BASELINES,
    Comparison,
    Difference,
    Row,
    Z,
    difference,
    paired,
    paired_se,
    sign_z,
    split_rule,
    standard_error,
)
from cmkd_doctor.errors import ExpectationFailed, option_error

# mfh_ordering[r] when the ranking behind the derived teachers is unreliable: the
# comparisons are still measured (mfh_ordering_detail) but not read as the hypothesis
NOT_INTERPRETED = "not_interpreted"


ORDER = (("general", "random"), ("random", "specific"), ("general", "specific"))


def ordering(general: Row, random: Row, specific: Row, per_look: float | None = None
             ) -> tuple[str, dict[str, Difference]]:
    """The MFH ordering at one ratio: ``fails`` when general - random, random - specific
    or general - specific is clearly negative; else ``holds`` when general - specific is
    clearly positive; else ``undetermined``."""
    rows = dict(zip(MFH_ORDER, (general, random, specific), strict=True))
    found = {f"{a}-{b}": difference(rows[a], rows[b], per_look) for a, b in ORDER}
    if any(d.loss for d in found.values()):
        return "fails", found
    return ("holds" if found["general-specific"].gain else "undetermined"), found


# Beyond this many seeds a difference is called too small to settle in practice.
PRACTICAL_SEEDS = 100


@dataclass
class Outcome:
    """Every fact the verdict rests on, computed once from the rows and the ranking's
    findings; :func:`decide` reads it for what to do, :mod:`cmkd_doctor.wording` words it
    (the reasoning, the headline, the action)."""

    unit: str
    kd: Difference  # Regular-KD - No-KD
    orderings: list[tuple[str, str, dict[str, Difference]]]  # (ratio, state, differences)
    best: Row
    # the best row against each yardstick by the plain rule (call: at its share)
    best_vs_regular: Difference
    best_vs_none: Difference
    runner: tuple[Row, Difference] | None  # when Regular-KD is best: the next, and the lead
    sweet: Row | None  # the general teacher's best ratio, when several were distilled
    general_rows: int
    reliable: bool
    reasons: list[dict[str, str]] | None  # why the ranking is unreliable (None: not said)
    why: str
    little: bool
    class_only: bool
    blind: list[str]
    gamma: dict[str, Any] | None
    rows: list[Row]
    seeding: dict[str, Any] | None = None  # --seeds auto's record (Comparison.seeding)
    # the regular teacher measured below the student trained alone (weak_teacher())
    weak: dict[str, float] | None = None
    control: Row | None = None  # the knowledge-free control (absent from older records)
    best_vs_control: Difference | None = None  # None without a control row
    control_vs_none: Difference | None = None  # what softer targets alone give
    competing: int = 0  # the rows that compete for "use X" (holm())
    share: int = 1  # the best row's comparisons are each tested at 1/share of the level
    # "use X": the best derived or checkpoint row against each yardstick (Regular-KD,
    # No-KD, Control) at its share of the level; empty when the best row is no such row
    call: dict[str, Difference] = field(default_factory=dict)
    tied: list[Row] = field(default_factory=list)  # rows within noise of the best
    decision: str = ""

    def settling(self, name: str) -> Difference | None:
        """The best row against the yardstick ``name`` (``Regular-KD``, ``No-KD`` or
        ``Control``) as the decision must see it settled: at the best row's share of the
        level where it competes for "use X", else by the plain rule."""
        plain = {"Regular-KD": self.best_vs_regular, "No-KD": self.best_vs_none,
                 "Control": self.best_vs_control}[name]
        return self.call.get(name, plain)

    @property
    def helps(self) -> bool:
        """A teacher's student clearly beats the student trained alone."""
        return self.best.teacher != "none" and self.best_vs_none.gain

    @property
    def beyond_control(self) -> bool:
        """The best row clearly beats the knowledge-free control: what it gives is the
        teacher's, not softer targets' (true without a control row to read it by)."""
        return self.best_vs_control is None or self.best_vs_control.gain

    @property
    def softer(self) -> bool:
        """The control's targets, which carry no knowledge, clearly beat No-KD."""
        return self.control_vs_none is not None and self.control_vs_none.gain

    @property
    def beyond_shared(self) -> bool:
        """A teacher helps beyond what the shared information explains: its student
        clearly beats No-KD and the control while the gamma estimate says the
        modalities share little, or the rows share only their class (a finding of its
        own: no advice then says to skip KD). Only a control row can show it: without
        one, softer targets would explain such a gain as well."""
        return (not self.blind and self.helps and self.best_vs_control is not None
                and self.beyond_control and (self.little or self.class_only))

    @property
    def states(self) -> dict[str, str]:
        """The MFH ordering per ratio (``not_interpreted`` under an unreliable ranking)."""
        return {ratio: state if self.reliable else NOT_INTERPRETED
                for ratio, state, _ in self.orderings}

    @property
    def derived_best(self) -> bool:
        return self.best.teacher not in BASELINES


# what decide() can say; wording.headline words each
DECISIONS = ("check_data", "check_order", "weak_teacher", "skip_kd", "sweep_or_skip",
             "use_control", "keep_regular", "unreliable", "use_teacher", "undecided")
# the decisions that recommend distilling from a teacher (no output then says to skip KD)
USE_A_TEACHER = ("keep_regular", "use_teacher")


def weak_teacher(regular: Row, none: Row) -> dict[str, float] | None:
    """The regular teacher's test metric when it is below the student trained alone
    (No-KD's mean) by more than :data:`Z` standard errors of that mean (or at all, when
    every No-KD seed gives the same figure): a teacher the student outgrows on its own
    has less to pass on than the labels, whatever the modalities share. ``None`` when it
    is not, or the teacher's metric is unknown."""
    if regular.teacher_metric is None:
        return None
    se = standard_error(none.student_runs)
    gap = none.student_mean - regular.teacher_metric
    if gap <= Z * se:  # with se 0 (every seed alike): below at all
        return None
    return {"teacher": regular.teacher_metric, "student_alone": none.student_mean,
            "student_alone_se": se, "gap": gap}


def decide(o: Outcome) -> str:
    """What to do: the verdict's one decision tree (one of :data:`DECISIONS`).

    Data whose rows do not match the labels, or share only their class, come first. A
    teacher's gain counts as the teacher's only where its student clearly beats both
    No-KD and the knowledge-free control (:mod:`cmkd_doctor.teachers.control`); a gain
    the control matches, or one the control gives where no teacher does, is softer
    targets (regularisation), and the control's targets are the advice then
    (``use_control``). With no gain at all, a teacher weaker than the student alone
    explains it before shared information does, and a ratio sweep cannot find what the
    modalities do not share. A derived or checkpoint teacher is worth using only when its
    student clearly beats Regular-KD, No-KD and the control, each at its share of the
    level among the rows that compete for the call (:func:`holm`)."""
    if o.blind:
        return "check_data"
    if o.class_only and not (o.helps and o.beyond_control):
        return "check_order"
    if not o.helps:
        if o.softer:
            return "use_control"
        if o.weak is not None:
            return "weak_teacher"
        return "skip_kd" if o.little else "sweep_or_skip"
    if not o.beyond_control:
        return "use_control" if o.softer else "undecided"
    if o.best.teacher == "regular":
        return "keep_regular"
    if o.best.teacher in DERIVED and not o.reliable:
        return "unreliable"
    return "use_teacher" if o.call and all(d.gain for d in o.call.values()) else "undecided"


def holm(rows: list[Row], tests: Any) -> dict[str, int]:
    """Holm's step-down procedure (Holm 1979) over the ``rows`` that compete for one
    call, each of which must clearly beat every yardstick (``tests(row, share)``: its
    differences with each at 1/share of the rule's level). A row's p value is the largest
    of its comparisons' (an intersection-union test: its call holds only when every
    comparison does; a comparison that is not a gain counts as p = 1). In order of that p,
    the first row is tested at 1/m of the level, the next at 1/(m-1) while every row
    before it passed, and so on; once one fails, the rest are tested at its share, which
    none of them can pass. This keeps the chance that any call is false at the rule's
    level however many rows compete (every ratio of a sweep, every derived mode, every
    checkpoint). Returns each row's share, by label."""
    def worst(row: Row) -> float:
        return max((d.p if d.delta > 0 else 1.0) for d in tests(row, 1))

    shares, left = {}, len(rows)
    for row in sorted(rows, key=worst):
        shares[row.label] = left
        if left > 1 and all(d.gain for d in tests(row, left)):
            left -= 1
    return shares


def sweet_spot(rows: list[Any], mean: str = "student_mean") -> Any | None:
    """The general teacher's row with the best student, when several ratios were
    distilled (``rows``: the general teacher's, as rows or as their JSON dicts)."""
    def value(row: Any) -> float:
        return row[mean] if isinstance(row, dict) else getattr(row, mean)

    ratios = {row["ratio"] if isinstance(row, dict) else row.ratio for row in rows}
    return max(rows, key=value) if len(ratios) > 1 else None


def outcome(report: Comparison, ranking: dict[str, Any] | None = None) -> Outcome:
    """The facts of a comparison and of the ranking behind it (see :func:`verdict`)."""
    per_look, compare = report.per_look, report.difference  # --seeds auto's rule, else Z
    base = report.baselines
    none, regular, control = base["none"], base["regular"], base.get("control")
    ranking = ranking or {}
    reliable = ranking.get("reliable", True)
    blind = list(ranking.get("at_chance") or [])
    gamma = ranking.get("gamma_estimate")
    by_mode = {(r.teacher, r.ratio): r for r in report.rows}
    orderings = []
    for ratio in sorted({r.ratio for r in report.rows if r.teacher in DERIVED}):
        trio = [by_mode.get((m, ratio)) for m in MFH_ORDER]
        if all(trio):
            orderings.append((f"{ratio:g}", *ordering(*trio, per_look)))

    yardsticks = {"Regular-KD": regular, "No-KD": none, "Control": control}

    def call(row: Row, share: int) -> dict[str, Difference]:
        """``row`` against every yardstick a teacher to use must clearly beat."""
        rule = split_rule(report.seeding, share)
        return {name: difference(row, b, *rule) for name, b in yardsticks.items()
                if b is not None}

    # the rows a call can recommend (the control is a yardstick, not a teacher to use;
    # a derived teacher of an unreliable ranking is not acted on) and their shares
    teachers = [r for r in report.rows if r.teacher not in BASELINES]
    shares = holm([r for r in teachers if reliable or r.teacher not in DERIVED],
                  lambda row, share: list(call(row, share).values()))
    best = max((r for r in report.rows if r.teacher != "control"),
               key=lambda row: row.student_mean)
    share = shares.get(best.label, 1)
    general_rows = [r for r in report.rows if r.teacher == "general"]
    runner = None
    if best.teacher == "regular":
        following = max((r for r in report.rows if r.teacher != "control" and r is not best),
                        key=lambda row: row.student_mean)
        runner = (following, compare(best, following))
    found = Outcome(
        unit=f"{report.metric} points", kd=compare(regular, none), orderings=orderings,
        best=best, best_vs_regular=compare(best, regular),
        best_vs_none=compare(best, none), runner=runner,
        sweet=sweet_spot(general_rows), general_rows=len(general_rows),
        reliable=reliable, reasons=ranking.get("reasons"),
        why=ranking.get("why", "see rank"),
        little=bool(gamma and gamma["little_to_transfer"]),
        class_only=ranking.get("paired") is False and not blind, blind=blind, gamma=gamma,
        rows=report.rows, seeding=report.seeding, weak=weak_teacher(regular, none),
        control=control,
        best_vs_control=None if control is None else compare(best, control),
        control_vs_none=None if control is None else compare(control, none),
        competing=len(shares), share=share,
        call=call(best, share) if best.label in shares else {},
        # named with the best: the rows it does not clearly beat (at the plain rule)
        tied=[r for r in teachers if r is not best and best.teacher not in BASELINES
              and not compare(best, r).gain])
    found.decision = decide(found)
    return found


def needed(o: Outcome) -> list[tuple[str, Row, Row, Difference]]:
    """The comparisons :func:`decide`'s decision and the headline rest on, as
    ``(name, row a, row b, a - b)``: Regular-KD against No-KD; a derived or checkpoint
    teacher's best student against both baselines (only against No-KD when an unreliable
    ranking made it: no choice between it and Regular-KD follows), each at its share of
    the level (:func:`holm`); the best teacher's student against the control, and the
    control against No-KD while either of the best row's gains is unsettled (then the
    control's own gain decides between ``use_control`` and the rest); and, where the
    ranking is reliable, general - specific at every ratio whose MFH ordering is neither
    failed nor held. Data at chance decides nothing by comparison."""
    if o.blind:
        return []
    rows = {(r.teacher, r.ratio): r for r in o.rows}
    derived = {(r.teacher, f"{r.ratio:g}"): r for r in o.rows if r.teacher in DERIVED}
    none = rows["none", None]
    called = o.call  # the best row's comparisons at its share, where it competes
    found = [("Regular-KD - No-KD", rows["regular", None], none, o.kd)]
    if o.best.teacher not in BASELINES:
        found.append((f"{o.best.label} - No-KD", o.best, none,
                      called.get("No-KD", o.best_vs_none)))
        if o.reliable or o.best.teacher not in DERIVED:  # else not acted on: unreliable
            found.append((f"{o.best.label} - Regular-KD", o.best, rows["regular", None],
                          called.get("Regular-KD", o.best_vs_regular)))
    if o.control is not None:
        if o.best.teacher != "none":
            found.append((f"{o.best.label} - Control", o.best, o.control,
                          called.get("Control", o.best_vs_control)))
        if not (o.helps and o.beyond_control):
            found.append(("Control - No-KD", o.control, none, o.control_vs_none))
    if o.reliable:
        for ratio, state, diffs in o.orderings:
            if state == "undetermined":
                found.append((f"general - specific at r = {ratio}",
                              derived["general", ratio], derived["specific", ratio],
                              diffs["general-specific"]))
    return found


def record(o: Outcome, ranking: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the comparison says: does crossmodal KD help, does the MFH ordering hold,
    which row is best, and what to do (one decision, :func:`decide`), as data: the facts
    ``o`` (:func:`outcome` of the comparison and ``ranking``) in the verdict's JSON form.
    :func:`cmkd_doctor.wording.verdict` adds its words (``text``: the reasoning;
    ``headline`` and ``action``: the conclusion).

    Every comparison uses one rule on the per-seed differences of the two rows (they
    share seeds): clear when ``|mean / SE| > 2``, with ``SE = std(ddof=1) / sqrt(seeds)``,
    or, when the seeds were chosen by ``--seeds auto`` (``report.seeding``), beyond the
    sequential rule's threshold for that many seeds (:mod:`cmkd_doctor.diagnosis.seed_schedule`).
    ``ranking`` says whether the ranking the derived teachers come from is reliable
    (``{"reliable": bool, "why": str}``, see :func:`cmkd_doctor.wording.reliability`,
    with ``paired`` and ``at_chance`` from the pairing and chance checks); when it is not,
    the derived teachers' rows are shown, their ordering is ``not_interpreted``, and no
    conclusion is drawn from them.
    """
    states = o.states
    holds = (None if not states or NOT_INTERPRETED in states.values()
             else False if "fails" in states.values()
             else True if all(v == "holds" for v in states.values()) else None)
    self_best = o.best.teacher == "regular"
    return {
        "kd_helps": o.kd.gain,
        "kd_delta": o.kd.delta,
        "kd_delta_se": o.kd.se,
        "kd": o.kd.to_dict(),
        "ranking_reliable": o.reliable,
        "little_to_transfer": o.little,
        "paired": (ranking or {}).get("paired"),
        "at_chance": o.blind,
        "ranking": ranking or {"reliable": True, "why": ""},
        "mfh_ordering": states,
        "mfh_ordering_detail": {ratio: {k: d.to_dict() for k, d in found.items()}
                                for ratio, _, found in o.orderings},
        "mfh_ordering_holds": holds,
        "sweet_spot": None if o.sweet is None else {"ratio": o.sweet.ratio,
                                                    "student_mean": o.sweet.student_mean},
        "best": o.best.label,
        # the best row against Regular-KD (None when it is Regular-KD: no row is compared
        # with itself)
        "best_delta_vs_regular": None if self_best else o.best_vs_regular.delta,
        "best_delta_vs_regular_se": None if self_best else o.best_vs_regular.se,
        # a teacher to use: its student clearly beats Regular-KD, No-KD and the control
        "best_is_clear": o.decision == "use_teacher",
        "decision": o.decision,
        # the rows that competed for "use X", the best row's share of the level (Holm),
        # and the rows within run-to-run noise of it, named with it
        "call": {"competing": o.competing, "share": o.share,
                 "tied": [r.label for r in o.tied],
                 **{f"best_vs_{key}": (d.to_dict() if (d := o.call.get(name)) else None)
                    for key, name in (("regular", "Regular-KD"), ("none", "No-KD"),
                                      ("control", "Control"))}},
        "beyond_shared": o.beyond_shared,
        "weak_teacher": o.weak,
        "control": _control_facts(o),
        # --seeds auto: each comparison the decision rests on, its seeds and its state
        **({"seeds": o.seeding.get("decisions", [])} if o.seeding else {}),
    }


def _control_facts(o: Outcome) -> dict[str, Any] | None:
    """The knowledge-free control against No-KD (what softer targets alone give) and the
    best row against the control (what its teacher gives beyond them), by the plain rule
    (``call`` holds the best row's comparisons at its share of the level), and whether
    the control explains the gain; ``None`` for a comparison without a control row
    (recorded before it existed)."""
    if o.control is None:
        return None
    return {"vs_none": o.control_vs_none.to_dict(), "best": o.best.label,
            "best_vs_control": o.best_vs_control.to_dict(),
            "explains_gain": o.decision == "use_control"}


# gates on the ranking rather than on rows: aligned (the ranking is reliable) and paired
# (the rows share more than their class)
RANKING_GATES = ("aligned", "paired")
_EXPECT = re.compile(r"^\s*(?P<a>[^<>=\s]+)\s*(?P<op>>=|>)\s*(?P<b>[^<>=\s]+)\s*$")


def resolve_expectation(text: str, rows: list[tuple[str, float | None, str]]
                         ) -> tuple[int, str, int]:
    """Indices of the two rows an expectation compares, and its operator (the gates on the
    ranking, ``aligned`` and ``paired``, compare no rows: ``(-1, "aligned", -1)``)."""
    if text.strip() in RANKING_GATES:
        return -1, text.strip(), -1
    match = _EXPECT.match(text)
    if not match:
        raise option_error("expect", "a comparison of two rows such as 'general>regular' "
                           "or 'general@0.5>=random@0.5', or aligned, or paired", text)

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


def check_expectation(report: Comparison, text: str) -> None:
    """Raise :class:`ExpectationFailed` (exit 3) when the comparison fails on the means;
    for ``aligned``, when the ranking is unreliable; for ``paired``, when the rows of a and
    b share nothing detectable beyond their class (or a modality is at chance)."""
    if text.strip() == "aligned":
        ranking = report.verdict.get("ranking") or {}
        if not report.verdict.get("ranking_reliable", True):
            raise ExpectationFailed(f"expectation 'aligned' failed: the ranking is "
                                    f"unreliable ({ranking.get('why', 'see rank.json')})")
        return
    if text.strip() == "paired":
        blind = report.verdict.get("at_chance") or []
        if blind:
            raise ExpectationFailed(f"expectation 'paired' failed: modality "
                                    f"{' and '.join(blind)} predicts the labels no better "
                                    "than chance")
        if report.verdict.get("paired") is False:
            raise ExpectationFailed("expectation 'paired' failed: the rows of a and b share "
                                    "nothing detectable beyond their class (rank.json "
                                    "pairing)")
        if report.verdict.get("paired") is None:
            raise ExpectationFailed("expectation 'paired' failed: this ranking has no "
                                    "pairing check (rank it again with this version)")
        return
    rows = report.rows
    a, op, b = resolve_expectation(text, [(r.teacher, r.ratio, r.label) for r in rows])
    left, right = rows[a], rows[b]
    holds = (left.student_mean >= right.student_mean if op == ">="
             else left.student_mean > right.student_mean)
    if not holds:
        raise ExpectationFailed(
            f"expectation '{text}' failed: {left.label} {left.student_mean:.2f} is not {op} "
            f"{right.label} {right.student_mean:.2f} (student {report.metric} %, mean over "
            f"{len(left.student_runs)} seeds)")
