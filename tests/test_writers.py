"""Hostile run directories and outputs, round two (issue 22): nothing in a run directory
leads a write outside it, and an output that is not a regular file is written in place
(a character device) or refused, never replaced."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io.rundir import rank_files
from cmkd_doctor.ranking.run import RankOptions
from cmkd_doctor.schemas import SCHEMA_VERSION

FILES = ("feats_a.npy", "feats_b.npy", "labels.npy")


@pytest.fixture(scope="module")
def ranked(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("writers")
    write_gaussian(make_gaussian(GaussianSpec(n_train=150, n_test=30, seed=5)), root / "data")
    rank_files(*(root / "data" / f for f in FILES), out=root / "run",
               options=RankOptions(device="cpu", epochs=3, repeats=2, hidden="0"))
    return root / "run"


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _linked_run(ranked: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A copy of the run whose ``name`` folder is a symbolic link to a folder outside."""
    run = tmp_path / "run"
    shutil.copytree(ranked, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(run / name, ignore_errors=True)
    os.symlink(elsewhere, run / name)
    return run, elsewhere


@pytest.mark.parametrize("folder,argv", [
    ("teachers", ["derive-teacher", "--mode", "general", "--ratio", "0.5", "--epochs", "2"]),
    ("teachers", ["distill", "--teacher", "general", "--seeds", "2", "--epochs", "2"]),
    ("report", ["report", "--format", "md"]),
])
def test_a_symlinked_folder_in_the_run_never_leads_a_write_outside(folder, argv, ranked,
                                                                   tmp_path, cli):
    run, elsewhere = _linked_run(ranked, tmp_path, folder)
    before = _tree(run)
    result = cli(argv[0], "--run", run, *argv[1:])
    assert result.code == 2, (result.code, result.err)
    line = result.err.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {run / folder}: leads outside")
    assert "replace the link by a folder" in line
    assert list(elsewhere.iterdir()) == []  # nothing written there
    assert _tree(run) == before and (run / folder).is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".stage")]


def test_a_symlinked_example_folder_never_leads_the_examples_arrays_outside(ranked,
                                                                          tmp_path, cli):
    """diagnose --example writes the example's arrays into RUN/example: a link there to a
    folder outside is refused like teachers/ and report/ (issue 38, item 3)."""
    run, elsewhere = _linked_run(ranked, tmp_path, "example")
    before = _tree(run)
    result = cli("diagnose", "--example", "gaussian", "--out", run, "--quiet")
    assert result.code == 2, (result.code, result.err)
    line = result.err.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {run / 'example'}: leads outside")
    assert list(elsewhere.iterdir()) == [] and _tree(run) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".stage")]


def test_a_file_where_a_run_folder_belongs_is_one_error_line(ranked, tmp_path, cli):
    """RUN/teachers replaced by a regular file: exit 2 naming it (was exit 1 with
    FileExistsError), and the run as it was (issue 38, item 6)."""
    run = tmp_path / "run"
    shutil.copytree(ranked, run)
    shutil.rmtree(run / "teachers", ignore_errors=True)
    (run / "teachers").write_text("not a folder")
    before = _tree(run)
    result = cli("derive-teacher", "--run", run, "--epochs", "2")
    assert result.code == 2, result.err
    assert result.err == f"error: {run / 'teachers'}: is a file where a folder belongs; " \
                         "move it away or remove it\n"
    assert _tree(run) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".stage")]


def _device(path: Path, minor: int) -> Path:
    """A character device node of our own (1, minor: 3 is null, 7 is full), so a
    regression replaces a test file, not the system's /dev/full."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.close(os.open(path, os.O_WRONLY))  # a nodev mount refuses to open it
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot make a usable device node here ({exc})")
    return path


def test_an_output_that_is_a_device_is_written_in_place_never_replaced(ranked, tmp_path,
                                                                       cli):
    full, null = _device(tmp_path / "full", 7), _device(tmp_path / "null", 3)
    result = cli("report", "--run", ranked, "--format", "json", "--out", full)
    assert result.code == 2 and f"{full}: cannot be written (No space left" in result.err
    assert stat.S_ISCHR(os.stat(full).st_mode)  # still the device
    result = cli("report", "--run", ranked, "--format", "json", "--out", null)
    assert result.code == 0, result.err
    assert stat.S_ISCHR(os.stat(null).st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_an_output_that_is_a_fifo_is_refused(ranked, tmp_path, cli):
    os.mkfifo(tmp_path / "pipe.json")
    result = cli("report", "--run", ranked, "--format", "json", "--out",
                 tmp_path / "pipe.json")
    assert result.code == 2
    assert result.err.strip() == (f"error: --out {tmp_path / 'pipe.json'}: is not a regular "
                                  "file; the output would replace it")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.json").st_mode)


def _edited(ranked: Path, tmp_path: Path, name: str, edit) -> Path:
    run = tmp_path / "run"
    shutil.copytree(ranked, run)
    path = run / name
    path.write_text(edit(path.read_text()))
    return run


@pytest.mark.parametrize("what,edit,needle", [
    ("NaN", lambda t: t.replace('"unpermuted_distance": ', '"unpermuted_distance": NaN, "x": ',
                                1), "holds NaN, which cmkd-doctor never writes"),
    ("a newer version", lambda t: t.replace(f'"schema_version": {SCHEMA_VERSION}',
                                            '"schema_version": 99', 1),
     f"schema_version 99; this cmkd-doctor reads and writes {SCHEMA_VERSION}"),
    ("a number as text", lambda t: t.replace('"n_classes": 2', '"n_classes": "2"', 1),
     "'labels.n_classes': '2' is not of type 'integer'"),
    ("an option that is not finite", lambda t: t.replace('"lr": 0.001', '"lr": Infinity', 1),
     "holds Infinity"),
    # every recorded option is typed (issue 38, item 8)
    ("an option as text", lambda t: re.sub(r'"repeats": \d+', '"repeats": "2"', t, count=1),
     "'options.repeats': '2' is not of type 'integer'"),
    ("an option of another type", lambda t: t.replace('"standardize": true',
                                                      '"standardize": 1', 1),
     "'options.standardize': 1 is not of type 'boolean'"),
])
def test_an_edited_rank_json_is_refused_naming_the_file_and_the_field(what, edit, needle,
                                                                      ranked, tmp_path, cli):
    run = _edited(ranked, tmp_path, "rank.json", edit)
    for argv in (["report", "--run", run, "--format", "json"],
                 ["derive-teacher", "--run", run, "--epochs", "2"]):
        result = cli(*argv)
        assert result.code == 2, (what, result.err)
        line = result.err.strip()
        assert line.count("\n") == 0 and line.startswith(f"error: {run / 'rank.json'}: ")
        assert needle in line, line


def test_a_rank_json_larger_than_any_written_is_refused_before_it_is_read(ranked, tmp_path,
                                                                          cli):
    """A rank.json padded to 300 MiB (sparse: no disk used) is refused by its size before
    a byte is read (before, 2 GiB of padding took 4.7 GiB to be called damaged)."""
    run = tmp_path / "run"
    shutil.copytree(ranked, run)
    os.truncate(run / "rank.json", 300 << 20)
    result = cli("derive-teacher", "--run", run, "--epochs", "2")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"error: {run / 'rank.json'}: 300 MiB, more than any "
                                 "document cmkd-doctor writes (it reads at most 256 MiB)")


def test_a_distill_json_with_numbers_as_text_is_refused_at_report_compare(ranked, tmp_path,
                                                                          cli):
    run = tmp_path / "run"
    shutil.copytree(ranked, run)
    assert cli("distill", "--run", run, "--teacher", "none", "--seeds", "2", "--epochs",
               "2", "-q").code == 0
    text = (run / "distill.json").read_text()
    key = '"student_mean": '
    start = text.index(key) + len(key)
    end = start + min(text.index(",", start), text.index("\n", start)) - start
    (run / "distill.json").write_text(text[:start] + f'"{text[start:end]}"' + text[end:])
    result = cli("report", "--compare", run, ranked, "--format", "json")
    assert result.code == 2, result.err
    line = result.err.strip()
    assert line.startswith(f"error: {run / 'distill.json'}: ") and "student_mean" in line
    assert "is not of type 'number'" in line


@pytest.mark.parametrize("edit,needle", [
    (lambda t: re.sub(r'"rho": [\d.]+', '"rho": "0.5"', t, count=1), "'0.5' is not of type "
     "'number'"),
    (lambda t: re.sub(r'"batch_size": \d+', '"batch_size": 2.5', t, count=1),
     "2.5 is not of type 'integer'"),
    (lambda t: t.replace('"channel_axis": 1', '"channel_axis": true', 1),
     "True is not of type 'integer'"),
    (lambda t: t.replace('"refit": false', '"refit": false, "sneaked": 1', 1),
     "Additional properties are not allowed ('sneaked' was unexpected)"),
])
def test_distills_recorded_options_are_typed_too(edit, needle, ranked, tmp_path, cli):
    """Every option distill records, its training and network options included, is typed
    by its annotation (issue 38, item 8): an edit is refused naming the file."""
    run = tmp_path / "run"
    shutil.copytree(ranked, run)
    assert cli("distill", "--run", run, "--teacher", "none", "--seeds", "2", "--epochs",
               "2", "-q").code == 0
    path = run / "distill.json"
    text = path.read_text()
    edited = edit(text)
    assert edited != text
    path.write_text(edited)
    result = cli("report", "--run", run, "--format", "json")
    assert result.code == 2, result.err
    line = result.err.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {path}: ") and needle in line, \
        line
