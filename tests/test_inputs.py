"""The input layer: every bad input gives exit 2, one `error:` line, and writes nothing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import save
from safetensors.numpy import save_file

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.inputs import load_paired, parse_source, read_array, read_labels


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    xa = save(tmp_path / "a.npy", rng.standard_normal((40, 6)).astype(np.float32))
    xb = save(tmp_path / "b.npy", rng.standard_normal((40, 4)).astype(np.float32))
    y = save(tmp_path / "y.npy", np.repeat(np.arange(4), 10))
    return tmp_path, xa, xb, y


def bad_case(tmp_path, name):
    """Build one bad input; returns (argv tail, pattern the error must match)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    a, b, lab = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy"
    np.save(a, x)
    np.save(b, x[:, :4])
    np.save(lab, y)
    options: list[str] = []
    if name == "rows":
        np.save(b, x[:38, :4])
        pattern = r"b\.npy: has 38 rows but .*a\.npy has 40"
    elif name == "label_rows":
        np.save(lab, y[:39])
        pattern = r"y\.npy: has 39 rows"
    elif name == "nan":
        x2 = x.copy()
        x2[3, 2] = np.nan
        x2[7, 1] = np.inf
        np.save(a, x2)
        pattern = r"a\.npy: 2 non-finite values .* first is nan at row 3, column 2"
    elif name == "1d":
        np.save(a, x[:, 0])
        pattern = r"a\.npy: features are 1-D .*reshape\(-1, 1\)"
    elif name == "3d":
        np.save(a, x.reshape(40, 3, 2))
        pattern = r"a\.npy: features are 3-D .*reshape\(len\(x\), -1\)"
    elif name == "one_class":
        np.save(lab, np.zeros(40, dtype=int))
        pattern = r"y\.npy: only 1 class \(0\)"
    elif name == "single_sample":
        y2 = y.copy()
        y2[0] = 9
        np.save(lab, y2)
        pattern = r"y\.npy: class 9 has a single sample \(row 0\)"
    elif name == "object":
        np.save(lab, np.array([object()] * 40), allow_pickle=True)
        pattern = r"y\.npy: holds pickled Python objects"
    elif name == "pickled":
        lab.write_bytes(pickle.dumps({"y": y}))
        pattern = r"y\.npy: (holds pickled|cannot be read)"
    elif name == "truncated":
        data = a.read_bytes()
        a.write_bytes(data[: len(data) // 2])
        pattern = (r"a\.npy: its header declares shape \(\d+, \d+\) of float32 \(.*\) but "
                   r"the file holds .*: it is truncated or corrupt")
    elif name == "missing_file":
        a.unlink()
        pattern = r"a\.npy: no such file"
    elif name == "suffix":
        a = tmp_path / "a.csv"
        a.write_text("1,2\n")
        pattern = r"a\.csv: unsupported file type '\.csv'"
    elif name == "npz_ambiguous":
        a = tmp_path / "a.npz"
        np.savez(a, first=x, second=x)
        pattern = r"a\.npz: holds 2 arrays \('first', 'second'\); pick one with .*:KEY"
    elif name == "npz_missing_key":
        np.savez(tmp_path / "a.npz", first=x)
        a = f"{tmp_path / 'a.npz'}:nope"
        pattern = r"a\.npz: no array named 'nope'; it holds 'first'"
    elif name == "float_labels":
        np.save(lab, np.linspace(0, 1, 40))
        pattern = r"y\.npy: labels are non-integer floats"
    elif name in ("split_overlap", "split_range", "split_keys"):
        split = tmp_path / "split.npz"
        if name == "split_overlap":
            np.savez(split, train=np.arange(30), test=np.arange(25, 40))
            pattern = r"--split .*split\.npz: 5 rows are in both train and test"
        elif name == "split_range":
            np.savez(split, train=np.arange(30), test=np.arange(30, 45))
            pattern = r"--split .*split\.npz: 'test' has row 44 but the inputs have 40 rows"
        else:
            np.savez(split, rows=np.arange(30))
            pattern = r"--split .*split\.npz: needs arrays 'train' and 'test'"
        options = ["--split", str(split)]
    elif name == "multihot_values":
        np.save(lab, np.full((40, 3), 2))
        pattern = r"y\.npy: 2-D labels .* only 0 and 1"
    else:  # bad option values
        flag, value, pattern = {
            "repeats": ("--repeats", "0", r"--repeats must be a whole number >= 1; got 0"),
            "test_split": ("--test-split", "1.5", r"--test-split must be a fraction in \[0, 1\)"),
            "hidden": ("--hidden", "-3", r"--hidden must be 0 or a comma list"),
            "dist": ("--dist", "cosine", r"--dist must be one of mse, l1, kl; got 'cosine'"),
            "normalize": ("--normalize", "sum", r"--normalize must be one of max, minmax"),
            "permute": ("--permute", "c", r"--permute must be one of a, b; got 'c'"),
            "lr": ("--lr", "-1", r"--lr must be a positive number; got -1"),
            "device": ("--device", "tpu", r"--device must be auto, cpu, cuda or cuda:N"),
            "unknown": ("--frobnicate", None, r"No such option: --frobnicate"),
            "not_int": ("--epochs", "ten", r"--epochs"),
        }[name]
        options = [flag] + ([value] if value is not None else [])
    return [str(a), str(b), str(lab), *options], pattern


BAD = ["rows", "label_rows", "nan", "1d", "3d", "one_class", "single_sample", "object",
       "pickled", "truncated", "missing_file", "suffix", "npz_ambiguous", "npz_missing_key",
       "float_labels", "multihot_values", "split_overlap", "split_range", "split_keys",
       "repeats", "test_split", "hidden", "dist", "normalize", "permute", "lr", "device",
       "unknown", "not_int"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(tmp_path, cli, name):
    args, pattern = bad_case(tmp_path, name)
    out = tmp_path / "run"
    result = cli("rank", "--out", out, "--epochs", "1", "--repeats", "1", *args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert result.out == ""
    assert not out.exists()


def test_out_that_is_a_file_is_bad_input(tmp_path, cli, good):
    _, xa, xb, y = good
    (tmp_path / "taken").write_text("x")
    result = cli("rank", xa, xb, y, "--out", tmp_path / "taken")
    assert result.code == 2
    assert result.err.strip().endswith("taken: exists and is not a folder; pick another path")
    assert (tmp_path / "taken").read_text() == "x"


def test_cuda_request_without_cuda_is_a_clear_error(tmp_path, cli, good, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, xa, xb, y = good
    result = cli("rank", xa, xb, y, "--device", "cuda", "--out", tmp_path / "run")
    assert result.code == 2
    assert "error: --device cuda: no CUDA device is available" in result.err


def test_npz_key_and_single_array_npz_and_safetensors(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "many.npz", feats=x, other=x * 2)
    np.savez(tmp_path / "one.npz", only=x)
    save_file({"emb": x * 3}, str(tmp_path / "t.safetensors"))
    a, src = read_array(f"{tmp_path / 'many.npz'}:other")
    assert src.key == "other" and np.array_equal(a, x * 2)
    a, src = read_array(tmp_path / "one.npz")
    assert src.key == "only" and np.array_equal(a, x)
    a, src = read_array(tmp_path / "t.safetensors")
    assert src.key == "emb" and np.array_equal(a, x * 3)


def test_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 2), dtype=np.float32))
    array, _ = read_array(tmp_path / "x.npy")
    assert isinstance(array, np.memmap)


def test_parse_source_keeps_existing_paths_with_colons(tmp_path):
    odd = tmp_path / "a:b.npy"
    np.save(odd, np.zeros((2, 2)))
    assert parse_source(str(odd)).key is None
    assert parse_source(f"{tmp_path}/x.npz:k").key == "k"


def test_string_labels_are_remapped_with_the_mapping_kept(tmp_path):
    np.save(tmp_path / "y.npy", np.array(["dog", "cat", "dog", "cat", "eel", "eel"]))
    labels, info = read_labels(tmp_path / "y.npy")
    assert labels.classes == ["cat", "dog", "eel"]
    assert labels.y.tolist() == [1, 0, 1, 0, 2, 2]
    assert info.shape == (6,) and len(info.sha256) == 64


def test_multi_hot_labels_are_multilabel(tmp_path):
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 1, 0]])
    np.save(tmp_path / "y.npy", y)
    labels, _ = read_labels(tmp_path / "y.npy")
    assert labels.multilabel and labels.n_classes == 3 and labels.y.dtype == np.float32


def test_load_paired_records_checksums(good):
    _, xa, xb, y = good
    data = load_paired(xa, xb, y)
    assert data.files["feats_a"].shape == (40, 6)
    assert data.n == 40 and data.labels.n_classes == 4
    with pytest.raises(InputError, match="has 39 rows but .* has 40"):
        np.save(xb, np.zeros((39, 4)))
        load_paired(xa, xb, y)
