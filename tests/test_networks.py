"""A whole ONNX teacher masked at the layer the ranking was taken from: with nothing
nullified it computes what it did; with channels nullified it equals the network run with
that layer's output masked by hand (a forward hook); extract at the layer gives the
masked features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra")

from cmkd_doctor.errors import InputError  # noqa: E402
from cmkd_doctor.networks import mask_onnx_layer  # noqa: E402


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))  # the layer ranked: 6 channels of 8 x 8
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), input_names=["image"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("n")},),
                      dynamo=True, verbose=False).save(str(path))
    loaded = onnx.load(path)
    relus = [node.output[0] for node in loaded.graph.node if node.op_type == "Relu"]
    return model, loaded, relus[1]


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _by_hand(model: SmallCNN, x: np.ndarray, keep: np.ndarray, fill: np.ndarray):
    """The network with conv2's ReLU output masked by a forward pass written out here."""
    with torch.no_grad():
        h = torch.relu(model.conv2(torch.relu(model.conv1(torch.from_numpy(x)))))
        k = torch.from_numpy(keep.astype(np.float32))[None, :, None, None]
        f = torch.from_numpy(fill)[None, :, None, None]
        h = h * k + (1 - k) * f
        return h.numpy(), model.head(h.mean((2, 3))).numpy()


def test_nothing_nullified_computes_what_the_teacher_did(teacher):
    model, loaded, layer = teacher
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    masked = mask_onnx_layer(loaded, layer, np.ones(6, bool), np.full(6, 7.0, np.float32))
    np.testing.assert_allclose(_run(masked, x), _run(loaded, x), rtol=0, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(_run(masked, x), model(torch.from_numpy(x)).numpy(),
                                   atol=1e-5)


def test_nullified_channels_equal_the_network_masked_by_hand(teacher, tmp_path):
    from cmkd_doctor.extract import ExtractOptions, _onnx

    model, loaded, layer = teacher
    x = np.random.default_rng(2).standard_normal((5, 1, 8, 8)).astype(np.float32)
    keep = np.array([True, False, True, False, False, True])
    fill = np.array([0.0, 0.25, 0.0, -1.5, 3.0, 0.0], np.float32)
    masked = mask_onnx_layer(loaded, layer, keep, fill)
    features, logits = _by_hand(model, x, keep, fill)
    np.testing.assert_allclose(_run(masked, x), logits, atol=1e-5)
    assert not np.allclose(_run(loaded, x), logits, atol=1e-3)  # the mask changes them
    # extract at the same layer of the masked teacher reads the masked features
    path = tmp_path / "masked.onnx"
    onnx.save(masked, path)
    read = _onnx(ExtractOptions(layer=layer, onnx=str(path)))
    np.testing.assert_allclose(read(torch.from_numpy(x)).numpy(), features, atol=1e-5)
    assert np.allclose(features[:, 1], 0.25) and np.allclose(features[:, 4], 3.0)


def test_a_mask_that_does_not_fit_the_layer_is_refused(teacher):
    _, loaded, layer = teacher
    with pytest.raises(InputError, match="6 channels on axis 1, but the ranking has 4"):
        mask_onnx_layer(loaded, layer, np.ones(4, bool), np.zeros(4, np.float32))
    with pytest.raises(InputError, match="--layer must be a tensor some node"):
        mask_onnx_layer(loaded, "no_such_tensor", np.ones(6, bool), np.zeros(6, np.float32))
    with pytest.raises(InputError, match="--channel-axis"):
        mask_onnx_layer(loaded, layer, np.ones(6, bool), np.zeros(6, np.float32),
                        channel_axis=4)


def test_derive_teacher_model_masks_the_whole_network_from_a_ranking(teacher, tmp_path, cli):
    """extract -> rank -> derive-teacher --model: the masked network is the teacher masked
    by hand with the ranking's mask and the ranked features' training-row means."""
    import json

    from cmkd_doctor.extract import ExtractOptions, _onnx

    model, loaded, layer = teacher
    onnx.save(loaded, tmp_path / "teacher.onnx")
    rng = np.random.default_rng(3)
    images = rng.standard_normal((240, 1, 8, 8)).astype(np.float32)
    read = _onnx(ExtractOptions(layer=layer, onnx=str(tmp_path / "teacher.onnx")))
    feats_a = read(torch.from_numpy(images)).numpy().mean((2, 3))  # avg-pooled, (n, 6)
    labels = (feats_a[:, 0] + feats_a[:, 2] > np.median(feats_a[:, 0] + feats_a[:, 2]))
    feats_b = feats_a[:, [0, 2, 4]] + 0.3 * rng.standard_normal((240, 3))
    for name, array in (("a", feats_a), ("b", feats_b), ("y", labels.astype(np.int64))):
        np.save(tmp_path / f"{name}.npy", array.astype(np.float32 if name != "y" else np.int64))
    run = tmp_path / "run"
    assert cli("rank", tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy",
               "--hidden", "0", "-M", "3", "-q", "--out", run).code == 0
    found = cli("derive-teacher", "--run", run, "--model", tmp_path / "teacher.onnx",
                "--layer", layer, "--mode", "general", "--ratio", "0.5", "--export-onnx",
                tmp_path / "masked.onnx", "--json")
    assert found.code == 0, found.err
    doc = json.loads(found.out)
    assert doc["schema"] == "network" and len(doc["nullified"]) == 3
    keep = np.array(doc["mask"], dtype=bool)
    train = np.load(run / "split.npz")["train"]
    np.testing.assert_allclose(doc["fill_values"], feats_a[train].mean(0), rtol=1e-5)
    _, logits = _by_hand(model, images[:7], keep, np.array(doc["fill_values"], np.float32))
    np.testing.assert_allclose(_run(onnx.load(tmp_path / "masked.onnx"), images[:7]), logits,
                               atol=1e-5)
    # the pieces that must go together, and a ranking of another width
    alone = cli("derive-teacher", "--run", run, "--model", tmp_path / "teacher.onnx")
    assert alone.code == 2 and "--model, --layer and --export-onnx go together" in alone.err
    np.save(tmp_path / "wide.npy", np.repeat(feats_a, 2, axis=1))
    assert cli("rank", tmp_path / "wide.npy", tmp_path / "b.npy", tmp_path / "y.npy",
               "--hidden", "0", "-M", "2", "-q", "--out", tmp_path / "wide").code == 0
    wide = cli("derive-teacher", "--run", tmp_path / "wide", "--model",
               tmp_path / "teacher.onnx", "--layer", layer, "--export-onnx",
               tmp_path / "no.onnx")
    assert wide.code == 2 and "6 channels on axis 1, but the ranking has 12" in wide.err
    assert not (tmp_path / "no.onnx").exists()
