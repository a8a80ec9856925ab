"""The gamma estimate (paper Sec. 4): its parts, and how it tracks a known gamma."""

from __future__ import annotations

import numpy as np
import pytest

from cmkd_doctor.gamma import combine, estimate_gamma, explained, loo_residuals
from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.inputs import load_paired
from cmkd_doctor.ranking import RankOptions, rank


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


def _estimate(tmp_path, shared: int, seed: int = 0) -> tuple[float, dict]:
    spec = GaussianSpec(d1=50, d2=50, d=20, j1=10, j2=10, shared=shared, seed=seed,
                        delta="ones")
    data = make_gaussian(spec)
    folder = tmp_path / f"s{shared}"
    write_gaussian(data, folder)
    paired = load_paired(*(folder / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")))
    found = rank(paired, RankOptions(device="cpu", repeats=2, restarts=1))
    return data.truth["gamma"], found.gamma


def test_the_estimate_rises_with_gamma_and_stays_near_it(tmp_path):
    """``examples make gaussian --d 20 --j1 10 --j2 10 --shared s`` (gamma = s / (20 - s)),
    with equal hyperplane weights so that every decisive coordinate carries the same
    information: the estimate rises with gamma and stays within 0.25 of it."""
    found = [_estimate(tmp_path, s) for s in (0, 3, 6, 8, 10)]
    truth = [t for t, _ in found]
    values = [g["value"] for _, g in found]
    assert truth == pytest.approx([0, 3 / 17, 6 / 14, 8 / 12, 1])
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    assert max(abs(v - t) for v, t in zip(values, truth, strict=True)) <= 0.25, (truth, values)
    for _, g in found:
        assert 0 <= g["low"] <= g["value"] <= g["high"] <= 1
        assert g["n_rows"] == 1000
    assert found[0][1]["little_to_transfer"] and not found[-1][1]["little_to_transfer"]
