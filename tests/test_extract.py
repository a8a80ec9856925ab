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
    from cmkd_doctor.extract import load_images

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
