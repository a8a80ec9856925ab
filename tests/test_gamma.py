"""The gamma estimate (paper Sec. 4): its parts, and how it tracks a known gamma."""

from __future__ import annotations

import numpy as np
import pytest

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.io.inputs import load_paired
from cmkd_doctor.ranking.gamma import (
    Ridge,
    bootstrap_weights,
    combine,
    combine_shares,
    estimate_gamma,
    explained,
    loo_residuals,
    within_class_shuffles,
)
from cmkd_doctor.ranking.run import RankOptions, rank
from cmkd_doctor.wording import rank_warnings


def test_combine_counts_the_general_part_once():
    """With general part R and specific parts U_a, U_b: V_a = R + U_a, V_b = R + U_b and
    V_ab = R + U_a + U_b give back gamma = R / (R + U_a + U_b)."""
    for r, u_a, u_b in ((1, 0, 0), (1, 1, 0), (2, 3, 5), (0.1, 4, 0.2), (0, 1, 1)):
        assert combine(r + u_a, r + u_b, r + u_a + u_b) == pytest.approx(r / (r + u_a + u_b))
    assert combine(0.0, 0.0, 0.0) == 0.0  # nothing explained: nothing shared
    assert combine(0.2, 0.2, 0.5) == 0.0 and combine(0.6, 0.6, 0.5) == 1.0  # clipped


def test_leave_one_out_explains_the_predictable_share():
    """y = x w + noise with half of y's variance from x: the held-out share is about 0.5,
    and unrelated features explain nothing."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 8))
    signal = x @ rng.standard_normal(8)
    y = (signal / signal.std() + rng.standard_normal(3000))[:, None]
    y = y - y.mean(axis=0)
    assert explained(loo_residuals(x, y), y)[0] == pytest.approx(0.5, abs=0.05)
    unrelated = rng.standard_normal((3000, 8))
    assert explained(loo_residuals(unrelated, y), y)[0] < 0.01


def test_a_copy_of_the_same_features_is_all_shared_and_noise_is_nothing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 6))
    y = (x @ rng.standard_normal(6) > 0).astype(np.int64)
    same = estimate_gamma(x, x.copy(), y, 2, False, seed=0)
    assert same.value > 0.9 and not same.little
    noise = estimate_gamma(x, rng.standard_normal((2000, 6)), y, 2, False, seed=0)
    assert noise.value < 0.05 and noise.little


def test_combine_shares_gives_the_general_share_of_the_union():
    """q_ab = d0 / (d0 + d_sa) and q_ba = d0 / (d0 + d_sb) give d0 / (d0 + d_sa + d_sb)."""
    for d0, d_sa, d_sb in ((1, 0, 0), (1, 1, 0), (2, 3, 5), (0.1, 4, 0.2)):
        q_ab, q_ba = d0 / (d0 + d_sa), d0 / (d0 + d_sb)
        assert combine_shares(q_ab, q_ba) == pytest.approx(d0 / (d0 + d_sa + d_sb))
    assert combine_shares(0.0, 0.7) == 0.0 and combine_shares(0.5, -0.2) == 0.0


def test_ridge_leave_one_out_and_its_noise_match_the_explicit_hat_matrix():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 5))
    y = rng.standard_normal((40, 2))
    ridge = Ridge(x)
    residual, lam = ridge.loo(y)
    z = (x - x.mean(0)) / x.std(0)
    hat = z @ np.linalg.solve(z.T @ z + lam * np.eye(5), z.T) + 1 / 40  # with the centring
    yc = y - y.mean(0)
    for i in range(40):  # refit without row i, by hand
        keep = np.arange(40) != i
        zi, yi = z[keep] - z[keep].mean(0), yc[keep] - yc[keep].mean(0)
        w = np.linalg.solve(zi.T @ zi + lam * np.eye(5), zi.T @ yi)
        predicted = (z[i] - z[keep].mean(0)) @ w + yc[keep].mean(0)
        assert residual[i] == pytest.approx(yc[i] - predicted, abs=1e-9)
    off = hat**2
    np.fill_diagonal(off, 0)
    expected = off.sum(1) / (1 - np.diag(hat)) ** 2
    assert ridge.prediction_noise(lam) == pytest.approx(expected, rel=1e-9)


def test_bootstrap_weights_count_the_rows_of_each_draw():
    draws = np.array([[0, 0, 2], [1, 2, 2]])
    assert bootstrap_weights(draws, 3).tolist() == [[2, 0, 1], [0, 1, 2]]
    rng = np.random.default_rng(0)
    residual, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    assert explained(residual, y, bootstrap_weights(np.arange(6)[None], 6)) == \
        pytest.approx(explained(residual, y))


def test_within_class_shuffles_move_rows_only_inside_their_class():
    y = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    for p in within_class_shuffles(y, 5, np.random.default_rng(0)):
        assert sorted(p.tolist()) == list(range(10))
        assert (y[p] == y).all()


def _gaussian(shared: int, seed: int = 0):
    return make_gaussian(GaussianSpec(d1=50, d2=50, d=20, j1=10, j2=10, shared=shared,
                                      seed=seed, delta="ones"))


def test_pair_level_gamma_follows_the_shared_count_and_ignores_class_only_pairs():
    """``examples make gaussian --d 20 --j1 10 --j2 10 --shared s --delta ones`` (gamma = s /
    (20 - s)): the pair-level estimate rises with s, is within 0.1 of 0 and 1 at the ends
    and within 0.2 of gamma between. The same files with feats_b's rows shuffled within
    each class share only the label: pair-level gamma at most 0.1 (its whole interval),
    and the pairing check says so, while the label-level figure stays well above 0."""
    values = []
    for shared in (0, 2, 5, 8, 10):
        data = _gaussian(shared)
        truth = shared / (20 - shared)
        found = estimate_gamma(data.xa, data.xb, data.y, 2, False, seed=0)
        assert abs(found.value - truth) <= (0.1 if shared in (0, 10) else 0.2), (shared, found)
        assert 0 <= found.low <= found.value <= found.high <= 1
        values.append(found.value)
        if shared >= 5:  # at s = 2 (gamma 0.11) too little is shared to be sure at 1,000 rows
            assert found.pairing.paired and found.pairing.z > 3
        p = within_class_shuffles(data.y, 1, np.random.default_rng(100 + shared))[0]
        shuffled = estimate_gamma(data.xa, data.xb[p], data.y, 2, False, seed=0)
        assert shuffled.high <= 0.1 and not shuffled.pairing.paired, (shared, shuffled)
        assert shuffled.pairing.score == pytest.approx(shuffled.pairing.null, abs=0.03)
        assert shuffled.label_level["value"] > 0.2  # the label both views still predict
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values


def test_a_view_without_information_gives_zeros_not_errors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 4))
    y = (x.sum(1) > 0).astype(np.int64)
    for other in (np.ones((500, 3)), rng.standard_normal((500, 3))):  # constant, noise
        found = estimate_gamma(x, other, y, 2, False, seed=0)
        assert found.value == 0.0 and found.high < 0.05 and not found.pairing.paired
        assert all(np.isfinite(v) for c in found.cross.values() for v in c.values())
        assert found.explained["b"] <= 0.01 and found.label_level["explained_low"]["b"] <= 0


def test_the_estimate_reaches_rank_json(tmp_path):
    data = _gaussian(10)
    write_gaussian(data, tmp_path)
    paired = load_paired(*(tmp_path / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")))
    found = rank(paired, RankOptions(device="cpu", repeats=2, restarts=1, hidden="0"))
    assert found.gamma["value"] > 0.9 and found.gamma["n_rows"] == 1000
    assert found.gamma["label_level"]["value"] > 0.9
    assert found.pairing["paired"] is True and found.pairing["z"] > 3
    assert found.chance["a"]["at_chance"] is False and found.chance["b"]["at_chance"] is False
    assert not any("share" in w for w in rank_warnings(found.findings))


def _mapped_kib(path) -> int:
    """Resident KiB of every mapping of ``path`` in this process (Linux smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and not line.startswith(("Rss", "Size")):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"), reason="Linux")
def test_gamma_reads_its_row_sample_without_mapping_the_whole_file(tmp_path):
    """The estimate samples MAX_ROWS rows spread over the file: gathered through a memory
    map they would fault in (and keep) nearly every page; read row by row they keep none."""
    from cmkd_doctor.ranking.gamma import MAX_ROWS

    n, d = 20 * MAX_ROWS, 256  # a row every ~20: 20 KiB apart, inside one 64 KiB window
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    np.save(tmp_path / "a.npy", x)
    y = rng.integers(0, 3, n)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    found = estimate_gamma(mapped, mapped[:, :8], y, 3, False, seed=0)
    held = _mapped_kib((tmp_path / "a.npy").resolve())
    assert held < x.nbytes / 1024 / 10, f"{held} KiB of a {x.nbytes >> 10} KiB file mapped"
    again = estimate_gamma(x, x[:, :8], y, 3, False, seed=0)  # the same rows, in memory
    assert found.label_level == again.label_level
