"""distill --student: students that are networks on raw modality-b rows, taught by
feature-level teachers or by the user's whole teacher network (masked after the ranked
layer) run on raw modality-a rows."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from test_networks import SmallCNN  # tests/ is on the path

from cmkd_doctor.training.student_networks import Architecture, StackedNetworks


def test_stacked_members_compute_what_each_network_does_with_and_without_vmap():
    arch = Architecture("cnn3", (12, 12), 3).checked()
    nets = [arch.new(seed) for seed in range(3)]
    x = torch.randn(5, 144)
    stacked = StackedNetworks(nets)
    alone = torch.stack([net(x) for net in nets])
    for vmap in (False, True):
        stacked.vmap = vmap
        torch.testing.assert_close(stacked(x), alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(stacked.unstack(1)(x), nets[1](x), rtol=0, atol=0)


def test_a_member_trains_the_same_alone_or_in_a_stack(tmp_path):
    """Each member's weights, gradient and early stopping are its own: the student of
    seed 7 is the same network whether two other seeds train beside it or not."""
    from cmkd_doctor.training.stacked import Member, Rows, TrainOptions, train_classifiers

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 10, 10)).astype(np.float32)
    x[:, 2:5, :] += y[:, None, None]
    rows = Rows(x.reshape(300, -1), y, np.arange(200), np.arange(200, 240),
                np.arange(240, 300), 3, False, torch.device("cpu"))
    arch = Architecture("cnn3", (10, 10), 3)
    options = TrainOptions(epochs=4, batch_size=32, patience=2)
    alone = train_classifiers(rows, [Member(7)], options, architecture=arch)[0]
    stacked = train_classifiers(rows, [Member(3), Member(7), Member(9)], options,
                                architecture=arch)[1]
    probe = torch.from_numpy(x[240:].reshape(60, -1))
    with torch.no_grad():
        torch.testing.assert_close(stacked(probe), alone(probe), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """Raw images (modality a) and spectrogram-like maps (modality b) of 3 classes, a
    small CNN teacher trained on the images and exported as a program, the features of
    its second ReLU (pooled) and a ranking of them against b."""
    from typer.testing import CliRunner

    from cmkd_doctor.cli import app

    folder = tmp_path_factory.mktemp("paired")
    rng = np.random.default_rng(0)
    n = 480
    y = rng.integers(0, 3, n)
    images = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    images[:, 0, 2:5, 2:5] += y[:, None, None]
    maps = rng.standard_normal((n, 12, 12)).astype(np.float32)
    maps[:, 3:6, :] += 0.8 * y[:, None, None]
    torch.manual_seed(0)
    teacher = SmallCNN()
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    xs, ys = torch.from_numpy(images), torch.from_numpy(y)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(teacher(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    program = torch.export.export(teacher, (xs[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, folder / "teacher.pt2")
    with torch.no_grad():
        pooled = torch.relu(teacher.conv2(torch.relu(teacher.conv1(xs)))).mean((2, 3))
    np.save(folder / "raw_a.npy", images)
    np.save(folder / "raw_b.npy", maps)
    np.save(folder / "y.npy", y)
    np.save(folder / "fa.npy", pooled.numpy())
    np.save(folder / "fb.npy", maps.reshape(n, -1)[:, 30:80])
    result = CliRunner().invoke(app, [
        "rank", str(folder / "fa.npy"), str(folder / "fb.npy"), str(folder / "y.npy"),
        "--hidden", "0", "-M", "2", "--epochs", "20", "-q", "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder, teacher


def _network_args(folder):
    return ["--student", "cnn3", "--student-inputs", folder / "raw_b.npy", "--model",
            folder / "teacher.pt2", "--layer", "relu_1", "--teacher-inputs",
            folder / "raw_a.npy"]


@pytest.mark.slow
def test_network_students_learn_from_the_whole_teacher_and_its_masks(paired, cli):
    folder, teacher = paired
    result = cli("distill", "--run", folder / "run", *_network_args(folder), "--seeds", "2",
                 "--epochs", "10", "--batch-size", "32", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    rows = {r["label"]: r for r in doc["results"]}
    assert list(rows) == ["No-KD", "Regular-KD", "Control", "general r=0.5", "specific r=0.5",
                          "random r=0.5"]
    assert doc["options"]["networks"]["student"] == "cnn3"
    # Regular-KD's teacher is the user's network as given: its test accuracy is the
    # network's own on the test rows of the raw images
    test = np.load(folder / "run" / "split.npz")["test"]
    images, y = np.load(folder / "raw_a.npy"), np.load(folder / "y.npy")
    with torch.no_grad():
        own = (teacher(torch.from_numpy(images[test])).argmax(1).numpy() == y[test]).mean()
    assert rows["Regular-KD"]["teacher_metric"] == pytest.approx(100 * own, abs=1e-6)
    # the students are networks that learnt the maps (chance is 33%)
    assert min(rows["No-KD"]["student_runs"]) > 60
    # a masked teacher is not the teacher: nullifying half the channels changes it
    assert rows["specific r=0.5"]["teacher_metric"] != rows["Regular-KD"]["teacher_metric"]


def test_network_students_can_learn_from_feature_level_teachers(paired, cli):
    folder, _ = paired
    result = cli("distill", "--run", folder / "run", "--student", "cnn3", "--student-inputs",
                 folder / "raw_b.npy", "--teacher", "general", "--seeds", "2", "--epochs",
                 "5", "--json")
    assert result.code == 0, result.err
    labels = [r["label"] for r in json.loads(result.out)["results"]]
    assert labels == ["No-KD", "Regular-KD", "Control", "general r=0.5"]


def test_network_distill_refuses_bad_input_before_training(paired, cli, tmp_path):
    folder, _ = paired
    np.save(tmp_path / "short.npy", np.zeros((10, 12, 12), np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((480, 144), np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((480, 1, 6, 6), np.float32))
    (tmp_path / "head.onnx").write_bytes(b"a feature-level head")
    run = folder / "run"
    base = ["distill", "--run", run, "--seeds", "2", "--epochs", "2"]
    student = ["--student", "cnn3", "--student-inputs", folder / "raw_b.npy"]
    teacher = ["--model", folder / "teacher.pt2", "--layer", "relu_1"]
    cases = [
        (["--student", "cnn3"], "--student and --student-inputs go together"),
        (["--student", "cnn3", "--student-inputs", tmp_path / "short.npy"],
         "10 rows, but the rank run has 480"),
        (["--student", "cnn3", "--student-inputs", tmp_path / "flat.npy"],
         "reads rows C x H x W or H x W"),
        (["--student", "lenet5", "--student-inputs", tmp_path / "wide.npy"],
         "lenet5 needs inputs of at least 12 x 12"),
        (["--student", "resnet99", "--student-inputs", folder / "raw_b.npy"],
         "--student must be one of lenet5, cnn3"),
        ([*student, *teacher], "--model needs --layer"),
        ([*student, *teacher, "--teacher-inputs", folder / "raw_b.npy"],
         "--model " + str(folder / "teacher.pt2") + " cannot read the rows of "
         "--teacher-inputs"),
        ([*student, *teacher, "--teacher-inputs", tmp_path / "wide.npy"],
         "cannot read the rows"),
        ([*student, "--model", folder / "teacher.pt2", "--layer", "conv1",
          "--teacher-inputs", folder / "raw_a.npy"],
         "4 channels on axis 1, but the ranking has 6"),
        ([*student, *teacher, "--teacher-inputs", folder / "raw_a.npy", "--teacher",
          tmp_path / "head.onnx"], "give teacher names, not checkpoints"),
    ]
    before = (run / "distill.json").read_bytes() if (run / "distill.json").exists() else None
    for args, message in cases:
        result = cli(*base, *args)
        assert result.code == 2 and message in result.err, (args, result.err)
        assert "Traceback" not in result.err
    after = (run / "distill.json").read_bytes() if (run / "distill.json").exists() else None
    assert after == before  # nothing recorded by a refused call


@pytest.mark.slow
def test_avmnist_networks_runs_end_to_end_and_compares_the_two_levels(tmp_path, cli):
    """examples reproduce avmnist-networks on a small folder shaped like the one
    'examples make avmnist' writes: the networks are trained, exported, extracted,
    ranked, masked and distilled, and the feature-level diagnose runs beside them."""
    rng = np.random.default_rng(0)
    n = 400
    y = np.repeat(np.arange(10), n // 10)
    image = rng.standard_normal((n, 28, 28)).astype(np.float32)
    for digit in range(10):  # a bright bar per digit: the images carry the label
        image[y == digit, 2 * digit : 2 * digit + 3, 4:24] += 2.0
    audio = rng.standard_normal((n, 32, 16)).astype(np.float32)
    audio[np.arange(n), 3 * (y % 10), :] += 2.0
    folder = tmp_path / "avmnist"
    folder.mkdir()
    np.save(folder / "image.npy", image.reshape(n, -1))
    np.save(folder / "audio.npy", audio.reshape(n, -1))
    np.save(folder / "labels.npy", y)
    test = np.concatenate([np.flatnonzero(y == d)[:8] for d in range(10)])
    np.savez(folder / "split.npz", train=np.setdiff1d(np.arange(n), test), test=test)
    result = cli("examples", "reproduce", "avmnist-networks", "--data", folder, "--runs",
                 "2", "--out", tmp_path / "work", "--json")
    assert result.code == 0, result.err
    found = json.loads(result.out)
    labels = [row["label"] for row in found["rows"]]
    assert labels == ["No-KD", "Regular-KD", "Control", "general r=0.5", "specific r=0.5",
                      "random r=0.5"]
    assert [row["label"] for row in found["feature_level"]["rows"]] == labels
    assert set(found["agreement"]) == {"kd", "ordering", "best"}
    assert found["agreement"]["kd"] == (found["verdict"]["kd"]
                                        == found["feature_level"]["verdict"]["kd"])
    # the image teacher learnt the bars, and its program and the runs stay in --out
    assert found["networks"]["image_teacher"]["accuracy"] > 50
    work = tmp_path / "work"
    assert (work / "image_teacher.pt2").is_file() and (work / "run" / "distill.json").is_file()
    assert (work / "features_run" / "rank.json").is_file()
    shown = cli("examples", "reproduce", "avmnist-networks", "--data", tmp_path / "none")
    assert shown.code == 2 and "expected an AV-MNIST folder" in shown.err


@pytest.mark.slow
def test_a_torchvision_student_with_batchnorm_keeps_its_own_statistics(paired, cli,
                                                                       tmp_path):
    """An architecture by name with BatchNorm (a small torchvision one) cannot run under
    vmap: its
    members run in turn, each updating its own running statistics, so a member trained in
    a stack is the member trained alone; distill trains such students."""
    from cmkd_doctor.training.stacked import Member, Rows, TrainOptions, train_classifiers

    folder, _ = paired
    maps = np.load(folder / "raw_b.npy")
    rgb = np.repeat(maps[:, None, 2:10, 2:10], 3, axis=1)
    np.save(tmp_path / "rgb.npy", rgb.astype(np.float32))
    arch = Architecture("shufflenet_v2_x0_5", (3, 8, 8), 3).checked()
    assert not StackedNetworks([arch.new(0)]).vmappable
    y = np.load(folder / "y.npy")
    rows = Rows(rgb.reshape(len(rgb), -1).astype(np.float32), y, np.arange(300),
                np.arange(300, 360), np.arange(360, 480), 3, False, torch.device("cpu"))
    options = TrainOptions(epochs=2, batch_size=64, patience=0)
    alone = train_classifiers(rows, [Member(5)], options, architecture=arch)[0]
    stacked = train_classifiers(rows, [Member(4), Member(5)], options, architecture=arch)[1]
    def first_norm(net):
        return next(m for m in net.body.modules() if isinstance(m, torch.nn.BatchNorm2d))

    bn = first_norm(alone)
    assert int(bn.num_batches_tracked) == 2 * 5  # 2 epochs of 5 batches
    torch.testing.assert_close(first_norm(stacked).running_mean, bn.running_mean)
    probe = torch.from_numpy(rows.x[360:380])
    with torch.no_grad():
        torch.testing.assert_close(stacked(probe), alone(probe), rtol=1e-4, atol=1e-4)
    result = cli("distill", "--run", folder / "run", "--student", "shufflenet_v2_x0_5",
                 "--student-inputs", tmp_path / "rgb.npy", "--teacher", "general",
                 "--seeds", "2", "--epochs", "1", "--batch-size", "64", "--json")
    assert result.code == 0, result.err
    rows_out = json.loads(result.out)["results"]
    assert [r["label"] for r in rows_out] == ["No-KD", "Regular-KD", "Control",
                                              "general r=0.5"]
    assert all(len(r["student_runs"]) == 2 for r in rows_out)


def test_rows_too_large_for_the_network_are_refused_by_the_memory_it_would_need():
    """LeNet-5 on 60,000 x 60,000 rows has a linear layer of about 430 billion weights:
    sized on shapes alone (the meta device) and refused with the estimate, before any
    allocation (issue 38, item 5: before, the allocator's message came after 13 GiB)."""
    import pytest

    from cmkd_doctor.errors import InputError
    from cmkd_doctor.training.student_networks import Architecture

    with pytest.raises(InputError, match=r"--student lenet5 on rows of shape 1 x 60000 x "
                                         r"60000 .* needs about [\d.]+ TiB of memory"):
        Architecture("lenet5", (1, 60000, 60000), 10).checked()
    assert Architecture("cnn3", (1, 32, 16), 10).checked().member_bytes(128) > 0


def test_student_inputs_too_large_to_train_on_are_refused_before_they_are_read(paired, cli,
                                                                              tmp_path):
    """480 rows of 1 x 2000 x 2000 (a sparse 7.7 GB file): LeNet-5 would need hundreds of
    GiB to train on minibatches of them. Refused with the estimate, from shapes alone,
    before the rows or the network are allocated (issue 38, item 5: before, a file like
    it was read whole to check it for NaN, and the process was killed)."""
    folder, _ = paired
    big = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32,
                                    (480, 1, 2000, 2000))
    del big  # sparse: no disk used
    found = cli("distill", "--run", folder / "run", "--student", "lenet5",
                "--student-inputs", tmp_path / "big.npy", "--teacher", "none", "--seeds",
                "1", "--epochs", "1")
    assert found.code == 2 and found.err.count("\n") == 1, found.err
    assert re.match(r"error: --student lenet5 on rows of shape 1 x 2000 x 2000 \(one "
                    r"student training on minibatches of 256 rows: .*\) needs about "
                    r"[\d.]+ [GT]iB of memory, more than the", found.err), found.err


def test_the_nan_scan_reads_wide_rows_in_blocks_and_still_finds_the_first(monkeypatch):
    """check_finite reads at most _SCAN_VALUES values at once, splitting a row wider than
    that, and still names the first bad value's row and column."""
    from cmkd_doctor.errors import InputError
    from cmkd_doctor.io import inputs

    monkeypatch.setattr(inputs, "_SCAN_VALUES", 7)
    x = np.zeros((5, 3, 10), np.float32)
    x[3, 2, 4] = np.inf  # row 3, flat column 24
    x[4, 0, 0] = np.nan
    seen = []
    real = np.isfinite
    monkeypatch.setattr(inputs.np, "isfinite", lambda b: seen.append(b.size) or real(b))
    with pytest.raises(InputError, match=r"2 non-finite values .* the first is inf at row 3, "
                                         r"column 24"):
        inputs.check_finite(x, "x.npy")
    assert max(seen) <= 7 and sum(seen) == x.size
