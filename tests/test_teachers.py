"""Teachers: masks, fills, sources, files, ONNX in and out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmkd_doctor.errors import InputError
from cmkd_doctor.teachers.masks import (
    Teacher,
    TeacherSpec,
    export_onnx,
    fill_values,
    load_teacher,
    n_nullified,
    nullified_channels,
    save_teacher,
)
from cmkd_doctor.training.mlp import Net, NetConfig

SALIENCE = np.array([0.9, 0.1, 0.5, 1.0, 0.0, 0.3, 0.7, 0.2, 0.6, 0.4], dtype=np.float32)


@pytest.mark.parametrize("ratio,k", [(0.1, 1), (0.25, 3), (0.5, 5), (0.74, 7), (0.9, 9)])
def test_masks_nullify_exactly_round_r_d_channels_of_the_right_kind(ratio, k):
    order = np.argsort(SALIENCE)  # least salient first
    general = nullified_channels(SALIENCE, "general", ratio)
    specific = nullified_channels(SALIENCE, "specific", ratio)
    random = nullified_channels(SALIENCE, "random", ratio, seed=3)
    assert len(general) == len(specific) == len(random) == k == n_nullified(ratio, 10)
    assert set(general) == set(order[:k])  # the smallest salience values
    assert set(specific) == set(order[::-1][:k])  # the largest
    assert len(set(random)) == k
    assert np.array_equal(random, nullified_channels(SALIENCE, "random", ratio, seed=3))
    assert len(nullified_channels(SALIENCE, "regular", ratio)) == 0


def test_random_masks_depend_on_the_seed():
    draws = {tuple(nullified_channels(SALIENCE, "random", 0.5, seed=s)) for s in range(6)}
    assert len(draws) > 1


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2, 0.01, 0.99])
def test_ratios_that_nullify_nothing_or_everything_are_rejected(ratio):
    with pytest.raises(InputError, match="--ratio must be"):
        nullified_channels(SALIENCE, "general", ratio)


def test_fill_values_and_the_mask_in_front_of_the_network():
    x = torch.tensor([[1.0, 10.0, 5.0], [3.0, 30.0, 7.0]])
    assert fill_values(x, "mean").tolist() == [2.0, 20.0, 6.0]
    assert fill_values(x, "zero").tolist() == [0.0, 0.0, 0.0]
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, z):
            seen.append(z.clone())
            return z[:, :2]

    keep = torch.tensor([True, False, True])
    Teacher(Spy(), keep, fill_values(x, "mean"))(x)
    assert seen[0].tolist() == [[1.0, 20.0, 5.0], [3.0, 20.0, 7.0]]


def test_teacher_files_round_trip(tmp_path):
    torch.manual_seed(0)
    net = Net(NetConfig(4, (8,), 3)).eval()
    keep = torch.tensor([True, False, True, True])
    teacher = Teacher(net, keep, torch.tensor([0.0, 2.5, 0.0, 0.0]))
    path = save_teacher(teacher, tmp_path / "t.safetensors", {"spec": {"mode": "general"}})
    loaded, meta = load_teacher(path)
    x = torch.randn(5, 4)
    assert torch.equal(loaded(x), teacher(x))
    assert json.loads((tmp_path / "t.json").read_text())["spec"]["mode"] == "general"


def test_exported_onnx_matches_torch_within_1e_4(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    net = Net(NetConfig(6, (16,), 4)).eval()
    net.set_standardisation(torch.randn(6), torch.rand(6) + 0.5)
    teacher = Teacher(net, torch.tensor([1, 0, 1, 1, 0, 1]).bool(), torch.randn(6))
    path = export_onnx(teacher, tmp_path / "t.onnx", 6)
    x = torch.randn(37, 6)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x.numpy()})[0]
    np.testing.assert_allclose(got, teacher(x).detach().numpy(), atol=1e-4)


def test_spec_names_and_normalisation():
    assert TeacherSpec("general", 0.5).checked().name == "general-r0.5"
    assert TeacherSpec("regular", 0.3, fill="zero").checked().name == "regular"
    assert TeacherSpec("random", 0.25, seed=4).checked().name == "random-r0.25-s4"
    assert TeacherSpec("specific", 0.5, source="aligned", seed=9).checked().seed == 0
    assert TeacherSpec("general", 0.5, refit=True, fill="zero").checked().name == (
        "general-r0.5-refit-zero")


def test_exported_onnx_ignores_a_constant_channel_like_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from cmkd_doctor.training.mlp import standardisation

    torch.manual_seed(2)
    net = Net(NetConfig(5, (8,), 3)).eval()
    constant = torch.tensor([False, True, False, False, False])
    net.set_standardisation(*standardisation(torch.randn(5), torch.rand(5) + 0.5, constant))
    teacher = Teacher(net, torch.ones(5, dtype=torch.bool), torch.zeros(5))
    path = export_onnx(teacher, tmp_path / "t.onnx", 5)
    x = torch.randn(20, 5)
    x[:, 1] = torch.linspace(-1e3, 1e3, 20)  # the constant channel moves on new rows
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x.numpy()})[0]
    expected = teacher(x).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    still = x.clone()
    still[:, 1] = 0.0
    np.testing.assert_allclose(teacher(still).detach().numpy(), expected, atol=1e-6)
