"""A whole teacher (ONNX, a torch.export program, an architecture by name with its
weights) masked at the layer the ranking was taken from: with nothing nullified it
computes what it did; with channels nullified it equals the network run with that layer's
output masked by hand (written out in this file); extract at the layer gives the masked
features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra")

from cmkd_doctor.errors import InputError  # noqa: E402
from cmkd_doctor.teachers.whole_networks import mask_onnx_layer  # noqa: E402


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
    from cmkd_doctor.teachers.extraction import ExtractOptions, _onnx

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

    from cmkd_doctor.teachers.extraction import ExtractOptions, _onnx

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
    assert alone.code == 2
    assert "--model, --layer and --export-onnx (or --export-pt2) go" in alone.err
    np.save(tmp_path / "wide.npy", np.repeat(feats_a, 2, axis=1))
    assert cli("rank", tmp_path / "wide.npy", tmp_path / "b.npy", tmp_path / "y.npy",
               "--hidden", "0", "-M", "2", "-q", "--out", tmp_path / "wide").code == 0
    wide = cli("derive-teacher", "--run", tmp_path / "wide", "--model",
               tmp_path / "teacher.onnx", "--layer", layer, "--export-onnx",
               tmp_path / "no.onnx")
    assert wide.code == 2 and "6 channels on axis 1, but the ranking has 12" in wide.err
    assert not (tmp_path / "no.onnx").exists()


def _rank_layer(cli, tmp_path, feats_a: np.ndarray, name: str = "run"):
    """A ranking of ``feats_a`` (the layer's pooled features) against a noisy view of some
    of its channels, with labels both carry."""
    rng = np.random.default_rng(3)
    n, d = feats_a.shape
    score = feats_a[:, 0] + feats_a[:, 2]
    labels = (score > np.median(score)).astype(np.int64)
    feats_b = feats_a[:, : max(3, d // 2)] + 0.3 * rng.standard_normal((n, max(3, d // 2)))
    np.save(tmp_path / "a.npy", feats_a.astype(np.float32))
    np.save(tmp_path / "b.npy", feats_b.astype(np.float32))
    np.save(tmp_path / "y.npy", labels)
    run = tmp_path / name
    assert cli("rank", tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy",
               "--hidden", "0", "-M", "2", "--epochs", "3", "-q", "--out", run).code == 0
    return run


def _pooled(features: np.ndarray) -> np.ndarray:
    return features.reshape(*features.shape[:2], -1).mean(-1)


def test_a_torch_export_program_masked_at_a_node_round_trips(teacher, tmp_path, cli):
    """derive-teacher --model TEACHER.pt2 --layer NODE writes the masked network as .pt2
    and ONNX: both equal the teacher masked by hand, and extract at NODE reads the masked
    features from each."""
    import json

    from cmkd_doctor.teachers import whole_networks as networks

    model, loaded, _ = teacher
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, tmp_path / "teacher.pt2")
    images = np.random.default_rng(4).standard_normal((200, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "raw.npy", images)
    # the node is the second ReLU (conv2's, 6 channels); extract reads it from the .pt2
    assert cli("extract", "--model", tmp_path / "teacher.pt2", "--layer", "relu_1",
               "--array", tmp_path / "raw.npy", "--out", tmp_path / "f.npy").code == 0
    feats = np.load(tmp_path / "f.npy")
    np.testing.assert_allclose(feats, _pooled(_by_hand(model, images, np.ones(6, bool),
                                                       np.zeros(6, np.float32))[0]),
                               atol=1e-5)
    # nothing nullified: the masked program computes what the teacher did
    kind, module, recorded = networks.load_network(tmp_path / "teacher.pt2")
    same = networks._masked_torch(module, kind, "relu_1", np.ones(6, bool),
                                  np.full(6, 5.0, np.float32), 1, torch.zeros(2, 1, 8, 8),
                                  recorded)
    x = torch.from_numpy(images[:9])
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x), rtol=0, atol=1e-6)
    run = _rank_layer(cli, tmp_path, feats)
    found = cli("derive-teacher", "--run", run, "--model", tmp_path / "teacher.pt2",
                "--layer", "relu_1", "--ratio", "0.5", "--export-pt2",
                tmp_path / "masked.pt2", "--export-onnx", tmp_path / "masked.onnx", "--json")
    assert found.code == 0, found.err
    doc = json.loads(found.out)
    assert doc["format"] == "program" and len(doc["nullified"]) == 3
    keep = np.array(doc["mask"], bool)
    fill = np.array(doc["fill_values"], np.float32)
    masked_features, logits = _by_hand(model, images[:9], keep, fill)
    masked = torch.export.load(tmp_path / "masked.pt2").module()
    with torch.no_grad():
        np.testing.assert_allclose(masked(x).numpy(), logits, atol=1e-5)
    np.testing.assert_allclose(_run(onnx.load(tmp_path / "masked.onnx"), images[:9]), logits,
                               atol=1e-5)
    assert not np.allclose(logits, model(x).detach().numpy(), atol=1e-3)
    for saved in ("masked.pt2", "masked.onnx"):
        out = tmp_path / f"{saved}.npy"
        assert cli("extract", "--model", tmp_path / saved, "--layer", "relu_1", "--pool",
                   "flatten", "--array", tmp_path / "raw.npy", "--out", out).code == 0
        np.testing.assert_allclose(np.load(out)[:9], masked_features.reshape(9, -1),
                                   atol=1e-5, err_msg=saved)


@pytest.mark.slow
def test_an_architecture_by_name_masked_at_a_module_round_trips(tmp_path, cli):
    """derive-teacher --model resnet18 --weights W --layer layer3: a forward hook on the
    module; the .pt2 and ONNX written equal resnet18 with layer3's output masked by hand
    (a hook written here), with nothing nullified they equal resnet18, and extract at
    layer3 reads masked features from both."""
    import json

    import torchvision as tv
    from safetensors.torch import save_file

    from cmkd_doctor.teachers import whole_networks as networks

    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None, num_classes=4).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    images = np.random.default_rng(5).standard_normal((160, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "raw.npy", images)
    assert cli("extract", "--model", "resnet18", "--weights", tmp_path / "w.safetensors",
               "--layer", "layer3", "--array", tmp_path / "raw.npy", "--out",
               tmp_path / "f.npy").code == 0
    feats = np.load(tmp_path / "f.npy")
    assert feats.shape == (160, 256)
    x = torch.from_numpy(images[:6])
    kind, loaded, _ = networks.load_network("resnet18", tmp_path / "w.safetensors")
    same = networks._masked_torch(loaded, kind, "layer3", np.ones(256, bool),
                                  np.full(256, 2.0, np.float32), 1, x, {})
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x), rtol=0, atol=1e-6)
    run = _rank_layer(cli, tmp_path, feats)
    found = cli("derive-teacher", "--run", run, "--model", "resnet18", "--weights",
                tmp_path / "w.safetensors", "--layer", "layer3", "--input-shape", "3,32,32",
                "--mode", "specific", "--ratio", "0.25", "--export-pt2",
                tmp_path / "masked.pt2", "--export-onnx", tmp_path / "masked.onnx", "--json")
    assert found.code == 0, found.err
    doc = json.loads(found.out)
    keep = torch.tensor(doc["mask"], dtype=torch.float32)[None, :, None, None]
    fill = torch.tensor(doc["fill_values"])[None, :, None, None]
    # a quarter of the informative channels, and any channel constant on the rows
    assert doc["format"] == "architecture"
    assert int((keep == 0).sum()) == len(doc["nullified"]) >= 64

    seen = {}

    def by_hand(_module, _args, out):
        seen["features"] = out * keep + (1 - keep) * fill
        return seen["features"]

    handle = model.layer3.register_forward_hook(by_hand)
    with torch.no_grad():
        logits = model(x).numpy()
    handle.remove()
    with torch.no_grad():
        np.testing.assert_allclose(torch.export.load(tmp_path / "masked.pt2").module()(x),
                                   logits, atol=1e-4)
        assert not np.allclose(model(x).numpy(), logits, atol=1e-3)
    np.testing.assert_allclose(_run(onnx.load(tmp_path / "masked.onnx"), images[:6]), logits,
                               atol=1e-4)
    for saved in ("masked.pt2", "masked.onnx"):
        out = tmp_path / f"{saved}.npy"
        assert cli("extract", "--model", tmp_path / saved, "--layer", "layer3", "--array",
                   tmp_path / "raw.npy", "--out", out).code == 0, saved
        np.testing.assert_allclose(np.load(out)[:6], _pooled(seen["features"].numpy()),
                                   atol=1e-4, err_msg=saved)


def test_torch_teachers_are_refused_clearly(teacher, tmp_path, cli):
    model, _, _ = teacher
    images = np.random.default_rng(6).standard_normal((120, 1, 8, 8)).astype(np.float32)
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, tmp_path / "teacher.pt2")
    feats = _pooled(_by_hand(model, images, np.ones(6, bool), np.zeros(6, np.float32))[0])
    run = _rank_layer(cli, tmp_path, feats)
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    base = ["derive-teacher", "--run", run, "--export-pt2", tmp_path / "out.pt2"]
    cases = [
        (["--model", tmp_path / "junk.pt2", "--layer", "relu_1"],
         "cannot be read as a torch.export program"),
        (["--model", tmp_path / "teacher.pt2", "--layer", "conv1"],
         "4 channels on axis 1, but the ranking has 6"),
        (["--model", tmp_path / "teacher.pt2", "--layer", "nowhere"],
         "--layer must be a node or module of the program"),
        (["--model", "resnet18", "--layer", "layer3"], "never downloads weights"),
        (["--model", "resnet99", "--weights", tmp_path / "junk.pt2", "--layer", "x"],
         "cannot be read as .safetensors"),
        (["--model", tmp_path / "teacher.pt2", "--layer", "relu_1", "--export-pt2",
          tmp_path / "out.onnx"], "is written as .pt2"),
    ]
    for args, message in cases:
        result = cli(*base, *args)
        assert result.code == 2 and message in result.err, (args, result.err)
    assert not (tmp_path / "out.pt2").exists()


def test_a_module_that_runs_twice_is_refused_as_the_layer_to_mask():
    """A forward hook would mask every call of a shared module (a ResNet block's ReLU):
    refused, naming the count, rather than masking two places."""
    from cmkd_doctor.teachers import whole_networks as networks

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.act = (torch.nn.Linear(4, 4), torch.nn.Linear(4, 4),
                                            torch.nn.ReLU())
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.act(self.fc2(self.act(self.fc1(x)))))

    with pytest.raises(InputError, match="runs 2 times in one forward pass"):
        networks._masked_torch(Shared(), "architecture", "act", np.ones(4, bool),
                               np.zeros(4, np.float32), 1, torch.zeros(2, 4), {})
    masked = networks._masked_torch(Shared(), "architecture", "fc2", np.ones(4, bool),
                                    np.zeros(4, np.float32), 1, torch.zeros(2, 4), {})
    assert masked(torch.zeros(3, 4)).shape == (3, 2)


def test_a_network_torch_export_cannot_export_is_one_error_line():
    """Data-dependent control flow defeats torch.export: one error naming the option."""
    from cmkd_doctor.teachers import whole_networks as networks

    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(InputError, match="--model m: torch.export cannot export the masked"):
        networks._exported(lambda: networks._export(Branchy(), torch.ones(2, 3)),
                           "--model m", "torch.export")


@pytest.mark.slow
def test_a_file_that_is_not_a_program_is_one_error_line_in_a_fresh_process(tmp_path):
    """torch.export logs a traceback before it raises on a bad file: the user sees only
    the one error line."""
    import subprocess
    import sys

    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    done = subprocess.run(
        [sys.executable, "-m", "cmkd_doctor", "extract", "--model", str(tmp_path / "junk.pt2"),
         "--layer", "x", "--array", str(tmp_path / "x.npy"), "-o", str(tmp_path / "f.npy")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --model {tmp_path / 'junk.pt2'}: cannot be read as a torch.export program "
        "(not a zip archive)"]


class _AudioNet(torch.nn.Module):
    """A network on spectrograms alone: its ReLU's output is their features."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(64, 12)
        self.head = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.flatten(1))))


def _section(page: str) -> tuple[str, list[str]]:
    """The "Your own networks" page's export calls (Python) and commands (shell)."""
    part = page.split("# Your own networks", 1)[1].split("\n## ", 1)[0]
    python = part.split("```python\n", 1)[1].split("```", 1)[0]
    shell = part.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [c.strip() for c in shell.replace("\\\n", " ").splitlines()
                if c.strip() and not c.startswith("#")]
    return python, commands


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_the_readme_own_networks_section_runs_on_a_default_export(kind, tmp_path):
    """A teacher exported the default way (a fixed batch of 2), as ONNX and as a .pt2,
    through extract --list-layers, extract, rank, derive-teacher --model and distill
    --model: the docs' "Your own networks" page as printed (the .pt2 in place of the .onnx)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    python, commands = _section((Path(__file__).resolve().parents[1] / "docs" /
                                 "own-networks.md").read_text())
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    pattern = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    images = pattern[y] + 0.5 * rng.standard_normal((150, 1, 8, 8)).astype(np.float32)
    spectrograms = pattern[y, 0] + rng.standard_normal((150, 8, 8)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "spectrograms.npy", spectrograms)
    np.save(tmp_path / "labels.npy", y)
    torch.manual_seed(0)
    model, audio = SmallCNN(), _AudioNet()  # the teacher's ReLUs: relu and relu_1
    for net, x in ((model, torch.tensor(images)), (audio, torch.tensor(spectrograms))):
        optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(30):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), torch.tensor(y)).backward()
            optimizer.step()
    audio.eval()
    torch.export.save(torch.export.export(audio, (torch.tensor(spectrograms[:2]),)),
                      tmp_path / "audio_net.pt2")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # the README's export calls, as printed
        exec(python, {"model": model, "x": torch.tensor(images)})  # noqa: S102
    finally:
        os.chdir(cwd)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    said = []
    for command in commands:
        if kind == "pt2":
            command = command.replace("teacher.onnx", "teacher.pt2")
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        said.append(done.stdout)
    assert "relu_1" in said[0] and "2 x 6 x 8 x 8" in said[0]  # --list-layers
    assert np.load(tmp_path / "feats_a.npy").shape == (150, 6)
    record = json.loads((tmp_path / "teacher-general.json").read_text())
    assert record["layer"] == "relu_1" and len(record["nullified"]) >= 3  # and dead units
    assert record["rank"]["run_id"] == json.loads((tmp_path / "run" / "rank.json")
                                                  .read_text())["run_id"]
    props = {p.key: p.value for p in onnx.load(tmp_path / "teacher-general.onnx")
             .metadata_props}
    assert json.loads(props["cmkd_doctor.record"])["nullified"] == record["nullified"]
    from cmkd_doctor.diagnosis.advice import command_line, derive_args
    from cmkd_doctor.diagnosis.comparison import Row
    from cmkd_doctor.io.rundir import last_call

    rows, _ = last_call(json.loads((tmp_path / "run" / "distill.json").read_text()))
    assert {r["label"] for r in rows} == {"No-KD", "Regular-KD", "Control", "general r=0.5",
                                          "specific r=0.5", "random r=0.5"}
    # the command the advice prints to export a chosen whole-network teacher, run as
    # printed from another folder
    general = next(r for r in rows if r["teacher"] == "general")
    row = Row("general", 0.5, general["label"], "accuracy", None, general["student_runs"],
              general["teacher_file"])
    hidden = json.loads((tmp_path / "run" / "rank.json").read_text())["options"]["hidden"]
    command = command_line(derive_args(tmp_path / "run", row, general["options"], hidden))
    (tmp_path / "elsewhere").mkdir()
    done = subprocess.run(command, shell=True, cwd=tmp_path / "elsewhere", env=env,
                          text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, (command, done.stderr[-2000:])
    exported = tmp_path / "run" / "teachers" / f"general-r0.5-network.{kind}"
    assert exported.is_file() and f"--model {tmp_path / f'teacher.{kind}'}" in command
