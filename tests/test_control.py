"""The knowledge-free control row (issue 39, item 1): targets as soft as the regular
teacher's, from the labels alone, in every comparison, table, report and document."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cmkd_doctor.diagnosis.comparison import Comparison, Row
from cmkd_doctor.diagnosis.verdict import outcome, record
from cmkd_doctor.teachers.control import Control, entropy_sum
from cmkd_doctor.training.stacked import SoftLabels


@pytest.mark.parametrize("classes", [2, 3, 10])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_the_control_is_exactly_as_soft_as_the_teacher_it_matches(classes, temperature):
    rng = np.random.default_rng(classes)
    teacher = torch.from_numpy(rng.standard_normal((500, classes)) * 3)
    mean = float(entropy_sum(teacher, temperature, False)) / 500
    control = Control.matching(mean, classes, False, temperature)
    y = rng.integers(0, classes, 50)
    targets = torch.softmax(torch.from_numpy(control.logits(y)).double() / temperature, -1)
    # its soft labels: the level on the labelled class, the rest shared evenly
    assert np.allclose(targets[np.arange(50), y], control.level, atol=1e-5)
    assert np.allclose(targets.sum(-1), 1) and int(targets.argmax(-1).ne(
        torch.from_numpy(y)).sum()) == 0
    # and their entropy is the teacher's mean entropy
    got = float(entropy_sum(torch.from_numpy(control.logits(y)), temperature, False)) / 50
    assert math.isclose(got, mean, rel_tol=1e-4, abs_tol=1e-6)


def test_a_certain_teacher_gives_the_labels_and_a_uniform_one_gives_nothing():
    assert Control.matching(0.0, 10, False, 1.0).level > 0.999
    assert math.isclose(Control.matching(math.log(10), 10, False, 1.0).level, 0.1,
                        rel_tol=1e-6)
    assert Control.matching(0.0, 5, True, 1.0).level < 1e-3
    assert math.isclose(Control.matching(math.log(2), 5, True, 1.0).level, 0.5, rel_tol=1e-6)


def test_a_multilabel_control_matches_the_mean_binary_entropy():
    rng = np.random.default_rng(0)
    teacher = torch.from_numpy(rng.standard_normal((300, 6)) * 2)
    mean = float(entropy_sum(teacher, 2.0, True)) / 300
    control = Control.matching(mean, 6, True, 2.0)
    y = (rng.random((40, 6)) > 0.5).astype(np.float32)
    logits = torch.from_numpy(control.logits(y))
    q = torch.sigmoid(logits.double() / 2.0).numpy()
    assert np.allclose(np.where(y > 0.5, 1 - q, q), control.level, atol=1e-5)
    assert math.isclose(float(entropy_sum(logits, 2.0, True)) / 40, mean, rel_tol=1e-4)


def test_the_controls_soft_labels_come_from_the_labels_alone(tmp_path):
    """fill_targets writes targets(y) for exactly the rows asked, in memory or in the
    scratch file of streamed rows."""
    from cmkd_doctor.training.stacked import Rows

    y = np.arange(30) % 3
    rows = Rows(np.zeros((30, 4), np.float32), y, np.arange(20), np.arange(20, 25),
                np.arange(25, 30), 3, False, torch.device("cpu"))
    control = Control.matching(0.5, 3, False, 1.0)
    for streamed in (False, True):
        soft = SoftLabels(30, 2, 3, streamed)
        try:
            soft.fill_targets(1, control.logits, rows, [rows.fit, rows.val])
            assert np.array_equal(soft.array[:25, 1], control.logits(y[:25]))
            assert not soft.array[25:].any() and not soft.array[:, 0].any()
        finally:
            soft.close()


def _row(teacher, runs, ratio=None, label=None):
    names = {"none": "No-KD", "regular": "Regular-KD", "control": "Control"}
    label = label or names.get(teacher) or f"{teacher} r={ratio:g}"
    return Row(teacher, ratio, label,
               "accuracy", None if teacher in ("none", "control") else 80.0, list(runs))


def test_the_control_is_a_yardstick_and_never_the_row_to_use():
    """The control beats every row here, yet the verdict's best is a teacher's row, and
    the record says what the control gives and what the best row gives beyond it."""
    seeds = np.arange(8) * 0.01
    rows = [_row("none", 60 + seeds), _row("regular", 61 + seeds),
            _row("control", 66 + seeds), _row("general", 63 + seeds, 0.5),
            _row("random", 62 + seeds, 0.5), _row("specific", 61.5 + seeds, 0.5)]
    report = Comparison("run", rows, {}, "key")
    o = outcome(report)
    assert o.best.label == "general r=0.5" and o.control is rows[2]
    facts = record(o)["control"]
    assert facts["vs_none"]["delta"] == pytest.approx(6.0)
    assert facts["best"] == "general r=0.5"
    assert facts["best_vs_control"]["delta"] == pytest.approx(-3.0)
    assert facts["best_vs_control"]["clear"]
    found = json.loads(json.dumps(report.to_dict()))
    general = next(r for r in found["results"] if r["teacher"] == "general")
    assert general["delta_vs_control"] == pytest.approx(-3.0) and general["vs_control"]


def test_a_comparison_recorded_before_the_control_reads_as_it_did():
    seeds = np.arange(4) * 0.01
    rows = [_row("none", 60 + seeds), _row("regular", 61 + seeds),
            _row("general", 63 + seeds, 0.5)]
    report = Comparison("run", rows, {}, "key")
    assert set(report.versus(rows[2])) == {"none", "regular"}
    assert record(outcome(report))["control"] is None
    assert report.to_dict()["results"][2]["vs_control"] is None
