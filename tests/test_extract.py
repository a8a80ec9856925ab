"""extract: middle-layer features of a torchvision backbone or a user's ONNX model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

tv = pytest.importorskip("torchvision")


@pytest.fixture
def resnet(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def _images(folder, n=5, size=40):
    from torchvision.io import write_png

    folder.mkdir()
    torch.manual_seed(1)
    for i in range(n):
        write_png(torch.randint(0, 255, (3, size, size + 8), dtype=torch.uint8),
                  str(folder / f"img{i}.png"))


def test_backbone_features_at_a_named_layer_match_the_model(tmp_path, cli, resnet):
    model, weights = resnet
    _images(tmp_path / "imgs")
    out = tmp_path / "feats.npy"
    result = cli("extract", "--backbone", "resnet18", "--weights", weights, "--layer", "layer3",
                 "--images", tmp_path / "imgs", "--size", "64", "--device", "cpu", "-o", out)
    assert result.code == 0, result.err
    features = np.load(out)
    assert features.shape == (5, 256)  # layer3 of a ResNet-18 has 256 channels
    from cmkd_doctor.teachers.extraction import load_images

    x = load_images(sorted((tmp_path / "imgs").glob("*.png")), 64)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer3(model.layer2(model.layer1(h)))
    np.testing.assert_allclose(features, h.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert rows == [f"img{i}.png" for i in range(5)]


def test_onnx_features_at_a_named_tensor(tmp_path, cli):
    pytest.importorskip("onnxscript")
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(6, 4, 3)).eval()
    x = torch.randn(7, 3, 12, 12)
    program = torch.onnx.export(net, (x[:2],), input_names=["x"], output_names=["y"],
                                dynamic_shapes=({0: torch.export.Dim("n")},), dynamo=True,
                                verbose=False)
    path = tmp_path / "net.onnx"
    program.save(str(path))
    import onnx

    relu = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Relu")
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "mid.npy"
    result = cli("extract", "--onnx", path, "--layer", relu, "--array", tmp_path / "x.npy",
                 "--batch-size", "3", "-o", out)
    assert result.code == 0, result.err
    with torch.no_grad():
        expected = net[1](net[0](x)).mean((2, 3)).numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-5)


def test_extract_errors(tmp_path, cli, resnet):
    _, weights = resnet
    _images(tmp_path / "imgs", n=1)
    base = ["extract", "--images", tmp_path / "imgs", "-o", tmp_path / "f.npy"]
    cases = [
        ([*base, "--layer", "layer3"], "needs --backbone NAME (with --weights) or --onnx"),
        ([*base, "--layer", "layer3", "--backbone", "resnet18"], "never downloads weights"),
        ([*base, "--layer", "layer9", "--backbone", "resnet18", "--weights", weights],
         "--layer must be a node of resnet18"),
        ([*base, "--layer", "x", "--backbone", "resnet99", "--weights", weights],
         "--backbone must be a torchvision architecture"),
        ([*base, "--layer", "x", "--backbone", "vgg11", "--weights", weights],
         "not a vgg11 state dict"),
        (["extract", "--images", tmp_path / "none", "-o", tmp_path / "f.npy", "--layer", "x",
          "--backbone", "resnet18", "--weights", weights], "--images"),
    ]
    for args, pattern in cases:
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert pattern in result.err, result.err
    assert not (tmp_path / "f.npy").exists()


def test_uint8_image_arrays_are_normalised_like_image_files(tmp_path, cli, resnet):
    from torchvision.io import write_png

    _, weights = resnet
    torch.manual_seed(3)
    pictures = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    (tmp_path / "imgs").mkdir()
    for i, picture in enumerate(pictures):
        write_png(picture, str(tmp_path / "imgs" / f"p{i}.png"))
    np.save(tmp_path / "pictures.npy", pictures.numpy())
    common = ["--backbone", "resnet18", "--weights", weights, "--layer", "layer2", "--size",
              "32", "--device", "cpu"]
    assert cli("extract", *common, "--images", tmp_path / "imgs", "-o", tmp_path / "a.npy"
               ).code == 0
    assert cli("extract", *common, "--array", tmp_path / "pictures.npy", "-o",
               tmp_path / "b.npy").code == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_corrupt_image_is_one_error_line_even_from_libpng(tmp_path, resnet):
    import subprocess
    import sys
    from pathlib import Path

    _, weights = resnet
    _images(tmp_path / "imgs", n=2)
    good = (tmp_path / "imgs" / "img0.png").read_bytes()
    (tmp_path / "imgs" / "img1.png").write_bytes(good[:60] + b"\0" * 200)  # a broken chunk
    done = subprocess.run(
        [sys.executable, "-m", "cmkd_doctor", "extract", "--backbone", "resnet18", "--weights",
         str(weights), "--layer", "layer3", "--images", str(tmp_path / "imgs"), "--size", "32",
         "--device", "cpu", "-o", str(tmp_path / "f.npy")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "img1.png" in lines[0]
    assert not (tmp_path / "f.npy").exists()


def test_features_that_are_not_finite_are_refused(tmp_path, cli):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # a model whose "feature" tensor is log(x): NaN for negative inputs
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["feat"]), helper.make_node("Identity", ["feat"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "log.onnx"))
    np.save(tmp_path / "x.npy", np.array([[1, 2, 3, 4], [-1, 2, 3, 4]], dtype=np.float32))
    result = cli("extract", "--onnx", tmp_path / "log.onnx", "--layer", "feat", "--array",
                 tmp_path / "x.npy", "--pool", "flatten", "-o", tmp_path / "f.npy")
    assert result.code == 2, result.err
    assert "NaN or Inf" in result.err and "(the first: 1)" in result.err
    assert not (tmp_path / "f.npy").exists()
