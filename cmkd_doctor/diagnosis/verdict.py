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
from dataclasses import dataclass
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
    decision: str = ""

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
             "keep_regular", "unreliable", "use_teacher", "undecided")


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
    """What to do: the verdict's one decision tree (one of :data:`DECISIONS`). A teacher
    is worth using only when its student clearly beats both baselines; data whose rows do
    not match the labels, or share only their class, come first; then a teacher weaker
    than the student alone, which explains a KD loss before shared information does; a
    ratio sweep cannot find what the modalities do not share."""
    if o.blind:
        return "check_data"
    if o.class_only and (o.best.teacher == "none" or not o.best_vs_none.gain):
        return "check_order"
    if o.best.teacher == "none" or not o.best_vs_none.gain:
        if o.weak is not None:
            return "weak_teacher"
        return "skip_kd" if o.little else "sweep_or_skip"
    if o.best.teacher == "regular":
        return "keep_regular"
    if o.best.teacher in DERIVED and not o.reliable:
        return "unreliable"
    return "use_teacher" if o.best_vs_regular.gain else "undecided"


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
    none, regular = base["none"], base["regular"]
    ranking = ranking or {}
    blind = list(ranking.get("at_chance") or [])
    gamma = ranking.get("gamma_estimate")
    by_mode = {(r.teacher, r.ratio): r for r in report.rows}
    orderings = []
    for ratio in sorted({r.ratio for r in report.rows if r.teacher in DERIVED}):
        trio = [by_mode.get((m, ratio)) for m in MFH_ORDER]
        if all(trio):
            orderings.append((f"{ratio:g}", *ordering(*trio, per_look)))
    # the rows a call can recommend: the control is a yardstick, not a teacher to use
    candidates = [r for r in report.rows if r.teacher != "control"]
    best = max(candidates, key=lambda row: row.student_mean)
    general_rows = [r for r in report.rows if r.teacher == "general"]
    runner = None
    if best.teacher == "regular":
        following = max((r for r in candidates if r is not best),
                        key=lambda row: row.student_mean)
        runner = (following, compare(best, following))
    found = Outcome(
        unit=f"{report.metric} points", kd=compare(regular, none), orderings=orderings,
        best=best, best_vs_regular=compare(best, regular),
        best_vs_none=compare(best, none), runner=runner,
        sweet=sweet_spot(general_rows), general_rows=len(general_rows),
        reliable=ranking.get("reliable", True), reasons=ranking.get("reasons"),
        why=ranking.get("why", "see rank"),
        little=bool(gamma and gamma["little_to_transfer"]),
        class_only=ranking.get("paired") is False and not blind, blind=blind, gamma=gamma,
        rows=report.rows, seeding=report.seeding, weak=weak_teacher(regular, none),
        control=base.get("control"))
    found.decision = decide(found)
    return found


def needed(o: Outcome) -> list[tuple[str, Row, Row, Difference]]:
    """The comparisons :func:`decide`'s decision and the headline rest on, as
    ``(name, row a, row b, a - b)``: Regular-KD against No-KD; a derived or checkpoint
    teacher's best student against both baselines (only against No-KD when an unreliable
    ranking made it: no choice between it and Regular-KD follows); and, where the ranking
    is reliable, general - specific at every ratio whose MFH ordering is neither failed
    nor held. Data at chance decides nothing by comparison."""
    if o.blind:
        return []
    rows = {(r.teacher, r.ratio): r for r in o.rows}
    derived = {(r.teacher, f"{r.ratio:g}"): r for r in o.rows if r.teacher in DERIVED}
    found = [("Regular-KD - No-KD", rows["regular", None], rows["none", None], o.kd)]
    if o.best.teacher not in BASELINES:
        found.append((f"{o.best.label} - No-KD", o.best, rows["none", None], o.best_vs_none))
        if o.reliable or o.best.teacher not in DERIVED:  # else not acted on: unreliable
            found.append((f"{o.best.label} - Regular-KD", o.best, rows["regular", None],
                          o.best_vs_regular))
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
        # a teacher to use: its student clearly beats both Regular-KD and No-KD
        "best_is_clear": o.derived_best and o.best_vs_regular.gain and o.best_vs_none.gain
        and (o.reliable or o.best.teacher not in DERIVED),
        "decision": o.decision,
        "weak_teacher": o.weak,
        "control": _control_facts(o),
        # --seeds auto: each comparison the decision rests on, its seeds and its state
        **({"seeds": o.seeding.get("decisions", [])} if o.seeding else {}),
    }


def _control_facts(o: Outcome) -> dict[str, Any] | None:
    """The knowledge-free control against No-KD (what softer targets alone give) and the
    best row against the control (what its teacher gives beyond them); ``None`` for a
    comparison without a control row (recorded before it existed)."""
    if o.control is None:
        return None
    none = next(r for r in o.rows if r.teacher == "none")
    per_look = (o.seeding or {}).get("per_look")
    return {"vs_none": difference(o.control, none, per_look).to_dict(), "best": o.best.label,
            "best_vs_control": difference(o.best, o.control, per_look).to_dict()}


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
