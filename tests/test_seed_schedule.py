"""--seeds auto: the sequential rule's error rate (by simulation), its schedule, and the
seeds it adds where the verdict needs them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import distill_record

from cmkd_doctor.diagnosis import seed_schedule
from cmkd_doctor.diagnosis.comparison import Row
from cmkd_doctor.diagnosis.verdict import Z, difference

SCHEDULE = seed_schedule.looks(seed_schedule.MAX_SEEDS)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """The built-in Gaussian example ranked with the paper's linear model."""
    from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
    from cmkd_doctor.io.rundir import rank_files
    from cmkd_doctor.ranking.run import RankOptions

    root = tmp_path_factory.mktemp("ranked")
    write_gaussian(make_gaussian(GaussianSpec(seed=1)), root / "data")
    rank_files(*(root / "data" / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")),
               out=root / "run", options=RankOptions(device="cpu", hidden="0"))
    return root / "run"


def _fixed_rate(diffs: np.ndarray, seeds: int = 5) -> float:
    """The fixed-seed rule's false 'clear' rate: |mean / SE| > Z over ``seeds`` seeds (the
    sign test's z when every seed gives the same difference), as verdict.difference."""
    d = diffs[:, :seeds]
    mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    spread = sd > 1e-12 * np.maximum(np.abs(mean), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(spread, mean / (sd / math.sqrt(seeds)), 0.0)
    sign = (mean != 0) & ~spread & (2.0 ** (1 - seeds) < 2 * (1 - 0.9772498680518208))
    return float(((np.abs(z) > Z) | sign).mean())


def _row(runs) -> Row:
    return Row("x", None, "x", "accuracy", None, [float(v) for v in runs])


def test_the_schedule_grows_by_half_and_ends_at_the_budget():
    assert SCHEDULE == (4, 6, 9, 14, 20)
    assert seed_schedule.looks(5) == (4, 5) and seed_schedule.looks(3) == (3,)
    assert seed_schedule.looks(100)[-1] == 100
    assert all(b > a for a, b in zip(SCHEDULE[:-1], SCHEDULE[1:], strict=True))


def test_the_simulation_counts_what_the_verdict_calls_clear():
    """The vectorised p values behind level() decide as verdict.difference does with the
    sequential threshold, on continuous and on tied (coarse) differences."""
    per_look = seed_schedule.level(SCHEDULE)
    rng = np.random.default_rng(5)
    cases = [rng.normal(0.8, 1.0, 6) for _ in range(200)]
    cases += [np.round(rng.normal(0.3, 0.3, 9), 1) for _ in range(200)]
    cases += [np.full(n, 0.1) for n in (4, 6, 9)]  # every seed the same: the sign test
    for diffs in cases:
        d = difference(_row(diffs), _row(np.zeros(len(diffs))), per_look)
        p = seed_schedule.p_values(diffs[None, :])[0]
        if abs(p - per_look) > 1e-9:
            assert d.clear == (p < per_look), (diffs, p, d)


@pytest.mark.parametrize("kind", ["gaussian", "coarse accuracies"])
def test_looking_at_every_step_calls_null_differences_clear_no_more_than_the_fixed_rule(
        kind):
    """Rows with no true difference, looked at on the default schedule (4 to 20 seeds),
    by a fresh simulation (not level()'s draws): the sequential rule calls them clear at
    some look in at most ALPHA of runs, and less often than the fixed 5-seed rule does at
    its one look; looking at every step with the fixed z > 2 would call far more."""
    rng = np.random.default_rng(2026)
    runs = 20_000
    if kind == "gaussian":
        diffs = rng.standard_normal((runs, 20))
    else:  # accuracy on 2,000 test rows: 0.05-point steps, ties and identical seeds
        shared = rng.normal(90.0, 0.4, (runs, 20))
        a = np.round(shared + rng.normal(0, 0.15, (runs, 20)), 0) * 0.05
        b = np.round(shared + rng.normal(0, 0.15, (runs, 20)), 0) * 0.05
        diffs = a - b
    per_look = seed_schedule.level(SCHEDULE)
    sequential_rate = seed_schedule.false_clear_rate(diffs, SCHEDULE, per_look)
    fixed_rate = _fixed_rate(diffs)
    se = math.sqrt(seed_schedule.ALPHA * (1 - seed_schedule.ALPHA) / runs)
    assert sequential_rate <= seed_schedule.ALPHA + 3 * se
    assert sequential_rate < fixed_rate
    naive = np.zeros(runs, dtype=bool)  # z > 2 at every look: optional stopping
    for n in SCHEDULE:
        naive |= seed_schedule.p_values(diffs[:, :n]) < 2 * (1 - 0.9772498680518208)
    assert naive.mean() > 2 * sequential_rate


def test_a_real_difference_is_mostly_decided_before_the_budget():
    """A difference of one seed-to-seed spread is clear at some look in most runs."""
    rng = np.random.default_rng(7)
    diffs = rng.normal(1.0, 1.0, (4000, 20))
    per_look = seed_schedule.level(SCHEDULE)
    decided = seed_schedule.smallest_p(diffs, SCHEDULE) < per_look
    assert decided.mean() > 0.8


def test_futility_stops_only_hopeless_differences():
    final = seed_schedule.threshold(20, seed_schedule.level(SCHEDULE))
    assert seed_schedule.futile(0.0, 4, final, 20)
    assert seed_schedule.futile(0.3, 6, final, 20)  # would need about 500 seeds
    assert not seed_schedule.futile(1.5, 4, final, 20)  # about 13: worth the seeds
    assert not seed_schedule.futile(None, 1, final, 20)


def test_distill_with_auto_seeds_adds_seeds_only_where_the_verdict_is_undecided(
        ranked, tmp_path, cli):
    """On the Gaussian example, --seeds auto starts every row at 4 seeds, adds seeds to
    the rows of undecided comparisons only (paired: the same first seeds in every row),
    and says in the verdict how many seeds each comparison took."""
    shutil.copytree(ranked, tmp_path / "run")
    fixed = cli("distill", "--run", tmp_path / "run", "--teacher", "general,specific",
                "--seeds", "4", "--epochs", "20", "--json", "--device", "cpu")
    assert fixed.code == 0, fixed.err
    result = cli("distill", "--run", tmp_path / "run", "--teacher", "general,specific",
                 "--seeds", "auto", "--epochs", "20", "--json", "--device", "cpu")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    record = doc["seeds"]
    assert record["looks"] == [4, 6, 9, 14, 20] and record["max_seeds"] == 20
    counts = {r["label"]: len(r["student_runs"]) for r in doc["results"]}
    assert counts == record["row_seeds"] and set(counts.values()) <= {4, 6, 9, 14, 20}
    assert max(counts.values()) > 4 and min(counts.values()) == 4  # only some rows grew
    # the first 4 seeds of every row are the fixed run's 4: extra seeds only append
    before = {r["label"]: r["student_runs"] for r in json.loads(fixed.out)["results"]}
    for r in doc["results"]:
        assert r["student_runs"][:4] == pytest.approx(before[r["label"]])
    decisions = doc["verdict"]["seeds"]
    assert decisions and decisions == record["decisions"]
    names = [d["comparison"] for d in decisions]
    assert names[0] == "Regular-KD - No-KD"
    for d in decisions:
        assert d["state"] in ("clear", "budget", "futile")
        assert (d["state"] == "budget") == (not d["state"] == "clear" and d["seeds"] == 20)
    # a row grew only when a comparison it is in was undecided at some look
    involved = set()
    for d in decisions:
        if d["state"] != "clear" or d["seeds"] > 4:
            name = d["comparison"]
            if " at r = " in name:  # general - specific at r = R
                left, ratio = name.split(" at r = ")
                involved |= {f"{m} r={ratio}" for m in left.split(" - ")}
            else:
                involved |= set(name.split(" - "))
    # (and the control, which shares every look's seeds: every row is read against it)
    assert counts["Control"] == max(counts.values())
    assert {label for label, n in counts.items() if n > 4} - {"Control"} <= involved
    assert "Seeds, added where a comparison was undecided" in doc["verdict"]["text"]


def test_seeds_option_is_checked(ranked, cli):
    run = ranked
    for bad, said in (("some", "--seeds"), ("0", "--seeds")):
        result = cli("distill", "--run", run, "--seeds", bad)
        assert result.code == 2 and said in result.err and "Traceback" not in result.err
    result = cli("distill", "--run", run, "--seeds", "auto", "--max-seeds", "500")
    assert result.code == 2 and "--max-seeds" in result.err and "100" in result.err


def test_a_time_budget_stops_adding_seeds(ranked, tmp_path, cli):
    """--seeds-budget: no look starts once the students' time (so far, plus the next look
    at the seconds per student so far) would pass it; its comparisons say 'time'."""
    shutil.copytree(ranked, tmp_path / "run")
    args = ("distill", "--run", tmp_path / "run", "--teacher", "general", "--seeds", "auto",
            "--epochs", "20", "--json", "--device", "cpu")
    free = json.loads(cli(*args).out)
    assert max(len(r["student_runs"]) for r in free["results"]) > 4  # it looked again
    tight = cli(*args, "--seeds-budget", "0.001")
    assert tight.code == 0, tight.err
    doc = json.loads(tight.out)
    assert {len(r["student_runs"]) for r in doc["results"]} == {4}
    assert doc["seeds"]["seeds_budget"] == 0.001
    states = [d["state"] for d in doc["verdict"]["seeds"]]
    assert "time" in states and "budget" not in states
    assert "the --seeds-budget time" in doc["verdict"]["text"]


def test_the_advice_names_the_seeds_that_would_tell():
    """The step after an undecided best row: the seeds its difference with Regular-KD
    would need at the rule's threshold, and a round --max-seeds above them."""
    from cmkd_doctor.diagnosis.advice import _more_seeds
    from cmkd_doctor.diagnosis.comparison import Comparison, Row

    def step(z: float, seeds: str = "auto"):
        noise = np.random.default_rng(0).standard_normal(20)
        noise = (noise - noise.mean()) / noise.std(ddof=1)  # mean 0, sd 1 exactly
        regular = list(70 + noise)
        general = [r + z / 20**0.5 + d for r, d in zip(regular, noise, strict=True)]
        rows = [Row("regular", None, "Regular-KD", "accuracy", 80.0, regular),
                Row("general", 0.5, "general r=0.5", "accuracy", 80.0, general)]
        schedule = seed_schedule.looks(20)
        seeding = {"per_look": seed_schedule.level(schedule), "looks": list(schedule)}
        record = distill_record(seeds=seeds) if seeds == "auto" else distill_record(
            seeds=int(seeds))
        report = Comparison(Path("/runs/r"), rows, record, "key", "id",
                            seeding=seeding if seeds == "auto" else None)
        return report.difference(rows[1], rows[0]), _more_seeds(report, rows[1], [256])

    d, said = step(1.98)
    need = math.ceil(20 * (d.threshold / d.z) ** 2)
    assert d.z == pytest.approx(1.98) and 30 < need < 40
    assert f"about {need} seeds would tell; give it up to 40 before" in said.text
    assert said.command == "cmkd-doctor distill --run /runs/r --max-seeds 40"
    d, said = step(0.5)  # 20 * (2.7 / 0.5)^2 = 584 seeds
    assert "about equal" in said.text and said.command is None
    d, said = step(1.5, seeds="20")  # a fixed --seeds: the default rule, auto, from there
    assert said.command == "cmkd-doctor distill --run /runs/r --max-seeds 40"
