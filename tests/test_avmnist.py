"""AV-MNIST from the real raw files in ../shared/data, and its uses."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from cmkd_doctor.examples.avmnist import read_mnist

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST, FSDD = SHARED / "mnist", SHARED / "fsdd"
_here = pytest.mark.skipif(not (MNIST.is_dir() and FSDD.is_dir()),
                           reason=f"the raw MNIST and FSDD files are not at {SHARED}")


def needs_raw(test):
    return pytest.mark.data(_here(test))
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


@pytest.mark.slow
@needs_raw
def test_avmnist_is_built_from_the_shared_raw_files(avmnist_dir):
    image = np.load(avmnist_dir / "image.npy")
    audio = np.load(avmnist_dir / "audio.npy")
    labels = np.load(avmnist_dir / "labels.npy")
    split = np.load(avmnist_dir / "split.npz")
    info = json.loads((avmnist_dir / "avmnist.json").read_text())
    assert image.shape == (10000, 784) and audio.shape == (10000, 32 * 16)
    assert np.isfinite(audio).all() and np.isfinite(image).all()
    # the labels are MNIST's own, in MNIST's order
    assert np.array_equal(labels, read_mnist(MNIST)["test"][1])
    assert len(split["train"]) == 9000 and len(split["test"]) == 1000
    assert not np.intersect1d(split["train"], split["test"]).size
    # each image is paired with a recording of its digit; test images with FSDD's test
    # recordings (indices 0-4) only, training images with the others
    for row, name in enumerate(info["recording"]):
        digit, _, index = NAME.match(name).groups()
        assert int(digit) == labels[row]
    test_rows = set(split["test"].tolist())
    for row, name in enumerate(info["recording"]):
        assert (int(NAME.match(name).group(3)) < 5) == (row in test_rows)
    # 75% of the energy removed: only the few leading components survive
    assert 1 <= info["pca_components_kept"] <= 10
    assert np.linalg.matrix_rank(image[:500] - image[:500].mean(0), tol=1e-3) <= \
        info["pca_components_kept"] + 1


@pytest.mark.slow
@needs_raw
def test_diagnose_runs_on_avmnist(avmnist_dir, tmp_path, cli):
    split = np.load(avmnist_dir / "split.npz")
    subset = tmp_path / "subset.npz"  # a slice, so the test stays fast
    np.savez(subset, train=split["train"][:1500], test=split["test"][:300])
    result = cli("diagnose", avmnist_dir / "image.npy", avmnist_dir / "audio.npy",
                 avmnist_dir / "labels.npy", "--split", subset, "--out", tmp_path / "run",
                 "--hidden", "0", "--seeds", "2", "-M", "2", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["rank"]["split"]["from_file"] == str(subset.resolve())
    assert doc["rank"]["split"]["n_test"] == 300
    assert len(doc["results"]) == 6 and doc["verdict"]["text"]  # with the control
    # each image is paired with a random recording of its digit (App. B.1: "randomly
    # pairing an image with an audio that belongs to the same class"): the rows share
    # only their class, which the pairing check finds and the verdict follows
    rank = doc["rank"]
    assert rank["pairing"]["paired"] is False and rank["gamma_estimate"]["high"] < 0.1
    assert rank["gamma_estimate"]["label_level"]["value"] > 0.15  # the label both predict
    assert doc["verdict"]["paired"] is False
    assert set(doc["verdict"]["mfh_ordering"].values()) == {"not_interpreted"}
    assert "The rows share only their class" in doc["verdict"]["text"]
    assert any("same order" in step["text"] for step in doc["advice"])


def test_wrong_folders_say_what_was_expected(tmp_path, cli, monkeypatch):
    result = cli("examples", "make", "avmnist", "--mnist", tmp_path, "--fsdd", tmp_path,
                 "-o", tmp_path / "out")
    assert result.code == 2
    assert "expected the MNIST files t10k-images-idx3-ubyte[.gz]" in result.err
    result = cli("examples", "make", "avmnist", "--multibench", tmp_path, "-o",
                 tmp_path / "out")
    assert result.code == 2 and "expected MultiBench's AV-MNIST layout" in result.err
    assert "missing image/train_data.npy" in result.err
    result = cli("examples", "make", "avmnist", "--mnist", tmp_path, "-o", tmp_path / "out")
    assert result.code == 2 and "--fsdd is missing: give --mnist DIR and --fsdd DIR " \
        "together, or neither to read the data root" in result.err
    with monkeypatch.context() as without:  # a plain install: no torchaudio
        without.setitem(sys.modules, "torchaudio", None)
        result = cli("examples", "make", "avmnist", "--download", "--mirror",
                     "http://127.0.0.1:9", "-o", tmp_path / "out")
    assert result.code == 2 and result.err.strip() == (
        "error: AV-MNIST's audio (log-mel spectrograms) needs torchaudio, which is not "
        "installed: pip install 'cmkd-doctor[audio]'")  # said before any download
    monkeypatch.setenv("CMKD_DOCTOR_DATA", str(tmp_path / "empty"))
    result = cli("examples", "make", "avmnist", "-o", tmp_path / "out")
    assert result.code == 2 and f"its files are not in {tmp_path / 'empty'}" in result.err
    assert "'cmkd-doctor examples fetch avmnist' downloads them (23 MB)" in result.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "empty").exists()


@needs_raw
def test_an_fsdd_folder_without_recordings_is_named(tmp_path, cli):
    result = cli("examples", "make", "avmnist", "--mnist", MNIST, "--fsdd", tmp_path, "-o",
                 tmp_path / "out")
    assert result.code == 2 and "expected Free Spoken Digit Dataset recordings" in result.err


def _multibench(folder: Path, n_train=60, n_test=20) -> None:
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        (folder / "image").mkdir(parents=True, exist_ok=True)
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        np.save(folder / "image" / f"{part}_data.npy", rng.random((n, 28, 28)))
        np.save(folder / "audio" / f"{part}_data.npy", rng.random((n, 112, 112)))
        np.save(folder / f"{part}_labels.npy", np.arange(n) % 10)


def test_multibench_layout_is_read(tmp_path, cli):
    _multibench(tmp_path / "mb")
    result = cli("examples", "make", "avmnist", "--multibench", tmp_path / "mb", "-o",
                 tmp_path / "out")
    assert result.code == 0, result.err
    assert np.load(tmp_path / "out" / "image.npy").shape == (80, 784)
    assert np.load(tmp_path / "out" / "audio.npy").shape == (80, 112 * 112)
    split = np.load(tmp_path / "out" / "split.npz")
    assert split["train"].tolist() == list(range(60))
    assert split["test"].tolist() == list(range(60, 80))


@pytest.mark.slow
def test_reproduce_table1_avmnist_mechanics(tmp_path, cli):
    # a small folder in the layout 'examples make avmnist' writes
    rng = np.random.default_rng(1)
    n = 800
    y = np.arange(n) % 10
    audio = rng.standard_normal((n, 24)).astype(np.float32)
    audio[:, :10] += 1.5 * np.eye(10)[y]
    image = rng.standard_normal((n, 30)).astype(np.float32)
    image[:, :10] += 1.0 * np.eye(10)[y]
    for name, array in (("image", image), ("audio", audio), ("labels", y)):
        np.save(tmp_path / f"{name}.npy", array)
    np.savez(tmp_path / "split.npz", train=np.arange(600), test=np.arange(600, n))
    result = cli("examples", "reproduce", "table1-avmnist", "--data", tmp_path, "--runs", "2",
                 "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    rows = {r["row"]: r for r in doc["rows"]}
    assert list(rows) == ["no_kd", "um_kd", "cm_kd"]
    assert rows["cm_kd"]["teacher"] > rows["um_kd"]["teacher"]  # the image helps the teacher
    assert rows["um_kd"]["paper"] == {"teacher": 84.57, "rho_0": {"mean": 69.86, "std": 0.70},
                                      "rho_0.5": {"mean": 70.10, "std": 0.50}}
    assert len(rows["cm_kd"]["rho_0.5"]["runs"]) == 2
    for rho, gap in doc["claim_check"].items():  # the one rule, on the seed-wise gaps
        runs = np.subtract(rows["cm_kd"][rho]["runs"], rows["um_kd"][rho]["runs"])
        assert gap["seeds"] == 2 and abs(gap["delta"] - runs.mean()) < 0.01
        assert gap["holds"] == (not (gap["z"] is not None and gap["z"] > gap["threshold"]))
    shown = cli("examples", "reproduce", "table1-avmnist", "--data", tmp_path, "--runs", "2")
    assert shown.code == 0 and "paired SE over 2 seeds" in shown.out
    missing = cli("examples", "reproduce", "table1-avmnist", "--data", tmp_path / "nope")
    assert missing.code == 2 and "expected an AV-MNIST folder" in missing.err
