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
