"""Hostile and careless input to every command: exit 2 (or 130/143 for signals), exactly
one ``error:`` line, no traceback, and nothing written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cmkd_doctor.io.outputs as outputs
from cmkd_doctor.cli import Stopped
from cmkd_doctor.diagnosis.diagnose import build_config, load_config
from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io.outputs import json_text
from cmkd_doctor.io.rundir import rank_files
from cmkd_doctor.ranking.run import RankOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """Good data, a finished rank run, and a folder of bad files."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    write_gaussian(make_gaussian(GaussianSpec(n_train=200, n_test=50, seed=4)), data)
    rank_files(*(data / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")),
               out=root / "run", options=RankOptions(device="cpu", epochs=3, repeats=2))
    bad = root / "bad"
    bad.mkdir()
    x = np.load(data / "feats_a.npy")
    wide = x.astype(np.float64)
    wide[5, 3] = 1e300  # finite in float64, Inf in float32
    np.save(bad / "beyond_float32.npy", wide)
    with_nan = x.copy()
    with_nan[2, 1] = np.nan
    np.save(bad / "nan.npy", with_nan)
    np.save(bad / "one_d.npy", x[:, 0])
    np.save(bad / "one_column.npy", x[:, :1])
    np.save(bad / "three_d.npy", x.reshape(len(x), 5, 10))
    np.save(bad / "short.npy", x[:-3])
    np.save(bad / "objects.npy", np.array([{"a": 1}] * len(x), dtype=object),
            allow_pickle=True)
    (bad / "text.npy").write_text("not an array\n")
    raw = (data / "feats_a.npy").read_bytes()
    (bad / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    y = np.load(data / "labels.npy")
    lonely = y.copy()
    lonely[0] = 7  # a class with one sample
    np.save(bad / "lonely_labels.npy", lonely)
    np.save(bad / "float_labels.npy", y + 0.5)
    for name, body in CONFIGS.items():
        (bad / f"{name}.yaml").write_text(body + "\n")
    return data, root / "run", bad


# diagnose configs of the wrong type: name -> (YAML, the key the error must name)
CONFIGS = {"lr_text": "rank: {lr: fast}", "hidden_text": 'rank: {hidden: [8, "x"]}',
           "repeats_bool": "rank: {repeats: true}", "out_number": "out: 12345",
           "d1_text": 'gaussian: {d1: "ten"}', "ratios_text": 'distill: {ratios: [0.5, "x"]}',
           "sections_list": "rank: [1, 2]", "not_yaml": "rank: {lr: [1, 2"}


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


G = "{data}"


def _names(flag: str, value: str) -> str:
    """What the error line must name: a file given as the value, else the option."""
    return value.rsplit("/", 1)[-1] if value.startswith("{") else flag


FILES = [f"{G}/feats_a.npy", f"{G}/feats_b.npy", f"{G}/labels.npy"]
RANK = ["rank", *FILES, "--out", "{out}"]
CASES = {
    # rank: files
    "rank: a missing file": (["rank", "{data}/nope.npy", *FILES[1:], "--out", "{out}"],
                             "nope.npy: no such file"),
    "rank: a file name with an emoji code": (
        ["rank", "{data}/feats_a.npy:x:", *FILES[1:], "--out", "{out}"], "feats_a.npy:x:"),
    **{f"rank: {what}": (["rank", f"{{bad}}/{name}", *FILES[1:], "--out", "{out}"], needle)
       for what, name, needle in (
        ("values beyond float32", "beyond_float32.npy", "beyond float32"),
        ("NaN features", "nan.npy", "non-finite"),
        ("1-D features", "one_d.npy", "one_d.npy"),
        ("3-D features", "three_d.npy", "three_d.npy"),
        ("rows that do not pair", "short.npy", "short.npy"),
        ("a pickled array", "objects.npy", "objects.npy"),
        ("a text file as .npy", "text.npy", "text.npy"),
        ("a truncated .npy", "truncated.npy", "truncated.npy"))},
    "rank: a class with one sample": (["rank", *FILES[:2], "{bad}/lonely_labels.npy", "--out",
                                       "{out}"], "lonely_labels.npy"),
    "rank: fractional labels": (["rank", *FILES[:2], "{bad}/float_labels.npy", "--out",
                                 "{out}"], "float_labels.npy"),
    "rank: a missing --split file": ([*RANK, "--split", "{data}/nope.npz"], "--split"),
    # rank: options
    **{f"rank: {flag} {value}": ([*RANK, flag, value], flag) for flag, value in (
        ("--lr", "inf"), ("--lr", "nan"), ("--lr", "-1"), ("--lr", "0"),
        ("--repeats", "0"), ("--repeats", "-3"), ("--epochs", "0"), ("--batch-size", "0"),
        ("--test-split", "1"), ("--test-split", "-0.1"), ("--test-split", "nan"),
        ("--dist", "l2"), ("--normalize", "z"), ("--permute", "c"),
        ("--permute-on", "val"), ("--estimator", "magic"), ("--permutation", "some"),
        ("--protocol", "mine"), ("--hidden", "x"), ("--hidden", "-1"),
        ("--restarts", "0"), ("--chunk-rows", "0"), ("--seed", "-1"),
        ("--patience", "-1"), ("--device", "tpu"), ("--batch-size", "-5"),
        ("--lr", "abc"), ("--repeats", "1.5"), ("--hidden", "8,,8"), ("--hidden", "8,"),
        ("--restarts", "1000000000000"))},
    "rank: --estimator exact with an MLP": ([*RANK, "--estimator", "exact"], "--estimator"),
    "rank: per-channel permutations beyond memory": (
        [*RANK, "--protocol", "official", "-M", "100000"], "GiB"),
    "rank: an unknown option": ([*RANK, "--fast"], "--fast"),
    # requests beyond the machine, refused from an estimate before any work
    "rank: --hidden beyond memory": ([*RANK, "--hidden", "100000000000"], "needs about"),
    "rank: --repeats beyond memory": ([*RANK, "--repeats", "100000000000"], "needs about"),
    "derive-teacher: --hidden beyond memory": (
        ["derive-teacher", "--run", "{run}", "--hidden", "100000000000"], "needs about"),
    "distill: --hidden beyond memory": (
        ["distill", "--run", "{run}", "--hidden", "100000000000"], "needs about"),
    # output paths, checked before any work
    "rank: --out under a file": ([*RANK[:-1], "{bad}/text.npy/run"], "is a file"),
    "rank: --out an over-long name": ([*RANK[:-1], "{out}/" + "n" * 300], "too long"),
    "rank: --out an existing file": ([*RANK[:-1], "{bad}/text.npy"], "not a folder"),
    **({"rank: --out where nothing can be created": ([*RANK[:-1], "/sys/cmkd-doctor-run"],
                                                    "not writable")}
       if os.path.isdir("/sys") and os.geteuid() == 0 else {}),
    "derive-teacher: --export-onnx an existing folder": (
        ["derive-teacher", "--run", "{run}", "--export-onnx", "{bad}"], "is a folder"),
    "derive-teacher: --export-onnx an over-long name": (
        ["derive-teacher", "--run", "{run}", "--export-onnx", "{out}/" + "t" * 300 + ".onnx"],
        "too long"),
    **({"diagnose: --device cuda without CUDA": (
        ["diagnose", "--example", "gaussian", "--device", "cuda", "--out", "{out}"],
        "--device cuda")} if not torch.cuda.is_available() else {}),
    # derive-teacher and distill on a finished run
    "derive-teacher: a missing run": (["derive-teacher", "--run", "{data}/norun"], "norun"),
    "derive-teacher: a folder without rank.json": (["derive-teacher", "--run", "{bad}"],
                                                   "rank.json"),
    **{f"derive-teacher: {flag} {value}": (["derive-teacher", "--run", "{run}", flag, value],
                                           _names(flag, value)) for flag, value in (
        ("--mode", "clever"), ("--ratio", "1.5"), ("--ratio", "0"), ("--ratio", "nan"),
        ("--fill", "noise"), ("--lr", "inf"), ("--epochs", "0"), ("--seed", "-2"),
        ("--from", "{data}/nope.safetensors"), ("--from", "{data}/labels.npy"),
        ("--batch-size", "0"), ("--hidden", "x"), ("--patience", "-1"),
        ("--chunk-rows", "0"), ("--device", "tpu"), ("--ratio", "-0.5"))},
    **{f"distill: {flag} {value}": (["distill", "--run", "{run}", flag, value],
                                    _names(flag, value)) for flag, value in (
        ("--teacher", "nosuch"), ("--ratio", "2"), ("--rho", "2"), ("--rho", "nan"),
        ("--temperature", "inf"), ("--temperature", "nan"), ("--temperature", "0"),
        ("--seeds", "0"), ("--seeds", "1000000"), ("--lr", "inf"), ("--expect", "miracles"),
        ("--device", "quantum"), ("--seed", "-1"), ("--epochs", "0"), ("--batch-size", "0"),
        ("--patience", "-1"), ("--hidden", "x"), ("--chunk-rows", "0"), ("--fill", "noise"),
        ("--ratio", "nan"), ("--rho", "-0.1"), ("--from", "{data}/nope.onnx"))},
    # report
    "report: a missing run": (["report", "--run", "{data}/norun"], "norun"),
    "report: an unknown format": (["report", "--run", "{run}", "--format", "pdf"],
                                  "--format"),
    "report: html without --out": (["report", "--run", "{run}", "--format", "html"],
                                   "--out"),
    "report: a folder without rank.json": (["report", "--run", "{bad}"], "rank.json"),
    # diagnose
    "diagnose: a missing file": (["diagnose", "{data}/nope.npy", *FILES[1:], "--out",
                                  "{out}"], "nope.npy"),
    "diagnose: one-column features": (["diagnose", "{bad}/one_column.npy", *FILES[1:],
                                       "--out", "{out}"], "1 channel"),
    "diagnose: a ratio that nullifies nothing": (
        ["diagnose", *FILES, "--ratio", "0.001", "--out", "{out}"], "--ratio"),
    "diagnose: an unknown example": (["diagnose", "--example", "nosuch", "--out", "{out}"],
                                     "nosuch"),
    **{f"diagnose: config {name}": (["diagnose", "--config", f"{{bad}}/{name}.yaml", "--out",
                                     "{out}"], needle) for name, needle in (
        ("lr_text", "rank.lr"), ("hidden_text", "rank.hidden"),
        ("repeats_bool", "rank.repeats"), ("out_number", "'out'"), ("d1_text", "gaussian.d1"),
        ("ratios_text", "distill.ratios"), ("sections_list", "'rank'"),
        ("not_yaml", "not valid YAML"))},
    "diagnose: --ratio nan": (["diagnose", *FILES, "--ratio", "nan", "--out", "{out}"],
                              "--ratio"),
    **{f"diagnose: {flag} {value}": (["diagnose", *FILES, flag, value, "--out", "{out}"],
                                     _names(flag, value)) for flag, value in (
        ("--seeds", "0"), ("--seeds", "1000000"), ("--epochs", "0"), ("--hidden", "x"),
        ("--device", "tpu"),
        ("--restarts", "0"), ("--chunk-rows", "0"), ("--seed", "-1"),
        ("--split", "{data}/nope.npz"))},
    # examples
    "examples reproduce: an unknown experiment": (["examples", "reproduce", "table9"],
                                                  "table9"),
    "examples reproduce: --runs 1": (["examples", "reproduce", "table2", "--runs", "1"],
                                     "--runs"),
    "examples reproduce: --runs 1000000": (
        ["examples", "reproduce", "table2", "--runs", "1000000"], "--runs"),
    "examples reproduce: --official-swap on a figure": (
        ["examples", "reproduce", "fig2", "--official-swap"], "--official-swap"),
    "examples reproduce: an unknown protocol": (
        ["examples", "reproduce", "table2", "--protocol", "mine"], "--protocol"),
    "examples reproduce: --seed -1": (["examples", "reproduce", "fig3", "--seed", "-1"],
                                      "--seed"),
    "examples reproduce: a seed past NumPy's range": (
        ["examples", "reproduce", "fig3", "--seed", str(2**32 - 3)], "--seed"),
    "examples make gaussian: --d1 0": (["examples", "make", "gaussian", "--d1", "0",
                                        "--out", "{out}"], "--d1"),
    "examples make gaussian: more shared than decisive": (
        ["examples", "make", "gaussian", "--shared", "30", "--out", "{out}"], "--shared"),
    "examples make gaussian: an unknown delta": (
        ["examples", "make", "gaussian", "--delta", "twos", "--out", "{out}"], "--delta"),
    "an unknown command": (["doctor-who"], "doctor-who"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(name, hostile, cli,
                                                                  tmp_path):
    data, run, bad = hostile
    argv, needle = CASES[name]
    out = tmp_path / "out"
    fill = {"data": data, "run": run, "bad": bad, "out": out}
    before = _snapshot(run)
    result = cli(*(arg.format(**fill) for arg in argv))
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err and needle in lines[0], lines[0]
    assert not out.exists()
    assert _snapshot(run) == before


def test_the_matrix_covers_every_command():
    commands = {argv[0] for argv, _ in CASES.values()}
    assert {"rank", "derive-teacher", "distill", "report", "diagnose", "examples"} <= commands
    assert len(CASES) >= 100


def test_training_that_diverges_is_bad_input_and_writes_nothing(hostile, cli, tmp_path):
    data, _, _ = hostile
    result = cli("rank", *(f.format(data=data) for f in FILES), "--lr", "1e30",
                 "--epochs", "3", "--out", tmp_path / "out")
    assert result.code == 2
    assert result.err.strip().startswith("error: training (align) diverged at epoch")
    assert result.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_json_never_holds_nan_or_infinity():
    assert json_text({"x": 1.5}) == '{\n  "x": 1.5\n}\n'
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            json_text({"x": value})


def _wait_for_handlers(pid: int, timeout: float = 120) -> None:
    """Until the command has installed its SIGTERM handler (Linux: SigCgt in
    /proc/PID/status), so a loaded machine cannot make the signal arrive during start-up;
    elsewhere a fixed pause."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        time.sleep(8)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        caught = next((line.split()[1] for line in status.read_text().splitlines()
                       if line.startswith("SigCgt:")), "0")
        if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.1)
    raise AssertionError("the command never installed its signal handlers")


@pytest.mark.slow
@pytest.mark.parametrize("signum,code,message", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated")])
def test_a_signal_prints_one_error_line_and_leaves_no_run(hostile, tmp_path, signum, code,
                                                          message):
    data, _, _ = hostile
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cmkd_doctor", "rank",
         *(f.format(data=data) for f in FILES), "--epochs", "100000", "--patience", "0",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_handlers(process.pid)
        time.sleep(1)
        process.send_signal(signum)
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{process.pid}/status")
            state = status.read_text() if status.exists() else "(no /proc)"
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"no exit 120 s after the signal; stderr: {err[-2000:]!r}; "
                                 f"status: {state}") from None
    finally:  # never leave a training process behind
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code
    assert err.strip() == f"error: {message}"
    assert not out.exists()


def test_config_values_are_typed_numbers_not_text(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("rank: {lr: 1e-3, test_split: '0.25', hidden: [16, 8]}\n"
                      "distill: {ratios: [0.5], seeds: 2}\n")  # YAML 1.1 reads 1e-3 as text
    built = build_config(load_config(config), {})
    assert built.rank.lr == 0.001 and built.rank.test_split == 0.25
    assert built.rank.hidden == (16, 8) and built.distill.seeds == 2


def _tree(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# rank writes 6 files (salience, distances, split, net_a, net_b, rank.json) and then
# swaps the folder in: fail at every one of those points
WRITE_POINTS = range(7)
REAL_WRITE, REAL_REPLACE = outputs.write_atomic, outputs.replace_dir


def _fail_at(monkeypatch, point: int, failure: str) -> None:
    """Make the command's write number ``point`` (from 0) fail half-written, or, when
    ``point`` is the number of files it writes, the exchange that makes them current:
    by SIGTERM (what the signal handler raises, at that very point) or a full disk."""
    calls = {"n": 0}

    def fail() -> None:
        if failure == "SIGTERM":
            raise Stopped(signal.SIGTERM)
        raise OSError(errno.ENOSPC, "No space left on device")

    def write_atomic(path, write):
        if calls["n"] == point:
            def partial(tmp):  # half a file, then the failure
                write(tmp)
                tmp.write_bytes(tmp.read_bytes()[: max(1, tmp.stat().st_size // 2)])
                fail()
            return REAL_WRITE(path, partial)
        calls["n"] += 1
        return REAL_WRITE(path, write)

    def replace_dir(new, target):
        if calls["n"] == point:  # every file written: the exchange is the point
            fail()
        return REAL_REPLACE(new, target)

    monkeypatch.setattr(outputs, "write_atomic", write_atomic)
    monkeypatch.setattr(outputs, "replace_dir", replace_dir)


@pytest.mark.parametrize("failure", ["SIGTERM", "disk full"])
@pytest.mark.parametrize("point", WRITE_POINTS)
def test_an_interrupted_or_full_rewrite_leaves_the_old_run_byte_identical(
        hostile, cli, tmp_path, monkeypatch, point, failure):
    data, run, _ = hostile
    old = tmp_path / "run"
    shutil.copytree(run, old)
    (old / "notes.txt").write_text("the user's own file\n")
    before = _tree(old)
    _fail_at(monkeypatch, point, failure)
    result = cli("rank", *(f.format(data=data) for f in FILES), "--epochs", "2", "-M", "2",
                 "--seed", "9", "--out", old)
    assert result.code == (143 if failure == "SIGTERM" else 2), result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert _tree(old) == before  # byte-identical, and nothing added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left


def test_a_new_ranking_replaces_the_old_one_and_keeps_other_files(hostile, cli, tmp_path):
    data, run, _ = hostile
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "notes.txt").write_text("the user's own file\n")
    old_id = json.loads((folder / "rank.json").read_text())["run_id"]
    result = cli("rank", *(f.format(data=data) for f in FILES), "--epochs", "2", "-M", "2",
                 "--seed", "9", "--out", folder, "-q")
    assert result.code == 0, result.err
    document = json.loads((folder / "rank.json").read_text())
    assert document["run_id"] != old_id
    assert (folder / "notes.txt").read_text() == "the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert cli("derive-teacher", "--run", folder, "--epochs", "2", "-q").code == 0


def test_the_current_folder_is_refused_as_a_run_directory(hostile, cli, tmp_path,
                                                          monkeypatch):
    data, _, _ = hostile
    monkeypatch.chdir(tmp_path)
    result = cli("rank", *(f.format(data=data) for f in FILES), "--out", ".")
    assert result.code == 2 and "cannot be the current folder" in result.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_standard_output_is_one_error_line_not_an_internal_error(hostile):
    _, run, _ = hostile
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "cmkd_doctor", "report", "--run",
                               str(run), "--format", "json"], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: standard output cannot be written (No space left "
                                   "on device)")


def test_documented_valid_edge_inputs_run(hostile, cli, tmp_path):
    """Two rows per class, and a --split with an empty test part, are valid input."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x[:, :3])
    np.save(tmp_path / "y.npy", np.repeat(np.arange(6), 2))
    np.savez(tmp_path / "split.npz", train=np.arange(12), test=np.arange(0))
    files = [tmp_path / n for n in ("a.npy", "b.npy", "y.npy")]
    two = cli("rank", *files, "--epochs", "2", "-M", "2", "--out", tmp_path / "r1", "-q")
    assert two.code == 0, two.err
    empty = cli("rank", *files, "--epochs", "2", "-M", "2", "--split", tmp_path / "split.npz",
                "--out", tmp_path / "r2", "-q")
    assert empty.code == 0, empty.err
    assert len(np.load(tmp_path / "r2" / "split.npz")["test"]) == 0


def test_a_run_directory_behind_a_symlink_is_replaced_where_it_lives(hostile, cli,
                                                                      tmp_path):
    data, run, _ = hostile
    real = tmp_path / "scratch" / "run"
    real.parent.mkdir()
    shutil.copytree(run, real)
    link = tmp_path / "cmkd-out"
    link.symlink_to(real, target_is_directory=True)
    result = cli("rank", *(f.format(data=data) for f in FILES), "--epochs", "2", "-M", "2",
                 "--out", link, "-q")
    assert result.code == 0, result.err
    assert link.is_symlink() and (link / "rank.json").is_file()
    assert sorted(p.name for p in real.parent.iterdir()) == ["run"]


def test_the_portable_replacement_puts_the_old_folder_back_when_it_fails(tmp_path,
                                                                        monkeypatch):
    old, new = tmp_path / "run", tmp_path / "stage"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)  # no renameat2
    outputs.replace_dir(new, old)  # the two-rename path works ...
    assert (old / "a").read_text() == "new" and (new / "a").read_text() == "old"
    real_rename = os.rename
    calls = []

    def failing(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(a, b)

    monkeypatch.setattr(outputs.os, "rename", failing)
    with pytest.raises(OSError):
        outputs.replace_dir(new, old)  # ... and when its second rename fails, nothing moved
    assert (old / "a").read_text() == "new" and (new / "a").read_text() == "old"


@pytest.fixture(scope="module")
def finished(hostile, tmp_path_factory):
    """A run with a teacher, a distill.json and a report: every file a later command
    could overwrite."""
    data, run, _ = hostile
    folder = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(run, folder)
    from cmkd_doctor.cli import main

    for args in (["derive-teacher", "--ratio", "0.5", "--epochs", "2"],
                 ["distill", "--teacher", "general", "--ratio", "0.5", "--seeds", "1",
                  "--epochs", "2"],
                 ["report", "--format", "md"]):
        assert main([*args, "--run", str(folder), *(["-q"] if args[0] != "report" else [])]
                    ) == 0
    assert {"teachers", "distill.json", "report"} <= {p.name for p in folder.iterdir()}
    return folder


# the later commands, each changing files the finished run already has (another seed
# retrains the same teacher names)
LATER = {
    "derive-teacher": ["derive-teacher", "--ratio", "0.5", "--epochs", "2", "--seed", "5",
                       "-q"],
    "distill": ["distill", "--teacher", "general", "--ratio", "0.5", "--seeds", "1",
                "--epochs", "2", "--seed", "5", "-q"],
    "report": ["report", "--format", "md"],
}


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["SIGTERM", "disk full"])
@pytest.mark.parametrize("command", sorted(LATER))
def test_later_commands_land_whole_or_leave_the_run_byte_identical(
        finished, cli, tmp_path, monkeypatch, command, failure):
    """derive-teacher, distill and report, failed at every one of their write points
    (each file, and the step that makes them current), change nothing."""
    counted = {"writes": 0}

    def counting(path, write):
        counted["writes"] += 1
        return REAL_WRITE(path, write)

    # how many files the command writes, on a copy
    dry = tmp_path / "dry" / "run"
    shutil.copytree(finished, dry)
    monkeypatch.setattr(outputs, "write_atomic", counting)
    assert cli(*LATER[command], "--run", dry).code == 0
    points = counted["writes"] + 1  # and the exchange
    assert points >= (3 if command != "report" else 2)
    for point in range(points):
        here = tmp_path / f"point{point}"
        old = here / "run"
        shutil.copytree(finished, old)
        (old / "notes.txt").write_text("the user's own file\n")
        before = _tree(old)
        _fail_at(monkeypatch, point, failure)
        result = cli(*LATER[command], "--run", old)
        assert result.code == (143 if failure == "SIGTERM" else 2), (point, result.err)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (point, result.err)
        assert ".stage" not in lines[0]  # the file is named where it was to go
        assert _tree(old) == before, point  # byte-identical, and nothing added
        assert sorted(p.name for p in here.iterdir()) == ["run"], point  # no stage left


def _stamp(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_side_by_side_transactions_each_keep_their_files(finished, tmp_path):
    """Two commands on one run directory: each lands its own files, and neither undoes
    the other's (the second lands on the first's result, not on its own old copy)."""
    from cmkd_doctor.io.rundir import RunDir

    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    run = RunDir(folder)
    with run.transaction() as first, run.transaction() as second:
        _stamp(first.path, "teachers/one.json", "1")
        _stamp(second.path, "teachers/two.json", "2")
        _stamp(second.path, "distill.json.note", "second")
    # the first landed before the second
    assert (folder / "teachers" / "one.json").read_text() == "1"
    assert (folder / "teachers" / "two.json").read_text() == "2"
    assert (folder / "distill.json.note").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_results_recorded_side_by_side_are_both_kept(finished, tmp_path):
    """Two distills on one run: the second adds its rows to the distill.json the first
    left, not to the one it started from."""
    from cmkd_doctor.diagnosis.distill import DistillOptions, distill
    from cmkd_doctor.io.rundir import RunDir
    from cmkd_doctor.training.stacked import TrainOptions

    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    run = RunDir(folder)
    earlier = set(json.loads((folder / "distill.json").read_text())["results"])
    found = [distill(run, DistillOptions(teachers=("general",), ratios="0.5", seeds=1,
                                         train=TrainOptions(epochs=2), device="cpu",
                                         seed=seed))
             for seed in (11, 12)]
    with run.transaction() as first, run.transaction() as second:
        first.record(found[0])
        second.record(found[1])
    kept = set(json.loads((folder / "distill.json").read_text())["results"])
    assert earlier < kept
    assert {k.rsplit("|", 1)[1] for k in kept - earlier} == {c.key for c in found}
    assert len({c.key for c in found}) == 2


def test_a_transaction_does_not_land_on_another_ranking(hostile, finished, tmp_path, cli):
    """A command that builds on a ranking refuses to land once another command has
    replaced that ranking; the new ranking is kept as it is."""
    from cmkd_doctor.errors import InputError
    from cmkd_doctor.io.rundir import RunDir

    data, _, _ = hostile
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    with pytest.raises(InputError, match="ranked again by another command"):
        with RunDir(folder).transaction() as staged:
            _stamp(staged.path, "teachers/late.json", "stale")
            ranked = cli("rank", *(f.format(data=data) for f in FILES), "--epochs", "2",
                         "-M", "2", "--out", folder, "-q")
            assert ranked.code == 0, ranked.err
    after = _tree(folder)
    assert "teachers/late.json" not in after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_new_ranking_drops_the_old_rankings_teachers_and_results(hostile, finished, cli,
                                                                   tmp_path):
    data, _, _ = hostile
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    result = cli("rank", *(f.format(data=data) for f in FILES), "--epochs", "2", "-M", "2",
                 "--out", folder, "-q")
    assert result.code == 0, result.err
    names = {p.name for p in folder.iterdir()}
    assert "teachers" not in names and "distill.json" not in names
    assert "report" in names  # not the ranking's: kept
    assert "Teachers" not in cli("report", "--run", folder).out


@pytest.mark.parametrize("failure", ["SIGTERM", "disk full"])
def test_a_data_set_rewrite_lands_whole_or_not_at_all(cli, tmp_path, monkeypatch, failure):
    """examples make, failed at any of its writes or at the exchange that makes them
    current, leaves the old data set as it was: never new features beside old labels."""
    folder = tmp_path / "data"
    make = ["examples", "make", "gaussian", "--n-train", "40", "--n-test", "20", "--out",
            folder]
    assert cli(*make, "--seed", "1").code == 0
    (folder / "notes.txt").write_text("the user's own file\n")
    before = _tree(folder)
    for point in range(8):  # six arrays, truth.json, and the exchange
        _fail_at(monkeypatch, point, failure)
        result = cli(*make, "--seed", "2")
        assert result.code == (143 if failure == "SIGTERM" else 2), (point, result.err)
        assert _tree(folder) == before, point
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], point
    monkeypatch.setattr(outputs, "write_atomic", REAL_WRITE)
    monkeypatch.setattr(outputs, "replace_dir", REAL_REPLACE)
    assert cli(*make, "--seed", "2").code == 0  # and whole when nothing fails
    assert _tree(folder) != before and (folder / "notes.txt").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A real file system that fills up: a tmpfs of 8 MiB (where this machine lets the
    test mount one; the write that fails part-way above stands in elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Take all of ``disk``'s free space but ``leave`` bytes."""
    free = shutil.disk_usage(disk).free
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("command", ["rank", "distill"])
def test_a_really_full_disk_leaves_the_old_run_byte_identical(
        hostile, finished, cli, small_disk, command):
    data, _, _ = hostile
    old = small_disk / "run"
    shutil.copytree(finished, old)
    before = _tree(old)
    args = ({"rank": ["rank", *(f.format(data=data) for f in FILES), "--epochs", "2", "-M",
                      "2", "--seed", "9", "--out", old, "-q"]}
            .get(command) or [*LATER[command], "--run", old])
    # room for a part of what the command writes, not all of it
    need = sum(len(v) for k, v in before.items()
               if k in RANKING_FILES or k.startswith("teachers/") or k == "distill.json")
    filler = _fill(small_disk, need // 4)
    result = cli(*args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], result.err
    assert ".stage" not in lines[0]
    assert _tree(old) == before  # byte-identical, and nothing added
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "run"]
    filler.unlink()
    assert cli(*args).code == 0  # with room, the same command lands
    assert _tree(old) != before


RANKING_FILES = {"salience.npy", "permuted_distances.npy", "split.npz", "net_a.safetensors",
                 "net_b.safetensors", "rank.json"}
