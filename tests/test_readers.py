"""Hostile files, round two (issue 22): every reader refuses what is not a regular file
before opening it, sizes arrays from their headers before allocating them, reads configs
without aliases, and never silently changes a label. Each bad file is exit 2 with one
``error:`` line naming the file (or the option) and what is wrong, and writes nothing."""

from __future__ import annotations

import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io import files

FILES = ("feats_a.npy", "feats_b.npy", "labels.npy")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readers")
    write_gaussian(make_gaussian(GaussianSpec(n_train=120, n_test=20, seed=2)), folder)
    return folder


def _refused(result, needle: str) -> str:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert needle in lines[0], lines[0]
    return lines[0]


class _Unblock:
    """A FIFO whose write end is opened after a pause, so a reader that wrongly opens it
    gets an end of file (and the test fails on its message) instead of blocking."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path, self.done = path, threading.Event()
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        deadline = time.monotonic() + 120
        while not self.done.is_set() and time.monotonic() < deadline:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet: the right outcome, keep waiting
                time.sleep(0.5)
                continue
            os.close(fd)
            return

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        self.done.set()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("reader", ["feats_a", "labels", "config", "split", "groups",
                                    "array", "teacher", "from"])
def test_a_fifo_is_refused_before_it_is_opened(reader, data, tmp_path, cli):
    suffix = {"config": "yaml", "split": "npz", "teacher": "onnx", "from": "onnx"}
    with _Unblock(tmp_path / f"pipe.{suffix.get(reader, 'npy')}") as pipe:
        inputs = [data / f for f in FILES]
        out = ["--out", tmp_path / "out"]
        argv = {
            "feats_a": ["rank", pipe, *inputs[1:], *out],
            "labels": ["rank", *inputs[:2], pipe, *out],
            "config": ["diagnose", "--config", pipe, *out],
            "split": ["rank", *inputs, "--split", pipe, *out],
            "groups": ["rank", *inputs, "--groups", pipe, *out],
            "array": ["extract", "--onnx", pipe, "--layer", "x", "--array", pipe, "-o",
                      tmp_path / "f.npy"],
            "teacher": ["distill", "--run", tmp_path / "norun", "--teacher", pipe],
            "from": ["derive-teacher", "--run", tmp_path / "norun", "--from", pipe],
        }[reader]
        line = _refused(cli(*argv), "is not a regular file (a FIFO (named pipe))")
        assert str(pipe) in line
    assert not (tmp_path / "out").exists()


def _npy_header_only(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """A .npy file whose header declares ``shape`` followed by a few bytes of data."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 64)
    return path


def test_headers_that_declare_more_than_the_file_holds_are_refused_unread(data, tmp_path,
                                                                         cli):
    huge = _npy_header_only(tmp_path / "huge.npy", (10**6, 10**6))
    inputs = [data / f for f in FILES]
    line = _refused(cli("rank", huge, *inputs[1:], "-o", tmp_path / "out"),
                    "huge.npy: its header declares shape (1000000, 1000000) of float32")
    assert "truncated or corrupt" in line
    groups = _npy_header_only(tmp_path / "groups.npy", (10**12,), "<i8")
    _refused(cli("rank", *inputs, "--groups", groups, "-o", tmp_path / "out"),
             f"--groups {groups}: its header declares shape (1000000000000,)")
    # a .npz member whose header declares 10^12 rows
    member = _npy_header_only(tmp_path / "train.npy", (10**12,), "<i8")
    split = tmp_path / "split.npz"
    with zipfile.ZipFile(split, "w") as archive:
        archive.write(member, "train.npy")
        archive.write(member, "test.npy")
    _refused(cli("rank", *inputs, "--split", split, "-o", tmp_path / "out"),
             f"--split {split}:train: its header declares shape (1000000000000,)")
    assert not (tmp_path / "out").exists()


def test_an_npz_larger_than_free_memory_is_refused_before_it_is_read(data, tmp_path, cli,
                                                                     monkeypatch):
    """A compressed .npz expands on reading: 40 MB of zeros fit in a 40 KB file. With 8 MiB
    of memory free (pretended), it is refused from its header, before any allocation."""
    x = np.zeros((10_000, 1_000), dtype=np.float32)
    np.savez_compressed(tmp_path / "zeros.npz", x=x)
    assert (tmp_path / "zeros.npz").stat().st_size < 1 << 20
    monkeypatch.setattr(files, "host_memory_free", lambda: 8 << 20)
    allocated = []
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda *a, **k: allocated.append(1))  # nothing may be read
    line = _refused(cli("rank", tmp_path / "zeros.npz", *(data / f for f in FILES[1:]),
                        "-o", tmp_path / "out"), "zeros.npz: holds 38.1 MiB")
    assert "8 MiB of memory free" in line and ".npy" in line and not allocated


BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
rank: {hidden: *i}
"""


@pytest.mark.parametrize("name,body,needle", [
    ("bomb", BOMB, "anchors and aliases (& and *) are not allowed (line 1)"),
    ("deep", "rank: " + "[" * 5000 + "]" * 5000, "nested more than 32 levels deep"),
    ("twice", "out: a\nrank: {lr: 0.1}\nout: b\n", "the key 'out' is given twice (line 3)"),
    ("both", "example: gaussian\ninputs: {feats_a: a.npy, feats_b: b.npy, labels: y.npy}\n",
     "give 'example' or 'inputs', not both"),
    ("int_input", "inputs: {feats_a: 1, feats_b: b.npy, labels: y.npy}\n",
     "'inputs.feats_a' must be a file path; got 1"),
    ("null_input", "inputs: {feats_a: a.npy, feats_b: null, labels: y.npy}\n",
     "'inputs.feats_b' must be a file path; got None"),
])
def test_configs_that_expand_nest_or_repeat_are_refused(name, body, needle, tmp_path, cli):
    config = tmp_path / f"{name}.yaml"
    config.write_text(body)
    started = time.monotonic()
    _refused(cli("diagnose", "--config", config, "--out", tmp_path / "out"),
             f"{config}: {needle}")
    assert time.monotonic() - started < 30  # the bomb is not expanded
    assert not (tmp_path / "out").exists()


def test_a_binary_or_huge_config_is_refused(tmp_path, cli):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    _refused(cli("diagnose", "--config", binary, "--out", tmp_path / "out"),
             "model.yaml: not a text file (byte 128 is not UTF-8)")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    _refused(cli("diagnose", "--config", big, "--out", tmp_path / "out"),
             "is too large for a config file (at most 1 MiB)")


def test_labels_are_never_silently_changed(data, tmp_path, cli):
    xa, xb = (data / f for f in FILES[:2])
    y = np.load(data / "labels.npy")
    # floats beyond 2^53 are not exact integers: 1e19 and 2e19 would both overflow
    big = np.where(y == y[0], 1e19, 2e19)
    np.save(tmp_path / "big.npy", big)
    _refused(cli("rank", xa, xb, tmp_path / "big.npy", "-o", tmp_path / "out"),
             "big.npy: label 1e+19 at row 0 is beyond 2^53")
    # byte strings are text: read as such, both classes kept
    np.save(tmp_path / "bytes.npy", np.where(y == y[0], b"cat", b"dog"))
    result = cli("rank", xa, xb, tmp_path / "bytes.npy", "-o", tmp_path / "run", "-M", "2",
                 "--epochs", "2", "--json")
    assert result.code == 0, result.err
    assert '"classes": [\n      "cat",\n      "dog"\n    ]' in result.out
    np.save(tmp_path / "latin.npy", np.where(y == y[0], b"\xe9t\xe9", b"hiver"))
    _refused(cli("rank", xa, xb, tmp_path / "latin.npy", "-o", tmp_path / "out"),
             "latin.npy: labels are byte strings that are not UTF-8 text")


def test_arguments_in_the_wrong_order_are_named_as_such(data, tmp_path, cli):
    xa, xb, y = (data / f for f in FILES)
    line = _refused(cli("rank", xa, y, xb, "-o", tmp_path / "out"),
                    "labels.npy: is 1-D with 2 distinct values, like class labels")
    assert "the order is FEATS_A FEATS_B LABELS" in line


def test_split_and_group_files_say_what_is_wrong_with_them(data, tmp_path, cli):
    inputs = [data / f for f in FILES]
    n = len(np.load(inputs[2]))
    np.savez(tmp_path / "repeats.npz", train=np.r_[np.zeros(240, int), np.arange(1, 50)],
             test=np.arange(50, n))
    _refused(cli("rank", *inputs, "--split", tmp_path / "repeats.npz", "-o",
                 tmp_path / "out"), "'train' lists row 0 240 times; give each row once")
    np.savez(tmp_path / "negative.npz", train=np.r_[-3, np.arange(1, 50)],
             test=np.arange(50, n))
    _refused(cli("rank", *inputs, "--split", tmp_path / "negative.npz", "-o",
                 tmp_path / "out"), "'train' has row -3; row indices count from 0")
    np.savez(tmp_path / "groups.npz", ids=np.arange(50))
    _refused(cli("rank", *inputs, "--groups", tmp_path / "groups.npz", "-o",
                 tmp_path / "out"), "expected a .npy file of one integer group id")
    long = tmp_path / ("n" * 300 + ".npy")
    _refused(cli("rank", long, *inputs[1:], "-o", tmp_path / "out"),
             "the name is too long for the file system")
    assert not (tmp_path / "out").exists()


def _linear_onnx(path: Path, w: np.ndarray, elem: str = "FLOAT",
                 shape: list | None = None) -> Path:
    """An ONNX model y = x @ w (x float, or another element type) whose input shape is
    recorded as ``shape`` (``None``: not recorded)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    kind = getattr(TensorProto, elem)
    nodes = [helper.make_node("MatMul", ["xf", "w"], ["logits"])]
    nodes.insert(0, helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", kind, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_teachers_with_a_fixed_batch_or_no_recorded_shape_work_and_ints_are_refused(
        tmp_path):
    pytest.importorskip("onnxruntime")
    import torch

    from cmkd_doctor.errors import InputError
    from cmkd_doctor.teachers.masks import OnnxModel

    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3))
    x = torch.tensor(rng.standard_normal((10, 6)), dtype=torch.float32)
    expected = x.numpy() @ w.astype(np.float32)
    for name, shape in (("dynamic", ["n", 6]), ("batch_one", [1, 6]), ("batch_four", [4, 6]),
                        ("unrecorded", None)):
        model = OnnxModel(_linear_onnx(tmp_path / f"{name}.onnx", w, shape=shape), 6, 3)
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match=r"int64.onnx: the ONNX model's input is "
                                         r"tensor\(int64\); a teacher takes float features"):
        OnnxModel(_linear_onnx(tmp_path / "int64.onnx", w, "INT64", ["n", 6]), 6, 3)


def test_a_device_behind_a_symlink_is_named_as_a_device(data, tmp_path, cli):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    os.symlink("/dev/zero", tmp_path / "zeros.npy")
    _refused(cli("rank", tmp_path / "zeros.npy", *(data / f for f in FILES[1:]), "-o",
                 tmp_path / "out"), "zeros.npy: is not a regular file (a character device)")


def test_inputs_that_cannot_pair_are_refused_from_their_headers_before_any_is_read(
        data, tmp_path, cli, monkeypatch):
    """An .npz member that does not pair with the other files used to be read whole (a
    4.8 GB one took 5 GiB of memory) before the refusal; the headers now say so first."""
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((20_000, 500), np.float32))
    loaded = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda *a, **k: loaded.append(1) or real(*a, **k))
    line = _refused(cli("rank", tmp_path / "big.npz", *(data / f for f in FILES[1:]), "-o",
                        tmp_path / "out"), "feats_b.npy: has 120 rows but ")
    assert "big.npz:x has 20000" in line and not loaded


def test_a_long_value_is_never_echoed_whole(tmp_path, cli):
    config = tmp_path / "long.yaml"
    config.write_text("rank: {lr: '" + "9" * 500_000 + "x'}\n")
    line = _refused(cli("diagnose", "--config", config, "--out", tmp_path / "out"),
                    "rank.lr = '99999")
    assert "(500003 characters)" in line and len(line) < 400


def test_free_memory_counts_the_page_cache_that_can_be_dropped_and_the_cgroup_limit(
        tmp_path):
    """After a large file is read most memory is page cache: "free" alone refused work
    that fits. Free memory is Linux's MemAvailable, within a container's cgroup limit
    less its working set (v2 and v1)."""
    from cmkd_doctor.io import files

    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        said = next(int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                    if line.startswith("MemAvailable:"))
        assert abs(files._meminfo_available() - said) < 256 << 20
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text(f"{8 << 30}\n")
    (v2 / "job" / "memory.current").write_text(f"{6 << 30}\n")
    (v2 / "job" / "memory.stat").write_text(f"anon 1\ninactive_file {3 << 30}\n")
    (tmp_path / "cg2").write_text("0::/job\n")
    assert files._cgroup_room(tmp_path / "cg2", v2) == 5 << 30  # 8 - 6 + 3 GiB
    (v2 / "job" / "memory.max").write_text("max\n")
    assert files._cgroup_room(tmp_path / "cg2", v2) == 1 << 62
    v1 = tmp_path / "v1" / "memory" / "job"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{4 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{5 << 30}\n")
    (v1 / "memory.stat").write_text(f"total_inactive_file {2 << 30}\n")
    (tmp_path / "cg1").write_text("4:memory:/job\n0::/\n")
    assert files._cgroup_room(tmp_path / "cg1", tmp_path / "v1") == 1 << 30
