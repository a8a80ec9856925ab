"""What the comparison means: the verdict, its statistics, the advice, and ``--expect``.

All of it reads rows of a :class:`~cmkd_doctor.comparison.Comparison` and nothing else,
so it is tested on hand-built rows. Every row's students share seeds, so a difference
between two rows is taken seed by seed: its standard error is the spread of the per-seed
differences over sqrt(seeds) (:func:`paired_se`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from cmkd_doctor.comparison import BASELINES, Comparison, Row
from cmkd_doctor.errors import ExpectationFailed, option_error

DERIVED = ("general", "specific", "random")
# mfh_ordering[r] when the ranking behind the derived teachers is unreliable: the
# comparisons are still measured (mfh_ordering_detail) but not read as the hypothesis
NOT_INTERPRETED = "not_interpreted"


# The one rule every comparison of the verdict uses: a difference between two rows is
# clear when its mean over seeds is more than Z paired standard errors from zero.
Z = 2.0


def paired_se(a: Row, b: Row) -> float:
    """Standard error of mean(a - b) over the seeds both rows share."""
    diff = np.asarray(a.student_runs) - np.asarray(b.student_runs)
    return float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0


@dataclass(frozen=True)
class Difference:
    """Row a minus row b, seed by seed: mean, standard error and z = mean / SE.

    ``z`` is ``None`` with one seed (no error estimate). When every seed gives the same
    difference the spread estimates no error (SE 0, common with few seeds and coarse
    accuracies), and ``z`` is the sign test's instead: all n seeds on one side has
    two-sided p = 2^(1 - n), given as the normal deviate with that p (:func:`sign_z`), so
    identical differences are clear from 6 seeds on, never on 2.
    """

    delta: float
    se: float
    z: float | None
    seeds: int

    @property
    def gain(self) -> bool:
        return self.z is not None and self.z > Z

    @property
    def loss(self) -> bool:
        return self.z is not None and self.z < -Z

    @property
    def clear(self) -> bool:
        return self.gain or self.loss

    def seeds_to_settle(self) -> int | None:
        """Roughly how many seeds would make this difference clear, if it stays the same
        size (z grows with the square root of the seeds); ``None`` when it cannot say."""
        if self.z is None or self.z == 0:
            return None
        if self.se == 0:  # the sign test: the fewest seeds that all agreeing would settle
            return next(n for n in range(max(self.seeds, 2), 64) if sign_z(n) > Z)
        return math.ceil(self.seeds * (Z / abs(self.z)) ** 2)

    def strength(self) -> str:
        """``(4.2 standard errors)``, ``(within run-to-run noise)`` or ``(one seed)``."""
        if self.z is None:
            return " (one seed: no error estimate)"
        if self.se == 0 and self.delta != 0:
            return (f" (every one of {self.seeds} seeds gives it"
                    + ("" if self.clear else "; too few seeds to call it clear") + ")")
        if self.clear:
            return f" ({abs(self.z):.1f} standard errors)"
        return " (within run-to-run noise)"

    def to_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "se": self.se, "z": self.z, "seeds": self.seeds,
                "clear": self.clear}


def difference(a: Row, b: Row) -> Difference:
    """:class:`Difference` of row ``a`` minus row ``b`` over their shared seeds."""
    diff = np.asarray(a.student_runs) - np.asarray(b.student_runs)
    delta = float(diff.mean())
    if len(diff) < 2:
        return Difference(delta, 0.0, None, len(diff))
    se = paired_se(a, b)
    z = delta / se if se > 0 else math.copysign(sign_z(len(diff)), delta) if delta else 0.0
    return Difference(delta, se, z, len(diff))


def sign_z(seeds: int) -> float:
    """The sign test as a z: every one of ``seeds`` paired differences on one side has
    two-sided p = 2^(1 - seeds) (no difference: each side has probability 1/2); returned
    as the normal deviate with that two-sided p."""
    p = 2.0 ** (1 - seeds)
    return 0.0 if p >= 1 else NormalDist().inv_cdf(1 - p / 2)


ORDER = (("general", "random"), ("random", "specific"), ("general", "specific"))


def ordering(general: Row, random: Row, specific: Row) -> tuple[str, dict[str, Difference]]:
    """The MFH ordering at one ratio: ``fails`` when general - random, random - specific
    or general - specific is clearly negative; else ``holds`` when general - specific is
    clearly positive; else ``undetermined``."""
    rows = {"general": general, "random": random, "specific": specific}
    found = {f"{a}-{b}": difference(rows[a], rows[b]) for a, b in ORDER}
    if any(d.loss for d in found.values()):
        return "fails", found
    return ("holds" if found["general-specific"].gain else "undetermined"), found


def _ordering_text(ratio: str, state: str, found: dict[str, Difference], unit: str) -> str:
    if state == "fails":
        name, d = next((k, d) for k, d in found.items() if d.loss)
        return (f"fails at r = {ratio} ({name.replace('-', ' - ')} {d.delta:+.2f} {unit}"
                f"{d.strength()})")
    d = found["general-specific"]
    said = f"general - specific {d.delta:+.2f} {unit}{d.strength()}"
    if state == "holds":
        return f"holds at r = {ratio} ({said})"
    return f"is undetermined at r = {ratio} ({said}{_settle(d, 'settle it')})"


# Beyond this many seeds a difference is called too small to settle in practice.
PRACTICAL_SEEDS = 100


def _settle(d: Difference, what: str) -> str:
    """How many seeds would make an unclear difference clear, in words."""
    need = d.seeds_to_settle()
    if need is None:
        return f"; more seeds would {what}"
    if need > PRACTICAL_SEEDS:
        return (f"; over {PRACTICAL_SEEDS} seeds would be needed to {what}: the two are "
                "about equal")
    return f"; about {need} seeds would {what}" if need > d.seeds else ""


def verdict(report: Comparison, ranking: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the comparison says: does crossmodal KD help, does the MFH ordering hold,
    and which row is best.

    Every comparison uses one rule on the per-seed differences of the two rows (they
    share seeds): clear when ``|mean / SE| > 2``, with ``SE = std(ddof=1) / sqrt(seeds)``.
    ``ranking`` says whether the ranking the derived teachers come from is reliable
    (``{"reliable": bool, "why": str}``, see :func:`cmkd_doctor.rundir.ranking_reliability`,
    with ``paired`` and ``at_chance`` from the pairing and chance checks); when it is not,
    the derived teachers' rows are shown, their ordering is ``not_interpreted``, and no
    conclusion is drawn from them.
    """
    base = report.baselines
    none, regular = base["none"], base["regular"]
    unit = f"{report.metric} points"
    kd = difference(regular, none)
    ranking = ranking or {}
    reliable = ranking.get("reliable", True)
    paired = ranking.get("paired")  # None: not checked (a ranking from before the check)
    blind = list(ranking.get("at_chance") or [])
    states: dict[str, str] = {}
    details: dict[str, dict[str, Any]] = {}
    parts = []
    by_mode = {(r.teacher, r.ratio): r for r in report.rows}
    for ratio in sorted({r.ratio for r in report.rows if r.teacher in DERIVED}):
        trio = [by_mode.get((m, ratio)) for m in ("general", "random", "specific")]
        if all(trio):
            key = f"{ratio:g}"
            state, found = ordering(*trio)
            states[key] = state if reliable else NOT_INTERPRETED
            details[key] = {k: d.to_dict() for k, d in found.items()}
            if reliable:
                parts.append(_ordering_text(key, state, found, unit))
    best = max(report.rows, key=lambda row: row.student_mean)
    general_rows = [r for r in report.rows if r.teacher == "general"]
    sweet = max(general_rows, key=lambda r: r.student_mean) if len(general_rows) > 1 else None

    said = f"Regular-KD is {kd.delta:+.2f} {unit} against No-KD{kd.strength()}"
    if kd.gain:
        lines = [f"Crossmodal KD helps here: {said}."]
    elif kd.loss:
        lines = [f"Crossmodal KD with the regular teacher hurts here: {said}."]
    else:
        lines = [f"Crossmodal KD with the regular teacher makes no clear difference here: "
                 f"{said}."]
    gamma = ranking.get("gamma_estimate")
    little = bool(gamma and gamma["little_to_transfer"])
    class_only = paired is False and not blind
    for side in blind:
        lines.append(f"Check the data first: modality {side} predicts the labels no better "
                     "than chance, so its rows may not match the labels file.")
    if class_only:
        lines.append("The rows share only their class: each modality predicts the other's "
                     "decisive score no better on the same row than on another row of the "
                     "same class, so a teacher's soft labels can carry only the class "
                     "(label smoothing), whichever channels it keeps; check that both "
                     "files list the rows in the same order.")
    if gamma:
        share = (f"the estimated share of decisive information both modalities hold about "
                 f"the same row is gamma = {gamma['value']:.2f} ({gamma['low']:.2f}-"
                 f"{gamma['high']:.2f})")
        lines.append(f"Little to transfer: {share}; a teacher on the other modality can "
                     "pass on only that share." if little else f"Shared information: {share}.")
    if states and not reliable:
        # the data checks already have their sentence above; name only what is left
        said = "; ".join(r["text"] for r in ranking.get("reasons", [])
                         if r["code"] not in ("at_chance", "class_only"))
        why = (f"here ({said})" if said else "here (see above)") if "reasons" in ranking \
            else f"here ({ranking.get('why', 'see rank')})"
        lines.append(f"The ranking is unreliable {why}: the derived teachers' rows are "
                     "shown, but say nothing about the hypothesis.")
    elif parts:
        text = "; it ".join(parts)
        lines.append(f"The MFH ordering general >= random >= specific {text}.")
        if all(v == "holds" for v in states.values()):
            lines.append("The teacher's modality-general channels are what transfers.")
    if sweet is not None and reliable:
        lines.append(f"Sweet spot: the modality-general teacher's student is best at r = "
                     f"{sweet.ratio:g} ({sweet.student_mean:.2f}) of the "
                     f"{len(general_rows)} ratios distilled.")
    best_vs_regular = difference(best, regular)
    best_vs_none = difference(best, none)
    derived_best = best.teacher not in BASELINES
    if derived_best:
        if best.teacher in DERIVED and not reliable:
            advice = "but the ranking behind it is unreliable"
        elif best_vs_regular.gain and best_vs_none.gain:
            advice = "use that teacher"
        elif best_vs_regular.gain:  # Regular-KD hurts: beating it is not enough
            advice = (f"but against training the student alone it is "
                      f"{best_vs_none.delta:+.2f} {unit}{best_vs_none.strength()}, not "
                      "clearly better: sweep the ratio or skip KD")
        else:
            advice = ("no teacher is clearly better than the regular one at these seeds"
                      + _settle(best_vs_regular, "tell"))
        lines.append(f"Best student: {best.label}, {best_vs_regular.delta:+.2f} {unit} over "
                     f"Regular-KD{best_vs_regular.strength()}; {advice}.")
    elif best.teacher == "regular":
        others = [r for r in report.rows if r is not best]
        runner = max(others, key=lambda row: row.student_mean)
        lead = difference(best, runner)
        lines.append(f"Best student: Regular-KD, {lead.delta:+.2f} {unit} over the next "
                     f"({runner.label}){lead.strength()}: no derived teacher beats the "
                     "regular one here" + ("." if kd.gain else ", and the regular one does "
                                           "not clearly beat training the student alone."))
    else:
        lines.append("Best student: No-KD. No teacher beat training the student alone: "
                     + ("as expected when the rows share only their class."
                        if class_only else
                        "the gamma estimate agrees that the modalities share little, so "
                        "skip KD from this modality." if little else
                        "the modalities may share little label-relevant information; try a "
                        "modality-general teacher at other ratios (a sweep) or skip KD."))
    holds = (None if not states or NOT_INTERPRETED in states.values()
             else False if "fails" in states.values()
             else True if all(v == "holds" for v in states.values()) else None)
    action, headline = _headline(best, best_vs_regular, best_vs_none, unit, reliable,
                                 little, class_only, blind)
    headline += " " + _kd_and_ordering(kd, states, unit)
    return {
        "kd_helps": kd.gain,
        "kd_delta": kd.delta,
        "kd_delta_se": kd.se,
        "kd": kd.to_dict(),
        "ranking_reliable": reliable,
        "little_to_transfer": little,
        "paired": paired,
        "at_chance": blind,
        "ranking": ranking or {"reliable": True, "why": ""},
        "mfh_ordering": states,
        "mfh_ordering_detail": details,
        "mfh_ordering_holds": holds,
        "sweet_spot": None if sweet is None else {"ratio": sweet.ratio,
                                                  "student_mean": sweet.student_mean},
        "best": best.label,
        "best_delta_vs_regular": best_vs_regular.delta,
        "best_delta_vs_regular_se": best_vs_regular.se,
        # a teacher to use: its student clearly beats both Regular-KD and No-KD
        "best_is_clear": derived_best and best_vs_regular.gain and best_vs_none.gain and (
            reliable or best.teacher not in DERIVED),
        "text": " ".join(lines),
        "action": action,
        "headline": headline,
    }


def _headline(best: Row, over_regular: Difference, over_none: Difference, unit: str,
              reliable: bool, little: bool, class_only: bool = False,
              blind: list[str] | None = None) -> tuple[str, str]:
    """What to do, in a few words and in one sentence: the verdict's conclusion for a
    first screen or a summary table (``text`` keeps the reasoning, the rows the gains).
    A teacher is worth using only when its student clearly beats both baselines; data
    whose rows do not match the labels, or share only their class, come first."""
    alone = ("sweep the ratio or skip KD", "try a modality-general teacher at other ratios "
             "(a sweep), or skip KD from this modality.")
    if blind:
        names = " and ".join(blind)
        return (f"check the data: modality {names} is at chance",
                f"Check the data first: modality {names} predicts the labels no better than "
                "chance, so its rows may not match the labels file.")
    if class_only and (best.teacher == "none" or not over_none.gain):
        return ("rows share only the class: check their order",
                "No teacher clearly beat training the student alone, and the rows of a and "
                "b share nothing beyond their class: check that both files list the rows "
                "in the same order; if they do, crossmodal KD can only act as label "
                "smoothing here, and no derived teacher changes that.")
    if best.teacher == "none":
        if little:
            return ("skip KD from this modality",
                    "Skip KD from this modality: no teacher beat training the student alone, "
                    "and the gamma estimate says the modalities share little.")
        return (f"no teacher beats No-KD: {alone[0]}",
                f"No teacher beat training the student alone: {alone[1]}")
    if not over_none.gain:
        whose = "Regular-KD's" if best.teacher == "regular" else f"the {best.label} teacher's"
        said = (f"the best student, {whose}, is {over_none.delta:+.2f} {unit} over No-KD"
                f"{over_none.strength()}")
        if little:  # a sweep cannot find what the modalities do not share
            return ("skip KD from this modality",
                    f"Skip KD from this modality: no teacher clearly beat training the "
                    f"student alone ({said}), and the gamma estimate says the modalities "
                    "share little.")
        return (f"no teacher clearly beats No-KD: {alone[0]}",
                f"No teacher clearly beat training the student alone: {said}; {alone[1]}")
    if best.teacher == "regular":
        return ("keep the regular teacher",
                "Keep the regular teacher: no derived teacher beat it.")
    if best.teacher in DERIVED and not reliable:
        return ("the ranking is unreliable: derived teachers not interpreted",
                f"The {best.label} teacher's student is best, but the ranking behind it is "
                "unreliable: do not act on the derived teachers yet.")
    if over_regular.gain:
        return (f"use the {best.label} teacher",
                f"Use the {best.label} teacher: its student clearly beats Regular-KD and "
                "No-KD.")
    return ("no teacher clearly beats Regular-KD at these seeds",
            f"No teacher is clearly better than the regular one at these seeds: the best, "
            f"{best.label}, is within run-to-run noise of it.")


def _kd_and_ordering(kd: Difference, states: dict[str, str], unit: str) -> str:
    """The two checks behind a headline, in one sentence: does crossmodal KD help at
    all, and does the MFH ordering hold at the ratios distilled (read from ``states``,
    the verdict's ``mfh_ordering``)."""
    said = ("helps" if kd.gain else "hurts" if kd.loss else "makes no clear difference")
    text = f"Regular-KD {said} ({kd.delta:+.2f} {unit} against No-KD)"
    if NOT_INTERPRETED in states.values():
        return text + "; the MFH ordering is not interpreted (unreliable ranking)."
    if states:
        by_state: dict[str, list[str]] = {}
        for ratio, state in states.items():
            by_state.setdefault(state, []).append(ratio)
        text += "; the MFH ordering general >= random >= specific " + ", ".join(
            f"{'is undetermined' if state == 'undetermined' else state} at r = "
            f"{', '.join(ratios)}" for state, ratios in by_state.items())
    return text + "."


def advise(report: Comparison, rank_document: dict, truth: dict | None) -> list[str]:
    """What to try next, in the order a user would."""
    verdict = report.verdict
    rows = {(r.teacher, r.ratio): r for r in report.rows}
    sweet = verdict.get("sweet_spot")
    ratio = sweet["ratio"] if sweet else (report.search or {}).get("best_ratio") or \
        report.options["ratios"][0]
    general = rows.get(("general", ratio))
    regular = rows[("regular", None)]
    advice = []
    blind = verdict.get("at_chance") or []
    if blind:
        return [f"Modality {side} predicts the labels no better than chance: check that its "
                "features file lists the same samples, in the same order, as the labels file "
                "(and as the other modality's file)." for side in blind]
    if verdict.get("paired") is False:
        pairing = rank_document.get("pairing") or {}
        advice.append(
            "The rows of a and b share nothing detectable beyond their class (rank.json "
            f"pairing: score {pairing.get('score', 0):.2f} against {pairing.get('null', 0):.2f} "
            "with b's rows shuffled within class). Check that both feature files list the "
            "same samples in the same order. If they do (or the pairs were assembled by "
            "class, as AV-MNIST's are), a teacher on modality a can pass on only the class: "
            "expect crossmodal KD to act as label smoothing, and no ratio or derived "
            "teacher to change that.")
        return advice
    if general is not None and verdict["best"] == general.label:
        if verdict["best_is_clear"]:
            advice.append(f"Distil from the modality-general teacher (teachers/general-r"
                          f"{ratio:g}.safetensors in the run directory; 'cmkd-doctor "
                          f"derive-teacher --mode general --ratio {ratio:g} --export-onnx "
                          "teacher.onnx' exports it for your own training code).")
        else:
            advice.append("The modality-general teacher gives the best student, but not "
                          "clearly: rerun with more --seeds (say 10) before switching to it.")
    if verdict["mfh_ordering_holds"] is False and verdict.get("ranking_reliable", True):
        metrics = rank_document["aligned"]["metrics"]["a"]["test"] or {}
        advice.append("The students do not order as the hypothesis predicts, so the ranking "
                      "may be unreliable here: check the aligned networks' test "
                      f"{next(iter(metrics), 'metric')} above, raise --repeats, or rank with "
                      "--hidden 0 or more data.")
    little = verdict.get("little_to_transfer")
    if not verdict["kd_helps"] and not little:
        advice.append("The regular teacher does not clearly help the student: much of what "
                      "it knows may be specific to its modality. Try other ratios (--ratio "
                      "0.25 or 0.75), or a teacher trained to be modality-general (paper "
                      "Sec. 5.3).")
    if general is not None and general.student_mean <= regular.student_mean and not little:
        advice.append(f"At r = {ratio:g} the modality-general teacher does not beat the "
                      "regular one; nullifying fewer channels may keep decisive ones.")
    gamma = rank_document.get("gamma_estimate") or {}
    if gamma.get("little_to_transfer"):
        advice.append(f"The modalities share little decisive information (gamma estimate "
                      f"{gamma['value']:.2f}, {gamma['low']:.2f}-{gamma['high']:.2f}): no "
                      "teacher on this modality can pass on much. A teacher modality "
                      "closer to the student's, features from a later layer (extract), or "
                      "training the student alone may serve better.")
    if truth and truth["precision"] is not None and truth["precision"] < 1:
        advice.append(f"The ranking recovered {truth['precision']:.0%} of the planted shared "
                      "channels; more repeats or rows sharpen it.")
    return advice or ["Nothing to change: the comparison is as the hypothesis predicts."]


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
