"""What the comparison means: the verdict, its statistics, the advice, and ``--expect``.

All of it reads rows of a :class:`~cmkd_doctor.comparison.Comparison` and nothing else,
so it is tested on hand-built rows. Every row's students share seeds, so a difference
between two rows is taken seed by seed: its standard error is the spread of the per-seed
differences over sqrt(seeds) (:func:`paired_se`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.comparison import BASELINES, Comparison, Row
from cmkd_doctor.errors import ExpectationFailed, option_error

DERIVED = ("general", "specific", "random")


def paired_se(a: Row, b: Row) -> float:
    """Standard error of mean(a - b) over the seeds both rows share."""
    diff = np.asarray(a.student_runs) - np.asarray(b.student_runs)
    return float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0


def verdict(report: Comparison) -> dict[str, Any]:
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
    if general is not None and verdict["best"] == general.label:
        if verdict["best_is_clear"]:
            advice.append(f"Distil from the modality-general teacher (teachers/general-r"
                          f"{ratio:g}.safetensors in the run directory; 'cmkd-doctor "
                          f"derive-teacher --mode general --ratio {ratio:g} --export-onnx "
                          "teacher.onnx' exports it for your own training code).")
        else:
            advice.append("The modality-general teacher gives the best student, but not "
                          "clearly: rerun with more --seeds (say 10) before switching to it.")
    if verdict["mfh_ordering_holds"] is False:
        metrics = rank_document["aligned"]["metrics"]["a"]["test"] or {}
        advice.append("The students do not order as the hypothesis predicts, so the ranking "
                      "may be unreliable here: check the aligned networks' test "
                      f"{next(iter(metrics), 'metric')} above, raise --repeats, or rank with "
                      "--hidden 0 or more data.")
    if not verdict["kd_helps"]:
        advice.append("The regular teacher does not clearly help the student: much of what "
                      "it knows may be specific to its modality. Try other ratios (--ratio "
                      "0.25 or 0.75), or a teacher trained to be modality-general (paper "
                      "Sec. 5.3).")
    if general is not None and general.student_mean <= regular.student_mean:
        advice.append(f"At r = {ratio:g} the modality-general teacher does not beat the "
                      "regular one; nullifying fewer channels may keep decisive ones.")
    if truth and truth["precision"] is not None and truth["precision"] < 1:
        advice.append(f"The ranking recovered {truth['precision']:.0%} of the planted shared "
                      "channels; more repeats or rows sharpen it.")
    return advice or ["Nothing to change: the comparison is as the hypothesis predicts."]


_EXPECT = re.compile(r"^\s*(?P<a>[^<>=\s]+)\s*(?P<op>>=|>)\s*(?P<b>[^<>=\s]+)\s*$")


def resolve_expectation(text: str, rows: list[tuple[str, float | None, str]]
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


def check_expectation(report: Comparison, text: str) -> None:
    """Raise :class:`ExpectationFailed` (exit 3) when the comparison fails on the means."""
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
