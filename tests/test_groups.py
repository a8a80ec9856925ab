"""rank --groups: correlated channels permuted as one unit (Hooker, Mentch and Zhou 2021)."""

from __future__ import annotations

import numpy as np
import pytest

from cmkd_doctor.errors import InputError
from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian
from cmkd_doctor.io.inputs import load_paired
from cmkd_doctor.ranking.groups import (
    MAX_ROWS,
    average_ranks,
    correlated_groups,
    renumbered,
    sampled_rows,
)
from cmkd_doctor.ranking.run import RankOptions, rank
from cmkd_doctor.teachers.masks import nullified_channels


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """The built-in example's layout with every shared channel of modality a given a
    noisy duplicate (channels 40-49 copy the 10 shared channels, plus noise of 0.1)."""
    g = make_gaussian(GaussianSpec(d1=40, d2=40, d=20, j1=20, j2=10, shared=10, seed=1,
                                   delta="ones"))
    shared = np.asarray(g.truth["channels_a"]["general"])
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((len(g.xa), len(shared))).astype(np.float32)
    xa = np.hstack([g.xa, g.xa[:, shared] + 0.1 * noise])
    folder = tmp_path_factory.mktemp("duplicated")
    for name, array in (("a", xa), ("b", g.xb), ("y", g.y)):
        np.save(folder / f"{name}.npy", array)
    data = load_paired(*(folder / f"{n}.npy" for n in ("a", "b", "y")))
    return data, shared, folder


def test_grouped_permutation_recovers_every_shared_group(duplicated):
    data, shared, _ = duplicated
    copies = np.arange(40, 50)
    single = rank(data, RankOptions(device="cpu", repeats=5))
    grouped = rank(data, RankOptions(device="cpu", repeats=5, groups="auto"))
    ids = np.asarray(grouped.groups["ids"])
    # auto finds exactly the planted pairs
    assert grouped.groups["multi_channel"] == 10
    assert all(ids[a] == ids[c] for a, c in zip(shared, copies, strict=True))
    assert len(set(ids[shared])) == 10
    # every shared group is among the most salient groups
    by_group = np.asarray(grouped.groups["salience"])
    assert set(np.argsort(-by_group)[:10]) == set(ids[shared])
    # a group's salience is each of its channels'
    assert np.array_equal(grouped.salience, by_group[ids].astype(np.float32))
    # permuting one copy alone understates both: the increase of Dist is several times
    # smaller than when the pair is permuted together
    def increase(result):
        return result.distances.mean(axis=1) - result.unpermuted

    planted = np.r_[shared, copies]
    assert increase(single)[planted].mean() * 2 < increase(grouped)[planted].mean()


def test_groups_from_a_file_and_teachers_that_nullify_whole_groups(duplicated, tmp_path,
                                                                   cli):
    data, shared, folder = duplicated
    ids = np.arange(50)
    ids[40:] = shared  # each copy joins its original
    np.save(tmp_path / "groups.npy", ids)
    out = tmp_path / "run"
    files = [folder / f"{n}.npy" for n in ("a", "b", "y")]
    result = cli("rank", *files, "--groups", tmp_path / "groups.npy", "-M", "3", "--out",
                 out, "-q")
    assert result.code == 0, result.err
    derived = cli("derive-teacher", "--run", out, "--mode", "specific", "--ratio", "0.2",
                  "--epochs", "2", "--json")
    assert derived.code == 0, derived.err
    import json

    nullified = set(json.loads(derived.out)["nullified"])
    for original, copy in zip(shared, range(40, 50), strict=True):
        assert (original in nullified) == (copy in nullified)  # whole groups only
    assert len(nullified) >= 10


def test_nullifying_groups_counts_channels_and_never_takes_every_group():
    salience = np.array([0.1, 0.1, 0.9, 0.5, 0.5, 0.5])
    groups = np.array([0, 0, 1, 2, 2, 2])
    # general nullifies the least salient groups until r * d = 2 channels: group 0
    assert nullified_channels(salience, "general", 0.34, groups=groups).tolist() == [0, 1]
    # 3 channels: group 0 is 2, so group 2 (the next) is taken too
    assert nullified_channels(salience, "general", 0.5, groups=groups).tolist() == [
        0, 1, 3, 4, 5]
    assert nullified_channels(salience, "specific", 0.17, groups=groups).tolist() == [2]
    with pytest.raises(InputError, match="form one group"):
        nullified_channels(salience, "general", 0.5, groups=np.zeros(6, dtype=int))


def test_spearman_groups_and_ranks():
    assert average_ranks(np.array([[3.0], [1.0], [3.0], [2.0]]))[:, 0].tolist() == [
        2.5, 0.0, 2.5, 1.0]
    assert renumbered(np.array([7, 3, 7, 9])).tolist() == [0, 1, 0, 2]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    x = np.hstack([x, np.exp(x[:, :1]), -x[:, 1:2] ** 3, np.ones((500, 1))])
    # monotone transforms correlate fully in rank; a constant channel stays alone
    assert correlated_groups(x, 0.8).tolist() == [0, 1, 2, 3, 0, 1, 4]


def test_the_correlations_read_a_seeded_sample_of_the_fit_rows():
    few = np.arange(10, 10 + MAX_ROWS)
    assert sampled_rows(few, seed=0) is few
    many = np.arange(5, 5 + 2 * MAX_ROWS)[::-1]
    found = sampled_rows(many, seed=3)
    assert len(found) == MAX_ROWS == len(set(found.tolist())) and set(found) <= set(many)
    assert (np.diff(found) > 0).all()  # sorted: rows read in file order
    assert (sampled_rows(many, seed=3) == found).all()
    assert not (sampled_rows(many, seed=4) == found).all()


@pytest.mark.parametrize("args,needle", [
    (["--groups", "{tmp}/none.npy"], "no such file"),
    (["--groups", "{tmp}/short.npy"], "9 group ids for 50 channels"),
    (["--groups", "{tmp}/floats.npy"], "1-D integer array"),
    (["--groups", "auto", "--estimator", "exact", "--hidden", "0"], "sampled estimator"),
    (["--groups", "auto", "--permutation", "per_channel"], "sampled estimator"),
    (["--group-threshold", "1.5"], "--group-threshold"),
])
def test_bad_groups_are_refused_before_any_work(duplicated, tmp_path, cli, args, needle):
    _, _, folder = duplicated
    np.save(tmp_path / "short.npy", np.arange(9))
    np.save(tmp_path / "floats.npy", np.zeros(50))
    out = tmp_path / "run"
    result = cli("rank", *(folder / f"{n}.npy" for n in ("a", "b", "y")), "--out", out,
                 *(a.format(tmp=tmp_path) for a in args))
    assert result.code == 2 and needle in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and not out.exists()
