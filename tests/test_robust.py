"""A ranking that holds on real features: units, constant channels, alignment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian
from cmkd_doctor.io.inputs import Labels, PairedData
from cmkd_doctor.ranking.run import RankOptions, channel_order, rank
from cmkd_doctor.teachers.masks import n_nullified, nullified_channels
from cmkd_doctor.wording import rank_warnings

FILES = ("feats_a.npy", "feats_b.npy", "labels.npy")
FAST = {"hidden": "0", "epochs": 30, "repeats": 5, "device": "cpu"}


def _data(xa, xb, y) -> PairedData:
    return PairedData(np.asarray(xa, np.float32), np.asarray(xb, np.float32),
                      Labels(np.asarray(y), [0, 1], False))


@pytest.fixture(scope="module")
def gaussian():
    return make_gaussian(GaussianSpec(n_train=1000, seed=1))


def test_multiplying_a_channel_by_a_constant_does_not_change_the_ranking(gaussian):
    g = gaussian
    scaled = g.xa.copy()
    scaled[:, 3] *= 1000.0  # another unit
    scaled[:, 7] *= 1e-4
    scaled[:, 11] += 50.0  # and another origin
    first = rank(_data(g.xa, g.xb, g.y), RankOptions(**FAST))
    second = rank(_data(scaled, g.xb, g.y), RankOptions(**FAST))
    np.testing.assert_allclose(first.salience, second.salience, atol=1e-4)
    assert list(channel_order(first.salience)[:10]) == list(channel_order(second.salience)[:10])
    # raw features (--no-standardize) do depend on the units
    raw = rank(_data(scaled, g.xb, g.y), RankOptions(**FAST, standardize=False))
    assert np.abs(raw.salience - first.salience).max() > 0.05


def test_a_constant_channel_is_listed_nullified_and_ranked_last(gaussian, tmp_path, cli):
    g = gaussian
    xa = g.xa.copy()
    xa[:, 0] = 7.0  # constant everywhere
    xa[:, 1] = 0.0
    xa[np.flatnonzero(g.y == 1)[::3], 1] = 1.0  # mostly 0, not constant: informative
    for name, array in zip(FILES, (xa, g.xb, g.y), strict=True):
        np.save(tmp_path / name, array)
    result = cli("rank", *(tmp_path / f for f in FILES), "-o", tmp_path / "run", "--json",
                 "--hidden", "0", "--epochs", "30", "-M", "5")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["constant_channels"] == [0]
    assert doc["standardization"]["a"]["constant"] == [0]
    assert doc["salience"][0] == 0.0  # ignored by the networks: permuting it does nothing
    order = channel_order(np.array(doc["salience"]), doc["constant_channels"])
    assert order[-1] == 0  # never above an informative channel
    for mode in ("general", "specific", "random"):
        nullified = nullified_channels(np.array(doc["salience"]), mode, 0.5, seed=1,
                                       constant=[0])
        assert 0 in nullified  # every derived teacher nullifies it ...
        assert len(nullified) == 1 + n_nullified(0.5, 49)  # ... r counts the other 49
    derived = cli("derive-teacher", "--run", tmp_path / "run", "--mode", "specific",
                  "--ratio", "0.2", "--json")
    assert derived.code == 0, derived.err
    side = json.loads(derived.out)
    assert 0 in side["nullified"] and side["constant_channels"] == [0]
    assert len(side["nullified"]) == 1 + n_nullified(0.2, 49)
    assert "constant on the fit rows" in result.err  # and rank said so


@pytest.mark.slow
def test_a_modality_b_that_knows_nothing_of_the_labels_is_flagged(gaussian):
    g = gaussian
    noise = np.random.default_rng(0).standard_normal(g.xb.shape)
    trained = {"hidden": "0", "repeats": 5, "device": "cpu"}  # epochs until early stop
    result = rank(_data(g.xa, noise, g.y), RankOptions(**trained))
    assert result.alignment["reliable"] is False
    assert result.alignment["score"] < result.alignment["threshold"]
    assert any("agree poorly" in w for w in rank_warnings(result.findings))
    good = rank(_data(g.xa, g.xb, g.y), RankOptions(**trained))
    assert good.alignment["reliable"] is True and good.alignment["score"] > 0.5
    # and networks trained too briefly to agree are flagged too (more --epochs)
    brief = rank(_data(g.xa, g.xb, g.y), RankOptions(**{**trained, "epochs": 30}))
    assert brief.alignment["reliable"] is False


@pytest.mark.slow
def test_the_diagnosis_reports_alignment_and_withholds_conclusions_when_unreliable(
        gaussian, tmp_path, cli):
    g = gaussian
    noise = np.random.default_rng(0).standard_normal(g.xb.shape).astype(np.float32)
    for name, array in zip(FILES, (g.xa, noise, g.y), strict=True):
        np.save(tmp_path / name, array)
    result = cli("diagnose", *(tmp_path / f for f in FILES), "-o", tmp_path / "run",
                 "--json", "--hidden", "0", "--seeds", "2", "-M", "5")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    for key in ("alignment", "stability", "constant_channels", "negative_salience",
                "standardization"):
        assert key in doc["rank"], key
    assert doc["rank"]["alignment"]["reliable"] is False
    assert doc["verdict"]["ranking_reliable"] is False
    assert "The ranking is unreliable here" in doc["verdict"]["text"]
    # b's rows do not match the labels at all: its own message, first
    chance = doc["rank"]["chance"]
    assert chance["b"]["at_chance"] is True and chance["a"]["at_chance"] is False
    assert chance["b"]["value"] - chance["b"]["chance"] < 0.1
    assert doc["verdict"]["at_chance"] == ["b"]
    assert doc["verdict"]["action"] == "check the data: modality b is at chance"
    assert any("modality b predicts the labels no better than chance" in w
               for w in doc["rank"]["warnings"])
    assert doc["advice"][0]["text"].startswith("Modality b predicts the labels no better "
                                               "than chance")
    assert doc["advice"][0]["command"] is None  # no command of the doctor mends the data
    report = cli("report", "--run", tmp_path / "run", "--format", "md")
    assert report.code == 0 and "Alignment" in report.out and "(unreliable" in report.out
    gate = cli("distill", "--run", tmp_path / "run", "--seeds", "2", "--teacher", "general",
               "--epochs", "10", "--expect", "aligned", "-q")
    assert gate.code == 3 and "expectation 'aligned' failed" in gate.err
    gate = cli("distill", "--run", tmp_path / "run", "--seeds", "2", "--teacher", "general",
               "--epochs", "10", "--expect", "paired", "-q")
    assert gate.code == 3 and "expectation 'paired' failed: modality b" in gate.err


def test_kendall_tau_by_hand():
    from cmkd_doctor.ranking.run import kendall_tau

    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped neighbour: 5 concordant and 1 discordant pair of 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with a tie in b: (C - D) / sqrt((P - Ta) (P - Tb)) = (4 - 1) / sqrt(6 * 5)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 3, 2]) == pytest.approx(1 / 30**0.5)


@pytest.mark.slow
def test_restarts_average_the_salience_and_measure_its_stability(gaussian):
    g = gaussian
    trained = {"hidden": "0", "repeats": 5, "device": "cpu"}
    one = rank(_data(g.xa, g.xb, g.y), RankOptions(**trained))
    three = rank(_data(g.xa, g.xb, g.y), RankOptions(**trained, restarts=3))
    assert one.stability["restarts"] == 1 and one.stability["kendall_tau"] is None
    assert three.stability["restarts"] == 3 and three.stability["stable"] is True
    assert three.salience.max() == 1.0 and three.distances.shape == (50, 15)
    assert len(three.alignment["per_restart"]) == 3
    # restart 0 is the single ranking: averaging moves the planted channels little
    general = set(g.truth["channels_a"]["general"])
    assert len(set(channel_order(three.salience)[:10]) & general) >= 9


def test_restarts_train_as_one_stack_and_match_separate_fits(gaussian):
    """Step 1 of three restarts in one engine fit (stacked pairs) trains each pair as a
    fit of its own would: the same weights up to float rounding, and each member's own
    early stopping (their best epochs differ, and match the separate fits')."""
    import torch

    from cmkd_doctor.io.streaming import RowSet
    from cmkd_doctor.ranking.algorithm1 import align

    g = gaussian
    xa, xb, y = (np.asarray(g.xa, np.float32), np.asarray(g.xb, np.float32),
                 np.asarray(g.y, np.int64))
    cpu = torch.device("cpu")
    fitting = RowSet([xa, xb, y], np.arange(800), cpu)
    held_out = RowSet([xa, xb, y], np.arange(800, 1000), cpu)
    options = RankOptions(hidden="16", epochs=40, patience=3, lr=0.01,
                          device="cpu").checked()
    seeds = [3, 11, 29]
    stacked = align(fitting, 2, False, options, held_out=held_out, seeds=seeds)
    alone = [align(fitting, 2, False, options, held_out=held_out, seeds=[s])[0]
             for s in seeds]
    best = [fit.best_epoch[0] for *_, fit in stacked]
    assert best == [fit.best_epoch[0] for *_, fit in alone]
    assert len(set(best)) > 1 and max(best) < 40  # they stopped early, not together
    for (a1, b1, fit1), (a2, b2, fit2) in zip(stacked, alone, strict=True):
        assert fit1.epochs_run == fit2.epochs_run == len(fit1.train_loss[0])
        np.testing.assert_allclose(fit1.val_loss[0], fit2.val_loss[0], rtol=1e-4)
        for net1, net2 in ((a1, a2), (b1, b2)):
            assert not net1.training
            for p1, p2 in zip(net1.state_dict().values(), net2.state_dict().values(),
                              strict=True):
                torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_stability_counts_only_the_channels_that_matter():
    """20,000 rows, 128 channels of a: 4 shared decisive, 4 a-specific, 120 noise. The
    restarts agree on the 4 shared channels, so the ranking is stable, although the
    order of the noise channels (all of the kept half but 4) is arbitrary: over every
    channel the overlap of the kept half is below the threshold, as the raw figures
    kept beside it show."""
    rng = np.random.default_rng(0)
    n = 20_000
    z0, za, zb = (rng.standard_normal((n, 4)) for _ in range(3))
    y = ((z0.sum(1) + za.sum(1) + zb.sum(1)) > 0).astype(np.int64)
    xa, xb = rng.standard_normal((n, 128)), rng.standard_normal((n, 32))
    ca, cb = rng.choice(128, 8, replace=False), rng.choice(32, 8, replace=False)
    xa[:, ca[:4]], xa[:, ca[4:]], xb[:, cb[:4]], xb[:, cb[4:]] = z0, za, z0, zb
    result = rank(_data(xa, xb, y), RankOptions(hidden="64", epochs=10, repeats=5,
                                                restarts=3, device="cpu"))
    stability = result.stability
    assert stability["decisive_channels"] == sorted(ca[:4].tolist())
    assert stability["top_overlap"] == 1.0 and stability["stable"] is True
    assert stability["all_channels"]["top_overlap"] < stability["threshold"]
    assert not any("restart to the next" in w for w in rank_warnings(result.findings))


def test_restarts_that_find_different_channels_are_unstable():
    """Three restarts, each finding 4 channels of its own among 60: the channels that
    matter are the 12 found, and the restarts' top 12 barely overlap."""
    from cmkd_doctor.ranking.run import ranking_stability

    rng = np.random.default_rng(0)
    increase = 0.01 * rng.standard_normal((60, 15))  # 3 restarts x 5 repeats
    for r in range(3):
        increase[4 * r: 4 * r + 4, 5 * r: 5 * r + 5] += 1.0
    saliences = [increase[:, 5 * r: 5 * r + 5].mean(1) for r in range(3)]
    saliences = [s / s.max() for s in saliences]
    found = ranking_stability(saliences, np.array([], dtype=np.int64), increase)
    assert found["decisive_channels"] == list(range(12))
    assert found["top_overlap"] < found["threshold"] and found["stable"] is False
    agreeing = [increase[:, :5].mean(1) / increase[:, :5].mean(1).max()] * 3
    same = ranking_stability(agreeing, np.array([], dtype=np.int64),
                             np.tile(increase[:, :5], 3))
    assert same["decisive_channels"] == [0, 1, 2, 3] and same["stable"] is True
    # no channel that matters: nothing to be stable about
    flat = ranking_stability([s * 0 for s in saliences], np.array([], dtype=np.int64),
                             0.01 * rng.standard_normal((60, 15)))
    assert flat["decisive"] == 0 and flat["top_overlap"] is None and flat["stable"] is False


@pytest.mark.slow
def test_diagnose_chooses_its_restarts_by_cost_and_says_so(gaussian, tmp_path, cli):
    g = gaussian
    for name, array in zip(FILES, (g.xa, g.xb, g.y), strict=True):
        np.save(tmp_path / name, array)
    result = cli("diagnose", *(tmp_path / f for f in FILES), "-o", tmp_path / "run",
                 "--hidden", "0", "--seeds", "2", "-M", "3")
    assert result.code == 0, result.err
    assert "stability over 3 restarts (chosen by cost" in result.out
    doc = json.loads((tmp_path / "run" / "rank.json").read_text())
    assert doc["stability"]["auto"] is True and doc["stability"]["restarts"] == 3
    assert doc["options"]["restarts"] is None


def test_a_wide_input_is_refused_before_training_for_its_gamma_estimate(
        cli, tmp_path, monkeypatch):
    """The gamma step's float64 copies and SVDs count in the up-front memory check, so a
    very wide input is refused before the networks train, not after."""
    import cmkd_doctor.devices
    import cmkd_doctor.ranking.run
    from cmkd_doctor.ranking.gamma import gamma_bytes

    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, rng.standard_normal((300, 2000)).astype(np.float32))
    np.save(b, rng.standard_normal((300, 10)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 300))
    need = gamma_bytes(300, 2000, 10)
    monkeypatch.setattr(cmkd_doctor.devices, "memory_free", lambda device: need // 2)

    def trained(*args, **kwargs):
        raise AssertionError("trained before the memory check")

    monkeypatch.setattr(cmkd_doctor.ranking.run, "align", trained)
    found = cli("rank", a, b, tmp_path / "y.npy", "--hidden", "0", "-q",
                "--out", tmp_path / "run")
    assert found.code == 2 and "gamma estimate" in found.err and "memory" in found.err
    assert not (tmp_path / "run").exists()


def test_a_readers_bug_is_not_called_a_damaged_run(tmp_path):
    """Only what a damaged file makes readers raise becomes 'damaged, rerun rank'; a bug
    in a reader propagates as itself."""
    from cmkd_doctor.errors import InputError
    from cmkd_doctor.io.rundir import RunDir

    run = RunDir(tmp_path)

    def raising(error):
        def read(path):
            raise error
        return read

    with pytest.raises(InputError, match="damaged"):
        run.guarded(tmp_path / "x.npy", raising(ValueError("bad header")))
    with pytest.raises(AttributeError):
        run.guarded(tmp_path / "x.npy", raising(AttributeError("no such field")))
