"""Known answers for the small pieces: metrics, splits, seeds, registries, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.splits import carve_validation, stratified_split
from cmkd_doctor.registry import Registry
from cmkd_doctor.seeds import STAGES, derive_seed, generator
from cmkd_doctor.training.metrics import evaluate, f1_scores, mean_average_precision


def test_micro_and_macro_f1_by_hand():
    y = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=torch.float32)
    logits = torch.tensor([[2.0, -1.0], [-1.0, -2.0], [0.5, 3.0], [-0.5, 1.0]])
    # predicted (logit > 0): [1,0], [0,0], [1,1], [0,1]
    # class 0: tp 1 (row 0), fp 1 (row 2), fn 1 (row 1) -> F1 = 2/(2+1+1) = 1/2
    # class 1: tp 1 (row 2), fp 1 (row 3), fn 0        -> F1 = 2/(2+1)   = 2/3
    # micro: tp 2, fp 2, fn 1 -> 4/7
    micro, macro = f1_scores(logits, y)
    assert micro == pytest.approx(4 / 7)
    assert macro == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_mean_average_precision_by_hand():
    y = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.7, 0.4], [0.3, 0.6, 0.3],
                           [0.1, 0.1, 0.2]])
    # class 0 ranked 0.9 (hit), 0.8, 0.3 (hit), 0.1: AP = (1/1 + 2/3) / 2
    # class 1 ranked 0.7 (hit) first: AP = 1; class 2 has no positive and is left out
    assert mean_average_precision(scores, y) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert evaluate(scores, y, True)["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_accuracy_is_the_share_of_arg_max_hits():
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, -1.0], [0.0, 5.0]])
    assert evaluate(logits, torch.tensor([0, 1, 1, 1]), False) == {"accuracy": 0.75}


def test_stratified_split_holds_out_the_fraction_of_every_class():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    split = stratified_split(y, 0.2, seed=7)
    # round(0.2 * 10) = 2, round(0.2 * 5) = 1, and a class of 2 still keeps one each side
    assert np.bincount(y[split.test]).tolist() == [2, 1, 1]
    assert sorted([*split.train, *split.test]) == list(range(len(y)))
    again = stratified_split(y, 0.2, seed=7)
    assert np.array_equal(split.test, again.test)  # same seed, same rows
    assert any(not np.array_equal(split.test, stratified_split(y, 0.2, s).test)
               for s in range(8, 12))
    # pinned: this seed's rows (a change of the derivation or the sampler shows here)
    pinned = stratified_split(np.array([0] * 10 + [1] * 5), 0.2, derive_seed(0, "split"))
    assert pinned.test.tolist() == [3, 5, 14]
    nothing = stratified_split(y, 0.0, seed=7)
    assert len(nothing.test) == 0 and len(nothing.train) == len(y)


def test_validation_rows_are_carved_from_the_training_rows_only():
    y = np.array([0, 1] * 20)
    train = np.arange(0, 30)
    fit, val = carve_validation(train, y, 0.1, seed=3)
    assert set(fit) | set(val) == set(train) and not set(fit) & set(val)
    assert np.bincount(y[val]).tolist() == [2, 2]  # stratified: round(0.1 * 15) per class


def test_seed_derivation_is_the_table_and_numpy_seed_sequence():
    assert derive_seed(0, "split") == 3757552657
    assert derive_seed(0, "student", 3) == 1271617310
    for stage, key in STAGES.items():
        expected = np.random.SeedSequence(11, spawn_key=(*key, 2)).generate_state(1)[0]
        assert derive_seed(11, stage, 2) == int(expected), stage
    # stages of one seed are independent streams; the generator is seeded with the child
    children = {derive_seed(1, stage) for stage in ("split", "init_a", "init_b", "shuffle")}
    assert len(children) == 4
    a = torch.randperm(10, generator=generator(4, "permute", 2))
    b = torch.randperm(10, generator=torch.Generator().manual_seed(derive_seed(4, "permute",
                                                                                2)))
    assert torch.equal(a, b)


def test_a_registry_lists_the_valid_names_when_one_is_unknown():
    registry: Registry[int] = Registry("dist")
    registry.add("mse", 1, "squared")
    registry.add("l1", 2, "absolute")
    assert registry["l1"] == 2 and registry.names() == ["mse", "l1"]
    with pytest.raises(InputError, match=r"^--dist must be one of mse, l1; got 'l2'$"):
        registry["l2"]
    with pytest.raises(InputError, match="got None"):
        registry.check(None)
    assert registry.describe() == "mse: squared; l1: absolute"
    with pytest.raises(ValueError, match="twice"):
        registry.add("mse", 3, "again")


def test_every_registry_of_the_package_refuses_unknown_names_the_same_way():
    from cmkd_doctor.examples.datasets import DATASETS
    from cmkd_doctor.examples.reproduce.gaussian import EXPERIMENTS
    from cmkd_doctor.ranking.run import ESTIMATORS, NORMALIZATIONS
    from cmkd_doctor.teachers.extraction import POOLS
    from cmkd_doctor.teachers.masks import FILLS, MODES
    from cmkd_doctor.training.engine import OPTIMIZERS
    from cmkd_doctor.training.losses import DISTANCES

    for registry in (DATASETS, OPTIMIZERS, POOLS, DISTANCES, ESTIMATORS, NORMALIZATIONS,
                     EXPERIMENTS, FILLS, MODES):
        with pytest.raises(InputError, match=f"must be one of {', '.join(registry)}; "
                                             "got 'nope'"):
            registry["nope"]


@pytest.mark.parametrize("value,ok", [(3, True), (0, False), (True, False), (2.0, False),
                                      ("3", False)])
def test_whole_number_options_refuse_bools_floats_and_text(value, ok):
    from cmkd_doctor.validation import whole

    if ok:
        assert whole("seeds", value, 1) == value
    else:
        with pytest.raises(InputError, match="--seeds must be a whole number >= 1"):
            whole("seeds", value, 1)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 0.0])
def test_number_options_refuse_non_finite_and_out_of_range_values(value):
    from cmkd_doctor.validation import number

    with pytest.raises(InputError, match="--temperature must be a positive number"):
        number("temperature", value, "a positive number", low=0, open_low=True)
