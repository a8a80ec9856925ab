"""diagnose: the whole doctor in one command, with YAML configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cmkd_doctor.diagnosis.diagnose import build_config, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_diagnose_example_gaussian_prints_a_verdict_and_writes_the_run(tmp_path, cli,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    result = cli("diagnose", "--example", "gaussian", "--out", "run")  # relative
    assert result.code == 0, result.err
    for text in ("Aligned networks", "truth (generated data)", "No-KD", "Regular-KD",
                 "general r=0.5", "specific r=0.5", "random r=0.5", "verdict:",
                 "what to try:"):
        assert text in result.out
    for name in ("rank.json", "salience.npy", "distill.json", "example/truth.json",
                 "teachers/general-r0.5.safetensors"):
        assert (out / name).is_file(), name
    # the example's arrays are recorded where they landed, not in the staging folder,
    # and as absolute paths, so the run reads back from any folder
    for info in json.loads((out / "rank.json").read_text())["inputs"].values():
        assert Path(info["path"]).is_absolute() and Path(info["path"]).parent == out / "example"
    monkeypatch.chdir(out)
    # the run directory works for the single commands too
    again = cli("distill", "--run", ".", "--teacher", "general", "--seeds", "2", "-q")
    assert again.code == 0, again.err
    # run from inside the run directory, the files landed without moving the folder away
    assert Path.cwd() == out.resolve() and len(json.loads(
        (out / "distill.json").read_text())["results"]) > 5


def test_diagnose_json_on_user_arrays(tmp_path, cli, gaussian_dir):
    files = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    result = cli("diagnose", *files, "--out", tmp_path / "run", "--json", "--seeds", "2",
                 "--hidden", "0", "--ratio", "0.4")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["command"] == "diagnose" and doc["truth"] is None
    assert [r["label"] for r in doc["results"]] == [
        "No-KD", "Regular-KD", "Control", "general r=0.4", "specific r=0.4", "random r=0.4"]
    assert doc["verdict"]["text"] and doc["advice"]
    assert doc["rank"]["options"]["hidden"] == [] and len(doc["salience"]) == 50


@pytest.mark.slow
def test_the_example_yaml_runs_and_flags_win(tmp_path, cli):
    config = tmp_path / "g.yaml"
    raw = yaml.safe_load((ROOT / "examples" / "gaussian.yaml").read_text())
    raw["out"] = str(tmp_path / "from-yaml")
    raw["gaussian"]["n_train"] = 400
    config.write_text(yaml.safe_dump(raw))
    result = cli("diagnose", "--config", config, "--seeds", "2", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["out"] == str(tmp_path / "from-yaml")
    assert doc["rank"]["options"]["hidden"] == []  # from the YAML
    assert len(doc["results"][0]["student_runs"]) == 2  # the flag beat the YAML's 5
    assert doc["rank"]["inputs"]["labels"]["shape"] == [400]


def test_every_example_yaml_is_valid():
    for path in (ROOT / "examples").glob("*.yaml"):
        build_config(load_config(path), {})


@pytest.mark.parametrize("text,pattern", [
    ("rank: {hiden: 3}", "unknown option 'rank.hiden'; valid:"),
    ("rnak: {}", "unknown key 'rnak'"),
    ("rank: [1, 2]", "'rank' must be a mapping"),
    ("rank: {hidden: 0\n", "not valid YAML at line"),
    ("- a\n- b\n", "expected a mapping of sections"),
    ("inputs: {feats_a: a.npy}", "'inputs' must name feats_a, feats_b and labels"),
    ("example: gaussian\nrank: {repeats: 0}", "bad.yaml: rank.repeats must be a whole number "
                                              ">= 1; got 0"),
    # a value checked as its option is, named by the file's key (issue 38, item 9)
    ("distill: {max_seeds: 0}", "bad.yaml: distill.max_seeds must be a whole number >= 2"),
    ("distill: {seeds_budget: .nan}", "bad.yaml: distill.seeds_budget must be a positive"),
    ("data: {timeout: .inf}", "bad.yaml: data.timeout must be a number of seconds"),
])
def test_bad_configs_exit_2(tmp_path, cli, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = cli("diagnose", "--config", path, "--out", tmp_path / "run")
    assert result.code == 2, result.err
    assert pattern in result.err and result.err.startswith("error: ")
    assert not (tmp_path / "run").exists()


def test_diagnose_needs_inputs_or_an_example(cli, tmp_path):
    result = cli("diagnose", "--out", tmp_path / "run")
    assert result.code == 2 and "needs FEATS_A FEATS_B LABELS or --example" in result.err
    result = cli("diagnose", "--example", "ravdess", "--out", tmp_path / "run")
    assert result.code == 2 and "not built in yet" in result.err
    result = cli("diagnose", "--example", "cifar", "--out", tmp_path / "run")
    assert result.code == 2 and "--example must be one of gaussian" in result.err
