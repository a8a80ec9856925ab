"""Every sentence the doctor says about its findings, in one place.

:func:`say` words a :class:`~cmkd_doctor.ranking.findings.Finding` in one of the places it is
shown (:data:`FORMS`); the decisions were made when the finding was; nothing here
decides a check. The verdict's sentences (:mod:`cmkd_doctor.diagnosis.verdict` decides, the
functions after the findings' word it) live here too; what to try next is
:mod:`cmkd_doctor.diagnosis.advice`'s.

FORMS:

``warning``
    ``rank``'s warnings (``rank.json`` ``warnings``, printed on stderr): what is wrong and
    what to try.
``reason``
    Why the ranking is unreliable, a clause (the verdict's and ``--expect aligned``'s).
``screen``
    A warning on the report's first screen, one sentence.
``explain``
    The report's paragraph on the check: its figures and what they mean.
``line``
    The terminal summary line of ``rank`` and ``diagnose``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cmkd_doctor.choices import DERIVED
from cmkd_doctor.diagnosis.comparison import Comparison
from cmkd_doctor.diagnosis.verdict import (
    NOT_INTERPRETED,
    PRACTICAL_SEEDS,
    Difference,
    Outcome,
    difference,
    outcome,
    record,
)
from cmkd_doctor.ranking.findings import CHECKS, Finding, at_chance, check_ranking

FORMS = ("warning", "reason", "screen", "explain", "line")


def say(finding: Finding, form: str) -> str | None:
    """``finding`` in ``form`` (``None`` where that place says nothing of it: a check
    that passed has no warning)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")
    return _WORDS[finding.code](finding, form)


def _z(z: float | None) -> str:
    return "-" if z is None else f"{z:.1f}"


def _chance(f: Finding, form: str) -> str | None:
    c, side = f.figures, f.side
    if form == "explain" and not f.ok:
        return (f"Modality {side} predicts the labels no better than chance (a linear "
                f"read-out explains {c['explained']:.1%} of the label variance held out"
                + (f"; its aligned network's {c['rows']} accuracy is {c['value']:.1%} "
                   f"against {c['chance']:.1%} for the commonest class" if "value" in c
                   else "")
                + "): check that its rows match the labels file.")
    if f.ok:
        return None
    return {
        "warning": f"modality {side} predicts the labels no better than chance"
                   + (f" (its aligned network's {c['rows']} accuracy {c['value']:.1%} "
                      f"against {c['chance']:.1%} for always guessing the commonest class)"
                      if "value" in c else "")
                   + ": check that the rows of its features match the labels file",
        "reason": f"modality {side} predicts the labels no better than chance",
        "screen": f"Modality {side} predicts the labels no better than chance: check that "
                  "its rows match the labels file.",
        "line": f"modality {side}: AT CHANCE (predicts the labels no better than chance; do "
                "its rows match the labels file?)",
    }.get(form)


def _pairing(f: Finding, form: str) -> str | None:
    p = f.figures
    if form == "explain":
        return (f"Pairing: score {p['score']:.2f} on the same rows against {p['null']:.2f} "
                f"with b's rows shuffled within class (z = {_z(p['z'])}, paired above "
                f"{p['threshold']:g}): "
                + ("the rows share more than their class." if p["paired"] else
                   "the rows share nothing detectable beyond their class. Check that both "
                   "files list the samples in the same order; if they do, a teacher's soft "
                   "labels can carry only the class (label smoothing)."))
    if form == "line":
        return (f"pairing: each view predicts {p['score']:.2f} of the other's decisive score "
                f"on the same row, {p['null']:.2f} on another row of its class (z = "
                f"{_z(p['z'])}): " + ("paired" if p["paired"] else "ROWS SHARE ONLY THEIR CLASS"))
    if f.ok:
        return None
    return {
        "warning": "the rows of a and b share nothing detectable beyond their class: b's "
                   "rows predict a's decisive score no better than other rows of the same "
                   f"class (pairing score {p['score']:.2f} against {p['null']:.2f} shuffled "
                   f"within class, z = {_z(p['z'])}): check that the rows of the two files "
                   "are in the same order; if they are, expect crossmodal KD to act only as "
                   "label smoothing",
        "reason": "the rows of a and b share nothing detectable beyond their class "
                  f"(pairing z = {_z(p['z'])})",
        "screen": f"The rows share only their class (pairing score {p['score']:.2f} against "
                  f"{p['null']:.2f} with b's rows shuffled within class): check their order; "
                  "otherwise KD can act only as label smoothing.",
    }.get(form)


def _gamma(f: Finding, form: str) -> str | None:
    g = f.figures
    share = f"{g['value']:.2f}, {g['low']:.2f}-{g['high']:.2f}"
    if form == "explain":
        v, cross = g["label_level"]["explained"], g["cross"]
        return (f"Gamma estimate {g['value']:.2f} (95% interval {g['low']:.2f}-"
                f"{g['high']:.2f}, {g['n_rows']} rows): the share of the decisive information "
                "both modalities hold about the same row, beyond its class (paper Sec. 4). "
                f"b's features predict {cross['a_to_b']['same_row']:.0%} of a's held-out "
                f"label prediction on the same row and {cross['a_to_b']['same_class']:.0%} on "
                f"another row of the same class; a's predict "
                f"{cross['b_to_a']['same_row']:.0%} and {cross['b_to_a']['same_class']:.0%} "
                "of b's. What the same row adds beyond its class is the shared part. "
                f"Label-level gamma {g['label_level']['value']:.2f}: held out, a explains "
                f"{v['a']:.0%} of the label variance, b {v['b']:.0%}, the two together "
                f"{v['ab']:.0%} (the label both predict, whether or not the rows are paired)."
                + (" Little to transfer: crossmodal KD can pass on only the shared share, "
                   "whichever channels a teacher keeps." if g["little_to_transfer"] else ""))
    if form == "line":
        return ("gamma estimate (share of decisive information both modalities hold about the "
                f"same row): {g['value']:.2f}, 95% interval {g['low']:.2f}-{g['high']:.2f} "
                f"({g['n_rows']} rows; label-level {g['label_level']['value']:.2f})"
                + ("  LITTLE TO TRANSFER" if g["little_to_transfer"] else ""))
    if f.ok:
        return None
    return {
        "warning": "the modalities share little decisive information about the same row "
                   f"(pair-level gamma estimate {share}): crossmodal KD has little to "
                   "transfer whichever channels a teacher keeps",
        "screen": f"Little to transfer: gamma estimate {g['value']:.2f} ({g['low']:.2f}-"
                  f"{g['high']:.2f}).",
    }.get(form)


def _salience(f: Finding, form: str) -> str | None:
    if f.ok or form != "warning":
        return None
    return (f"no channel of modality {f.context['modality']} moves the aligned networks "
            "apart when permuted: the salience is all zeros (are the features informative?)")


def _alignment(f: Finding, form: str) -> str | None:
    a = f.figures
    if form == "explain":
        return (f"Alignment {a['score']:.2f} on the {a['rows']} rows "
                f"({'reliable' if a['reliable'] else 'unreliable'}, threshold "
                f"{a['threshold']:g}): how much of f1's output variation f2 reproduces (1 is "
                "perfect agreement, 0 or less no better than a constant). The salience reads "
                "disagreement after a permutation as modality-general information only when "
                "the networks agree before it.")
    if form == "line":
        return (f"alignment of f2 to f1 on the {a['rows']} rows: {a['score']:.3f} "
                f"({'reliable' if a['reliable'] else 'UNRELIABLE'}, threshold "
                f"{a['threshold']:g})")
    if f.ok:
        return None
    return {
        "warning": f"the aligned networks agree poorly on the {a['rows']} rows (alignment "
                   f"{a['score']:.2f}, below {a['threshold']:g}), so the salience says little "
                   "about modality-general information: rank again (what to try, below), "
                   "with more rows, from another layer of the teacher's network, or with a "
                   "modality b that predicts the labels better",
        "reason": f"the aligned networks' alignment score {a['score']:.2f} is below "
                  f"{a['threshold']:g}",
        "screen": f"The ranking is unreliable: alignment {a['score']:.2f}, below "
                  f"{a['threshold']:g}.",
    }.get(form)


def _groups(f: Finding, form: str) -> str | None:
    g = f.figures
    if form == "explain":
        return (f"Channels permuted in groups ({g['method']}): {g['count']} groups, "
                f"{g['multi_channel']} of several channels. Permuting one of two near-copies "
                "understates both (the network still reads the other), so correlated "
                "channels are permuted together; a group's salience is each of its "
                "channels', and derived teachers nullify whole groups.")
    if form == "line":
        how = (f"auto, |Spearman| > {g['threshold']:g}" if g["method"] == "auto"
               else g["file"])
        return (f"groups permuted together: {g['count']} for {f.context['channels']} "
                f"channels, {g['multi_channel']} of several ({how}); a group's salience is "
                "each of its channels'")
    return None


def _stability(f: Finding, form: str) -> str | None:
    s = f.figures
    nothing = s["top_overlap"] is None
    state = "stable" if s["stable"] else "unstable"
    if form == "explain":
        if nothing:
            return (f"Stability over {s['restarts']} restarts: no channel's salience is "
                    "significantly above zero, so the ranking has nothing to be stable about "
                    f"({state}).")
        return (f"Stability over {s['restarts']} restarts: {s['decisive']} channels matter, "
                "their salience significantly above zero (Benjamini-Hochberg, false "
                f"discovery rate {s['fdr']:g}) and at least {s.get('min_salience', 0):g} of "
                f"the top channel's; the restarts' top {s['decisive']} overlap "
                f"{s['top_overlap']:.2f} ({state}, threshold {s['threshold']:g})"
                + (f", Kendall tau among them {s['kendall_tau']:.2f}"
                   if s["kendall_tau"] is not None else "")
                + ". Over every channel: overlap of the half a general teacher keeps "
                f"{s['all_channels']['top_overlap']:.2f}, Kendall tau "
                f"{s['all_channels']['kendall_tau']:.2f} (channels the networks ignore order "
                "at random there).")
    if form == "line":
        chosen = (f" (chosen by cost: {s['flop_per_restart'] / 1e12:.2g} TFLOP each)"
                  if s.get("auto") and "flop_per_restart" in s else "")
        said = ("no channel's salience is significantly above zero" if nothing else
                f"{s['decisive']} channels matter (salience significantly above 0), overlap "
                f"of the restarts' top {s['decisive']} {s['top_overlap']:.2f}; over every "
                f"channel {s['all_channels']['top_overlap']:.2f}")
        return (f"stability over {s['restarts']} restarts{chosen}: {said} "
                f"({'stable' if s['stable'] else 'UNSTABLE'}, threshold {s['threshold']:g})")
    if f.ok:
        return None
    if nothing:
        return {
            "warning": "no channel's salience is significantly above zero over the "
                       "restarts: the ranking has nothing to be stable about (are the "
                       "features informative?)",
            "reason": "no channel's salience is significantly above zero",
            "screen": "The ranking is unstable: no channel's salience is significantly "
                      "above zero.",
        }.get(form)
    return {
        "warning": f"the ranking changes from one restart to the next (restarts agree on "
                   f"{s['top_overlap']:.0%} of the {s['decisive']} channels that matter, "
                   f"their salience significantly above zero, below {s['threshold']:.0%}): "
                   "rank again with more permutations and restarts (what to try, below), "
                   "or with more rows",
        "reason": f"restarts agree on {s['top_overlap']:.0%} of the {s['decisive']} channels "
                  f"that matter, below {s['threshold']:.0%}",
        "screen": f"The ranking is unstable across restarts (overlap {s['top_overlap']:.2f} "
                  f"over the {s['decisive']} channels that matter).",
    }.get(form)


def _constant(f: Finding, form: str) -> str | None:
    if f.ok:
        return None
    n = f.figures["count"]
    return {
        "warning": f"{n} of {f.context['channels']} channels of modality "
                   f"{f.context['modality']} are constant on the fit rows: they carry "
                   "nothing, every derived teacher nullifies them, and the ranking puts "
                   "them last",
        "screen": f"{n} channels are constant on the fit rows and carry nothing.",
        "explain": f"{n} channels are constant on the fit rows: they carry nothing, every "
                   "derived teacher nullifies them, and they rank last.",
    }.get(form)


def _negative(f: Finding, form: str) -> str | None:
    n = f.figures.get("count")
    if not n:
        return None
    return {
        "explain": f"{n} channels have significantly negative salience: permuting them "
                   "brings the networks closer, so f1 uses them in a way f2 cannot follow "
                   "(information specific to its modality, or noise it learned); a general "
                   "teacher nullifies them first.",
        "line": f"channels whose permutation brings the networks significantly closer: {n}",
    }.get(form)


_WORDS: dict[str, Callable[[Finding, str], str | None]] = {
    "chance": _chance, "pairing": _pairing, "gamma": _gamma, "salience": _salience,
    "alignment": _alignment, "groups": _groups, "stability": _stability,
    "constant": _constant, "negative": _negative,
}


def all_said(findings: list[Finding], form: str) -> list[str]:
    """What ``form`` says of each finding, in the one order checks are shown in
    (:data:`~cmkd_doctor.ranking.findings.CHECKS`: the data's checks first, a modality at
    chance before all), skipping the ones that place says nothing of."""
    ordered = sorted(findings, key=lambda f: CHECKS.index(f.code))  # stable within a code
    return [text for f in ordered if (text := say(f, form)) is not None]


def diagnosis_warnings(document: dict[str, Any], verdict: dict[str, Any]) -> list[str]:
    """``rank``'s warnings as a whole diagnosis shows them beside its verdict: where a
    teacher helps beyond what the shared information explains (``beyond_shared``, decided
    once in the verdict), the little-shared and class-only warnings give way to that
    finding, so no line says KD has little to pass on beside a teacher that does."""
    if not verdict.get("beyond_shared"):
        return list(document.get("warnings", []))
    return [*rank_warnings([f for f in check_ranking(document)
                            if f.code not in ("gamma", "pairing")]),
            "a teacher helps beyond what the shared information explains: see the verdict"]


def rank_warnings(findings: list[Finding]) -> list[str]:
    """``rank``'s warnings, in the order checks are shown in."""
    return all_said(findings, "warning")


# -- the verdict ---------------------------------------------------------------------------
# cmkd_doctor.diagnosis.verdict decides (its Outcome and decide()); these functions word it.


def strength(d: Difference) -> str:
    """`` (4.2 standard errors)``, `` (within run-to-run noise)`` or `` (one seed)``."""
    if d.z is None:
        return " (one seed: no error estimate)"
    if d.se == 0 and d.delta != 0:
        return (f" (every one of {d.seeds} seeds gives it"
                + ("" if d.clear else "; too few seeds to call it clear") + ")")
    if d.clear:
        return f" ({abs(d.z):.1f} standard errors)"
    return " (within run-to-run noise)"


def settle(d: Difference, what: str) -> str:
    """How many seeds would make an unclear difference clear, in words."""
    need = d.seeds_to_settle()
    if need is None:
        return f"; more seeds would {what}"
    if need > PRACTICAL_SEEDS:
        return (f"; over {PRACTICAL_SEEDS} seeds would be needed to {what}: the two are "
                "about equal")
    return f"; about {need} seeds would {what}" if need > d.seeds else ""


def ordering_text(ratio: str, state: str, found: dict[str, Difference], unit: str) -> str:
    """The MFH ordering at one ratio, with the difference that decided it."""
    if state == "fails":
        name, d = next((k, d) for k, d in found.items() if d.loss)
        return (f"fails at r = {ratio} ({name.replace('-', ' - ')} {d.delta:+.2f} {unit}"
                f"{strength(d)})")
    d = found["general-specific"]
    said = f"general - specific {d.delta:+.2f} {unit}{strength(d)}"
    if state == "holds":
        return f"holds at r = {ratio} ({said})"
    return f"is undetermined at r = {ratio} ({said}{settle(d, 'settle it')})"


def _share(gamma: dict[str, Any]) -> str:
    return (f"the estimated share of decisive information both modalities hold about the "
            f"same row is gamma = {gamma['value']:.2f} ({gamma['low']:.2f}-"
            f"{gamma['high']:.2f})")


def verdict_text(o: Outcome) -> str:
    """The verdict's reasoning: KD against No-KD, the data checks, the shared
    information, the MFH ordering, the sweet spot and the best student."""
    unit, kd = o.unit, o.kd
    said = f"Regular-KD is {kd.delta:+.2f} {unit} against No-KD{strength(kd)}"
    lines = [f"Crossmodal KD helps here: {said}." if kd.gain else
             f"Crossmodal KD with the regular teacher hurts here: {said}." if kd.loss else
             f"Crossmodal KD with the regular teacher makes no clear difference here: {said}."]
    if o.weak is not None:
        lines.append(f"{_weak(o)} A teacher weaker than the student passes on less than "
                     "the labels do, whatever the modalities share.")
    for side in o.blind:
        lines.append(f"Check the data first: modality {side} predicts the labels no better "
                     "than chance, so its rows may not match the labels file.")
    if o.class_only:
        shared = ("each modality predicts the other's decisive score no better on the same "
                  "row than on another row of the same class")
        lines.append(f"The rows share only their class by the pairing check ({shared}), yet "
                     "a teacher helps beyond it (below)." if o.beyond_shared else
                     f"The rows share only their class: {shared}, so a teacher's soft labels "
                     "can carry only the class (label smoothing), whichever channels it "
                     "keeps; check that both files list the rows in the same order.")
    if o.gamma:
        lines.append(f"Shared information, estimated: {_share(o.gamma)}, little, yet a "
                     "teacher helps beyond it (below)." if o.little and o.beyond_shared else
                     f"Little to transfer: {_share(o.gamma)}; a teacher on the other "
                     "modality can pass on only that share." if o.little else
                     f"Shared information: {_share(o.gamma)}.")
    if o.orderings and not o.reliable:
        # the data checks already have their sentence above; name only what is left
        if o.reasons is None:
            why = f"here ({o.why})"
        else:
            left = "; ".join(r["text"] for r in o.reasons
                             if r["code"] not in ("at_chance", "class_only"))
            why = f"here ({left})" if left else "here (see above)"
        lines.append(f"The ranking is unreliable {why}: the derived teachers' rows are "
                     "shown, but say nothing about the hypothesis.")
    elif o.orderings:
        text = "; it ".join(ordering_text(r, state, found, unit)
                            for r, state, found in o.orderings)
        lines.append(f"The MFH ordering general >= random >= specific {text}.")
        if all(state == "holds" for _, state, _ in o.orderings):
            lines.append(_what_transfers(o))
    if o.sweet is not None and o.reliable:
        lines.append(f"Sweet spot: {sweet_spot(o.sweet.ratio, o.sweet.student_mean)} of "
                     f"the {o.general_rows} ratios distilled.")
    if o.control is not None:
        lines.append(_control(o))
    lines.append(_best(o))
    if o.beyond_shared:
        lines.append(beyond_shared(o))
    if o.seeding and o.seeding.get("decisions"):
        lines.append(seeds_text(o.seeding))
    return " ".join(lines)


def seeds_text(seeding: dict[str, Any]) -> str:
    """How many seeds each comparison of the decision took (``--seeds auto``)."""
    looks = seeding["looks"]
    said = []
    for d in seeding["decisions"]:
        state = {"clear": f"clear at {d['seeds']} seeds",
                 "budget": f"undecided at {d['seeds']} seeds (the --max-seeds budget)",
                 "futile": f"too close to settle (stopped at {d['seeds']} seeds)",
                 "time": f"undecided at {d['seeds']} seeds (the --seeds-budget time)"}[
                     d["state"]]
        said.append(f"{d['comparison']} {state}")
    return (f"Seeds, added where a comparison was undecided ({looks[0]} to {looks[-1]}, "
            f"a stricter threshold at each look so that looking again does not make "
            f"noise clear): {'; '.join(said)}.")


def _what_transfers(o: Outcome) -> str:
    """What an MFH ordering that holds shows, read against the control: the ordering's
    paired differences (general - specific and the rest) are the same measured from the
    control as from any common row, so what the control decides is whether the general
    teacher passes on anything at all."""
    per_look = (o.seeding or {}).get("per_look")
    if o.control is None or any(difference(r, o.control, per_look).gain
                                for r in o.rows if r.teacher == "general"):
        return "The teacher's modality-general channels are what transfers."
    return ("No modality-general teacher clearly beats the knowledge-free control yet, so "
            "the ordering does not show knowledge transferred: it may measure only what "
            "the other channels cost the students.")


def _control(o: Outcome) -> str:
    """The knowledge-free control: what softer targets alone give, and the best row
    against it."""
    c, unit = o.control_vs_none, o.unit
    said = (f"The knowledge-free control (targets as soft as Regular-KD's, from the labels "
            f"alone) is {c.delta:+.2f} {unit} against No-KD{strength(c)}")
    if o.best.teacher == "none":
        return said + "."
    d = o.best_vs_control
    return (f"{said}; {_whose(o)} student is {d.delta:+.2f} against the control"
            f"{strength(d)}.")


def _whose(o: Outcome) -> str:
    return "Regular-KD's" if o.best.teacher == "regular" else f"the {o.best.label} teacher's"


def _named(o: Outcome) -> str:
    """The best row with the rows within run-to-run noise of it: ``the specific r=0.5
    teacher``, ``the specific or random r=0.5 teacher``."""
    labels = [o.best.label, *(r.label for r in o.tied)]
    if len(labels) == 1:
        return f"the {labels[0]} teacher"
    ratios = {r.ratio for r in [o.best, *o.tied]}
    if len(ratios) == 1 and all(r.teacher in DERIVED for r in [o.best, *o.tied]):
        modes = [o.best.teacher, *(r.teacher for r in o.tied)]
        return (f"the {', '.join(modes[:-1])} or {modes[-1]} r={o.best.ratio:g} teacher "
                "(within run-to-run noise of each other)")
    return (f"the {', '.join(labels[:-1])} or {labels[-1]} teacher (within run-to-run "
            "noise of each other)")


def yardstick(name: str) -> str:
    """A row the best must beat (``Regular-KD``, ``No-KD``, ``Control``) as a sentence
    names it."""
    return "the knowledge-free control" if name == "Control" else name


def _unshared(little: bool) -> str:
    """What says little is shared: the gamma estimate, else the pairing check."""
    return ("the gamma estimate says the modalities share little" if little else
            "the pairing check finds the rows share only their class")


def beyond_shared(o: Outcome) -> str:
    """A teacher that helps beyond what the shared information explains, as every output
    says it."""
    what = _unshared(o.little)
    than = " and the knowledge-free control" if o.control is not None else ""
    return (f"A teacher helps beyond what the shared information explains: {what}, yet "
            f"{_whose(o)} student clearly beats No-KD{than}, so it passes on something "
            "those estimates do not see; do not skip KD here.")


def beyond_shared_step(report: Comparison) -> str:
    """The advice when a teacher helps beyond what the shared information explains (a
    verdict's ``beyond_shared``): keep distilling, whatever the estimates say."""
    v = report.verdict
    what = _unshared(v["little_to_transfer"])
    than = " and the knowledge-free control" if v.get("control") else ""
    best = "Regular-KD's" if v["best"] == "Regular-KD" else f"the {v['best']} teacher's"
    return (f"{capitalized(best)} student clearly beats No-KD{than} although {what}: the "
            "teacher passes on something those estimates do not see (how the classes "
            "resemble each other, say), so keep distilling from this modality rather than "
            "skipping KD.")


def _best(o: Outcome) -> str:
    """The best student, and what its numbers say (read with the decision)."""
    unit, best, over_regular, over_none = o.unit, o.best, o.best_vs_regular, o.best_vs_none
    if o.derived_best:
        if best.teacher in DERIVED and not o.reliable and o.decision == "unreliable":
            advice = "but the ranking behind it is unreliable"
        elif o.decision in ("check_data", "check_order"):
            advice = "but check the data first (above)"
        elif o.decision == "use_teacher":
            advice = "use that teacher" + (
                f" (or {', '.join(r.label for r in o.tied)}, within run-to-run noise of it)"
                if o.tied else "")
        elif o.decision == "use_control":
            advice = "but the knowledge-free control does as well (above): no teacher needed"
        elif not o.beyond_control and o.helps:
            advice = ("but not clearly beyond the knowledge-free control"
                      + settle(o.settling("Control"), "tell"))
        elif o.decision == "undecided" and o.call:
            name, d = next((n, d) for n, d in o.call.items() if not d.gain)
            advice = (f"but not clearly better than {yardstick(name)} by the "
                      f"rule for {o.competing} competing teachers (1/{o.share} of its level)"
                      + settle(d, "tell"))
        elif over_regular.gain:  # Regular-KD hurts: beating it is not enough
            advice = (f"but against training the student alone it is {over_none.delta:+.2f} "
                      f"{unit}{strength(over_none)}, not clearly better: "
                      + {"skip_kd": "skip KD from this modality",
                         "weak_teacher": "the teacher is weaker than the student "
                                         "alone"}.get(
                          o.decision, "sweep the ratio or skip KD"))
        else:
            advice = ("no teacher is clearly better than the regular one at these seeds"
                      + settle(o.call.get("Regular-KD", over_regular), "tell"))
        return (f"Best student: {best.label}, {over_regular.delta:+.2f} {unit} over "
                f"Regular-KD{strength(over_regular)}; {advice}.")
    if best.teacher == "regular":
        runner, lead = o.runner
        return (f"Best student: Regular-KD, {lead.delta:+.2f} {unit} over the next "
                f"({runner.label}){strength(lead)}: no derived teacher beats the regular one "
                "here" + ("." if o.kd.gain else ", and the regular one does not clearly beat "
                                                 "training the student alone."))
    if o.decision == "use_control":
        return ("Best student among the teachers' rows: No-KD, which the control's softer "
                "targets beat (above).")
    return ("Best student: No-KD. No teacher beat training the student alone: "
            + ("as expected when the rows share only their class." if o.class_only else
               "the regular teacher is weaker than the student (above)." if o.weak else
               "the gamma estimate agrees that the modalities share little, so skip KD from "
               "this modality." if o.little else
               "the modalities may share little label-relevant information; try a "
               "modality-general teacher at other ratios (a sweep) or skip KD."))


def _weak(o: Outcome) -> str:
    """The regular teacher weaker than the student alone, with both figures."""
    w, metric = o.weak, o.rows[0].metric
    return (f"The regular teacher is weaker than the student trained alone: its test "
            f"{metric} is {w['teacher']:.2f}% against {w['student_alone']:.2f}% for the "
            f"No-KD students (standard error {w['student_alone_se']:.2f}).")


_ALONE = ("sweep the ratio or skip KD", "try a modality-general teacher at other ratios "
          "(a sweep), or skip KD from this modality.")


def headline(o: Outcome) -> tuple[str, str]:
    """What to do, in a few words (the action) and in one sentence with the two checks
    behind it (the headline): :func:`cmkd_doctor.diagnosis.verdict.decide`'s decision, worded."""
    best, over_none, unit = o.best, o.best_vs_none, o.unit
    nothing = best.teacher == "none"
    whose = "Regular-KD's" if best.teacher == "regular" else f"the {best.label} teacher's"
    said = (f"the best student, {whose}, is {over_none.delta:+.2f} {unit} over No-KD"
            f"{strength(over_none)}")
    names = " and ".join(o.blind)
    action, sentence = {
        "check_data": lambda: (
            f"check the data: modality {names} is at chance",
            f"Check the data first: modality {names} predicts the labels no better than "
            "chance, so its rows may not match the labels file."),
        "check_order": lambda: (
            "rows share only the class: check their order",
            ("No teacher clearly beat training the student alone" if not o.helps else
             f"No teacher clearly beat the knowledge-free control ({_whose(o)} student is "
             f"{o.best_vs_control.delta:+.2f} {unit} against it{strength(o.best_vs_control)})")
            + ", and the rows of a and b share nothing beyond their class: check that both "
            "files list the rows in the same order; if they do, crossmodal KD can only act "
            "as label smoothing here, and no derived teacher changes that."),
        "weak_teacher": lambda: (
            "the teacher is weaker than the student alone: do not expect KD from it to help",
            "Do not expect KD from this teacher to help: no teacher clearly beat training "
            f"the student alone, and {_weak(o)[0].lower()}{_weak(o)[1:-1]}; a stronger "
            "teacher, if one can be trained on its modality, comes before any ratio or "
            "derived teacher."),
        "skip_kd": lambda: (
            "skip KD from this modality",
            "Skip KD from this modality: no teacher beat training the student alone, and the "
            "gamma estimate says the modalities share little." if nothing else
            f"Skip KD from this modality: no teacher clearly beat training the student alone "
            f"({said}), and the gamma estimate says the modalities share little."),
        "sweep_or_skip": lambda: (
            f"no teacher beats No-KD: {_ALONE[0]}",
            f"No teacher beat training the student alone: {_ALONE[1]}") if nothing else (
            f"no teacher clearly beats No-KD: {_ALONE[0]}",
            f"No teacher clearly beat training the student alone: {said}; {_ALONE[1]}"),
        "use_control": lambda: _use_control(o),
        "keep_regular": lambda: (
            "keep the regular teacher",
            "Keep the regular teacher: its student clearly beats No-KD"
            + (" and the knowledge-free control" if o.control is not None else "")
            + ", and no derived teacher beat it."),
        "unreliable": lambda: (
            "the ranking is unreliable: derived teachers not interpreted",
            f"The {best.label} teacher's student is best, but the ranking behind it is "
            "unreliable: do not act on the derived teachers yet."),
        "use_teacher": lambda: (
            f"use {_named(o)}",
            f"Use {_named(o)}: its student clearly beats "
            + ("Regular-KD, No-KD and the knowledge-free control" if o.control is not None
               else "Regular-KD and No-KD") + _among(o) + "."),
        "undecided": lambda: _undecided(o),
    }[o.decision]()
    return action, f"{sentence} {_kd_and_ordering(o)}"


def _among(o: Outcome) -> str:
    """How many rows competed for the call, when more than one did (Holm's rule)."""
    if o.competing < 2:
        return ""
    return f", by a rule that allows for the {o.competing} teachers competing for the call"


def _use_control(o: Outcome) -> tuple[str, str]:
    """The control explains the gain, or gives one where no teacher does: its targets,
    no teacher."""
    c, unit = o.control_vs_none, o.unit
    control = (f"the knowledge-free control is {c.delta:+.2f} {unit} over No-KD"
               f"{strength(c)}")
    if o.helps:
        d = o.best_vs_control
        why = (f"{_whose(o)} gain over No-KD ({o.best_vs_none.delta:+.2f} {unit}) is softer "
               f"targets, not its knowledge: {control}, and the teacher's student is "
               f"{d.delta:+.2f} against it{strength(d)}")
    else:
        why = f"no teacher clearly beat training the student alone, but {control}"
    return ("use the control's softer targets: no teacher needed",
            f"Train the student on the control's softer targets, with no teacher: {why}.")


def _undecided(o: Outcome) -> tuple[str, str]:
    """The best row beats No-KD but not yet clearly Regular-KD or the control."""
    if not o.beyond_control:
        d = o.best_vs_control
        return ("no teacher clearly beats the knowledge-free control at these seeds",
                f"No teacher is clearly better than the knowledge-free control at these "
                f"seeds: {_whose(o)} student is {d.delta:+.2f} {o.unit} against it"
                f"{strength(d)}{settle(o.settling('Control'), 'tell')}, so its gain over "
                "No-KD may be softer targets rather than the teacher's knowledge.")
    name = next((n for n, d in o.call.items() if not d.gain), "Regular-KD")
    long = {"Regular-KD": "the regular one", "No-KD": "training the student alone",
            "Control": yardstick(name)}[name]
    return (f"no teacher clearly beats {yardstick(name)} at these seeds",
            f"No teacher is clearly better than {long} at these seeds: the best, "
            f"{o.best.label}, is within run-to-run noise of it{_among(o)}.")


def _kd_and_ordering(o: Outcome) -> str:
    """The two checks behind a headline, in one sentence: does crossmodal KD help at
    all, and does the MFH ordering hold at the ratios distilled."""
    kd, states = o.kd, o.states
    effect = kd_effect(kd.to_dict())
    said = "makes no clear difference" if effect == "no clear difference" else effect
    text = f"Regular-KD {said} ({kd.delta:+.2f} {o.unit} against No-KD)"
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


def reliability(document: dict[str, Any]) -> dict[str, Any]:
    """Whether the ranking of a ``rank.json`` document is reliable: ``reliable``,
    ``reasons`` (``{code, text}`` each: ``at_chance``, ``class_only``, ``alignment``,
    ``stability``) and ``why`` (their texts joined), with the facts the verdict reads
    (``gamma_estimate``, ``paired``, ``at_chance``)."""
    findings = check_ranking(document)  # decided once; worded here
    reasons = [{"code": f.reason_code, "text": say(f, "reason")}
               for f in findings if f.unreliable]
    return {"reliable": not reasons, "why": "; ".join(r["text"] for r in reasons),
            "reasons": reasons, "gamma_estimate": document.get("gamma_estimate"),
            "paired": (document.get("pairing") or {}).get("paired"),
            "at_chance": at_chance(findings)}


def verdict(report: Comparison, ranking: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict as every output shows it: its record (:func:`cmkd_doctor.diagnosis.
    verdict.record`, the one decision and its facts) with its words, ``text`` (the
    reasoning), ``action`` and ``headline`` (the conclusion)."""
    o = outcome(report, ranking)
    action, said = headline(o)
    return {**record(o, ranking), "text": verdict_text(o), "action": action,
            "headline": said}


# -- sentences more than one place shows ---------------------------------------------------

def capitalized(text: str) -> str:
    """``text`` as a sentence's start (its first letter upper case, the rest as it is)."""
    return text[:1].upper() + text[1:]


def planted(truth: dict[str, Any]) -> str:
    """What the ranking found of the channels planted in generated data (the truth
    ``examples make gaussian`` records), as the terminal and the report say it."""
    t = truth
    weighted = t.get("gamma_weighted")
    return (f"the ranking put {len(t['found'])} of the {len(t['shared_channels'])} planted "
            f"shared channels on top (precision {t['precision']:.2f}); alpha "
            f"{t['alpha']:.2f}, beta {t['beta']:.2f}, gamma {t['gamma']:.2f}"
            + (f" (weighted by the hyperplane {weighted:.2f})" if weighted is not None
               else ""))


def sweet_spot(ratio: float, mean: float) -> str:
    """The sweep's sweet spot (paper Fig. 5), as the verdict and the report say it."""
    return f"the modality-general teacher's student is best at r = {ratio:g} ({mean:.2f})"


def kd_effect(kd: dict[str, Any]) -> str:
    """What Regular-KD does against No-KD (a verdict's ``kd``: its paired difference), in
    one word or phrase: ``helps``, ``hurts`` or ``no clear difference``."""
    if not kd["clear"]:
        return "no clear difference"
    return "helps" if kd["delta"] > 0 else "hurts"
