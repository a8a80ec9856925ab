"""What the comparison means: the verdict, its statistics, the advice, and ``--expect``.

All of it reads rows of a :class:`~cmkd_doctor.comparison.Comparison` and nothing else,
so it is tested on hand-built rows. Every row's students share seeds, so a difference
between two rows is taken seed by seed: its standard error is the spread of the per-seed
differences over sqrt(seeds) (:func:`paired_se`).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from cmkd_doctor.comparison import BASELINES, Comparison, Row
from cmkd_doctor.errors import ExpectationFailed, option_error
from cmkd_doctor.sequential import has_spread, seeds_needed, threshold
from cmkd_doctor.teachers import DERIVED, MFH_ORDER

# mfh_ordering[r] when the ranking behind the derived teachers is unreliable: the
# comparisons are still measured (mfh_ordering_detail) but not read as the hypothesis
NOT_INTERPRETED = "not_interpreted"


# The one rule every comparison of the verdict uses: a difference between two rows is
# clear when its mean over seeds is more than Z paired standard errors from zero.
Z = 2.0


def paired(a: Row, b: Row) -> np.ndarray:
    """Row a minus row b, seed by seed, over the seeds both have (every row's seeds are
    the same list, so the first n of each; ``--seeds auto`` gives some rows more)."""
    n = min(len(a.student_runs), len(b.student_runs))
    return np.asarray(a.student_runs[:n]) - np.asarray(b.student_runs[:n])


def paired_se(a: Row, b: Row) -> float:
    """Standard error of mean(a - b) over the seeds both rows share."""
    diff = paired(a, b)
    return float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0


@dataclass(frozen=True)
class Difference:
    """Row a minus row b, seed by seed: mean, standard error and z = mean / SE.

    ``z`` is ``None`` with one seed (no error estimate). When every seed gives the same
    difference the spread estimates no error (SE 0, common with few seeds and coarse
    accuracies), and ``z`` is the sign test's instead: all n seeds on one side has
    two-sided p = 2^(1 - n), given as the normal deviate with that p (:func:`sign_z`), so
    identical differences are clear from 6 seeds on, never on 2.

    ``threshold`` is the |z| to pass: :data:`Z` for a fixed number of seeds, or the
    sequential rule's for its seeds (``--seeds auto``, :mod:`cmkd_doctor.sequential`).
    """

    delta: float
    se: float
    z: float | None
    seeds: int
    threshold: float = Z

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


def difference(a: Row, b: Row, per_look: float | None = None) -> Difference:
    """:class:`Difference` of row ``a`` minus row ``b`` over their shared seeds; with
    ``per_look`` (``--seeds auto``'s level) clear by the sequential rule, else by
    :data:`Z`."""
    diff = paired(a, b)
    delta = float(diff.mean())
    if len(diff) < 2:
        return Difference(delta, 0.0, None, len(diff))
    se = paired_se(a, b)
    if not has_spread(delta, se * math.sqrt(len(diff))):
        se = 0.0  # every seed gave the same difference (up to rounding): the sign test
    z = delta / se if se > 0 else math.copysign(sign_z(len(diff)), delta) if delta else 0.0
    needed = Z if per_look is None else threshold(len(diff), per_look, spread=se > 0)
    return Difference(delta, se, z, len(diff), needed)


def sign_z(seeds: int) -> float:
    """The sign test as a z: every one of ``seeds`` paired differences on one side has
    two-sided p = 2^(1 - seeds) (no difference: each side has probability 1/2); returned
    as the normal deviate with that two-sided p."""
    p = 2.0 ** (1 - seeds)
    return 0.0 if p >= 1 else NormalDist().inv_cdf(1 - p / 2)


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
DECISIONS = ("check_data", "check_order", "skip_kd", "sweep_or_skip", "keep_regular",
             "unreliable", "use_teacher", "undecided")


def decide(o: Outcome) -> str:
    """What to do: the verdict's one decision tree (one of :data:`DECISIONS`). A teacher
    is worth using only when its student clearly beats both baselines; data whose rows do
    not match the labels, or share only their class, come first; a ratio sweep cannot
    find what the modalities do not share."""
    if o.blind:
        return "check_data"
    if o.class_only and (o.best.teacher == "none" or not o.best_vs_none.gain):
        return "check_order"
    if o.best.teacher == "none" or not o.best_vs_none.gain:
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
    per_look = (report.seeding or {}).get("per_look")  # --seeds auto's rule, else Z
    compare = functools.partial(difference, per_look=per_look)
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
    best = max(report.rows, key=lambda row: row.student_mean)
    general_rows = [r for r in report.rows if r.teacher == "general"]
    runner = None
    if best.teacher == "regular":
        following = max((r for r in report.rows if r is not best),
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
        rows=report.rows, seeding=report.seeding)
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


def verdict(report: Comparison, ranking: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the comparison says: does crossmodal KD help, does the MFH ordering hold,
    which row is best, and what to do (one decision, :func:`decide`), as data with its
    wording (``text``: the reasoning; ``headline`` and ``action``: the conclusion).

    Every comparison uses one rule on the per-seed differences of the two rows (they
    share seeds): clear when ``|mean / SE| > 2``, with ``SE = std(ddof=1) / sqrt(seeds)``,
    or, when the seeds were chosen by ``--seeds auto`` (``report.seeding``), beyond the
    sequential rule's threshold for that many seeds (:mod:`cmkd_doctor.sequential`).
    ``ranking`` says whether the ranking the derived teachers come from is reliable
    (``{"reliable": bool, "why": str}``, see :func:`cmkd_doctor.findings.reliability`,
    with ``paired`` and ``at_chance`` from the pairing and chance checks); when it is not,
    the derived teachers' rows are shown, their ordering is ``not_interpreted``, and no
    conclusion is drawn from them.
    """
    from cmkd_doctor import wording

    o = outcome(report, ranking)
    states = o.states
    holds = (None if not states or NOT_INTERPRETED in states.values()
             else False if "fails" in states.values()
             else True if all(v == "holds" for v in states.values()) else None)
    action, headline = wording.headline(o)
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
        "best_delta_vs_regular": o.best_vs_regular.delta,
        "best_delta_vs_regular_se": o.best_vs_regular.se,
        # a teacher to use: its student clearly beats both Regular-KD and No-KD
        "best_is_clear": o.derived_best and o.best_vs_regular.gain and o.best_vs_none.gain
        and (o.reliable or o.best.teacher not in DERIVED),
        "decision": o.decision,
        # --seeds auto: each comparison the decision rests on, its seeds and its state
        **({"seeds": o.seeding.get("decisions", [])} if o.seeding else {}),
        "text": wording.verdict_text(o),
        "action": action,
        "headline": headline,
    }


def kd_effect(verdict: dict[str, Any]) -> str:
    """What a verdict says of Regular-KD against No-KD, in one word or phrase:
    ``helps``, ``hurts`` or ``no clear difference``."""
    if not verdict["kd"]["clear"]:
        return "no clear difference"
    return "helps" if verdict["kd_delta"] > 0 else "hurts"


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
