"""Algorithm 1: known answers on tiny data, fast == literal, determinism, output files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from literal import literal_permutation_distances

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian
from cmkd_doctor.io.inputs import Labels, PairedData
from cmkd_doctor.ranking.run import (
    RankOptions,
    normalize,
    permutation_distances,
    permutations,
    rank,
)
from cmkd_doctor.training.losses import DISTANCES
from cmkd_doctor.training.mlp import Net, NetConfig


def _net(d, hidden, k, seed=0, multilabel=False):
    torch.manual_seed(seed)
    net = Net(NetConfig(d, hidden, k, multilabel))
    net.set_standardisation(torch.randn(d) * 0.1, torch.rand(d) + 0.5)
    return net.eval()


@pytest.mark.parametrize("hidden,dist,multilabel,per_channel", [
    ((), "mse", False, False),         # closed form
    ((), "mse", False, True),          # closed form, a permutation per (channel, repeat)
    ((), "kl", False, False),          # rank-1 update on the logits
    ((16,), "mse", False, False),
    ((16,), "mse", False, True),
    ((16, 8), "l1", False, False),
    ((16,), "kl", True, False),
])
def test_fast_permutation_phase_matches_the_literal_loop(hidden, dist, multilabel,
                                                         per_channel):
    n, d, k = 300, 12, 4
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    target = torch.randn(n, k, generator=gen)
    net = _net(d, hidden, k, multilabel=multilabel)
    perms = permutations(n, 3, seed=7, channels=d if per_channel else None)
    distance = DISTANCES[dist]
    increase, base = permutation_distances(net, x, target, distance, perms,
                                           multilabel=multilabel, tile_elements=2048)
    literal = literal_permutation_distances(net, x, target, distance, perms, multilabel)
    with torch.no_grad():
        assert base == pytest.approx(float(distance(net(x), target, multilabel)), rel=1e-5)
    np.testing.assert_allclose((base + increase).numpy(), literal.numpy(), rtol=1e-4,
                               atol=1e-6)
    assert np.array_equal(np.argsort(-increase.mean(1).numpy()),
                          np.argsort(-(literal.mean(1) - base).numpy())) or dist == "l1"


def test_per_channel_permutations_are_fresh_for_every_channel_and_repeat():
    perms = permutations(50, 4, seed=3, channels=6)  # (M, n, d)
    assert perms.shape == (4, 50, 6)
    columns = perms.permute(0, 2, 1).reshape(24, 50)  # every (repeat, channel)
    assert all(sorted(c.tolist()) == list(range(50)) for c in columns)
    assert len({tuple(c.tolist()) for c in columns}) == 24
    assert torch.equal(perms, permutations(50, 4, seed=3, channels=6))  # seeded


def test_tile_size_does_not_change_the_result():
    x = torch.randn(200, 9)
    target = torch.randn(200, 3)
    net = _net(9, (10,), 3)
    perms = permutations(200, 2, seed=1)
    # 64: 6-row chunks, one channel at a time; 8000: all rows, blocks of 4, 4 and 1
    # channels; 2**20: one block of all channels
    results = [permutation_distances(net, x, target, DISTANCES["mse"], perms,
                                     tile_elements=tile)[0] for tile in (64, 8000, 1 << 20)]
    for other in results[1:]:
        np.testing.assert_allclose(results[0].numpy(), other.numpy(), rtol=1e-5, atol=1e-8)


def test_a_network_that_ignores_its_input_gives_zero_salience():
    net = _net(6, (8,), 3)
    with torch.no_grad():
        net.first.weight.zero_()
    x = torch.randn(100, 6)
    increase, _ = permutation_distances(net, x, torch.randn(100, 3), DISTANCES["mse"],
                                        permutations(100, 4, seed=0))
    assert torch.all(increase == 0)
    assert not np.any(normalize(increase.mean(1).numpy(), "max"))


def test_an_ignored_channel_scores_zero_and_the_used_one_one():
    net = _net(3, (), 2)
    with torch.no_grad():
        net.first.weight.zero_()
        net.first.weight[:, 1] = torch.tensor([1.0, -1.0])
    x = torch.randn(500, 3)
    with torch.no_grad():
        aligned = net(x)  # the other network agrees perfectly before permutation
    increase, base = permutation_distances(net, x, aligned, DISTANCES["mse"],
                                           permutations(500, 5, seed=0))
    assert base == pytest.approx(0, abs=1e-12)
    salience = normalize(increase.mean(1).numpy(), "max")
    assert salience[1] == 1.0 and salience[0] == 0 and salience[2] == 0


def test_normalizations():
    imp = np.array([0.5, 2.0, -0.1, 1.0])
    assert normalize(imp, "max").tolist() == pytest.approx([0.25, 1.0, -0.05, 0.5])
    assert normalize(imp, "minmax").tolist() == pytest.approx([0.6 / 2.1, 1.0, 0.0, 1.1 / 2.1])


# a: 10 shared + 10 a-specific decisive channels, b: 10 shared + 10 b-specific, 30 noise
# each. The paper's generator draws the hyperplane delta ~ N(0, I): a shared coordinate
# whose |delta| is near 0 barely decides y and no ranking can find it. Seed 3 has none
# (checked below), so precision measures the ranking, not the draw.
PLANTED = GaussianSpec(d1=50, d2=50, d=30, j1=20, j2=20, shared=10, n_train=4000, seed=3)


def _planted():
    g = make_gaussian(PLANTED)
    assert min(abs(g.truth["delta"][j]) for j in g.truth["shared"]) > 0.2
    return g


@pytest.mark.parametrize("hidden", ["256", "0"])
def test_rank_puts_the_planted_shared_channels_on_top(hidden):
    g = _planted()
    data = PairedData(g.xa, g.xb, Labels(g.y, [0, 1], False))
    result = rank(data, RankOptions(hidden=hidden, device="cpu"))
    general = set(g.truth["channels_a"]["general"])
    top = set(np.argsort(-result.salience)[: len(general)].tolist())
    assert len(top & general) / len(general) >= 0.9
    assert result.salience.max() == 1.0 and result.salience.dtype == np.float32


def test_rank_can_rank_modality_b():
    g = _planted()
    data = PairedData(g.xa, g.xb, Labels(g.y, [0, 1], False))
    result = rank(data, RankOptions(hidden="0", permute="b", device="cpu"))
    general = set(g.truth["channels_b"]["general"])
    top = set(np.argsort(-result.salience)[: len(general)].tolist())
    assert result.salience.shape == (g.xb.shape[1],)
    assert len(top & general) / len(general) >= 0.9


def test_multilabel_rank_runs_with_bce_and_f1(tmp_path, cli):
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((300, 5)).astype(np.float32)
    xb = rng.standard_normal((300, 4)).astype(np.float32)
    xb[:, 0] = xa[:, 0]
    y = np.stack([xa[:, 0] > 0, xa[:, 1] > 0, xb[:, 2] > 0], axis=1).astype(np.int64)
    for name, arr in (("a", xa), ("b", xb), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    result = cli("rank", tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy",
                 "--out", tmp_path / "run", "--epochs", "20", "--json", "--repeats", "2")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["labels"]["task"] == "multi-label"
    assert set(doc["aligned"]["metrics"]["a"]["test"]) == {"micro_f1", "macro_f1", "map"}
    assert int(np.argmax(doc["salience"])) == 0


def test_same_seed_gives_an_identical_salience_file(tmp_path, cli, gaussian_dir):
    files = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    for run in ("one", "two"):
        result = cli("rank", *files, "--out", tmp_path / run, "--epochs", "15", "--quiet",
                     "--device", "cpu")
        assert result.code == 0, result.err
        assert result.out == ""
    one = (tmp_path / "one" / "salience.npy").read_bytes()
    assert one == (tmp_path / "two" / "salience.npy").read_bytes()
    cli("rank", *files, "--out", tmp_path / "three", "--epochs", "15", "-q", "--seed", "5")
    assert one != (tmp_path / "three" / "salience.npy").read_bytes()


def test_json_output_and_run_directory(tmp_path, cli, gaussian_dir):
    files = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    out = tmp_path / "run"
    result = cli("rank", *files, "--out", out, "--json", "-M", "3", "--hidden", "32,16")
    assert result.code == 0, result.err
    doc = json.loads(result.out)  # exactly one JSON document
    d = np.load(files[0]).shape[1]
    assert len(doc["salience"]) == d and max(doc["salience"]) == 1.0
    for name in ("feats_a", "feats_b", "labels"):
        assert len(doc["inputs"][name]["sha256"]) == 64 and doc["inputs"][name]["shape"]
    assert doc["options"]["repeats"] == 3 and doc["options"]["hidden"] == [32, 16]
    assert doc["environment"]["torch"] == torch.__version__
    assert doc["environment"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert set(doc["timings"]) == {"train_s", "permute_s", "gamma_s", "aligned_epochs"}
    restarts = len(doc["unpermuted_distance_per_restart"])
    assert (doc["aligned"]["epochs_run"] <= doc["timings"]["aligned_epochs"]
            <= restarts * doc["aligned"]["epochs_max"])
    gamma = doc["gamma_estimate"]
    assert 0 <= gamma["low"] <= gamma["value"] <= gamma["high"] <= 1
    assert set(gamma["label_level"]["explained"]) == {"a", "b", "ab"}
    assert set(gamma["cross"]) == {"a_to_b", "b_to_a"}
    assert doc["pairing"]["paired"] is True and set(doc["chance"]) == {"a", "b"}
    for side in ("a", "b"):
        for part in ("train", "test"):
            assert 0.5 < doc["aligned"]["metrics"][side][part]["accuracy"] <= 1
    assert len(doc["permuted_distance"]["mean"]) == d == len(doc["permuted_distance"]["std"])
    assert doc["unpermuted_distance"] >= 0
    on_disk = json.loads((out / "rank.json").read_text())
    assert on_disk == {k: v for k, v in doc.items() if k != "salience"}
    salience = np.load(out / "salience.npy")
    assert salience.dtype == np.float32 and salience.shape == (d,) and salience.max() == 1.0
    assert np.load(out / "permuted_distances.npy").shape == (d, 3)
    split = np.load(out / "split.npz")
    assert len(split["train"]) + len(split["test"]) == len(np.load(files[2]))
    from cmkd_doctor.training.mlp import load_net

    net, meta = load_net(out / "net_a.safetensors")
    assert net.config.hidden == (32, 16) and meta["modality"] == "a"
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind


def test_exact_estimator_is_what_sampling_converges_to():
    from cmkd_doctor.ranking.run import expected_increase

    gen = torch.Generator().manual_seed(4)
    n, d, k = 400, 6, 3
    x = torch.randn(n, d, generator=gen) * torch.linspace(0.5, 2, d) + 1.0
    net = _net(d, (), k)
    with torch.no_grad():  # Algorithm 1's regime: the other network nearly agrees
        target = net(x) + 0.3 * torch.randn(n, k, generator=gen)
    exact, base = expected_increase(net, x, target)
    errors = []
    for m in (10, 100, 1000):
        sampled, base_s = permutation_distances(net, x, target, DISTANCES["mse"],
                                                permutations(n, m, seed=m))
        errors.append(float((sampled.mean(1) - exact).abs().max() / exact.abs().max()))
        assert base_s == pytest.approx(base, rel=1e-5)
    assert errors[2] < 0.01  # agrees with M = 1000 sampling to 1%
    assert errors[2] < errors[0]  # and sampling converges to it


@pytest.mark.slow
def test_exact_estimator_end_to_end_and_where_it_has_no_closed_form(tmp_path, cli,
                                                                     gaussian_dir):
    files = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    result = cli("rank", *files, "--hidden", "0", "--estimator", "exact", "--json",
                 "-o", tmp_path / "run")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["options"]["estimator"] == "exact" and max(doc["salience"]) == 1.0
    assert np.load(tmp_path / "run" / "permuted_distances.npy").shape == (50, 1)
    # the same trained networks (same seed) ranked by M = 1000 sampling agree to 1%
    sampled = cli("rank", *files, "--hidden", "0", "-M", "1000", "--json", "-o",
                  tmp_path / "run3")
    assert sampled.code == 0, sampled.err
    gap = np.abs(np.array(json.loads(sampled.out)["salience"]) - np.array(doc["salience"]))
    assert gap.max() < 0.01
    bad = cli("rank", *files, "--estimator", "exact", "-o", tmp_path / "run2")
    assert bad.code == 2 and "closed form only for a linear head with MSE" in bad.err


def test_rank_protocol_official_is_the_official_loop_and_options_still_override(
        tmp_path, cli, gaussian_dir):
    files = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    out = tmp_path / "run"
    result = cli("rank", *files, "--protocol", "official", "--epochs", "300", "-M", "20",
                 "--out", out, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    options = doc["options"]
    assert options["protocol"] == "official"
    assert (options["epochs"], options["repeats"]) == (300, 20)  # given: kept
    official = {"hidden": [], "batch_size": None, "lr": 0.01, "optimizer": "sgd_momentum",
                "patience": 0, "test_split": 0.0, "permute_on": "train", "dist": "mse",
                "normalize": "minmax", "standardize": False, "permutation": "per_channel",
                "restarts": 1}
    assert {k: options[k] for k in official} == official
    split = np.load(out / "split.npz")
    assert len(split["test"]) == 0 and len(split["train"]) == len(np.load(files[2]))
    assert doc["aligned"]["epochs_run"] == 300  # no early stopping
    salience = np.asarray(doc["salience"])
    assert salience.min() == 0.0 and salience.max() == 1.0  # min-max
    assert np.load(out / "permuted_distances.npy").shape == (salience.size, 20)
    truth = json.loads((gaussian_dir / "truth.json").read_text())["channels_a"]["general"]
    top = np.argsort(-salience)[: len(truth)]
    assert len(set(top.tolist()) & set(truth)) >= 0.8 * len(truth)


def test_rank_protocol_options_apply_from_python():
    options = RankOptions.for_protocol("official", repeats=5).checked()
    assert (options.repeats, options.permutation, options.normalize) == (5, "per_channel",
                                                                        "minmax")
    assert RankOptions.for_protocol().checked() == RankOptions().checked()


def test_per_channel_permutations_beyond_memory_are_refused_before_any_training(
        tmp_path, cli, gaussian_dir):
    files = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    result = cli("rank", *files, "--protocol", "official", "-M", "10000",
                 "--out", tmp_path / "run")
    assert result.code == 2
    assert result.err.startswith("error: --permutation per_channel would hold 10000 x 600 x 50")
    assert "GiB" in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "run").exists()
