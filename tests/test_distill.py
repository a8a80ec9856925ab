"""derive-teacher and distill end to end on the paper's Gaussian data (Appendix B.2)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io.rundir import load_run, rank_files
from cmkd_doctor.ranking.run import RankOptions
from cmkd_doctor.seeds import derive_seed
from cmkd_doctor.teachers.derivation import teacher_metrics
from cmkd_doctor.teachers.masks import Teacher
from cmkd_doctor.training.stacked import Member, Rows, TrainOptions, train_classifiers

FILES = ("feats_a.npy", "feats_b.npy", "labels.npy")


def _ranked(root, spec: GaussianSpec, **options):
    data = make_gaussian(spec)
    write_gaussian(data, root / "data")
    rank_files(*(root / "data" / f for f in FILES), out=root / "run",
               options=RankOptions(device="cpu", **options))
    return data


@pytest.fixture(scope="session")
def ranked(tmp_path_factory):
    """The built-in example (d1 = d2 = 50; a holds 10 shared and 10 a-specific decisive
    channels), ranked with the paper's linear model."""
    root = tmp_path_factory.mktemp("ranked")
    truth = _ranked(root, GaussianSpec(seed=1), hidden="0").truth
    return root / "run", truth


@pytest.fixture
def run_copy(ranked, tmp_path):
    run, truth = ranked
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", truth


@pytest.mark.slow
def test_general_teacher_student_beats_specific_teacher_student(run_copy, cli):
    run, _ = run_copy
    result = cli("distill", "--run", run, "--teacher", "all", "--ratio", "0.5", "--json",
                 "--device", "cpu", "--seeds", "5")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    rows = {r["teacher"]: r for r in doc["results"]}
    assert list(rows) == ["none", "regular", "control", "general", "specific", "random"]
    for row in rows.values():
        assert len(row["student_runs"]) == 5 and row["metric"] == "accuracy"
        assert row["student_mean"] == pytest.approx(np.mean(row["student_runs"]))
    assert rows["general"]["student_mean"] > rows["specific"]["student_mean"]
    # the specific teacher lost the shared channels, so it is the worse teacher too
    assert rows["general"]["teacher_metric"] > rows["specific"]["teacher_metric"]
    assert rows["none"]["teacher_metric"] is None
    assert rows["general"]["delta_vs_regular"] == pytest.approx(
        rows["general"]["student_mean"] - rows["regular"]["student_mean"])
    # the verdict's KD gain is Regular-KD - No-KD, called a help beyond 2 paired SEs
    diff = np.subtract(rows["regular"]["student_runs"], rows["none"]["student_runs"])
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert doc["verdict"]["kd_delta"] == pytest.approx(diff.mean())
    assert doc["verdict"]["kd_helps"] == bool(diff.mean() > 2 * se)
    assert doc["verdict"]["mfh_ordering"].keys() == {"0.5"}
    assert doc["verdict"]["text"]


def test_table_and_verdict_on_stdout(run_copy, cli):
    run, _ = run_copy
    result = cli("distill", "--run", run, "--teacher", "general", "--seeds", "2",
                 "--device", "cpu")
    assert result.code == 0, result.err
    for text in ("No-KD", "Regular-KD", "general r=0.5", "vs Regular-KD", "verdict:"):
        assert text in result.out
    assert "specific" not in result.out.split("verdict:")[0]


@pytest.mark.slow
def test_refit_general_teacher_is_the_truth_based_modality_general_teacher(tmp_path, cli):
    # 4000 rows so the linear ranking recovers the 10 shared channels exactly; keeping
    # exactly those (r = 40/50) and retraining gives Table 2's modality-general teacher.
    truth = _ranked(tmp_path, GaussianSpec(n_train=4000, seed=1), hidden="0").truth
    run = tmp_path / "run"
    result = cli("derive-teacher", "--run", run, "--mode", "general", "--ratio", "0.8",
                 "--refit", "--json", "--device", "cpu")
    assert result.code == 0, result.err
    derived = json.loads(result.out)
    kept = sorted(set(range(50)) - set(derived["nullified"]))
    assert kept == sorted(truth["channels_a"]["general"])

    loaded = load_run(run)
    rows = loaded.rows("a", torch.device("cpu"))
    keep = np.zeros(50, dtype=bool)
    keep[truth["channels_a"]["general"]] = True
    fill = rows.part(loaded.split.train).moments(0)[0]
    options = TrainOptions(**{k: tuple(v) if k == "hidden" else v
                              for k, v in derived["train"].items()})
    # the truth's channels kept, the rest at their mean, trained as derive-teacher does
    member = Member(derive_seed(0, "teacher"), keep=keep, fill=fill.numpy())
    net = train_classifiers(rows, [member], options)[0]
    truth_acc = teacher_metrics(Teacher(net, torch.as_tensor(keep), fill), rows)["accuracy"]
    assert derived["metrics"]["accuracy"] == pytest.approx(truth_acc, abs=1e-9)

    regular = cli("derive-teacher", "--run", run, "--mode", "regular", "--json")
    regular_acc = json.loads(regular.out)["metrics"]["accuracy"]
    assert regular_acc - truth_acc > 0.05  # Table 2: the general teacher is much weaker


@pytest.mark.slow
def test_onnx_round_trip_gives_the_same_teacher_metric(run_copy, cli, tmp_path):
    pytest.importorskip("onnxruntime")
    run, _ = run_copy
    onnx_path = tmp_path / "general.onnx"
    made = cli("derive-teacher", "--run", run, "--mode", "general", "--ratio", "0.5",
               "--export-onnx", onnx_path, "--json")
    assert made.code == 0, made.err
    accuracy = json.loads(made.out)["metrics"]["accuracy"]
    back = cli("distill", "--run", run, "--teacher", onnx_path, "--seeds", "2", "--json")
    assert back.code == 0, back.err
    rows = {r["teacher"]: r for r in json.loads(back.out)["results"]}
    assert rows[str(onnx_path)]["teacher_metric"] == pytest.approx(100 * accuracy, abs=1e-9)
    # and an ONNX source can itself be masked again
    masked = cli("derive-teacher", "--run", run, "--teacher", onnx_path, "--mode", "specific",
                 "--ratio", "0.2", "--json")
    assert masked.code == 0, masked.err
    assert json.loads(masked.out)["name"] == "specific-r0.2-general"


@pytest.mark.slow
def test_a_teacher_exported_from_plain_torch_works_as_onnx(run_copy, cli, tmp_path):
    pytest.importorskip("onnxscript")
    run, _ = run_copy
    loaded = load_run(run)
    x = torch.as_tensor(np.asarray(loaded.data.xa[loaded.split.train], dtype=np.float32))
    y = torch.as_tensor(loaded.data.labels.y[loaded.split.train])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(50, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp_path / "user_model.onnx"
    torch.onnx.export(model.eval(), (x[:2],), input_names=["x"], output_names=["y"],
                      dynamic_shapes=({0: torch.export.Dim("n")},), dynamo=True,
                      verbose=False).save(str(path))
    result = cli("distill", "--run", run, "--teacher", f"{path},general", "--seeds", "2",
                 "--json")
    assert result.code == 0, result.err
    rows = {r["teacher"]: r for r in json.loads(result.out)["results"]}
    assert rows[str(path)]["teacher_metric"] > 70


@pytest.mark.slow
def test_expect_exits_0_or_3(run_copy, cli):
    run, _ = run_copy
    ok = cli("distill", "--run", run, "--teacher", "general,specific", "--expect",
             "general>specific", "--seeds", "3", "-q")
    assert ok.code == 0, ok.err
    bad = cli("distill", "--run", run, "--teacher", "general,specific", "--expect",
              "specific@0.5>=general", "--seeds", "3", "-q")
    assert bad.code == 3
    line = bad.err.strip()
    assert line.startswith("error: expectation 'specific@0.5>=general' failed: specific r=0.5")
    assert "\n" not in line


def test_the_library_runs_the_whole_command_recording_before_the_gate(run_copy):
    """distill() on a run directory derives, records into distill.json and applies
    --expect, as the CLI does: a failed gate still leaves its rows recorded."""
    from cmkd_doctor.diagnosis.distill import DistillOptions, distill
    from cmkd_doctor.errors import ExpectationFailed
    from cmkd_doctor.training.stacked import TrainOptions

    run, _ = run_copy
    options = DistillOptions(teachers=("general", "specific"), seeds=2,
                             train=TrainOptions(epochs=3))
    found = distill(run, options, expect="general@0.5>=general@0.5")
    stored = json.loads((run / "distill.json").read_text())
    assert {f"{r.teacher}|{'' if r.ratio is None else f'{r.ratio:g}'}|{found.key}"
            for r in found.rows} <= set(stored["results"])
    assert stored["last_verdict"]["text"] == found.verdict["text"]
    with pytest.raises(ExpectationFailed) as failed:
        distill(run, replace(options, rho=0.9), expect="none>general")
    assert failed.value.comparison is not None
    stored = json.loads((run / "distill.json").read_text())
    assert stored["last_options_key"] == failed.value.comparison.key != found.key


@pytest.mark.slow
def test_expect_paired_passes_on_paired_rows_and_exits_3_on_class_only_rows(
        run_copy, tmp_path, cli):
    run, _ = run_copy
    ok = cli("distill", "--run", run, "--teacher", "none", "--expect", "paired",
             "--seeds", "2", "-q")
    assert ok.code == 0, ok.err
    # the same files with feats_b's rows shuffled within each class
    from cmkd_doctor.ranking.gamma import within_class_shuffles

    source = json.loads((run / "rank.json").read_text())["inputs"]
    xa, xb, y = (np.load(source[k]["path"]) for k in ("feats_a", "feats_b", "labels"))
    p = within_class_shuffles(y, 1, np.random.default_rng(0))[0]
    for name, array in zip(FILES, (xa, xb[p], y), strict=True):
        np.save(tmp_path / name, array)
    ranked = cli("rank", *(tmp_path / f for f in FILES), "-o", tmp_path / "shuffled",
                 "--hidden", "0", "-M", "2", "--json")
    assert ranked.code == 0, ranked.err
    doc = json.loads(ranked.out)
    assert doc["pairing"]["paired"] is False and doc["gamma_estimate"]["high"] < 0.1
    assert doc["gamma_estimate"]["label_level"]["value"] > 0.2
    assert any("share nothing detectable beyond their class" in w for w in doc["warnings"])
    gate = cli("distill", "--run", tmp_path / "shuffled", "--teacher", "none", "--expect",
               "paired", "--seeds", "2", "-q")
    assert gate.code == 3
    assert gate.err.strip() == ("error: expectation 'paired' failed: the rows of a and b "
                                "share nothing detectable beyond their class (rank.json "
                                "pairing)")


@pytest.mark.parametrize("args,pattern", [
    (["--teacher", "genral"], "--teacher must be one of none, regular, general"),
    (["--teacher", "missing.onnx"], "--teacher missing.onnx: no such file"),
    (["--ratio", "1.2"], "--ratio must be a number in (0, 1)"),
    (["--ratio", "0,0.5"], "--ratio must be a number in (0, 1)"),
    (["--ratio", "half"], "--ratio must be a comma list"),
    (["--rho", "2"], "--rho must be a number in [0, 1]"),
    (["--expect", "general>>regular"], "--expect must be a comparison"),
    (["--expect", "general>teacher9"], "--expect must be a comparison of rows this call"),
    (["--teacher", "general", "--ratio", "0.25,0.5", "--expect", "general>regular"],
     "--expect must be unambiguous"),
    (["--from", "nowhere.pt"], "--from must be trained, aligned"),
])
def test_bad_distill_options_exit_2_before_any_training(run_copy, cli, args, pattern):
    run, _ = run_copy
    result = cli("distill", "--run", run, *args)
    assert result.code == 2, result.err
    assert result.err.startswith("error: ") and pattern in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (run / "distill.json").exists() and not (run / "teachers").exists()


@pytest.mark.slow
def test_bad_checkpoints_exit_2(run_copy, cli, tmp_path):
    run, _ = run_copy
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    result = cli("distill", "--run", run, "--teacher", junk)
    assert result.code == 2 and "junk.onnx: cannot be read as ONNX" in result.err
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(other))
    result = cli("derive-teacher", "--run", run, "--teacher", other)
    assert result.code == 2 and "not a cmkd-doctor teacher or network" in result.err
    wrong = tmp_path / "wrong.onnx"
    torch.onnx.export(torch.nn.Linear(7, 2).eval(), (torch.zeros(2, 7),), dynamo=True,
                      verbose=False).save(str(wrong))
    result = cli("distill", "--run", run, "--teacher", wrong)
    assert result.code == 2 and "takes 7 features per row" in result.err


def test_missing_run_and_changed_inputs_exit_2(run_copy, cli, tmp_path):
    result = cli("distill", "--run", tmp_path / "nope")
    assert result.code == 2 and "no rank run there" in result.err
    run, _ = run_copy
    doc = json.loads((run / "rank.json").read_text())
    labels = doc["inputs"]["labels"]["path"]
    copy = tmp_path / "labels.npy"
    shutil.copy(labels, copy)
    doc["inputs"]["labels"]["path"] = str(copy)
    (run / "rank.json").write_text(json.dumps(doc))
    y = np.load(copy)
    np.save(copy, 1 - y)
    result = cli("derive-teacher", "--run", run)
    assert result.code == 2 and "changed since 'cmkd-doctor rank'" in result.err


@pytest.mark.slow
def test_saved_teachers_are_reused_and_distill_json_accumulates(run_copy, cli):
    run, _ = run_copy
    first = cli("derive-teacher", "--run", run, "--mode", "random", "--ratio", "0.3", "--json")
    again = cli("derive-teacher", "--run", run, "--mode", "random", "--ratio", "0.3", "--json")
    assert json.loads(first.out)["reused"] is False and json.loads(again.out)["reused"] is True
    side = json.loads((run / "teachers" / "random-r0.3.json").read_text())
    assert len(side["nullified"]) == 15 and sum(side["mask"]) == 35
    assert side["fill"] == "mean" and len(side["fill_values"]) == 50
    zero = cli("derive-teacher", "--run", run, "--mode", "random", "--ratio", "0.3", "--fill",
               "zero", "--json")
    assert json.loads(zero.out)["fill_values"] == [0.0] * 50
    cli("distill", "--run", run, "--teacher", "general", "--ratio", "0.25", "--seeds", "2", "-q")
    cli("distill", "--run", run, "--teacher", "general", "--ratio", "0.5", "--seeds", "2", "-q")
    results = json.loads((run / "distill.json").read_text())["results"]
    assert {k.split("|")[0] + "|" + k.split("|")[1] for k in results} == {
        "none|", "regular|", "control|", "general|0.25", "general|0.5"}


def _toy_rows(n=300, n_val=60):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_val, 6, generator=gen).numpy()
    y = (x[:, 0] > 0).astype(np.int64)
    soft = torch.randn(n + n_val, 2, 2, generator=gen).numpy()  # two teachers' logits
    rows = Rows(x, y, np.arange(n), np.arange(n, n + n_val), np.arange(0), 2, False,
                torch.device("cpu"))
    return rows, soft


def _logits(nets, x):
    with torch.no_grad():
        return [net(torch.as_tensor(x)) for net in nets]


@pytest.mark.slow
def test_members_stacked_or_one_at_a_time_give_the_same_networks():
    """Seeds x teachers (and a No-KD member) in one stack equal each member trained
    alone, also when they stop early at different epochs and are dropped from the stack."""
    rows, soft = _toy_rows()
    options = TrainOptions(hidden=(8,), epochs=40, batch_size=32, patience=3)
    members = [Member(seed, rho=rho, temperature=2.0, teacher=teacher)
               for seed in (5, 6, 7) for rho, teacher in ((1.0, 0), (0.5, 0), (0.3, 1))]
    stacked = train_classifiers(rows, members, options, soft=soft)
    xv = rows.x[rows.val]
    for member, net in zip(members, stacked, strict=True):
        alone = train_classifiers(rows, [member], options, soft=soft)[0]
        torch.testing.assert_close(*_logits([net, alone], xv), rtol=1e-5, atol=1e-6)


def test_early_stopped_members_are_dropped_and_restored_at_their_best_epoch():
    from cmkd_doctor.training.engine import Schedule, fit
    from cmkd_doctor.training.losses import task_loss_rows
    from cmkd_doctor.training.mlp import NetConfig, Stacked, new_net

    rows, _ = _toy_rows()
    # lr 0 for member 0 (never improves after epoch 1), a real lr for the others
    model = Stacked([new_net(NetConfig(6, (8,), 2), s) for s in range(3)])
    start = model.member_state(0)
    fitting, val = rows.part(rows.fit), rows.part(rows.val)
    frozen = torch.tensor([1.0, 0.0, 0.0])[:, None]

    def loss_rows(module, batch, members):
        loss = task_loss_rows(module(batch[0]), batch[1], False)
        # member 0's loss has no gradient: it cannot improve and stops first
        return torch.where(frozen[members] > 0, loss.detach() + 0 * loss, loss)

    result = fit(model, loss_rows, fitting, Schedule(30, 1e-2, 32, patience=2),
                 shuffle_seeds=[0, 1, 2], val=val)
    assert result.active[0] == 3 and result.active[-1] < 3  # members were dropped
    assert model.n_members == 3  # and restored
    assert result.best_epoch[0] == 1 and result.best_epoch[1] > 1
    for a, b in zip(model.member_state(0), start, strict=True):
        torch.testing.assert_close(a, b)  # member 0 kept at its best epoch: unchanged
    assert len(result.val_loss[0]) < len(result.val_loss[1])


def test_streamed_students_read_chunks_and_still_learn(tmp_path):
    rows, soft = _toy_rows(n=900, n_val=100)
    np.save(tmp_path / "x.npy", rows.x)
    mapped = Rows(np.load(tmp_path / "x.npy", mmap_mode="r"), rows.y, rows.fit, rows.val,
                  rows.val, 2, False, torch.device("cpu"), chunk_rows=128)
    options = TrainOptions(hidden=(8,), epochs=15, batch_size=32, patience=0,
                           chunk_rows=128)
    assert not mapped.part(mapped.fit).resident
    nets = train_classifiers(mapped, [Member(1), Member(2, rho=0.5, teacher=1)], options,
                             soft=soft)
    for net in nets:
        assert teacher_metrics(net, mapped)["accuracy"] > 0.9


@pytest.mark.slow
def test_multilabel_distill_runs(tmp_path, cli, monkeypatch):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 3))
    xa = np.concatenate([z, rng.standard_normal((400, 5))], 1).astype(np.float32)
    xb = np.concatenate([z[:, :2], rng.standard_normal((400, 4))], 1).astype(np.float32)
    y = (z > 0).astype(np.int64)
    for name, arr in zip(FILES, (xa, xb, y), strict=True):
        np.save(tmp_path / name, arr)
    assert cli("rank", *(tmp_path / f for f in FILES), "-o", tmp_path / "run", "-q",
               "--hidden", "0").code == 0
    result = cli("distill", "--run", tmp_path / "run", "--seeds", "2", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)["results"]
    assert rows[0]["metric"] == "micro_f1" and 0 < rows[0]["student_mean"] <= 100
    for row in rows:
        assert set(row["student_metrics"]) == {"micro_f1", "macro_f1", "map"}
        assert len(row["student_metrics"]["map"]["runs"]) == 2
    assert set(rows[1]["teacher_metrics"]) == {"micro_f1", "macro_f1", "map"}
    from cmkd_doctor.cli import _common

    monkeypatch.setattr(_common.out, "width", 200)  # every column's header on one line
    table = cli("distill", "--run", tmp_path / "run", "--seeds", "2", "--teacher", "general")
    assert "student macro_f1" in table.out and "student map" in table.out


@pytest.mark.slow
def test_ratio_auto_finds_the_best_general_ratio_with_fewer_distillations(run_copy, cli):
    run, _ = run_copy
    result = cli("distill", "--run", run, "--ratio", "auto", "--teacher", "general,specific",
                 "--seeds", "2", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    search = doc["search"]
    general = {r["ratio"]: r["student_mean"] for r in doc["results"]
               if r["teacher"] == "general"}
    assert search["coarse"] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert search["distillations"] == len(general) < search["full_grid"]
    assert search["best_ratio"] == max(general, key=general.get)
    assert set(search["refined"]) <= {round(search["best_ratio"] + s, 2) for s in (-0.1, 0.1)}
    specific = [r for r in doc["results"] if r["teacher"] == "specific"]
    assert [r["ratio"] for r in specific] == [search["best_ratio"]]
    assert doc["verdict"]["sweet_spot"]["ratio"] == search["best_ratio"]
    assert "Sweet spot" in doc["verdict"]["text"]


@pytest.mark.slow
def test_diagnose_sweep_distils_every_teacher_at_five_ratios(tmp_path, cli):
    result = cli("diagnose", "--example", "gaussian", "--sweep", "--seeds", "2", "--hidden",
                 "0", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    ratios = sorted({r["ratio"] for r in doc["results"] if r["ratio"] is not None})
    assert ratios == [0.1, 0.25, 0.5, 0.75, 0.9] and len(doc["results"]) == 3 + 3 * 5
    assert set(doc["verdict"]["mfh_ordering"]) == {"0.1", "0.25", "0.5", "0.75", "0.9"}
    conflict = cli("diagnose", "--example", "gaussian", "--sweep", "--ratio", "0.5",
                   "--out", tmp_path / "run2")
    assert conflict.code == 2 and "--sweep and --ratio both choose" in conflict.err
