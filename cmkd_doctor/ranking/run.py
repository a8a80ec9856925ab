"""Algorithm 1 run on paired data: :func:`rank` orchestrates its steps
(:mod:`.algorithm1`) under its options (:mod:`.rank_options`), with restarts, the
up-front memory check, the gamma estimate and the checks (:mod:`.rank_checks`), and
returns a :class:`RankResult`. Writing it to a run directory is
:func:`cmkd_doctor.io.rundir.rank_files`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from cmkd_doctor import distributed
from cmkd_doctor.choices import AUTO_RESTART_FLOP, AUTO_RESTARTS
from cmkd_doctor.devices import require_memory, resolve_device
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.inputs import PairedData
from cmkd_doctor.io.splits import Split, fit_and_validation, read_split, stratified_split
from cmkd_doctor.io.streaming import RowSet, plan_chunk_rows, read_rows, row_bytes
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.ranking.algorithm1 import (
    NORMALIZATIONS,
    TILE_ELEMENTS,
    align,
    aligned_epochs,
    channel_order,
    expected_increase,
    increases,
    normalize,
    permutation_distances,
    permutations,
)
from cmkd_doctor.ranking.checks import (
    ALIGNMENT_THRESHOLD,
    STABILITY_THRESHOLD,
    alignment,
    at_chance,
    decisive_channels,
    kendall_tau,
    negative_channels,
    ranking_stability,
)
from cmkd_doctor.ranking.findings import Finding, check_ranking
from cmkd_doctor.ranking.gamma import MAX_ROWS, estimate_gamma, gamma_bytes
from cmkd_doctor.ranking.groups import Groups, correlated_groups, read_groups, sampled_rows
from cmkd_doctor.ranking.options import (
    ESTIMATORS,
    PERMUTATIONS,
    PERMUTED_ROWS,
    RANK_PROTOCOLS,
    SIDES,
    RankOptions,
    RankProtocol,
)
from cmkd_doctor.seeds import derive_seed
from cmkd_doctor.training import curves
from cmkd_doctor.training.engine import (
    FitResult,
    evaluate_rows,
    predict,
)
from cmkd_doctor.training.losses import DISTANCES
from cmkd_doctor.training.mlp import Net, parameter_count
from cmkd_doctor.training.stacked import network_bytes


# An estimator gives the (d, M) increases of Dist and the unpermuted distance, from the
# aligned network of the permuted modality, its rows and the other network's logits.
# (declared, with their descriptions, in cmkd_doctor.choices)
@ESTIMATORS.register("sampled")
def _sampled(net: Net, rows: RowSet, target: torch.Tensor, options: RankOptions,
             multilabel: bool, which: int, progress: Progress,
             units: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    # each process of a torchrun job permutes its own block of channels (or groups)
    width = rows.widths[which]
    count = width if units is None else int(units.max()) + 1
    increase, unpermuted = permutation_distances(
        net, rows, target, DISTANCES[options.dist],
        permutations(len(rows), options.repeats, options.seed,
                     width if options.permutation == "per_channel" else None),
        multilabel=multilabel, which=which, channels=distributed.my_channels(count),
        progress=progress, units=units)
    increase = distributed.sum_all(increase)
    # a group's increase is each of its channels'
    return (increase if units is None else increase[units.to(increase.device)]), unpermuted


@ESTIMATORS.register("exact")
def _exact(net: Net, rows: RowSet, target: torch.Tensor, options: RankOptions,
           multilabel: bool, which: int, progress: Progress,
           units: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    expected, unpermuted = expected_increase(net, rows, target, which=which)
    return expected[:, None], unpermuted  # (d, 1): the expectation, M = infinity


@dataclass
class RankResult:
    """Everything ``rank`` computed.

    Attributes
    ----------
    salience
        ``(d,)`` float32, step 9's normalised salience of the permuted modality.
    distances
        ``(d, M)`` float64, Dist after permuting channel ``i`` in repeat ``m`` (step 6).
    unpermuted
        Dist between the aligned networks before any permutation (the mean over
        restarts; ``unpermuted_runs`` holds each restart's, whose increases are the
        ``distances`` columns of that restart, M each, in order).
    constant
        Sorted channels of the permuted modality that are constant on the fit rows:
        they carry nothing, every derived teacher nullifies them, and
        :func:`channel_order` puts them last.
    alignment
        How well f2 reproduces f1 on the permuted rows (:func:`alignment`).
    gamma
        The estimate of Sec. 4's gamma from the data
        (:func:`cmkd_doctor.ranking.gamma.estimate_gamma`).
    pairing
        Whether the rows of a and b share more than their class
        (:class:`cmkd_doctor.ranking.gamma.Pairing`).
    chance
        Per modality, whether it predicts the labels at all (:func:`at_chance`).
    """

    salience: np.ndarray
    distances: np.ndarray
    unpermuted: float
    net_a: Net
    net_b: Net
    split: Split
    options: RankOptions
    fit: FitResult
    permuted_rows: str
    device: str
    metrics: dict[str, dict[str, dict[str, float] | None]]
    timings: dict[str, float]
    constant: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    standardization: dict[str, Any] = field(default_factory=dict)
    alignment: dict[str, Any] = field(default_factory=dict)
    negative: dict[str, Any] = field(default_factory=dict)
    stability: dict[str, Any] = field(default_factory=dict)
    # what the checks found, decided once (words: cmkd_doctor.wording.rank_warnings)
    findings: list[Finding] = field(default_factory=list)
    gamma: dict[str, Any] = field(default_factory=dict)
    pairing: dict[str, Any] = field(default_factory=dict)
    chance: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] | None = None
    unpermuted_runs: list[float] = field(default_factory=list)

    def checks(self) -> dict[str, Any]:
        """The checks' figures under their ``rank.json`` names (what
        :func:`cmkd_doctor.ranking.findings.check_ranking` reads)."""
        return {"options": self.options.to_dict(), "permuted_modality": self.options.permute,
                "permuted_rows": self.permuted_rows, "alignment": self.alignment,
                "gamma_estimate": self.gamma, "pairing": self.pairing, "chance": self.chance,
                "groups": self.groups, "stability": self.stability,
                "constant_channels": self.constant.tolist(),
                "negative_salience": self.negative}

    @property
    def increase(self) -> np.ndarray:
        """``(d, restarts x M)``: each column's Dist increase over its own restart's
        unpermuted distance (step 7)."""
        return increases(self.distances, self.unpermuted_runs or [self.unpermuted])


def ranking_bytes(widths: list[int], permuted_rows: int, channels: int, n_classes: int,
                  options: RankOptions) -> int:
    """Bytes a ranking holds at once, estimated before any work: the aligned pairs in
    training (every restart's, trained as one stack), the row permutations and the
    (channels, restarts x M) distances."""
    restarts = options.restarts or 3
    batch = options.batch_size or permuted_rows
    nets = restarts * sum(network_bytes(w, options.hidden, n_classes, batch) for w in widths)
    return nets + 8 * options.repeats * permuted_rows + 16 * channels * options.repeats * restarts


def check_memory(widths: list[int], permuted_rows: int, channels: int, n_rows: int,
                 n_classes: int, options: RankOptions, device: torch.device) -> None:
    """Refuse, before any training, a ranking whose networks and permutations
    (:func:`ranking_bytes`, on ``device``) or whose gamma estimate
    (:func:`~cmkd_doctor.ranking.gamma.gamma_bytes`, on the host, after them) cannot fit."""
    nets = ranking_bytes(widths, permuted_rows, channels, n_classes, options)
    what = (f"this ranking (two networks of --hidden {','.join(map(str, options.hidden)) or 0}"
            f", M = {options.repeats} permutations of {channels} channels)")
    gamma = gamma_bytes(n_rows, *widths)
    gamma_what = (f"the gamma estimate (float64 copies and SVDs of up to {MAX_ROWS} rows of "
                  f"{widths[0]} + {widths[1]} features)")
    if device.type == "cpu":  # one memory for both
        require_memory(nets + gamma, f"{what} with {gamma_what}", device)
    else:
        require_memory(nets, what, device)
        require_memory(gamma, gamma_what, torch.device("cpu"))


# per-channel permutations (the official protocol) are held as int32 indices, M x n x d
PER_CHANNEL_BYTES = 1 << 30


def check_per_channel(n: int, d: int, repeats: int, resident: bool) -> None:
    """Refuse per-channel permutations the machine should not hold, up front."""
    need = 4 * n * d * repeats
    if need > PER_CHANNEL_BYTES:
        raise InputError(
            f"--permutation per_channel would hold {repeats} x {n} x {d} permutation "
            f"indices ({need / 2**30:.1f} GiB, limit {PER_CHANNEL_BYTES / 2**30:.0f} GiB): "
            "use fewer --repeats or rows, or --permutation shared")
    if not resident:
        raise InputError("--permutation per_channel needs the permuted rows in memory; "
                         "these are streamed: use --permutation shared or fewer rows")


def channel_groups(data: PairedData, which: int, fit_rows: np.ndarray,
                   options: RankOptions) -> Groups | None:
    """The groups of the ranked modality's channels that ``options.groups`` asks for
    (``None`` for ``none``): read from a file, or from correlations on (a seeded sample
    of) the fit rows."""
    x = data.xa if which == 0 else data.xb
    if options.groups == "none":
        return None
    if options.groups != "auto":
        return Groups(read_groups(options.groups, x.shape[1]), "file",
                      file=options.groups)
    rows = sampled_rows(fit_rows, options.seed)
    return Groups(correlated_groups(read_rows(x, rows), options.group_threshold),
                  "auto", threshold=options.group_threshold)


@dataclass
class _Parts:
    """The rows a ranking reads, as row sets on its device: the split, the fitted and
    validation rows of step 1, the test rows, and the rows steps 2-8 permute."""

    split: Split
    fit_rows: np.ndarray
    fitting: RowSet
    val: RowSet
    test: RowSet
    permuted: RowSet
    permuted_name: str  # "test" or "train"


def _parts(data: PairedData, options: RankOptions, device: torch.device) -> _Parts:
    labels = data.labels
    split = (read_split(options.split, data.n) if options.split else
             stratified_split(labels.y, options.test_split,
                              derive_seed(options.seed, "split")))
    arrays = [data.xa, data.xb, labels.y]
    # one plan for every part: resident when all rows fit, else chunk sets of one size
    chunk_rows = plan_chunk_rows(data.n, row_bytes(arrays), device, options.chunk_rows)

    def part(rows: np.ndarray) -> RowSet:
        return RowSet(arrays, rows, device, chunk_rows)

    # early stopping needs a validation tenth; without it every training row trains
    fit_rows, val_rows = (fit_and_validation(split.train, labels.y, options.seed)
                          if options.patience else (split.train, split.train[:0]))
    fitting, val, test = part(fit_rows), part(val_rows), part(split.test)
    name = "test" if options.permute_on == "test" and len(split.test) else "train"
    permuted = test if name == "test" else part(split.train)
    # what the ranking will hold in memory, checked before any training
    which = SIDES[options.permute]
    check_memory(fitting.widths[:2], len(permuted), permuted.widths[which], data.n,
                 labels.n_classes, options, device)
    if options.permutation == "per_channel" and options.estimator == "sampled":
        check_per_channel(len(permuted), permuted.widths[which], options.repeats,
                          permuted.resident)
    return _Parts(split, fit_rows, fitting, val, test, permuted, name)


def _restart_seeds(options: RankOptions, cost: float) -> list[int]:
    """One seed per restart: ``--restarts``, or as many as the budget allows (3, or 1
    when one ranking is costly)."""
    restarts = options.restarts
    if restarts is None:
        restarts = AUTO_RESTARTS if cost <= AUTO_RESTART_FLOP else 1
    return [options.seed] + [derive_seed(options.seed, "restart", k)
                             for k in range(1, restarts)]


def _permuted(pair: tuple[Net, Net, FitResult], rows: RowSet, permuted_rows: str,
              options: RankOptions, multilabel: bool, progress: Progress,
              units: torch.Tensor | None) -> _Ranking:
    """Steps 2-8 on one restart's aligned pair, with the permutations of
    ``options.seed``."""
    net_a, net_b, fitted = pair
    which = SIDES[options.permute]
    net = net_a if which == 0 else net_b
    target = predict(net_b if which == 0 else net_a, rows, which=1 - which)
    t0 = time.perf_counter()
    increase, unpermuted = ESTIMATORS[options.estimator](
        net, rows, target, options, multilabel, which, progress, units=units)
    return _Ranking(net_a, net_b, fitted, increase.cpu().numpy(), unpermuted,
                    alignment(predict(net, rows, which=which), target, permuted_rows),
                    time.perf_counter() - t0)


def rank(data: PairedData, options: RankOptions | None = None,
         progress: Progress = no_progress) -> RankResult:
    """Run Algorithm 1 on paired data and return the salience of the permuted modality.

    Parameters
    ----------
    data
        Paired features and labels, e.g. from :func:`cmkd_doctor.io.inputs.load_paired`.
    options
        :class:`RankOptions`; defaults when ``None``.
    progress
        Called as ``progress(task, done, total)`` for ``align`` and ``permute``.
    """
    options = (options or RankOptions()).checked()
    device = resolve_device(options.device)
    labels = data.labels
    parts = _parts(data, options, device)
    split, fit_rows, fitting, val, test, rows = (parts.split, parts.fit_rows, parts.fitting,
                                                 parts.val, parts.test, parts.permuted)
    stats, permuted_rows = [fitting.stats(0), fitting.stats(1)], parts.permuted_name
    which = SIDES[options.permute]
    constant = np.flatnonzero(stats[which][2].cpu().numpy()).astype(np.int64)
    groups = channel_groups(data, which, fit_rows, options)
    units = None if groups is None else torch.as_tensor(groups.ids)

    cost = ranking_cost(fitting.widths[:2], labels.n_classes, len(fitting),
                        aligned_epochs(len(fitting), options), len(rows), options)
    seeds = _restart_seeds(options, cost)
    t0 = time.perf_counter()
    # step 1 of every restart, as one engine fit
    pairs = align(fitting, labels.n_classes, labels.multilabel, options,
                  held_out=val if len(val) else None, progress=progress, stats=stats,
                  seeds=seeds)
    train_s = time.perf_counter() - t0

    runs = [_permuted(pair, rows, permuted_rows, replace(options, seed=seed),
                      labels.multilabel, progress, units)
            for seed, pair in zip(seeds, pairs, strict=True)]
    salience, saliences, increase = _salience(runs, options.normalize)  # step 9
    distances = np.concatenate([r.unpermuted + r.increase for r in runs], axis=1)
    agreement = _agreement(runs)
    stability = {**ranking_stability(saliences, constant, increase,
                                   options.restarts is None),
                 "flop_per_restart": cost}
    net_a, net_b, fitted = runs[0].net_a, runs[0].net_b, runs[0].fit
    metrics = _aligned_metrics(net_a, net_b, {"train": [fitting, val], "test": [test]},
                               labels.multilabel)

    t0 = time.perf_counter()
    # Sec. 4's gamma, from the data: every row (regressions checked leave-one-out)
    gamma = estimate_gamma(data.xa, data.xb, labels.y, labels.n_classes, labels.multilabel,
                           options.seed)
    gamma_s = time.perf_counter() - t0
    chance = {side: at_chance(side, gamma.label_level, metrics[side], labels,
                              split.test if len(split.test) else split.train)
              for side in ("a", "b")}
    negative = negative_channels(increase)
    groups_found = None if groups is None else groups.to_dict(salience)
    result = RankResult(
        salience=salience, distances=distances,
        unpermuted=float(np.mean([r.unpermuted for r in runs])),
        net_a=net_a, net_b=net_b, split=split, options=options, fit=fitted,
        permuted_rows=permuted_rows, device=str(device), metrics=metrics,
        timings={"train_s": round(train_s, 4),
                 "permute_s": round(sum(r.permute_s for r in runs), 4),
                 "gamma_s": round(gamma_s, 4),
                 # epochs summed over the restarts' pairs, as distill's student_epochs
                 "aligned_epochs": sum(fitted.epochs_run for *_, fitted in pairs)},
        constant=constant, standardization=_standardization(stats, options.standardize),
        alignment=agreement,
        negative=negative, stability=stability,
        gamma=gamma.to_dict(), pairing=gamma.pairing.to_dict(), chance=chance,
        groups=groups_found,
        unpermuted_runs=[float(r.unpermuted) for r in runs])
    # the checks' figures, as rank.json holds them, read into findings once
    result.findings = check_ranking(result.checks(), salience)
    return result


def _salience(runs: list[_Ranking], how: str
              ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Step 9 over the restarts: the salience (each restart's normalised, averaged and
    normalised again), each restart's, and every restart's increases side by side
    ``(d, restarts x M)``."""
    saliences = [normalize(r.increase.mean(axis=1), how) for r in runs]
    salience = saliences[0] if len(runs) == 1 else normalize(np.mean(saliences, axis=0), how)
    return salience, saliences, np.concatenate([r.increase for r in runs], axis=1)


def _agreement(runs: list[_Ranking]) -> dict[str, Any]:
    """The alignment check over the restarts: their mean score, and each one's."""
    scores = [r.alignment["score"] for r in runs]
    found = {**runs[0].alignment, "score": float(np.mean(scores)), "per_restart": scores}
    found["reliable"] = found["score"] >= found["threshold"]
    return found


def _aligned_metrics(net_a: Net, net_b: Net, parts: dict[str, list[RowSet]],
                     multilabel: bool) -> dict[str, dict[str, Any]]:
    """Each aligned network's metrics on the training and the test rows."""
    metrics: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    for name, rows in parts.items():
        for side, net, which in (("a", net_a, 0), ("b", net_b, 1)):
            found = evaluate_rows(net, rows, which, 2, multilabel)
            metrics[side][name] = None if found is None else found[0]
            curves.metrics(f"aligned f_{side} {name}", metrics[side][name])
    return metrics


def _standardization(stats: list[tuple[torch.Tensor, ...]], enabled: bool
                     ) -> dict[str, Any]:
    """What rank.json records of each modality's fit-row statistics."""
    return {"enabled": enabled, "rows": "fit",
            **{side: {"mean": stats[w][0].cpu().tolist(), "std": stats[w][1].cpu().tolist(),
                      "constant": np.flatnonzero(stats[w][2].cpu().numpy()).tolist()}
               for side, w in (("a", 0), ("b", 1))}}


@dataclass
class _Ranking:
    """One restart of steps 1-8."""

    net_a: Net
    net_b: Net
    fit: FitResult
    increase: np.ndarray  # (d, M)
    unpermuted: float
    alignment: dict[str, Any]
    permute_s: float


def ranking_cost(widths: list[int], n_classes: int, fit_rows: int, epochs: int,
                 permuted_rows: int, options: RankOptions) -> float:
    """Floating-point operations of one ranking at most, counted from its sizes before
    any work: training for every epoch of the schedule (6 per weight, row and epoch:
    forward and backward) and the permutation phase (the layers after the first, per
    channel, repeat and row)."""
    hidden = options.hidden
    train = 6.0 * sum(parameter_count(w, hidden, n_classes) for w in widths) * fit_rows * epochs
    d_in = widths[SIDES[options.permute]]
    if hidden:  # the layers after the first, and the first's width
        per = 2.0 * (parameter_count(hidden[0], hidden[1:], n_classes) + hidden[0])
    else:
        per = 4.0  # linear: two dot products
    repeats = 1 if options.estimator == "exact" else options.repeats
    return train + per * d_in * repeats * permuted_rows


# the library API of ranking, wherever each part is defined
__all__ = ["ALIGNMENT_THRESHOLD", "AUTO_RESTART_FLOP", "ESTIMATORS", "NORMALIZATIONS",
           "PERMUTATIONS", "PERMUTED_ROWS", "RANK_PROTOCOLS", "SIDES", "STABILITY_THRESHOLD",
           "TILE_ELEMENTS", "RankOptions", "RankProtocol", "RankResult", "align", "alignment",
           "at_chance", "channel_order", "decisive_channels", "expected_increase",
           "increases", "kendall_tau", "negative_channels", "normalize",
           "permutation_distances", "permutations", "rank", "ranking_stability"]
