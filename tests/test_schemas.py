"""Outputs as a contract: every JSON document names its schema and validates against the
shipped JSON Schema (checked with the jsonschema library on real outputs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema  # the test extra installs it: these checks never skip
import numpy as np
import pytest

from cmkd_doctor.schemas import DOCUMENTS, SCHEMA_VERSION, schema
from cmkd_doctor.schemas.builder import build

validator_for = jsonschema.Draft202012Validator


def _valid(document: dict, name: str) -> None:
    assert document["schema"] == name and document["schema_version"] == SCHEMA_VERSION
    validator_for(schema(name)).validate(document)


def test_shipped_schemas_are_valid_and_current():
    for name in DOCUMENTS:
        shipped = schema(name)
        validator_for.check_schema(shipped)
        assert shipped == build(name), f"{name}: rerun 'python -m cmkd_doctor.schemas'"
    names = {p.name.removesuffix(".schema.json")
             for p in (Path(__file__).parents[1] / "cmkd_doctor" / "schemas").glob("*.json")}
    assert names == set(DOCUMENTS)


def test_the_schema_command_prints_and_lists_them(cli):
    found = cli("schema", "rank")
    assert found.code == 0 and json.loads(found.out) == schema("rank")
    listed = cli("schema")
    assert listed.code == 0 and all(name in listed.out for name in DOCUMENTS)
    bad = cli("schema", "ranking")
    assert bad.code == 2 and bad.err.startswith("error: schema NAME must be one of rank")


def _relu_model(width: int):
    """An ONNX model x (n, width) -> Relu -> "feat" -> Identity -> y."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["feat"]), helper.make_node("Identity", ["feat"],
                                                                       ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Every JSON document of a real run: files and --json outputs, by schema."""
    from cmkd_doctor.cli import main

    root = tmp_path_factory.mktemp("schemas")
    found: dict[str, list[dict]] = {name: [] for name in DOCUMENTS}

    def run(*args, schema_name: str | None = None) -> None:
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main([str(a) for a in args])
        assert code == 0, args
        if schema_name:
            found[schema_name].append(json.loads(buffer.getvalue()))

    data, out = root / "data", root / "run"
    run("examples", "make", "gaussian", "--n-train", "300", "--n-test", "50", "-o", data)
    found["truth"].append(json.loads((data / "truth.json").read_text()))
    inputs = [data / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    run("rank", *inputs, "--out", out, "--epochs", "3", "-M", "2", "--groups", "auto",
        "--json", schema_name="rank")
    found["rank"].append(json.loads((out / "rank.json").read_text()))
    run("derive-teacher", "--run", out, "--ratio", "0.5", "--epochs", "2", "--json",
        schema_name="teacher")
    found["teacher"] += [json.loads(p.read_text()) for p in (out / "teachers").glob("*.json")]
    run("distill", "--run", out, "--teacher", "general", "--ratio", "0.5", "--seeds", "2",
        "--epochs", "2", "--json", schema_name="comparison")
    found["distill"].append(json.loads((out / "distill.json").read_text()))
    run("report", "--run", out, "--format", "json", schema_name="report")
    run("diagnose", *inputs, "--out", root / "diagnosed", "--epochs", "2", "--seeds", "2",
        "--json", schema_name="diagnosis")
    run("report", "--compare", out, root / "diagnosed", "--format", "json",
        schema_name="compare")
    run("examples", "list", "--json", schema_name="datasets")
    run("examples", "reproduce", "fig3", "--runs", "2", "--json", schema_name="reproduction")
    # a prepared data set, from a tiny VGGSound label file
    rows = [("abc", 30, "dog", "train"), ("def", 0, "cat", "test"), ("ghi", 10, "dog", "test")]
    with open(root / "vgg.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    (root / "clips.txt").write_text("ghi_10\nabc_30\ndef_000000\n")
    run("examples", "make", "vggsound", "--csv", root / "vgg.csv", "--clips",
        root / "clips.txt", "-o", root / "vgg")
    found["dataset"].append(json.loads((root / "vgg" / "vggsound.json").read_text()))
    # a multi-view set converted from a MATLAB file laid out as the published one
    import scipy.io

    from cmkd_doctor.examples.datasets import DATASETS
    from cmkd_doctor.examples.downloads import files

    mat = root / "data" / files("leaves100")[0].path
    mat.parent.mkdir(parents=True)
    cells = np.empty((1, 3), dtype=object)
    cells[0, :] = [np.ones((4, 2)), np.zeros((4, 3)), np.ones((4, 1))]
    scipy.io.savemat(mat, {"X": cells, "Y": np.array([[1], [2], [1], [2]], dtype=np.uint8)})
    DATASETS["leaves100"].convert(root / "data")
    found["multiview"].append(json.loads(
        (root / "data" / "multiview" / "leaves100" / "multiview.json").read_text()))
    # extracted features, from a one-node ONNX model
    import onnx

    onnx.save(_relu_model(4), str(root / "m.onnx"))
    np.save(root / "x.npy", np.arange(8, dtype=np.float32).reshape(2, 4))
    run("extract", "--onnx", root / "m.onnx", "--layer", "feat", "--array", root / "x.npy",
        "--pool", "flatten", "-o", root / "f.npy")
    found["features"].append(json.loads((root / "f.json").read_text()))
    # a whole network masked at a layer as wide as the ranking (50 channels of a)
    onnx.save(_relu_model(50), str(root / "wide.onnx"))
    run("derive-teacher", "--run", out, "--model", root / "wide.onnx", "--layer", "feat",
        "--export-onnx", root / "masked.onnx", "--json", schema_name="network")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_every_document_validates_against_its_schema(outputs, name):
    assert outputs[name], f"no {name} document was produced"
    for document in outputs[name]:
        _valid(document, name)


def test_a_document_that_breaks_the_contract_fails_validation(outputs):
    """The check can fail: a wrong type, a missing field and a foreign version."""
    rank = outputs["rank"][0]
    broken = {**rank, "gamma_estimate": {**rank["gamma_estimate"], "value": "high"}}
    with pytest.raises(jsonschema.ValidationError):
        _valid(broken, "rank")
    missing = {k: v for k, v in outputs["comparison"][0].items() if k != "verdict"}
    with pytest.raises(jsonschema.ValidationError):
        _valid(missing, "comparison")
    with pytest.raises(jsonschema.ValidationError):
        validator_for(schema("teacher")).validate({**outputs["teacher"][0],
                                                   "schema_version": 0})


def test_the_package_is_typed():
    assert (Path(__file__).parents[1] / "cmkd_doctor" / "py.typed").is_file()
