"""A user's ONNX model is checked before it runs, and any run of it can be stopped: a
time limit per batch with its own error, SIGINT/SIGTERM within a second with the
previous run intact, onnxruntime's failures as one error line (issue 38, items 4 and 6).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cmkd_doctor.errors import InputError  # noqa: E402
from cmkd_doctor.teachers import model_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D, K, N = 4, 3, 60


def _model(nodes, initializers=(), path: Path | None = None, shaped: bool = True):
    """x (n, 4) -> ... -> "h" (n, 4) -> logits (n, 3): ``nodes`` make ``h`` from ``x``."""
    head = numpy_helper.from_array(np.ones((D, K), np.float32), "head")
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["h", "head"], ["logits"])], "teacher",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["n", K] if shaped else None)],
        [head, *initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if path is not None:
        path.write_bytes(model.SerializeToString())
    return model


def _endless(path: Path) -> Path:
    """``h`` comes out of a Loop whose condition never turns false."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["go"], ["go_on"]),
         helper.make_node("Add", ["v", "one"], ["v_next"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("go", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", D])],
        [helper.make_tensor_value_info("go_on", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_next", TensorProto.FLOAT, ["n", D])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    _model([helper.make_node("Constant", [], ["true"],
                             value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
            helper.make_node("Loop", ["", "true", "x"], ["h"], body=body)], path=path)
    return path


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """A rank run on 4 + 5 features of 60 rows, and the teacher's raw rows (x.npy)."""
    from cmkd_doctor.cli import main

    folder = tmp_path_factory.mktemp("model_runs")
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((N, D)).astype(np.float32))
    np.save(folder / "a.npy", rng.standard_normal((N, D)).astype(np.float32))
    np.save(folder / "b.npy", rng.standard_normal((N, 5)).astype(np.float32))
    np.save(folder / "y.npy", np.arange(N) % K)
    assert main(["rank", *(str(folder / f) for f in ("a.npy", "b.npy", "y.npy")),
                 "--out", str(folder / "run"), "--epochs", "2", "--hidden", "0",
                 "--quiet"]) == 0
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _distill(folder: Path, model: Path) -> list[str]:
    return ["distill", "--run", str(folder / "run"), "--model", str(model), "--layer", "h",
            "--teacher-inputs", str(folder / "x.npy"), "--epochs", "2", "--seeds", "1"]


def test_a_model_that_never_ends_meets_the_time_limit_in_distill_and_extract(
        ranked, tmp_path, cli, monkeypatch):
    endless = _endless(tmp_path / "endless.onnx")
    monkeypatch.setenv(model_runs.TIME_LIMIT_ENV, "1")
    before = _snapshot(ranked / "run")
    for args in (_distill(ranked, endless),
                 ["extract", "--model", str(endless), "--layer", "h", "--array",
                  str(ranked / "x.npy"), "-o", str(tmp_path / "f.npy")]):
        found = cli(*args)
        assert found.code == 2, found.err
        assert found.err.count("\n") == 1 and found.err.startswith(
            f"error: --{'model' if args[0] == 'distill' else 'onnx'} {endless}: one batch of")
        assert "ran past the model time limit of 1 s ($CMKD_DOCTOR_MODEL_TIMEOUT)" \
            in found.err
    assert _snapshot(ranked / "run") == before and not (tmp_path / "f.npy").exists()


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "soon", "1e9"])
def test_a_time_limit_that_cannot_be_meant_is_one_error_line(value, monkeypatch):
    monkeypatch.setenv(model_runs.TIME_LIMIT_ENV, value)
    with pytest.raises(InputError, match=r"\$CMKD_DOCTOR_MODEL_TIMEOUT must be a number"):
        model_runs.time_limit()


@pytest.mark.parametrize("signum,code,message", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated")])
def test_a_signal_ends_a_model_run_within_a_second_and_keeps_the_run(
        ranked, tmp_path, signum, code, message):
    """onnxruntime inside an endless Loop: the signal ends the command at once (not at
    the 600 s limit), and the run directory is as it was, with no staging folder."""
    from test_hostile import _wait_for_handlers

    endless = _endless(tmp_path / "endless.onnx")
    before = _snapshot(ranked / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(model_runs.TIME_LIMIT_ENV, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "cmkd_doctor", *_distill(ranked, endless)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_handlers(process.pid)
        _wait_for_busy_thread(process.pid)
        process.send_signal(signum)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code and err.strip() == f"error: {message}", err
    assert _snapshot(ranked / "run") == before
    assert not [p for p in ranked.rglob("*") if ".stage" in p.name]


def _wait_for_busy_thread(pid: int, timeout: float = 120) -> None:
    """Until a thread of process ``pid`` other than its main one has run a second on the
    CPU (Linux: /proc/PID/task/TID/stat): the endless Loop, on onnxruntime's side."""
    deadline, ticks = time.monotonic() + timeout, os.sysconf("SC_CLK_TCK")
    tasks = Path(f"/proc/{pid}/task")
    while time.monotonic() < deadline:
        try:
            busy = [int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
                    for task in tasks.iterdir() if task.name != str(pid)
                    for fields in [(task / "stat").read_text().rsplit(")", 1)[1].split()]]
        except (OSError, IndexError):
            busy = []
        if any(t >= ticks for t in busy):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} never ran a model")


def _no_data(path: Path) -> Path:
    """An initializer that declares 1e10 x 10 values and carries none."""
    empty = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[10**10, 10])
    _model([helper.make_node("Relu", ["x"], ["h"])], [empty], path)
    return path


def _two_writers(path: Path) -> Path:
    _model([helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("Sigmoid", ["x"], ["h"])], path=path)
    return path


def _short_data(path: Path) -> Path:
    """An initializer that declares 1000 x 1000 values and carries 4 (16 bytes)."""
    short = numpy_helper.from_array(np.zeros(4, np.float32), "short")
    del short.dims[:]
    short.dims.extend([1000, 1000])
    _model([helper.make_node("Relu", ["x"], ["h"])], [short], path)
    return path


@pytest.mark.parametrize("make,said", [
    (_no_data, "not a valid ONNX model (TensorProto (tensor name: huge) should contain "
               "one and only one value field"),
    (_two_writers, "not a valid ONNX model (Graph must be in single static assignment"),
    (_short_data, "not a valid ONNX model (TensorProto (tensor name: short) raw_data "
                  "size (16 bytes) is too small for the declared shape"),
])
def test_a_model_that_fails_the_checks_is_refused_before_it_runs(make, said, ranked,
                                                                   tmp_path, cli):
    bad = make(tmp_path / "bad.onnx")
    for args in (["extract", "--model", str(bad), "--layer", "h", "--array",
                  str(ranked / "x.npy"), "-o", str(tmp_path / "f.npy")],
                 _distill(ranked, bad)):
        found = cli(*args)
        assert found.code == 2 and found.err.count("\n") == 1, found.err
        assert said in found.err, found.err
    assert not (tmp_path / "f.npy").exists()


def test_a_model_without_recorded_output_shapes_still_passes_the_checks(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["h"])], path=tmp_path / "m.onnx",
                   shaped=False)
    read = model_runs.read_onnx(tmp_path / "m.onnx", "--model m.onnx")
    assert not read.graph.output[0].type.tensor_type.HasField("shape")  # left as it was
    assert model.graph.output[0] == read.graph.output[0]


def test_a_run_that_needs_more_memory_than_there_is_is_one_error_line(ranked, tmp_path):
    """h = mean over an (n, 2.5e9, 4) expansion of x: 80 GB for two rows. onnxruntime's
    allocation fails (the address space is capped at 16 GiB so the test does not depend
    on the machine's overcommit), and its coloured log lines never reach the user."""
    shape = numpy_helper.from_array(np.array([1, 2_500_000_000, 1], np.int64), "wide")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")  # Unsqueeze's input
    big = tmp_path / "big.onnx"
    _model([helper.make_node("Unsqueeze", ["x", "axes"], ["x3"]),
            helper.make_node("Expand", ["x3", "wide"], ["huge"]),
            helper.make_node("ReduceMean", ["huge"], ["h"], axes=[1], keepdims=0)],
           [shape, axes], big)
    cap = 16 << 30
    process = subprocess.run(
        [sys.executable, "-m", "cmkd_doctor", "extract", "--model", str(big), "--layer",
         "h", "--array", str(ranked / "x.npy"), "-o", str(tmp_path / "f.npy")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    assert process.returncode == 2, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --onnx {big}: onnxruntime "
                                                   "could not run it ("), process.stderr
    assert "\x1b" not in process.stderr and not (tmp_path / "f.npy").exists()


def test_a_model_file_larger_than_memory_is_refused_before_it_is_read(tmp_path):
    """A (sparse) 40 GiB file: refused by its size, naming the memory it would need,
    before protobuf reads a byte of it."""
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as fh:
        fh.truncate(40 << 30)
    with pytest.raises(InputError, match=r"--model huge.onnx \(read whole\) needs about "
                                         r"80(\.0)? GiB of memory"):
        model_runs.read_onnx(huge, "--model huge.onnx")
