"""The verdict, its statistics, the advice and --expect, on hand-built result rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import distill_record

from cmkd_doctor.diagnosis.advice import advise
from cmkd_doctor.diagnosis.comparison import Comparison, Row
from cmkd_doctor.diagnosis.verdict import (
    check_expectation,
    paired_se,
    resolve_expectation,
)
from cmkd_doctor.errors import ExpectationFailed, InputError
from cmkd_doctor.wording import verdict

NONE = [70.0, 72.0, 74.0]
OPTIONS = distill_record()

def _ranked() -> dict:
    """What the advice reads of a rank.json: the inputs and every option."""
    from cmkd_doctor.ranking.options import RankOptions

    inputs = {k: {"path": f"/data/{k}.npy", "key": None}
              for k in ("feats_a", "feats_b", "labels")}
    return {"inputs": inputs, "options": RankOptions().checked().to_dict()}


RANKED = _ranked()


def _texts(steps) -> list[str]:
    return [step.text for step in steps]


def _row(teacher: str, runs: list[float], ratio: float | None = None) -> Row:
    labels = {"none": "No-KD", "regular": "Regular-KD"}
    label = labels[teacher] if teacher in labels else f"{teacher} r={ratio:g}"
    return Row(teacher, ratio, label, "accuracy", None if teacher == "none" else 80.0, runs)


def _comparison(*rows: Row) -> Comparison:
    found = Comparison(Path("run"), list(rows), OPTIONS, "key", "id")
    found.verdict = verdict(found)
    return found


def _plus(runs: list[float], shifts: list[float]) -> list[float]:
    return [a + b for a, b in zip(runs, shifts, strict=True)]


def test_paired_standard_error_is_that_of_the_per_seed_differences():
    a, b = _row("none", [1.0, 2.0, 3.0]), _row("regular", [2.0, 2.5, 4.5])
    # differences -1, -0.5, -1.5: std (ddof 1) 0.5, over sqrt(3)
    assert paired_se(a, b) == pytest.approx(0.5 / 3**0.5)
    assert paired_se(_row("none", [1.0]), _row("regular", [2.0])) == 0.0


def test_a_clear_gain_and_the_hypothesis_holding_say_so_and_name_the_teacher():
    regular = _plus(NONE, [1.0, 1.2, 0.8])  # +1.00, se 0.2/sqrt(3): 8.7 standard errors
    general = _plus(regular, [2.0, 2.1, 1.9])  # +2.00 over Regular-KD, se 0.1/sqrt(3)
    specific = _plus(NONE, [-1, -1, -1])  # general - specific: +4.00, se 0.3/sqrt(3)
    found = _comparison(_row("none", NONE), _row("regular", regular),
                        _row("general", general, 0.5), _row("random", regular, 0.5),
                        _row("specific", specific, 0.5))
    v = found.verdict
    assert v["kd_helps"] is True and v["kd_delta"] == pytest.approx(1.0)
    assert v["mfh_ordering"] == {"0.5": "holds"} and v["mfh_ordering_holds"] is True
    assert v["mfh_ordering_detail"]["0.5"]["general-specific"]["z"] == pytest.approx(
        4.0 / (0.3 / 3**0.5))
    assert v["best"] == "general r=0.5" and v["best_is_clear"] is True
    assert v["text"] == (
        "Crossmodal KD helps here: Regular-KD is +1.00 accuracy points against No-KD "
        "(8.7 standard errors). The MFH ordering general >= random >= specific holds at "
        "r = 0.5 (general - specific +4.00 accuracy points (23.1 standard errors)). The "
        "teacher's modality-general channels are what transfers. Best student: general "
        "r=0.5, +2.00 accuracy points over Regular-KD (34.6 standard errors); use that "
        "teacher.")
    # the conclusion for a first screen and a summary table
    assert v["action"] == "use the general r=0.5 teacher"
    assert v["headline"] == (
        "Use the general r=0.5 teacher: its student clearly beats Regular-KD and No-KD, by "
        "a rule that allows for the 3 teachers competing for the call. Regular-KD helps "
        "(+1.00 accuracy points against No-KD); the MFH ordering general "
        ">= random >= specific holds at r = 0.5.")


def test_differences_inside_noise_are_undetermined_and_say_how_many_seeds_would_tell():
    regular = _plus(NONE, [1.0, -1.0, 0.5])  # +0.17 with se 0.6: no clear difference
    general = _plus(regular, [1.0, -0.5, 0.2])  # +0.23 over Regular-KD, se 0.43
    specific = _plus(regular, [0.5, -1.0, 0.3])  # general - specific: +0.30, se 0.2, z 1.5
    found = _comparison(_row("none", NONE), _row("regular", regular),
                        _row("general", general, 0.5), _row("random", regular, 0.5),
                        _row("specific", specific, 0.5))
    v = found.verdict
    assert v["kd_helps"] is False and v["best_is_clear"] is False
    assert v["mfh_ordering"] == {"0.5": "undetermined"} and v["mfh_ordering_holds"] is None
    assert v["text"] == (
        "Crossmodal KD with the regular teacher makes no clear difference here: Regular-KD "
        "is +0.17 accuracy points against No-KD (within run-to-run noise). The MFH ordering "
        "general >= random >= specific is undetermined at r = 0.5 (general - specific "
        "+0.30 accuracy points (within run-to-run noise); about 6 seeds would settle it). "
        "Best student: general r=0.5, +0.23 accuracy points over Regular-KD (within "
        "run-to-run noise); no teacher is clearly better than the regular one at these "
        "seeds; about 62 seeds would tell.")  # at 1/3 of the level: 3 rows compete
    # the best student is not clearly better than the student alone: nothing to use
    assert v["action"] == "no teacher clearly beats No-KD: sweep the ratio or skip KD"
    assert v["headline"] == (
        "No teacher clearly beat training the student alone: the best student, the general "
        "r=0.5 teacher's, is +0.40 accuracy points over No-KD (within run-to-run noise); "
        "try a modality-general teacher at other ratios (a sweep), or skip KD from this "
        "modality. Regular-KD makes no clear difference (+0.17 accuracy points against "
        "No-KD); the MFH ordering general >= random >= specific is undetermined at r = 0.5.")


def test_a_teacher_is_worth_using_only_when_it_clearly_beats_both_baselines():
    hurts = _plus(NONE, [-2.0, -2.2, -1.8])  # Regular-KD hurts
    general = _plus(hurts, [2.5, 1.5, 2.8])  # clearly over Regular-KD, +0.27 over No-KD
    v = _comparison(_row("none", NONE), _row("regular", hurts),
                    _row("general", general, 0.5)).verdict
    assert v["best"] == "general r=0.5" and v["best_is_clear"] is False
    assert v["action"] == "no teacher clearly beats No-KD: sweep the ratio or skip KD"
    assert v["text"].endswith(
        "Best student: general r=0.5, +2.27 accuracy points over Regular-KD (5.8 standard "
        "errors); but against training the student alone it is +0.27 accuracy points "
        "(within run-to-run noise), not clearly better: sweep the ratio or skip KD.")
    helps = _plus(NONE, [1.0, 1.2, 0.8])
    general = _plus(helps, [0.5, -0.3, 0.4])  # clearly over No-KD, not over Regular-KD
    v = _comparison(_row("none", NONE), _row("regular", helps),
                    _row("general", general, 0.5)).verdict
    assert v["best_is_clear"] is False
    assert v["action"] == "no teacher clearly beats Regular-KD at these seeds"
    assert v["headline"].startswith("No teacher is clearly better than the regular one at "
                                    "these seeds: the best, general r=0.5, is within "
                                    "run-to-run noise of it. Regular-KD helps (+1.00")
    v = _comparison(_row("none", NONE), _row("regular", _plus(NONE, [0.2, -0.1, 0.1])),
                    _row("general", _plus(NONE, [-1, -1, -1]), 0.5)).verdict
    assert v["best"] == "Regular-KD" and v["action"].startswith("no teacher clearly beats "
                                                                "No-KD")
    assert v["text"].endswith("and the regular one does not clearly beat training the "
                              "student alone.")


def test_kd_that_hurts_with_no_teacher_beating_the_student_alone():
    regular = _plus(NONE, [-2.0, -2.2, -1.8])
    found = _comparison(_row("none", NONE), _row("regular", regular),
                        _row("general", _plus(NONE, [-1, -1.1, -0.9]), 0.5),
                        _row("random", _plus(NONE, [-0.5, -0.4, -0.6]), 0.5),
                        _row("specific", _plus(NONE, [-3, -3, -3]), 0.5))
    v = found.verdict
    assert v["text"].startswith("Crossmodal KD with the regular teacher hurts here: "
                                "Regular-KD is -2.00 accuracy points against No-KD")
    # general - random: -0.50, se 0.2/sqrt(3): clearly reversed
    assert v["mfh_ordering"] == {"0.5": "fails"} and v["mfh_ordering_holds"] is False
    assert ("The MFH ordering general >= random >= specific fails at r = 0.5 (general - "
            "random -0.50 accuracy points (4.3 standard errors)).") in v["text"]
    assert v["best"] == "No-KD" and "Best student: No-KD." in v["text"]
    assert v["text"].endswith("or skip KD.")
    assert v["action"] == "no teacher beats No-KD: sweep the ratio or skip KD"
    assert v["headline"].endswith("Regular-KD hurts (-2.00 accuracy points against No-KD); "
                                  "the MFH ordering general >= random >= specific fails at "
                                  "r = 0.5.")
    advice = _texts(advise(found, {**RANKED, "aligned": {"metrics": {"a": {"test": {
        "accuracy": 0.9}}}}}))
    assert any("do not order as the hypothesis predicts" in a for a in advice)
    assert any("does not clearly help" in a for a in advice)


def test_the_best_row_is_named_when_it_is_regular_kd():
    regular = _plus(NONE, [1.0, 1.2, 0.8])
    general = _plus(NONE, [0.2, 0.0, 0.4])  # Regular-KD leads by 0.8, 1.2, 0.4: se 0.4/sqrt(3)
    v = _comparison(_row("none", NONE), _row("regular", regular),
                    _row("general", general, 0.5)).verdict
    assert v["best"] == "Regular-KD" and v["best_is_clear"] is False
    assert v["text"].endswith("Best student: Regular-KD, +0.80 accuracy points over the "
                              "next (general r=0.5) (3.5 standard errors): no derived "
                              "teacher beats the regular one here.")
    assert v["action"] == "keep the regular teacher"
    assert v["headline"] == ("Keep the regular teacher: its student clearly beats No-KD, "
                             "and no derived teacher beat it. Regular-KD helps (+1.00 "
                             "accuracy points against No-KD).")


def test_one_seed_decides_nothing():
    v = _comparison(_row("none", [70.0]), _row("regular", [75.0]),
                    _row("general", [76.0], 0.5), _row("random", [74.0], 0.5),
                    _row("specific", [60.0], 0.5)).verdict
    assert v["kd_helps"] is False and v["mfh_ordering"] == {"0.5": "undetermined"}
    assert "(one seed: no error estimate)" in v["text"] and "more seeds would tell" in v["text"]


def test_an_unreliable_ranking_withholds_conclusions_about_derived_teachers():
    regular = _plus(NONE, [1.0, 1.2, 0.8])
    found = Comparison(Path("run"), [
        _row("none", NONE), _row("regular", regular),
        _row("general", _plus(regular, [2.0, 2.1, 1.9]), 0.5),
        _row("random", regular, 0.5), _row("specific", _plus(NONE, [-1, -1, -1]), 0.5)],
        OPTIONS, "key", "id")
    v = verdict(found, {"reliable": False, "why": "alignment score 0.12 below 0.5"})
    assert v["ranking_reliable"] is False and v["best_is_clear"] is False
    assert "The ranking is unreliable here (alignment score 0.12 below 0.5)" in v["text"]
    assert "MFH ordering" not in v["text"] and "use that teacher" not in v["text"]
    # one state: the JSON withholds the ordering as the text does; the numbers stay
    assert v["mfh_ordering"] == {"0.5": "not_interpreted"} and v["mfh_ordering_holds"] is None
    assert v["mfh_ordering_detail"]["0.5"]["general-specific"]["clear"] is True
    assert v["action"] == "the ranking is unreliable: derived teachers not interpreted"
    assert v["headline"].endswith("the MFH ordering is not interpreted (unreliable "
                                  "ranking).") and "Use the" not in v["headline"]


def test_a_sweep_names_its_sweet_spot():
    rows = [_row("none", NONE), _row("regular", NONE)]
    rows += [_row("general", _plus(NONE, [g] * 3), r)
             for r, g in ((0.25, 0.5), (0.5, 1.5), (0.75, 1.0))]
    v = _comparison(*rows).verdict
    assert v["sweet_spot"] == {"ratio": 0.5, "student_mean": pytest.approx(73.5)}
    assert "Sweet spot: the modality-general teacher's student is best at r = 0.5 " \
           "(73.50) of the 3 ratios distilled." in v["text"]


def test_expectations_resolve_names_and_fail_with_exit_3():
    rows = [_row("none", NONE), _row("regular", _plus(NONE, [1, 1, 1])),
            _row("general", _plus(NONE, [2, 2, 2]), 0.5)]
    found = _comparison(*rows)
    names = [(r.teacher, r.ratio, r.label) for r in rows]
    assert resolve_expectation("general>regular", names) == (2, ">", 1)
    assert resolve_expectation("general@0.5 >= No-KD", names) == (2, ">=", 0)
    check_expectation(found, "general>regular")  # holds: no exception
    with pytest.raises(ExpectationFailed, match=r"^expectation 'none>=general' failed: "
                                                r"No-KD 72.00 is not >= general r=0.5 74.00"):
        check_expectation(found, "none>=general")
    with pytest.raises(InputError, match="--expect must be a comparison of rows this call "
                                         "computes"):
        resolve_expectation("specific>regular", names)
    with pytest.raises(InputError, match="--expect must be a comparison of two rows"):
        resolve_expectation("general>>regular", names)


def test_little_shared_information_is_said_in_the_verdict_and_the_advice():
    found = Comparison(Path("run"), [_row("none", NONE), _row("regular", NONE)],
                       OPTIONS, "key", "id")
    low = {"value": 0.04, "low": 0.02, "high": 0.05, "little_to_transfer": True}
    v = verdict(found, {"reliable": True, "why": "", "gamma_estimate": low})
    assert v["little_to_transfer"] is True
    assert "Little to transfer: the estimated share of decisive information both " \
           "modalities hold about the same row is gamma = 0.04 (0.02-0.05)" in v["text"]
    found.verdict = v
    advice = _texts(advise(found, {**RANKED, "gamma_estimate": low, "aligned": {}}))
    assert any("share little decisive information" in line for line in advice)
    assert "skip KD from this modality" in v["text"]  # No-KD is best, and gamma agrees
    assert v["action"] == "skip KD from this modality"
    assert v["headline"].startswith("Skip KD from this modality: no teacher beat training "
                                    "the student alone, and the gamma estimate says")
    assert not any("--ratio" in line for line in advice)  # no sweep: nothing to find
    # Regular-KD best but not clearly above No-KD: still skip KD, not a sweep
    weak = Comparison(Path("run"), [_row("none", NONE), _row("regular", _plus(
        NONE, [0.1, -0.1, 0.2]))], OPTIONS, "key", "id")
    v = verdict(weak, {"reliable": True, "why": "", "gamma_estimate": low})
    assert v["best"] == "Regular-KD" and v["action"] == "skip KD from this modality"
    assert "sweep" not in v["headline"]
    high = {**low, "value": 0.6, "low": 0.5, "high": 0.7, "little_to_transfer": False}
    v = verdict(found, {"reliable": True, "why": "", "gamma_estimate": high})
    assert v["little_to_transfer"] is False and "Shared information" in v["text"]
    assert "Little to transfer" not in v["text"] and "(a sweep) or skip KD" in v["text"]
    assert v["action"] == "no teacher beats No-KD: sweep the ratio or skip KD"


def _trio(general: list[float], random: list[float], specific: list[float]) -> list[Row]:
    return [_row("none", NONE), _row("regular", NONE), _row("general", general, 0.5),
            _row("random", random, 0.5), _row("specific", specific, 0.5)]


@pytest.mark.parametrize("shifts, state", [
    (([3, 3.1, 2.9], [1, 1.1, 0.9], [-1, -1.1, -0.9]), "holds"),
    (([-3, -3.1, -2.9], [1, 1.1, 0.9], [2, 2.1, 1.9]), "fails"),
    (([0.1, -0.1, 0.05], [0, 0.1, -0.1], [0.05, 0, -0.05]), "undetermined")])
def test_the_ordering_has_one_state_in_the_json_and_the_text(shifts, state):
    """mfh_ordering never says holds or fails where the text withholds the ordering, and
    where the text states it, it states what mfh_ordering says."""
    rows = _trio(*(_plus(NONE, s) for s in shifts))
    found = Comparison(Path("run"), rows, OPTIONS, "key", "id")
    trusted = verdict(found, {"reliable": True, "why": ""})
    assert trusted["mfh_ordering"] == {"0.5": state}
    said = {"holds": "holds at r = 0.5", "fails": "fails at r = 0.5",
            "undetermined": "is undetermined at r = 0.5"}[state]
    assert f"The MFH ordering general >= random >= specific {said}" in trusted["text"]
    assert said in trusted["headline"]
    for why in ("alignment score 0.12 below 0.5", "restarts agree on 40% of the 4 "
                "channels that matter, below 60%"):
        v = verdict(found, {"reliable": False, "why": why})
        assert v["mfh_ordering"] == {"0.5": "not_interpreted"}
        assert v["mfh_ordering_holds"] is None
        assert "The MFH ordering" not in v["text"] and said not in v["headline"]
        assert "the MFH ordering is not interpreted" in v["headline"]


def _class_only_ranking() -> dict:
    from cmkd_doctor.wording import reliability as ranking_reliability

    document = {"alignment": {"score": 0.8, "reliable": True, "threshold": 0.5},
                "stability": {"stable": True},
                "pairing": {"score": 0.18, "null": 0.18, "z": 0.1, "paired": False,
                            "threshold": 2.0},
                "chance": {"a": {"at_chance": False}, "b": {"at_chance": False}},
                "gamma_estimate": {"value": 0.0, "low": 0.0, "high": 0.01,
                                   "little_to_transfer": True}}
    return document, ranking_reliability(document)


def test_rows_that_share_only_their_class_are_said_once_and_steer_the_advice():
    document, ranking = _class_only_ranking()
    assert ranking["reliable"] is False and ranking["paired"] is False
    assert "share nothing detectable beyond their class" in ranking["why"]
    rows = _trio(_plus(NONE, [3, 3.1, 2.9]), NONE, _plus(NONE, [-1, -1.1, -0.9]))
    rows[1] = _row("regular", _plus(NONE, [-0.5, -0.4, -0.6]))
    found = Comparison(Path("run"), rows, OPTIONS, "key", "id")
    found.verdict = v = verdict(found, ranking)
    assert v["paired"] is False and v["mfh_ordering"] == {"0.5": "not_interpreted"}
    assert "The rows share only their class" in v["text"]
    # said once: the unreliable ranking's sentence does not repeat it
    assert "The ranking is unreliable here (see above)" in v["text"]
    assert "pairing z" not in v["text"] and v["text"].count("beyond their class") == 0
    # the general teacher's student is best, but the ranking behind it is not trusted
    assert v["best_is_clear"] is False
    advice = _texts(advise(found, {**RANKED, **document, "aligned": {}}))
    assert len(advice) == 1 and "same order" in advice[0] and "label smoothing" in advice[0]
    assert not any("--ratio" in line or "sweep" in line for line in advice)
    # No-KD best: the headline says to check the pairing, not to sweep the ratio
    found = Comparison(Path("run"), [_row("none", NONE), _row("regular", _plus(
        NONE, [-1, -1.2, -0.8]))], OPTIONS, "key", "id")
    v = verdict(found, ranking)
    assert v["action"] == "rows share only the class: check their order"
    assert "sweep" not in v["headline"] and "label smoothing" in v["headline"]
    assert "as expected when the rows share only their class" in v["text"]


def test_a_modality_at_chance_is_its_own_message():
    from cmkd_doctor.wording import reliability as ranking_reliability

    document = {"pairing": {"score": 0.0, "null": 0.0, "z": None, "paired": False},
                "chance": {"a": {"at_chance": False}, "b": {"at_chance": True}}}
    ranking = ranking_reliability(document)
    assert ranking["at_chance"] == ["b"] and "share nothing" not in ranking["why"]
    found = Comparison(Path("run"), [_row("none", NONE), _row("regular", NONE)],
                       OPTIONS, "key", "id")
    found.verdict = v = verdict(found, ranking)
    assert v["action"] == "check the data: modality b is at chance"
    assert v["text"].count("predicts the labels no better than chance") == 1
    assert "rows share only their class" not in v["text"]
    advice = _texts(advise(found, {**RANKED, **document, "aligned": {}}))
    assert advice == ["Modality b predicts the labels no better than chance: check that its "
                      "features file lists the same samples, in the same order, as the "
                      "labels file (and as the other modality's file)."]
    with pytest.raises(ExpectationFailed, match="modality b predicts the labels no better"):
        check_expectation(found, "paired")


def test_expect_paired_gates_on_the_pairing_check():
    rows = [_row("none", NONE), _row("regular", _plus(NONE, [1, 1, 1]))]
    assert resolve_expectation("paired", [(r.teacher, r.ratio, r.label) for r in rows]) == (
        -1, "paired", -1)
    found = Comparison(Path("run"), rows, OPTIONS, "key", "id")
    found.verdict = verdict(found, {"reliable": True, "why": "", "paired": True})
    check_expectation(found, "paired")  # holds: no exception
    found.verdict = verdict(found, _class_only_ranking()[1])
    with pytest.raises(ExpectationFailed, match=r"^expectation 'paired' failed: the rows of "
                                                "a and b share nothing detectable beyond"):
        check_expectation(found, "paired")
    found.verdict = verdict(found, {"reliable": True, "why": ""})  # ranked before the check
    with pytest.raises(ExpectationFailed, match="no pairing check"):
        check_expectation(found, "paired")


def test_identical_differences_on_few_seeds_are_not_clear():
    """Coarse accuracies often give the same difference on every seed (SE 0): that is no
    evidence on 2 seeds (the sign test's p = 0.5), and clear only from 6 seeds on."""
    from cmkd_doctor.diagnosis.verdict import difference, sign_z
    from cmkd_doctor.wording import strength

    two = difference(_row("regular", [71.0, 73.0]), _row("none", [70.0, 72.0]))
    assert two.se == 0 and not two.clear and two.z == pytest.approx(sign_z(2))
    assert two.seeds_to_settle() == 6 and "too few seeds" in strength(two)
    runs = [70.0, 72.0, 74.0, 71.0, 73.0, 75.0]
    six = difference(_row("regular", _plus(runs, [0.5] * 6)), _row("none", runs))
    five = difference(_row("regular", _plus(runs[:5], [0.5] * 5)), _row("none", runs[:5]))
    assert six.gain and not five.clear
    assert -six.z == difference(_row("none", runs), _row("regular", _plus(runs, [0.5] * 6))).z
    # and so the verdict does not call Regular-KD a clear help on two seeds
    found = _comparison(_row("none", [70.0, 72.0]), _row("regular", [71.0, 73.0]))
    assert found.verdict["kd_helps"] is False and found.verdict["kd"]["z"] < 2


def test_the_schema_lists_every_decision():
    from cmkd_doctor.diagnosis.verdict import DECISIONS
    from cmkd_doctor.schemas import schema

    body = schema("distill")
    found = json.dumps(body)
    assert all(f'"{d}"' in found for d in DECISIONS)


def test_every_finding_is_worded_in_one_module_for_every_form():
    """Each check and form returns a sentence or says nothing, from one place."""
    from cmkd_doctor.ranking.findings import CHECKS, Finding
    from cmkd_doctor.wording import _WORDS, FORMS, say

    assert set(_WORDS) == set(CHECKS)
    with pytest.raises(ValueError):
        say(Finding("alignment", True, {}), "shout")
    poor = Finding("alignment", False, {"score": 0.31, "reliable": False, "threshold": 0.5,
                                        "rows": "test"}, context={"standardize": False})
    said = {form: say(poor, form) for form in FORMS}
    assert all("0.31" in text for text in said.values())  # every place words this one
    # what to try is a command (advice.rank_steps), never an option named in prose
    assert "--" not in said["warning"] and "UNRELIABLE" in said["line"]
    fine = Finding("alignment", True, {**poor.figures, "score": 0.9, "reliable": True})
    assert say(fine, "warning") is None and say(fine, "reason") is None
    assert "reliable" in say(fine, "line")
