"""Advice is a command: every step the doctor can print runs as printed from another
folder and does what it says; distill and diagnose decide by one rule; the table and
the verdict show one number per comparison."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cmkd_doctor.diagnosis.advice import COMMANDS, advise, distill_args, rank_steps
from cmkd_doctor.diagnosis.comparison import Comparison, Row
from cmkd_doctor.io.rundir import RunDir, last_call
from cmkd_doctor.wording import verdict

FILES = ("feats_a.npy", "feats_b.npy", "labels.npy")
# options of the first distill call that every command printed for it must carry over
OWN = ("--epochs", "6", "--lr", "0.002", "--seed", "3", "--device", "cpu")


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` pasted into a shell in ``cwd``, with this interpreter's cmkd-doctor
    first on the PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, gaussian_dir):
    """A small ranked and distilled run (linear networks, 3 permutations, 2 seeds)."""
    from cmkd_doctor.cli import main

    root = tmp_path_factory.mktemp("advised")
    run = root / "run"
    assert main(["rank", *(str(gaussian_dir / f) for f in FILES), "--out", str(run),
                 "--hidden", "0", "-M", "3", "--no-standardize", "--device", "cpu",
                 "-q"]) == 0
    assert main(["distill", "--run", str(run), "--seeds", "2", *OWN, "-q"]) == 0
    return run


def _last(run: Path) -> tuple[list[dict], dict]:
    document = RunDir(run).read_distill()
    rows, _ = last_call(document)
    return rows, rows[0]["options"]


def _crafted(run: Path, shifts: dict[str, list[float]], options: dict) -> Comparison:
    """The run's rows with hand-set accuracies (No-KD's students at 70, 72, 74 plus each
    row's shifts, every teacher at 90), the recorded teachers and options, and the
    verdict on them."""
    rows, _ = _last(run)
    base = [70.0, 72.0, 74.0]
    untaught = ("none", "control")  # the control, unless a state sets it, at No-KD's level
    made = [Row(r["teacher"], r["ratio"], r["label"], r["metric"],
                None if r["teacher"] in untaught else 90.0,
                [b + s for b, s in zip(base, shifts.get(
                    r["label"], SAME if r["teacher"] == "control" else None), strict=True)],
                r["teacher_file"]) for r in rows]
    found = Comparison(run, made, options, "key", "id")
    run_dir = RunDir(run)
    document = run_dir.read_document()
    found.verdict = verdict(found, run_dir.load().ranking_reliability)
    found.advice = [s.to_dict() for s in advise(found, document)]
    return found


SAME = [0.0, 0.0, 0.0]
# the rows of each state, as shifts from No-KD, and the step it advises
STATES = {
    # general +2 over Regular-KD, which helps: use the general teacher (export it)
    "use_teacher": {"No-KD": SAME, "Regular-KD": [1.0, 1.2, 0.8],
                    "general r=0.5": [3.0, 3.3, 2.9], "specific r=0.5": [-1, -1.1, -0.9],
                    "random r=0.5": [1.0, 1.2, 0.8]},
    # general +0.4 over Regular-KD within noise (z 1.6): a few more seeds would tell
    "more_seeds": {"No-KD": SAME, "Regular-KD": [1.0, 1.2, 0.8],
                   "general r=0.5": [1.9, 1.3, 1.0], "specific r=0.5": [-1, -1.1, -0.9],
                   "random r=0.5": [1.0, 1.2, 0.8]},
    # general - random clearly negative: the ordering fails; rank again
    "rank_again": {"No-KD": SAME, "Regular-KD": [1.0, 1.2, 0.8],
                   "general r=0.5": [0.0, 0.3, -0.2], "specific r=0.5": [-1, -1.1, -0.9],
                   "random r=0.5": [1.0, 1.1, 0.9]},
    # Regular-KD makes no clear difference: other ratios
    "other_ratios": {"No-KD": SAME, "Regular-KD": [0.5, -0.5, 0.1],
                     "general r=0.5": [0.5, -0.3, 0.1], "specific r=0.5": [-0.5, 0.2, 0.0],
                     "random r=0.5": [0.1, 0.0, -0.2]},
    # Regular-KD helps, the general teacher does not beat it: nullify fewer channels
    "fewer_nullified": {"No-KD": SAME, "Regular-KD": [2.0, 2.2, 1.8],
                        "general r=0.5": [1.0, 1.5, 1.2], "specific r=0.5": [0.5, 0.6, 0.4],
                        "random r=0.5": [1.0, 1.4, 1.1]},
}


# the ranking's own checks, failed (an edited rank.json), and the step that mends each
RANKINGS = {
    "rank_standardized": lambda d: {**d, "alignment": {**d["alignment"], "score": 0.1,
                                                       "reliable": False}},
    # standardised already: train longer
    "rank_longer": lambda d: {**d, "alignment": {**d["alignment"], "score": 0.1,
                                                 "reliable": False},
                              "options": {**d["options"], "standardize": True}},
    "rank_more_restarts": lambda d: {**d, "stability": {**d["stability"], "stable": False,
                                                        "top_overlap": 0.2}},
}


def test_every_step_with_a_command_is_tested():
    assert set(STATES) | set(RANKINGS) == set(COMMANDS)


def _step(code: str, run: Path) -> dict:
    """The step ``code`` as the doctor advises it on ``run``: on hand-set students, or on
    the run's ranking with one of its checks failed (ranking again, then distilling)."""
    _, options = _last(run)
    if code in STATES:
        found = _crafted(run, STATES[code], options)
        return next(s for s in found.advice if s["code"] == code)
    document = RANKINGS[code](RunDir(run).read_document())
    then = distill_args(run, options, document["options"]["hidden"])
    return next(s.to_dict() for s in rank_steps(run, document, then) if s.code == code)


@pytest.mark.slow
@pytest.mark.parametrize("code", list(COMMANDS))
def test_every_printed_command_runs_from_another_folder_and_does_what_it_says(
        code, distilled, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(distilled), str(run)], check=True)
    _, options = _last(run)
    before = json.loads((run / "rank.json").read_text())
    step = _step(code, run)
    command = step["command"]
    assert command.startswith("cmkd-doctor ") and f"--run {run}" in command
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _shell(command, elsewhere)
    assert result.returncode == 0, (command, result.stderr)
    assert not list(elsewhere.iterdir())  # nothing written where it was pasted
    carried = {k: options[k] for k in ("rho", "temperature", "seed", "device")}
    if code == "use_teacher":  # the teacher the students had, exported
        assert "(reused)" in result.stdout
        onnx_file = Path(shlex.split(command)[-1])
        assert onnx_file.is_file() and onnx_file.parent == run / "teachers"
        return
    rows, after = _last(run)
    assert {k: after[k] for k in carried} == carried
    assert after["train"] == options["train"]  # --epochs 6 --lr 0.002 and the run's width
    if code == "more_seeds":
        room = int(re.search(r"--max-seeds (\d+)", command)[1])
        assert after["seeds"] == "auto" and after["max_seeds"] == room
        assert re.search(rf"give it up to {room} before", step["text"])
        assert max(len(r["student_runs"]) for r in rows) > 3  # grown beyond 2 seeds
    elif code == "rank_again":
        rank = json.loads((run / "rank.json").read_text())
        assert rank["options"]["repeats"] == 6 and rank["options"]["hidden"] == []
        assert rank["options"]["device"] == "cpu"
        assert RunDir(run).read_distill()["rank"]["run_id"] == rank["run_id"]
    elif code == "other_ratios":
        assert {r["ratio"] for r in rows if r["teacher"] == "general"} == {0.25, 0.5, 0.75}
        assert {r["teacher"] for r in rows} == {"none", "regular", "control", "general",
                                                 "specific", "random"}
    elif code == "fewer_nullified":
        assert {(r["teacher"], r["ratio"]) for r in rows if r["options_key"] == rows[0][
            "options_key"]} >= {("general", 0.25)}
    else:  # ranked again with the options that mend the check, then distilled again
        rank = json.loads((run / "rank.json").read_text())
        assert RunDir(run).read_distill()["rank"]["run_id"] == rank["run_id"]
        assert rank["run_id"] != before["run_id"] and rank["options"]["hidden"] == []
        # ranked with --no-standardize: carried over, but where standardising is the step
        # (or the ranking was standardised already)
        assert rank["options"]["standardize"] is (code != "rank_more_restarts")
        if code == "rank_longer":
            assert rank["options"]["epochs"] == 2 * before["aligned"]["epochs_max"]
            assert rank["options"]["patience"] == 2 * before["options"]["patience"]
        elif code == "rank_more_restarts":
            assert rank["options"]["repeats"] == 6 and rank["options"]["restarts"] == 3


def test_distill_refuses_an_option_that_cannot_act(distilled, cli):
    for extra, name in ((("--max-seeds", "40"), "--max-seeds"),
                        (("--seeds-budget", "60"), "--seeds-budget")):
        result = cli("distill", "--run", distilled, "--seeds", "5", *extra)
        assert result.code == 2
        assert result.err.count("\n") == 1 and name in result.err and "--seeds 5" in result.err


@pytest.mark.slow
def test_distill_and_diagnose_decide_by_one_rule(distilled, tmp_path):
    """distill's default is diagnose's: --seeds auto, so --max-seeds alone acts."""
    from cmkd_doctor.diagnosis.diagnose import DiagnoseConfig
    from cmkd_doctor.diagnosis.distill import DistillOptions

    assert DistillOptions().seeds == DiagnoseConfig().distill.seeds == "auto"
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(distilled), str(run)], check=True)
    result = _shell(f"cmkd-doctor distill --run {run} --teacher general --max-seeds 6 "
                    "--epochs 6 --device cpu -q", tmp_path)
    assert result.returncode == 0, result.stderr
    _, options = _last(run)
    assert options["seeds"] == "auto" and options["max_seeds"] == 6


def _numbers(text: str) -> list[str]:
    return re.findall(r"[+-]\d+\.\d\d", text)


@pytest.mark.slow
def test_the_table_and_the_verdict_show_one_number_per_comparison(tmp_path, cli,
                                                                    monkeypatch):
    """diagnose --example gaussian at its defaults: every difference the table shows is
    the paired one the verdict and the JSON read, and every printed command runs."""
    monkeypatch.chdir(tmp_path)
    result = cli("diagnose", "--example", "gaussian", "--out", "run")
    assert result.code == 0, result.err
    document = json.loads((tmp_path / "run" / "distill.json").read_text())
    rows, _ = last_call(document)
    v = document["last_verdict"]
    by_label = {r["label"]: r for r in rows}
    assert len({len(r["student_runs"]) for r in rows}) > 1  # --seeds auto: uneven rows
    for row in rows:
        for name in ("none", "regular", "control"):
            versus = row[f"vs_{name}"]
            if versus is None:
                assert row[f"delta_vs_{name}"] is None
                continue
            base = by_label[{"none": "No-KD", "regular": "Regular-KD",
                             "control": "Control"}[name]]
            n = min(len(row["student_runs"]), len(base["student_runs"]))
            paired = sum(a - b for a, b in zip(row["student_runs"][:n],
                                               base["student_runs"][:n], strict=True)) / n
            assert versus["seeds"] == n and versus["delta"] == pytest.approx(paired)
            assert row[f"delta_vs_{name}"] == versus["delta"]
        # the terminal table's row shows the same figures
        line = next(t for t in result.out.splitlines() if t.startswith(f"│ {row['label']} "))
        shown = _numbers(line)
        expected = [f"{row[k]:+.2f}" for k in ("delta_vs_none", "delta_vs_regular",
                                                "delta_vs_control")
                    if row[k] is not None and not (k != "delta_vs_none"
                                                   and row["teacher"] == "none")]
        assert shown == expected, line
    assert v["kd_delta"] == by_label["Regular-KD"]["delta_vs_none"]
    assert f"Regular-KD is {v['kd_delta']:+.2f}" in result.out
    best = by_label[v["best"]]
    if best["teacher"] != "regular":
        assert v["best_delta_vs_regular"] == best["delta_vs_regular"]
        assert f"{best['delta_vs_regular']:+.2f} accuracy points over Regular-KD" in \
            result.out
    else:
        assert v["best_delta_vs_regular"] is None
    # every command printed, pasted from another folder, runs
    commands = [t.strip() for t in result.out.splitlines()
                if t.startswith("      cmkd-doctor ")]
    assert commands and commands == [s["command"] for s in document["last_advice"]
                                     if s["command"]]
    # the README's example of a step is what this run prints (its figures aside, which
    # move with the CPU's float kernels)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("On the\nbuilt-in example, for instance:\n\n```\n", 1)[1]
    said, shown = example.split("```", 1)[0].splitlines()[1:3]
    first = document["last_advice"][0]
    assert _shape(said) == _shape(f"  - {first['text']}")
    assert _shape(shown.strip().replace("/home/me/cmkd-out", str(tmp_path / "run"))) == \
        _shape(first["command"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in commands:
        ran = _shell(command, elsewhere)
        assert ran.returncode == 0, (command, ran.stderr)


def _shape(text: str) -> str:
    """``text`` with its figures blanked."""
    return re.sub(r"[+-]?\d+(\.\d+)?", "#", text)


def test_a_teacher_weaker_than_the_student_alone_is_its_own_finding(distilled):
    _, options = _last(distilled)
    rows, _ = _last(distilled)
    found = _crafted(distilled, STATES["other_ratios"], options)
    assert found.verdict["weak_teacher"] is None
    for row in found.rows:  # every teacher far below the student trained alone
        if row.teacher not in ("none", "control"):
            row.teacher_metric = 40.0
    found.verdict = v = verdict(found, RunDir(distilled).load().ranking_reliability)
    assert v["decision"] == "weak_teacher"
    assert v["weak_teacher"]["teacher"] == 40.0 and v["weak_teacher"]["gap"] > 30
    assert v["action"] == ("the teacher is weaker than the student alone: do not expect KD "
                           "from it to help")
    assert v["headline"].startswith("Do not expect KD from this teacher to help: no teacher "
                                    "clearly beat training the student alone, and the "
                                    "regular teacher is weaker than the student trained "
                                    "alone: its test accuracy is 40.00% against 72.00%")
    assert v["text"].count("weaker than the student trained alone") == 1
    steps = advise(found, RunDir(distilled).read_document())
    assert steps[0].code == "stronger_teacher" and steps[0].command is None
    # the finding explains the loss: no step tells the user to sweep ratios or skip KD
    assert not any(s.code in ("other_ratios", "fewer_nullified") for s in steps)


@pytest.mark.parametrize("args,named", [
    (["distill", "--channel-axis", "2"], "--channel-axis"),
    (["derive-teacher", "--weights", "w.safetensors"], "--weights"),
    (["derive-teacher", "--export-pt2", "t.pt2"], "--export-pt2"),
    (["derive-teacher", "--input-shape", "3,8,8"], "--input-shape"),
    (["derive-teacher", "--channel-axis", "2"], "--channel-axis"),
    (["extract", "--model", "m.pt2", "--layer", "relu", "--array", "x.npy", "-o", "f.npy",
      "--input-shape", "3,8,8"], "--input-shape"),
])
def test_every_option_that_cannot_act_is_refused_naming_it(args, named, distilled, cli):
    """Options of another path (a whole network, a layer listing) are refused where they
    cannot act, never silently ignored."""
    run = ["--run", str(distilled)] if args[0] != "extract" else []
    result = cli(*args, *run)
    assert result.code == 2 and result.err.count("\n") == 1 and named in result.err, result.err
