"""The CLI through its front door: version, module entry, help, examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from cmkd_doctor import __version__
from cmkd_doctor.io.outputs import write_atomic, write_text


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"cmkd-doctor {__version__}"


@pytest.mark.slow
def test_python_dash_m_and_exit_codes_through_a_real_process(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "cmkd_doctor", "--version"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and __version__ in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "cmkd_doctor", "rank", "x.npy", "y.npy",
                          "z.npy"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: x.npy: no such file"


def test_bare_groups_print_help(cli):
    for args in ([], ["examples"], ["examples", "make"]):
        result = cli(*args)
        assert result.code == 0 and "Usage:" in result.out


RANK_OPTIONS = ["--repeats", "-M", "--hidden", "--epochs", "--batch-size", "--lr",
                "--patience", "--dist", "--normalize", "--permute", "--permute-on",
                "--test-split", "--device", "--seed", "--out", "-o", "--json", "--quiet"]


def test_rank_help_documents_every_option(cli):
    result = cli("rank", "--help")
    assert result.code == 0
    text = re.sub(r"\s+", " ", result.out)
    for option in RANK_OPTIONS:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), option
    for word in ("Algorithm 1", "mse", "minmax", "max", "auto"):
        assert word in text


def test_examples_make_gaussian_writes_data_and_truth(tmp_path, cli):
    out = tmp_path / "g"
    result = cli("examples", "make", "gaussian", "--d1", "25", "--d2", "50", "--d", "20",
                 "--j1", "10", "--j2", "10", "--shared", "4", "--n-train", "200",
                 "--n-test", "1000", "--seed", "2", "-o", out)
    assert result.code == 0, result.err
    assert np.load(out / "feats_a.npy").shape == (200, 25)
    assert np.load(out / "feats_b_test.npy").shape == (1000, 50)
    truth = json.loads((out / "truth.json").read_text())
    # Appendix B.2: |J1 & J2| = 4 of |J1 u J2| = 16 gives gamma 0.25, alpha = beta = 0.375.
    assert truth["gamma"] == pytest.approx(0.25) and truth["alpha"] == pytest.approx(0.375)
    assert len(truth["channels_a"]["general"]) == 4 and len(truth["channels_a"]["specific"]) == 6
    xa, xb = np.load(out / "feats_a.npy"), np.load(out / "feats_b.npy")
    # every shared channel of a is a copied coordinate that also appears in b
    for ch in truth["channels_a"]["general"]:
        assert any(np.array_equal(xa[:, ch], xb[:, j]) for j in truth["channels_b"]["general"])


def test_examples_make_gaussian_rejects_impossible_sizes(tmp_path, cli):
    result = cli("examples", "make", "gaussian", "--j1", "5", "--j2", "5", "--shared", "6",
                 "-o", tmp_path / "g")
    assert result.code == 2
    assert result.err.strip() == "error: --shared must be at most min(--j1, --j2) = 5; got 6"
    assert not (tmp_path / "g").exists()


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "rank.json"
    write_text(target, "old")

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["rank.json"]


@pytest.mark.slow
def test_python_api_example_runs_and_finds_the_planted_channels():
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "examples" / "python_api.py"),
                           "--hidden", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    precision = float(re.search(r"precision ([0-9.]+)", done.stdout).group(1))
    assert precision >= 0.9


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


HELPS = [[*name.split(), "--help"] for name in (
    "diagnose", "rank", "derive-teacher", "distill", "extract", "report", "schema",
    "examples make gaussian", "examples make avmnist", "examples reproduce",
    "examples fetch", "examples list")]


@pytest.mark.slow
@pytest.mark.parametrize("command", [["--version"], ["--help"], ["schema"], ["schema", "rank"],
                                     ["examples", "list"], ["examples", "--help"], *HELPS])
def test_commands_that_train_nothing_start_without_torch(command):
    """A CI script calls the tool many times, and a person reads every command's help:
    these need no torch, and import none (startup times in BENCHMARKS.md)."""
    found = subprocess.run([sys.executable, "-X", "importtime", "-m", "cmkd_doctor", *command],
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip()
    imported = re.findall(r"\|\s+([\w.]+)$", found.stderr, re.MULTILINE)
    assert "cmkd_doctor.cli" in imported  # the import log is read
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


def test_every_command_is_listed_once_with_its_summary_and_loads(cli):
    from cmkd_doctor.cli import COMMANDS

    listed = cli("--help")
    assert listed.code == 0
    for name, (_, _, summary) in COMMANDS.items():
        assert summary.split()[0] in listed.out
        shown = cli(*name.split(), "--help")
        assert shown.code == 0 and f"Usage: cmkd-doctor {name}" in shown.out
    assert "(Sec.\n" not in cli("examples", "--help").out  # summaries are whole sentences


def _unwrapped(text: str) -> str:
    """Help text as words, whatever the terminal wrapped (also after a hyphen)."""
    return " ".join(text.split()).replace("- ", "-")


def test_rank_and_diagnose_share_every_rank_option_from_one_declaration(cli):
    """Every rank option is a diagnose option with the same name, help and default."""
    from cmkd_doctor.cli.rank_flags import flag_help
    from cmkd_doctor.ranking.options import FLAGS

    def options(text: str) -> dict[str, str]:
        found, name = {}, None
        for row in text.splitlines():
            if row and not row.startswith(" "):  # a panel's title: its options follow
                name = None
                continue
            m = re.match(r"\s+(?:-\w, )?(--[\w-]+)(?:\s*/\s*--[\w-]+)?(?: [A-Z_]+)?\s*(.*)",
                         row)
            if m:
                name = m.group(1)
                found[name] = m.group(2)
            elif name and row.strip():
                found[name] += " " + row.strip()
        return {k: _unwrapped(v) for k, v in found.items()}

    rank = options(cli("rank", "--help").out)
    diagnose = options(cli("diagnose", "--help").out)
    for flag in FLAGS:
        name = "--" + flag.name.replace("_", "-")
        assert rank[name] == diagnose[name] == _unwrapped(flag_help(flag)), name
    assert "[default: 3 when one ranking takes at most a minute" not in cli(
        "diagnose", "--help").out


def test_a_protocol_fills_what_was_not_given_in_rank_and_diagnose_alike():
    from cmkd_doctor.diagnosis.diagnose import resolve
    from cmkd_doctor.ranking.options import RankOptions

    official = RankOptions.from_given({"protocol": "official", "repeats": 5})
    assert (official.repeats, official.epochs, official.normalize) == (5, 1000, "minmax")
    _, _, _, settings = resolve(example="gaussian",
                                overrides={"rank": {"protocol": "official", "repeats": 5}})
    assert settings.rank == official
    _, _, _, default = resolve(example="gaussian")
    assert default.rank.restarts is None and default.rank.repeats == 10  # diagnose's own


def test_an_unknown_option_suggests_only_near_misses(cli):
    assert "Possible options" not in cli("diagnose", "--bogus").err
    assert "Possible options: --repeats" in cli("diagnose", "--repeat", "3").err


@pytest.mark.parametrize("command", HELPS)
def test_help_reads_as_a_person_writes_the_command(command, cli):
    """No type placeholders (<str>, <list[str]>): each value is named after its option,
    and the usage line lists the arguments before the options."""
    found = cli(*command)
    assert found.code == 0, found.err
    assert not re.search(r"<[a-z][\w\[\], ]*>", found.out), found.out
    usage = found.out.splitlines()[0]
    assert usage.startswith("Usage: cmkd-doctor ") and usage.endswith("[OPTIONS]")


def test_help_groups_options_into_panels_and_keeps_summaries_whole(cli):
    found = cli("diagnose", "--help").out
    titles = [line.rstrip(":") for line in found.splitlines() if re.match(r"^[A-Z]\w", line)]
    assert titles == ["Usage: cmkd-doctor diagnose [FEATS_A FEATS_B LABELS] [OPTIONS]",
                      "Arguments", "Inputs", "Ranking (Algorithm 1)", "Teachers", "Students",
                      "Training", "Output", "Options"]
    assert cli("rank", "--help").out.startswith(
        "Usage: cmkd-doctor rank FEATS_A FEATS_B LABELS [OPTIONS]")
    made = " ".join(cli("examples", "make", "--help").out.split())
    assert "(Appendix B.2, Eq. 27)" in made and "(paper Sec. 3, 5.3)" in made
