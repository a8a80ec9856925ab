"""The doctor on real multi-view features (../shared/data/multiview), read where they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MULTIVIEW = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiview"
_here = pytest.mark.skipif(not (MULTIVIEW / "scene15" / "labels.npy").is_file(),
                           reason=f"the multi-view data is not at {MULTIVIEW}")


def needs_data(test):
    return pytest.mark.data(_here(test))


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("example,views", [("scene15", (1, 2)), ("leaves100", (2, 0))])
def test_diagnose_on_a_real_subsample_in_both_directions(tmp_path, cli, example, views):
    folder = MULTIVIEW / example
    y = np.load(folder / "labels.npy")
    rows = np.sort(np.random.default_rng(0).permutation(len(y))[: len(y) // 2])
    # a half, stratification kept by the split: fast, and still real features
    for a, b in (views, views[::-1]):
        for name, src in (("a", f"view{a}.npy"), ("b", f"view{b}.npy"), ("y", "labels.npy")):
            np.save(tmp_path / f"{name}.npy", np.load(folder / src)[rows])
        out = tmp_path / f"run{a}{b}"
        result = cli("diagnose", tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy",
                     "-o", out, "--json", "--seeds", "2", "--restarts", "2", "-M", "3",
                     "--hidden", "64", "--epochs", "40")
        assert result.code == 0, result.err
        doc = json.loads(result.out)
        rank = doc["rank"]
        assert -10 < rank["alignment"]["score"] <= 1 and "reliable" in rank["alignment"]
        assert rank["stability"]["restarts"] == 2
        stability = rank["stability"]
        assert 0 <= stability["all_channels"]["top_overlap"] <= 1
        # no channel that matters (nothing to be stable about) is unstable
        assert (stability["top_overlap"] is None and stability["stable"] is False) or (
            0 <= stability["top_overlap"] <= 1)
        assert rank["constant_channels"] == []
        assert rank["pairing"]["paired"] is (example == "scene15")  # see README
        v = doc["verdict"]
        assert v["best"] in [r["label"] for r in doc["results"]]
        assert v["ranking_reliable"] == (rank["alignment"]["reliable"] and (
            rank["stability"]["stable"] is not False) and rank["pairing"]["paired"])
        assert set(v["mfh_ordering"].values()) <= (
            {"holds", "fails", "undetermined"} if v["ranking_reliable"] else
            {"not_interpreted"})


@needs_data
def test_example_names_read_the_shared_files_and_pick_views(tmp_path, cli, monkeypatch):
    from cmkd_doctor.diagnosis.diagnose import DiagnoseConfig, prepare_example
    from cmkd_doctor.io.rundir import RunDir

    monkeypatch.setenv("CMKD_DOCTOR_DATA", str(MULTIVIEW.parent))

    paths, truth = prepare_example("scene15", RunDir(tmp_path), DiagnoseConfig())
    assert paths == [MULTIVIEW / "scene15" / f for f in ("view1.npy", "view2.npy",
                                                         "labels.npy")]
    assert truth is None and not (tmp_path / "example").exists()  # read, never copied
    paths, _ = prepare_example("leaves100:1,0", RunDir(tmp_path), DiagnoseConfig())
    assert [p.name for p in paths] == ["view1.npy", "view0.npy", "labels.npy"]
    bad = cli("diagnose", "--example", "scene15:1,1", "-o", tmp_path / "run")
    assert bad.code == 2 and "pick two different views" in bad.err
    monkeypatch.setenv("CMKD_DOCTOR_DATA", str(tmp_path / "nowhere"))
    missing = cli("diagnose", "--example", "leaves100", "-o", tmp_path / "run")
    assert missing.code == 2 and "CMKD_DOCTOR_DATA" in missing.err
    assert "examples fetch leaves100" in missing.err
