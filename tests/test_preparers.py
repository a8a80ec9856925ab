"""RAVDESS and MM-IMDB preparers, on small files written in the real layouts."""

from __future__ import annotations

import csv
import wave

import numpy as np
import pytest
import torch

EMOTIONS = 8


def _ravdess_official(root, n_train=12, n_test=4):
    from torchvision.io import write_png

    (root / "aud_features").mkdir(parents=True)
    (root / "vid_features").mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        with open(root / f"{part}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["audio", "image", "label"])
            for i in range(n):
                np.save(root / "aud_features" / f"{part}{i}.npy",
                        rng.standard_normal((40, 10)).astype(np.float32))
                picture = torch.randint(0, 255, (3, 48, 40), dtype=torch.uint8)
                write_png(picture, str(root / "vid_features" / f"{part}{i}.png"))
                writer.writerow([f"{part}{i}.npy", f"{part}{i}.png", i % EMOTIONS])


def test_ravdess_official_layout(tmp_path, cli):
    pytest.importorskip("torchvision")
    _ravdess_official(tmp_path / "rav")
    result = cli("examples", "make", "ravdess", "--root", tmp_path / "rav", "-o",
                 tmp_path / "out", "--image-size", "16")
    assert result.code == 0, result.err
    audio = np.load(tmp_path / "out" / "audio.npy")
    image = np.load(tmp_path / "out" / "image.npy")
    assert audio.shape == (16, 400) and image.shape == (16, 3 * 16 * 16)
    assert 0 <= image.min() and image.max() <= 1
    split = np.load(tmp_path / "out" / "split.npz")
    assert len(split["train"]) == 12 and len(split["test"]) == 4
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert labels[split["train"]].tolist() == [i % 8 for i in range(12)]


def test_ravdess_wrong_folder_and_missing_files(tmp_path, cli):
    result = cli("examples", "make", "ravdess", "--root", tmp_path, "-o", tmp_path / "out")
    assert result.code == 2 and "expected the official RAVDESS layout" in result.err
    pytest.importorskip("torchvision")
    _ravdess_official(tmp_path / "rav")
    (tmp_path / "rav" / "vid_features" / "test2.png").unlink()
    result = cli("examples", "make", "ravdess", "--root", tmp_path / "rav", "-o",
                 tmp_path / "out")
    assert result.code == 2 and "test.csv: line 4 names" in result.err and "missing" in result.err


def _wav(path, seconds=0.3, rate=48000, tone=440.0):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * tone * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(samples.tobytes())


def test_ravdess_raw_audio_mfcc_with_labels_from_names(tmp_path, cli):
    folder = tmp_path / "Actor_all"
    folder.mkdir()
    for actor in (1, 2, 23):
        for emotion in range(1, 9):
            _wav(folder / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav",
                 tone=200 + 50 * emotion)
    (folder / "notes.txt").write_text("not audio")
    result = cli("examples", "make", "ravdess", "--raw-audio", tmp_path, "-o", tmp_path / "out")
    assert result.code == 0, result.err
    audio = np.load(tmp_path / "out" / "audio.npy")
    labels = np.load(tmp_path / "out" / "labels.npy")
    split = np.load(tmp_path / "out" / "split.npz")
    assert audio.shape == (24, 40 * 32) and np.isfinite(audio).all()
    assert sorted(set(labels.tolist())) == list(range(8))
    assert len(split["test"]) == 8  # actor 23 is a test actor
    empty = cli("examples", "make", "ravdess", "--raw-audio", tmp_path / "out", "-o",
                tmp_path / "out2")
    assert empty.code == 2 and "expected RAVDESS wav files named like" in empty.err


def test_mmimdb_multibench_hdf5(tmp_path, cli):
    h5py = pytest.importorskip("h5py")
    n = 25959
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "multimodal_imdb.hdf5", "w") as fh:
        fh["features"] = rng.standard_normal((n, 6)).astype(np.float32)
        fh["vgg_features"] = rng.standard_normal((n, 5)).astype(np.float32)
        fh["genres"] = (rng.random((n, 23)) < 0.3).astype(np.int8)
    result = cli("examples", "make", "mmimdb", "--hdf5", tmp_path / "multimodal_imdb.hdf5",
                 "--columns", "0,1", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert labels.shape == (n, 2) and set(np.unique(labels)) <= {0, 1}
    split = np.load(tmp_path / "out" / "split.npz")
    assert len(split["train"]) == 15552 + 2608 and len(split["test"]) == 7799
    assert np.load(tmp_path / "out" / "text.npy").shape == (n, 6)
    bad = cli("examples", "make", "mmimdb", "--hdf5", tmp_path / "multimodal_imdb.hdf5",
              "--columns", "30", "-o", tmp_path / "out2")
    assert bad.code == 2 and "--columns: 30 is out of range" in bad.err
    with h5py.File(tmp_path / "other.hdf5", "w") as fh:
        fh["features"] = np.zeros((3, 2))
    bad = cli("examples", "make", "mmimdb", "--hdf5", tmp_path / "other.hdf5", "-o",
              tmp_path / "out3")
    assert bad.code == 2 and "missing vgg_features, genres" in bad.err


def test_vggsound_labels_and_split_from_the_public_csv(tmp_path, cli):
    rows = [("abc", 30, "dog barking", "train"), ("def", 0, "cat purring", "test"),
            ("ghi", 10, "dog barking", "test"), ("jkl", 5, "zebra", "train")]
    with open(tmp_path / "vggsound.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    (tmp_path / "clips.txt").write_text("ghi_10\nabc_30\njkl_5\ndef_000000\n")
    result = cli("examples", "make", "vggsound", "--csv", tmp_path / "vggsound.csv", "--clips",
                 tmp_path / "clips.txt", "--classes", "2", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    out = tmp_path / "out"
    # classes alphabetically: cat purring (0), dog barking (1); zebra is dropped
    assert np.load(out / "labels.npy").tolist() == [1, 1, 0]
    assert np.load(out / "rows.npy").tolist() == [0, 1, 3]
    split = np.load(out / "split.npz")
    assert split["train"].tolist() == [1] and split["test"].tolist() == [0, 2]
    (tmp_path / "clips.txt").write_text("zzz_1\n")
    bad = cli("examples", "make", "vggsound", "--csv", tmp_path / "vggsound.csv", "--clips",
              tmp_path / "clips.txt", "-o", tmp_path / "out2")
    assert bad.code == 2 and "line 1 ('zzz_1') is not in" in bad.err


def _matlab_cellstr(fh, name, strings):
    h5py = pytest.importorskip("h5py")
    refs = fh.create_group("#refs#")
    references = []
    for i, text in enumerate(strings):
        refs[f"s{i}"] = np.array([[ord(c)] for c in text], dtype=np.uint16)
        references.append(refs[f"s{i}"].ref)
    fh.create_dataset(name, data=np.array([references], dtype=h5py.ref_dtype))


def test_nyu_labeled_mat_and_official_splits(tmp_path, cli):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    n, width, height = 4, 20, 16
    with h5py.File(tmp_path / "nyu.mat", "w") as fh:  # MATLAB v7.3 stores arrays transposed
        fh["images"] = rng.integers(0, 255, (n, 3, width, height), dtype=np.uint8)
        fh["depths"] = rng.uniform(0.5, 12, (n, width, height)).astype(np.float32)
        _matlab_cellstr(fh, "sceneTypes", ["kitchen", "bedroom", "kitchen", "office"])
    with h5py.File(tmp_path / "splits.mat", "w") as fh:
        fh["trainNdxs"] = np.array([[1, 2, 4]], dtype=np.float64)
        fh["testNdxs"] = np.array([[3]], dtype=np.float64)
    result = cli("examples", "make", "nyu", "--mat", tmp_path / "nyu.mat", "--splits",
                 tmp_path / "splits.mat", "--size", "12", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    rgb = np.load(tmp_path / "out" / "rgb.npy")
    depth = np.load(tmp_path / "out" / "depth.npy")
    assert rgb.shape == depth.shape == (n, 3, 12, 12) and rgb.dtype == np.uint8
    assert np.load(tmp_path / "out" / "labels.npy").tolist() == [1, 0, 1, 2]
    split = np.load(tmp_path / "out" / "split.npz")
    assert split["train"].tolist() == [0, 1, 3] and split["test"].tolist() == [2]
    bad = cli("examples", "make", "nyu", "--mat", tmp_path / "splits.mat", "-o",
              tmp_path / "out2")
    assert bad.code == 2 and "expected images, depths and sceneTypes" in bad.err
