"""A .pt2 is data: no member of it is unpickled or run (issue 38, item 1). Each hostile
archive carries a payload that would write a marker file if it ran."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cmkd_doctor.errors import InputError
from cmkd_doctor.teachers.archives import check_program_archive, tensors_only


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the code a hostile file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _program(path: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    program = torch.export.export(net.eval(), (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path


def _rewritten(source: Path, target: Path, change) -> Path:
    """``source`` with every member passed through ``change(inner name, bytes)``, which
    returns the new bytes, or a dict of members to write instead."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            prefix, inner = name.split("/", 1)
            found = change(inner, old.read(name))
            for inner_name, data in (found if isinstance(found, dict)
                                     else {inner: found}).items():
                new.writestr(f"{prefix}/{inner_name}", data)
    return target


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    return _program(tmp_path_factory.mktemp("pt2") / "teacher.pt2")


def _pickled_weight(marker: Path):
    def change(inner: str, data: bytes):
        if inner == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        if inner == "data/weights/weight_0":
            return pickle.dumps(_Payload(marker))
        return data
    return change


def _pickled_inputs(marker: Path):
    def change(inner: str, data: bytes):
        return pickle.dumps(_Payload(marker)) if inner.startswith("data/sample_inputs/") \
            else data
    return change


def _opaque_constant(marker: Path):
    def change(inner: str, data: bytes):
        if inner == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"c": {
                "path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                "tensor_meta": None}}}).encode()
        if inner == "data/weights/weight_0":
            return {inner: data, "data/constants/opaque_obj_0": pickle.dumps(
                _Payload(marker))}
        return data
    return change


def _legacy_weights(marker: Path):
    def change(inner: str, data: bytes):
        if inner == "data/weights/weight_0":
            return {inner: data, "data/weights/model.pt": pickle.dumps(_Payload(marker))}
        return data
    return change


def _compiled(marker: Path):
    def change(inner: str, data: bytes):
        if inner == "data/weights/weight_0":
            return {inner: data, "data/aotinductor/model/model.so": b"\x7fELF"}
        return data
    return change


CASES = {"a weight stored as a pickle": (_pickled_weight, "is stored as a pickle"),
         "sample inputs that are a pickle": (_pickled_inputs, "holds more than tensors"),
         "an opaque constant": (_opaque_constant, "is a pickled object, not a tensor"),
         "a legacy weights file": (_legacy_weights, "is a pickled weights file"),
         "AOTInductor code": (_compiled, "is AOTInductor compiled code")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_program_whose_members_would_run_code_is_refused_before_any_runs(
        case, program, tmp_path, cli):
    make, message = CASES[case]
    marker = tmp_path / "ran"
    evil = _rewritten(program, tmp_path / "evil.pt2", make(marker))
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    found = cli("extract", "--model", evil, "--layer", "relu", "--array", tmp_path / "x.npy",
                "-o", tmp_path / "f.npy")
    assert found.code == 2, found.err
    lines = found.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --model {evil}: ")
    assert message in lines[0] and "runs no code from it" in lines[0]
    assert not marker.exists() and not (tmp_path / "f.npy").exists()


def test_every_command_that_reads_a_program_refuses_a_pickled_weight(program, tmp_path,
                                                                    cli):
    marker = tmp_path / "ran"
    evil = _rewritten(program, tmp_path / "evil.pt2", _pickled_weight(marker))
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    np.save(tmp_path / "x.npy", rng.standard_normal((60, 1, 8, 8)).astype(np.float32))
    for name, width in (("a", 4), ("b", 5)):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((60, width)).astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    ranked = cli("rank", tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy", "--out",
                 tmp_path / "run", "--epochs", "2", "--hidden", "0", "--quiet")
    assert ranked.code == 0, ranked.err
    commands = [
        ["derive-teacher", "--run", tmp_path / "run", "--model", evil, "--layer", "relu",
         "--export-pt2", tmp_path / "out.pt2"],
        ["distill", "--run", tmp_path / "run", "--model", evil, "--layer", "relu",
         "--teacher-inputs", tmp_path / "x.npy", "--student", "cnn3", "--student-inputs",
         tmp_path / "x.npy"],
    ]
    for args in commands:
        found = cli(*args)
        assert found.code == 2 and "data/weights/model_weights_config.json" in found.err \
            and "is stored as a pickle" in found.err, (args[0], found.err)
    assert not marker.exists()


def test_a_plain_program_passes_the_check_and_loads(program):
    from cmkd_doctor.teachers.whole_networks import load_program

    check_program_archive(program, "--model")
    module, recorded = load_program(program)
    assert recorded == {} and module is not None


def test_within_tensors_only_no_load_unpickles_code(tmp_path):
    """The guard behind the check: whatever a caller asks, torch.load stays restricted."""
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buffer)
    with tensors_only(), pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert not marker.exists()
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)  # restored
    assert isinstance(loaded["x"], io.TextIOWrapper) and marker.exists()
    loaded["x"].close()
    os.remove(marker)


@pytest.mark.parametrize("record", ["not json {", '"a string"', '{"masked": 5}',
                                    '{"masked": {"relu": 3}}', "[" * 200_000])
def test_a_damaged_record_in_a_program_is_one_error_line(record, program, tmp_path, cli):
    from cmkd_doctor.teachers.whole_networks import EXTRA_FILE

    def change(inner: str, data: bytes):
        if inner == "data/weights/weight_0":
            return {inner: data, f"extra/{EXTRA_FILE}": record.encode()}
        return data

    damaged = _rewritten(program, tmp_path / "damaged.pt2", change)
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    found = cli("extract", "--model", damaged, "--layer", "relu", "--array",
                tmp_path / "x.npy", "-o", tmp_path / "f.npy")
    assert found.code == 2 and found.err.count("\n") == 1, found.err
    assert "is not the record cmkd-doctor writes" in found.err


def test_a_member_too_large_to_read_is_refused_by_its_declared_size(program, tmp_path):
    big = _rewritten(program, tmp_path / "big.pt2", lambda inner, data: (
        data + b" " * (65 << 20)
        if inner == "data/weights/model_weights_config.json" else data))
    with pytest.raises(InputError, match="more than a program's 64 MiB"):
        check_program_archive(big, "--model")


def test_extract_on_an_array_of_no_rows_is_one_error_line(program, tmp_path, cli):
    np.save(tmp_path / "none.npy", np.zeros((0, 1, 8, 8), np.float32))
    found = cli("extract", "--model", program, "--layer", "relu", "--array",
                tmp_path / "none.npy", "-o", tmp_path / "f.npy")
    assert found.code == 2 and found.err.count("\n") == 1, found.err
    assert "none.npy: holds no rows (shape (0, 1, 8, 8))" in found.err
    assert not (tmp_path / "f.npy").exists()
