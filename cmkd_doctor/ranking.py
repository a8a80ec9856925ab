"""Algorithm 1 of the paper (Appendix B.4): modality-general decisive feature ranking.

Step 1 trains two unimodal networks to agree at the output level (Eq. 28). Steps 2-8
permute one input channel at a time and measure how far that pushes the two networks
apart. Step 9 normalises. A channel whose permutation moves the networks far apart
carries modality-general decisive information.

The permutation phase never runs one forward pass per (channel, repeat). Permuting
column ``i`` changes the first layer's pre-activation by the rank-1 term
``delta (x) W1[:, i]`` (``delta = x[perm, i] - x[:, i]``), so only the layers after the
first are re-run, for a block of channels at once. With a linear head and MSE the change
in distance has a closed form that needs only two dot products per (channel, repeat).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmkd_doctor import curves, distributed
from cmkd_doctor.classifiers import network_bytes
from cmkd_doctor.devices import require_memory, resolve_device
from cmkd_doctor.engine import (
    OPTIMIZERS,
    FitResult,
    Schedule,
    auto_epochs,
    evaluate_rows,
    fit,
    predict,
)
from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.files import regular_file
from cmkd_doctor.findings import check_ranking
from cmkd_doctor.gamma import MAX_ROWS, estimate_gamma, gamma_bytes
from cmkd_doctor.groups import Groups, correlated_groups, read_groups, sampled_rows
from cmkd_doctor.inputs import PairedData
from cmkd_doctor.losses import DISTANCES, Distance, task_loss_rows
from cmkd_doctor.models import Net, NetConfig, new_net, parse_hidden, standardisation
from cmkd_doctor.options import MAX_SEEDS, SEEDS_WHY, number, whole
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.registry import Registry
from cmkd_doctor.seeds import derive_seed, generator
from cmkd_doctor.splits import Split, fit_and_validation, read_split, stratified_split
from cmkd_doctor.streaming import RowSet, check_chunk_rows, plan_chunk_rows, row_bytes
from cmkd_doctor.teachers import n_nullified
from cmkd_doctor.wording import rank_warnings

# Elements of one (channels, rows, hidden) tile in the permutation phase: small enough to
# stay in a CPU core's cache, large enough that per-call overhead does not dominate.
TILE_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}


@dataclass(frozen=True)
class RankOptions:
    """Options of ``rank``; defaults are the CLI's.

    Attributes
    ----------
    repeats
        M, permutations per channel (Algorithm 1, step 4).
    hidden
        Hidden widths of both networks; ``()`` is a linear model.
    epochs
        Training epochs for step 1; ``None`` picks about 3000 optimiser steps.
    dist
        Dist of Eq. 28 and step 6, by name (see :data:`cmkd_doctor.losses.DISTANCES`).
    normalize
        Step 9: ``max`` (the paper's) or ``minmax`` (the official code's).
    permute
        ``a`` ranks modality a's channels; ``b`` ranks modality b's (paper note 3).
    test_split
        Fraction of rows held out (stratified); 0 keeps all for training.
    split
        A ``.npz`` with ``train`` and ``test`` row indices to use instead of
        ``test_split`` (a dataset's documented split).
    estimator
        ``sampled`` (M permutations) or ``exact`` (the closed-form expectation over all
        permutations; linear head with MSE only, see :func:`expected_increase`).
    permute_on
        Rows whose channels are permuted in steps 2-8: ``test`` (the held-out rows, the
        default; networks that memorised their training rows cannot fake agreement
        there) or ``train``. With no held-out rows, the training rows are used.
    chunk_rows
        Rows read at a time when the inputs are streamed from memory-mapped ``.npy``
        files; ``None`` keeps them on the device when they fit and otherwise picks
        chunk sets of about 128 MiB (:mod:`cmkd_doctor.streaming`).
    patience
        Stop step 1 once the Eq. 28 loss on a validation tenth of the training rows has
        not improved for this many epochs and keep the best epoch; 0 trains all epochs.
    restarts
        Train the aligned pair this many times (another initialisation, minibatch order
        and permutations each, the same split) and average the salience; 2 or more
        measure the ranking's stability. ``None``: 3 when one ranking costs at most
        :data:`AUTO_RESTART_FLOP` (:func:`ranking_cost`), else 1 (``diagnose``'s
        default). The cost is counted, not timed, so every process and machine decides
        the same.
    standardize
        Standardise every channel with its fit-row mean and standard deviation inside
        the networks (:func:`cmkd_doctor.models.standardisation`), so the ranking does
        not depend on a channel's units; ``False`` feeds raw features.
    optimizer
        Step 1's optimiser, a name in :data:`cmkd_doctor.engine.OPTIMIZERS`.
    permutation
        ``shared``: repeat m permutes every channel with the same row permutation;
        ``per_channel``: a fresh permutation per (channel, repeat), as the official code
        draws them (needs the permuted rows in memory).
    groups
        ``none``: every channel is permuted alone (Algorithm 1 as written); ``auto``:
        channels whose absolute Spearman correlation on the fit rows is above
        ``group_threshold`` are permuted together (:mod:`cmkd_doctor.groups`); a path:
        a ``.npy`` of one group id per channel of the ranked modality.
    group_threshold
        The correlation above which ``groups auto`` joins two channels.
    protocol
        The set of defaults these options came from (:data:`RANK_PROTOCOLS`, see
        :meth:`for_protocol`); recorded, it changes nothing by itself.
    """

    repeats: int = 10
    hidden: tuple[int, ...] = (256,)
    epochs: int | None = None
    batch_size: int | None = 256  # None: full batch
    lr: float = 1e-3
    dist: str = "mse"
    normalize: str = "max"
    permute: str = "a"
    test_split: float = 0.2
    permute_on: str = "test"
    patience: int = 10
    split: str | None = None
    estimator: str = "sampled"
    chunk_rows: int | None = None
    restarts: int | None = 1
    standardize: bool = True
    optimizer: str = "adam"
    permutation: str = "shared"
    groups: str = "none"
    group_threshold: float = 0.8
    protocol: str = "doctor"
    device: str = "auto"
    seed: int = 0

    @classmethod
    def for_protocol(cls, protocol: str = "doctor", **options: Any) -> RankOptions:
        """The options of ``protocol`` (:data:`RANK_PROTOCOLS`), ``options`` overriding
        them: ``RankOptions.for_protocol("official", repeats=10)``."""
        return cls(**{**RANK_PROTOCOLS[protocol].options, **options, "protocol": protocol})

    def checked(self) -> RankOptions:
        """Validate every option; return a copy with ``hidden`` parsed."""
        RANK_PROTOCOLS.check(self.protocol)
        OPTIMIZERS.check(self.optimizer)
        PERMUTATIONS.check(self.permutation)
        whole("repeats", self.repeats, 1)
        whole("epochs", self.epochs, 1, optional=True)
        whole("batch_size", self.batch_size, 1, optional=True)
        number("lr", self.lr, "a positive number", low=0, open_low=True)
        DISTANCES.check(self.dist)
        NORMALIZATIONS.check(self.normalize)
        SIDES.check(self.permute)
        number("test_split", self.test_split, "a fraction in [0, 1)", low=0, high=1,
               open_high=True)
        PERMUTED_ROWS.check(self.permute_on)
        whole("patience", self.patience, 0)
        whole("seed", self.seed, 0)
        # restarts average the salience like seeds: past 1000 they only cost time
        whole("restarts", self.restarts, 1, optional=True, maximum=MAX_SEEDS, why=SEEDS_WHY)
        if not isinstance(self.standardize, bool):
            raise option_error("standardize", "true or false", self.standardize)
        ESTIMATORS.check(self.estimator)
        if self.estimator == "exact" and (parse_hidden(self.hidden) or self.dist != "mse"):
            raise InputError("--estimator exact has a closed form only for a linear head "
                             "with MSE: use --hidden 0 --dist mse, or --estimator sampled "
                             "(no closed form exists through a ReLU or for l1/kl)")
        check_chunk_rows(self.chunk_rows)
        number("group_threshold", self.group_threshold, "a correlation in (0, 1)", low=0,
               high=1, open_low=True, open_high=True)
        groups = self.groups
        if not isinstance(groups, str) or not groups:
            raise option_error("groups", "none, auto or a .npy file of group ids", groups)
        if groups not in ("none", "auto"):
            regular_file(groups, f"--groups {groups}")
            groups = str(Path(groups).resolve())
        if groups != "none" and (self.estimator != "sampled"
                                 or self.permutation != "shared"):
            raise InputError(f"--groups {self.groups}: groups are permuted with the sampled "
                             "estimator and one permutation per repeat (--estimator sampled "
                             "--permutation shared)")
        if self.split is not None:
            regular_file(self.split, f"--split {self.split}")
        return replace(self, hidden=parse_hidden(self.hidden), groups=groups,
                       split=None if self.split is None else str(Path(self.split).resolve()))

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


@dataclass(frozen=True)
class RankProtocol:
    """A named set of :class:`RankOptions` defaults."""

    options: dict[str, Any]


RANK_PROTOCOLS: Registry[RankProtocol] = Registry("protocol")
RANK_PROTOCOLS.add("doctor", RankProtocol({}),
                   "cmkd-doctor's defaults: held-out rows, early stopping, Adam, an MLP, "
                   "standardised inputs")
# What the official Gaussian loop does (zihuixue/MFH, gauss/main_modify_gamma.py,
# train_for_overlap_tag and cal_overlap_tag): linear f1 and f2 trained jointly on every
# row (CE + CE + MSE) by full-batch SGD with momentum 0.9 at lr 0.01 for 1000 epochs,
# then M = 100 fresh permutations per channel of the training rows, MSE, min-max.
RANK_PROTOCOLS.add("official", RankProtocol({
    "repeats": 100, "hidden": (), "epochs": 1000, "batch_size": None, "lr": 0.01,
    "optimizer": "sgd_momentum", "patience": 0, "test_split": 0.0, "permute_on": "train",
    "dist": "mse", "normalize": "minmax", "standardize": False,
    "permutation": "per_channel", "restarts": 1}),
    "Algorithm 1 as the official code runs it: every row, 1000 epochs of full-batch SGD "
    "(momentum 0.9, lr 0.01), linear networks, raw inputs, M = 100 fresh permutations "
    "per channel of the training rows, min-max")
PERMUTATIONS: Registry[str] = Registry("permutation")
PERMUTATIONS.add("shared", "shared", "repeat m permutes every channel with one row "
                 "permutation")
PERMUTATIONS.add("per_channel", "per_channel", "a fresh permutation per (channel, repeat), "
                 "as the official code")


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
        (:func:`cmkd_doctor.gamma.estimate_gamma`).
    pairing
        Whether the rows of a and b share more than their class
        (:class:`cmkd_doctor.gamma.Pairing`).
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
    warnings: list[str] = field(default_factory=list)
    gamma: dict[str, Any] = field(default_factory=dict)
    pairing: dict[str, Any] = field(default_factory=dict)
    chance: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] | None = None
    unpermuted_runs: list[float] = field(default_factory=list)

    @property
    def increase(self) -> np.ndarray:
        """``(d, restarts x M)``: each column's Dist increase over its own restart's
        unpermuted distance (step 7)."""
        return increases(self.distances, self.unpermuted_runs or [self.unpermuted])


def increases(distances: np.ndarray, unpermuted: list[float]) -> np.ndarray:
    """Step 7's increases from the stored distances ``(d, restarts x M)`` and each
    restart's unpermuted distance: every restart's M columns less its own baseline (the
    restarts' networks differ, and so do their baselines)."""
    restarts = len(unpermuted)
    if distances.shape[1] % restarts:
        raise ValueError(f"{distances.shape[1]} columns do not split into {restarts} "
                         "restarts")
    return distances - np.repeat(np.asarray(unpermuted, np.float64),
                                 distances.shape[1] // restarts)[None, :]


class _Pair(torch.nn.Module):
    """f1 and f2 as one module, so one engine member (and one DDP wrapper) trains both."""

    def __init__(self, net_a: Net, net_b: Net):
        super().__init__()
        self.net_a, self.net_b = net_a, net_b

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net_a(xa), self.net_b(xb)


def align(
    train: RowSet,
    n_classes: int,
    multilabel: bool,
    options: RankOptions,
    held_out: RowSet | None = None,
    progress: Progress = no_progress,
    stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[Net, Net, FitResult]:
    """Algorithm 1, step 1: jointly train f1 on X^a and f2 on X^b with Eq. 28.

    ``L = Dist(f1(Xa), f2(Xb)) + CE(Y, f1(Xa)) + CE(Y, f2(Xb))`` (BCE for multi-hot).
    ``train`` and ``held_out`` hold the arrays ``(xa, xb, y)``; ``held_out`` enables
    early stopping on the same loss. ``stats`` are each modality's fit-row
    :meth:`~cmkd_doctor.streaming.RowSet.stats` (computed when not given). The pair is
    one member of the engine's fit.
    """
    distance = DISTANCES[options.dist]
    stats = stats or [train.stats(0), train.stats(1)]
    nets = []
    for which, stage in ((0, "init_a"), (1, "init_b")):
        config = NetConfig(train.widths[which], options.hidden, n_classes, multilabel)
        net = new_net(config, derive_seed(options.seed, stage)).to(train.device)
        net.set_standardisation(*standardisation(*stats[which], options.standardize))
        nets.append(net)
    net_a, net_b = nets
    pair = _Pair(net_a, net_b).train()
    per_row = distance.denominator(1, n_classes)  # Dist as a mean over rows

    def eq28_rows(model: torch.nn.Module, batch: list[torch.Tensor],
                  members: torch.Tensor) -> torch.Tensor:
        xa, xb, y = batch  # (1, rows, ...) each: the pair is the only member
        out_a, out_b = model(xa, xb)  # (1, rows, K) each
        return (distance.row_terms(out_a, out_b, multilabel) / per_row
                + task_loss_rows(out_a, y, multilabel) + task_loss_rows(out_b, y, multilabel))

    epochs = options.epochs or auto_epochs(len(train), options.batch_size or len(train))
    result = fit(pair, eq28_rows, train,
                 Schedule(epochs, options.lr, options.batch_size, options.patience,
                          options.optimizer),
                 shuffle_seeds=[derive_seed(options.seed, "shuffle")],
                 val=held_out, progress=progress, task="align")
    pair.eval()
    return net_a, net_b, result


def permutations(n: int, repeats: int, seed: int, channels: int | None = None
                 ) -> torch.Tensor:
    """Algorithm 1, step 5: the row permutations, from the child seeds ``(seed,
    permute, m)``, so any device, batching or sharding sees the same rows.

    Without ``channels``: ``(M, n)``, one per repeat; repeat ``m`` permutes every
    channel's column with it (each channel is still permuted alone, the others stay in
    place). With ``channels = d``: ``(M, n, d)`` int32, a fresh permutation for every
    (channel, repeat) as the official code draws them; column ``j`` of repeat ``m`` is
    channel ``j``'s.
    """
    if channels is None:
        return torch.stack([torch.randperm(n, generator=generator(seed, "permute", m))
                            for m in range(repeats)])
    return torch.stack([
        torch.rand(n, channels, generator=generator(seed, "permute", m)).argsort(0)
        .to(torch.int32) for m in range(repeats)])


def _tail(net: Net, pre: torch.Tensor) -> torch.Tensor:
    """Everything after the first linear layer, pre-activation -> logits, on a fresh
    tensor, with in-place ReLUs to halve memory traffic."""
    for layer in list(net.layers)[1:]:
        pre = pre.relu_() if isinstance(layer, torch.nn.ReLU) else layer(pre)
    return pre


def _rows_of(x: torch.Tensor | RowSet, which: int):
    """``(n, d, span, read)``: ``span(r0, r1)`` and ``read(positions)`` give those rows of
    ``x`` on the device (read from disk for a streamed :class:`RowSet`)."""
    if isinstance(x, RowSet):
        def read(pos: torch.Tensor) -> torch.Tensor:
            return x.take(pos, only=[which])[0]

        return len(x), x.widths[which], lambda r0, r1: read(torch.arange(r0, r1)), read
    return len(x), x.shape[1], lambda r0, r1: x[r0:r1], lambda pos: x[pos.to(x.device)]


@torch.no_grad()
def permutation_distances(
    net: Net,
    x: torch.Tensor | RowSet,
    target: torch.Tensor,
    distance: Distance,
    perms: torch.Tensor,
    *,
    multilabel: bool = False,
    which: int = 0,
    channels: range | None = None,
    tile_elements: int | None = None,
    progress: Progress = no_progress,
    units: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Algorithm 1, steps 2-8: Dist(net(x permuted in channel i), target) for every i, m.

    With ``units`` (``(d,)`` group ids, :mod:`cmkd_doctor.groups`) the channels of a
    group are permuted together, with the same row permutation, and the result has one
    row per group.

    Parameters
    ----------
    net
        The aligned network of the permuted modality.
    x
        ``(n, d)`` its inputs, or a :class:`RowSet` whose array ``which`` they are
        (streamed sets are read one tile of rows at a time).
    target
        ``(n, K)`` the other network's logits on the paired rows.
    perms
        Row permutations from :func:`permutations`: ``(M, n)``, or ``(M, n, d)`` for one
        per (channel, repeat), which needs ``x`` resident.
    channels
        Only these channels (a distributed process's share; with ``units``, these
        groups in the order of their size); the others stay 0.
    tile_elements
        Work-tile size; defaults to :data:`TILE_ELEMENTS` for the device.

    Returns
    -------
    increase, unpermuted
        ``(d, M)`` (``(groups, M)`` with ``units``) float64 increase of Dist over the
        unpermuted value (computed as a sum of per-row differences, so small increases
        do not cancel), and that value.
    """
    n, d, span, read = _rows_of(x, which)
    if units is not None:
        return _group_distances(net, span, read, n, target, distance, perms, units,
                                multilabel, channels, tile_elements, progress)
    per_channel = perms.dim() == 3
    if per_channel:  # each channel's column is gathered from the resident rows
        whole_x = x.tensors()[which] if isinstance(x, RowSet) else x
    channels = range(d) if channels is None else channels
    lo, hi = channels.start, channels.stop
    n_repeats, n_classes = len(perms), target.shape[1]
    device = target.device
    if not isinstance(x, RowSet):
        perms = perms.to(device)
    # the first layer acts on standardised x: folding the scale into the weights would
    # overflow float32 for channels of tiny scale (1e-21 and below occur in real data)
    w, b = net.first.weight, net.first.bias  # (H, d), (H,)
    mean, scale = net.mean, net.scale
    width = w.shape[0]
    closed_form = not net.config.hidden and distance.name == "mse"
    tile = tile_elements or TILE_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    rows = max(1, min(n, tile // max(width, d)))
    block = max(1, tile // (rows * width))
    w_sq = w[:, lo:hi].square().sum(0)  # (channels,)
    buffer = torch.empty(0 if closed_form else block * rows * width, device=device)
    increase = torch.zeros(d, n_repeats, dtype=torch.float64, device=device)
    base = torch.zeros((), dtype=torch.float64, device=device)
    for r0 in range(0, n, rows):
        xc = (span(r0, min(n, r0 + rows)) - mean) / scale  # (c, d), standardised
        tc = target[r0 : r0 + rows]  # (c, K)
        pre = torch.addmm(b, xc, w.T)  # (c, H)
        out = _tail(net, pre.clone())  # (c, K)
        base_terms = distance.row_terms(out, tc, multilabel)  # (c,)
        base += base_terms.sum()
        if closed_form:
            # Linear head, MSE: ||R + delta w_i||^2 - ||R||^2 = 2 delta R.w_i + delta^2 |w_i|^2
            rw = (out - tc) @ w[:, lo:hi]  # (c, channels)
        for m in range(n_repeats):
            if per_channel:
                index = perms[m, r0 : r0 + rows, lo:hi].to(device, torch.int64)
                moved_x = whole_x[:, lo:hi].gather(0, index)
            else:
                moved_x = read(perms[m, r0 : r0 + rows])[:, lo:hi]
            moved_x = (moved_x - mean[lo:hi]) / scale[lo:hi]
            delta = moved_x - xc[:, lo:hi]  # (c, channels)
            if closed_form:
                inc = 2 * (delta * rw).sum(0) + w_sq * delta.square().sum(0)  # (channels,)
                increase[lo:hi, m] += inc
                continue
            for j0 in range(lo, hi, block):
                j1 = min(hi, j0 + block)
                dj, wj = delta[:, j0 - lo : j1 - lo].T, w[:, j0:j1].T  # (B, c), (B, H)
                # into a reused contiguous buffer, so the tail runs as 2-D GEMMs (faster
                # than batched 3-D ones on the CPU)
                moved = buffer[: len(dj) * len(xc) * width].view(len(dj), len(xc), width)
                torch.addcmul(pre, dj[:, :, None], wj[:, None, :], out=moved)  # (B, c, H)
                out = _tail(net, moved.view(-1, width)).view(len(dj), len(xc), n_classes)
                terms = distance.row_terms(out, tc, multilabel)  # (B, c)
                increase[j0:j1, m] += (terms - base_terms).sum(-1)
        progress("permute", min(n, r0 + rows), n)
    denom = distance.denominator(n, n_classes)
    return increase / denom, float(base) / denom


def _group_blocks(units: torch.Tensor, share: range | None, rows: int, width: int,
                  tile: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """The groups of this process's ``share`` (of the groups sorted by size) in blocks:
    each block's group ids and a ``(groups, largest)`` index of their channels, padded
    with ``d`` (a zero column), every block within ``tile`` elements."""
    d = len(units)
    sizes = torch.bincount(units)
    by_size = torch.argsort(sizes, stable=True)
    share = range(len(sizes)) if share is None else share
    members = torch.split(torch.argsort(units, stable=True), sizes.tolist())
    blocks, start = [], share.start
    while start < share.stop:
        largest = int(sizes[by_size[start]])
        stop = start + 1
        while (stop < share.stop and (stop - start + 1) * rows * max(width, int(
                sizes[by_size[stop]])) <= tile):
            largest = int(sizes[by_size[stop]])
            stop += 1
        ids = by_size[start:stop]
        index = torch.full((len(ids), largest), d, dtype=torch.int64)
        for row, g in enumerate(ids.tolist()):
            index[row, : len(members[g])] = members[g]
        blocks.append((ids, index))
        start = stop
    return blocks, len(sizes)


def _group_distances(net: Net, span, read, n: int, target: torch.Tensor,
                     distance: Distance, perms: torch.Tensor, units: torch.Tensor,
                     multilabel: bool, share: range | None, tile_elements: int | None,
                     progress: Progress) -> tuple[torch.Tensor, float]:
    """:func:`permutation_distances` with groups of channels permuted together: a
    group's channels move with one row permutation, so its pre-activation change is
    ``delta_G @ w_G.T``, computed for a block of groups as one batched product."""
    device = target.device
    w, b = net.first.weight, net.first.bias
    mean, scale = net.mean, net.scale
    width, n_classes, n_repeats = w.shape[0], target.shape[1], len(perms)
    tile = tile_elements or TILE_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    d = w.shape[1]
    rows = max(1, min(n, tile // max(width, d)))
    blocks, n_groups = _group_blocks(units.cpu(), share, rows, width, tile)
    w_ext = torch.cat([w.T, w.new_zeros(1, width)])  # (d + 1, H), row d is the padding
    weights = [(ids.to(device), index.to(device), w_ext[index.to(device)])
               for ids, index in blocks]
    increase = torch.zeros(n_groups, n_repeats, dtype=torch.float64, device=device)
    base = torch.zeros((), dtype=torch.float64, device=device)
    for r0 in range(0, n, rows):
        xc = (span(r0, min(n, r0 + rows)) - mean) / scale  # (c, d)
        tc = target[r0 : r0 + rows]
        pre = torch.addmm(b, xc, w.T)  # (c, H)
        base_terms = distance.row_terms(_tail(net, pre.clone()), tc, multilabel)
        base += base_terms.sum()
        for m in range(n_repeats):
            moved_x = (read(perms[m, r0 : r0 + rows]) - mean) / scale
            delta = torch.cat([moved_x - xc, xc.new_zeros(len(xc), 1)], dim=1)  # (c, d+1)
            for ids, index, w_g in weights:
                d_g = delta[:, index].permute(1, 0, 2)  # (G, c, largest)
                moved = pre + torch.bmm(d_g, w_g)  # (G, c, H)
                out = _tail(net, moved.reshape(-1, width)).view(len(ids), len(xc),
                                                                n_classes)
                terms = distance.row_terms(out, tc, multilabel)  # (G, c)
                increase[ids, m] += (terms - base_terms).sum(-1)
        progress("permute", min(n, r0 + rows), n)
    denom = distance.denominator(n, n_classes)
    return increase / denom, float(base) / denom


@torch.no_grad()
def expected_increase(net: Net, x: torch.Tensor | RowSet, target: torch.Tensor,
                      rows: int = 65536, which: int = 0) -> tuple[torch.Tensor, float]:
    """The exact expectation, over a uniformly random row permutation, of the increase in
    MSE when channel i is permuted: ``(d,)`` float64, and the unpermuted distance.

    Proof. With a linear head the logits are ``L = x W^T + b`` (``W (K, d)``, ``x`` the
    standardised features; permuting a column of raw features permutes the same column of
    standardised ones). Permuting column i by pi adds ``delta_n W[:, i]`` to row n, where
    ``delta_n = x[pi(n), i] - x[n, i]``. With the residual ``R = L - target`` and
    ``q = R W[:, i]`` (n,), the summed squared error grows by

        sum_n 2 delta_n q_n + delta_n^2 |W[:, i]|^2.

    For a uniformly random permutation, ``pi(n)`` is uniform over the n rows, so
    ``E[x[pi(n), i]] = mean(x_i)`` and ``E[x[pi(n), i]^2] = mean(x_i^2)``. Hence
    ``E[delta_n] = mean(x_i) - x[n, i]`` and, summing over n,

        sum_n E[delta_n] q_n = -n cov(x_i, q)
        sum_n E[delta_n^2]   = n (2 mean(x_i^2) - 2 mean(x_i)^2) = 2 n var(x_i)

    (population moments). The MSE divides by n K, so

        E[increase_i] = (2 / K) (var(x_i) |W[:, i]|^2 - cov(x_i, R W[:, i])).

    Only column moments and one product ``R W`` (n x d) are needed: O(n d), no sampling.
    Sampled estimates (:func:`permutation_distances`) converge to it as M grows.
    """
    w, b = net.first.weight, net.first.bias  # (K, d), (K,): on standardised x
    n, d, span, _ = _rows_of(x, which)
    n_classes, device = w.shape[0], target.device
    sums = {k: torch.zeros(d, dtype=torch.float64, device=device)
            for k in ("x", "xx", "q", "xq")}
    base = torch.zeros((), dtype=torch.float64, device=device)
    for r0 in range(0, n, rows):
        standard = (span(r0, min(n, r0 + rows)) - net.mean) / net.scale  # (c, d)
        xc = standard.double()
        residual = torch.addmm(b, standard, w.T).double() - target[r0 : r0 + rows]
        q = residual @ w.double()  # (c, d): q for every channel at once
        sums["x"] += xc.sum(0)
        sums["xx"] += xc.square().sum(0)
        sums["q"] += q.sum(0)
        sums["xq"] += (xc * q).sum(0)
        base += residual.square().sum()
    mean = sums["x"] / n
    var = sums["xx"] / n - mean.square()
    cov = sums["xq"] / n - mean * sums["q"] / n
    increase = 2.0 / n_classes * (var * w.double().square().sum(0) - cov)
    return increase, float(base) / (n * n_classes)


NORMALIZATIONS: Registry = Registry("normalize")


@NORMALIZATIONS.register("max", "p / max(p), the paper's step 9")
def _by_max(imp: np.ndarray) -> np.ndarray:
    top = imp.max()
    return imp / top if top > 0 else np.zeros_like(imp)


@NORMALIZATIONS.register("minmax", "(p - min(p)) / (max(p) - min(p)), the official code's")
def _by_range(imp: np.ndarray) -> np.ndarray:
    span = imp.max() - imp.min()
    return (imp - imp.min()) / span if span > 0 else np.zeros_like(imp)


def normalize(importance: np.ndarray, how: str) -> np.ndarray:
    """Algorithm 1, step 9, applied to the increase over the unpermuted distance.

    The paper divides the mean permuted distance by its maximum. Subtracting the
    unpermuted distance first keeps the order of the channels and makes a channel the
    networks ignore score 0 rather than an arbitrary floor. With ``max`` the most salient
    channel is exactly 1, and chance improvements can leave tiny negative values.
    Returns zeros when no channel moves the distance.
    """
    imp = np.asarray(importance, dtype=np.float64)
    return NORMALIZATIONS[how](imp).astype(np.float32)


# An estimator gives the (d, M) increases of Dist and the unpermuted distance, from the
# aligned network of the permuted modality, its rows and the other network's logits.
ESTIMATORS: Registry = Registry("estimator")


def ranking_bytes(widths: list[int], permuted_rows: int, channels: int, n_classes: int,
                  options: RankOptions) -> int:
    """Bytes a ranking holds at once, estimated before any work: the aligned pair in
    training, the row permutations and the (channels, restarts x M) distances."""
    restarts = options.restarts or 3
    batch = options.batch_size or permuted_rows
    nets = sum(network_bytes(w, options.hidden, n_classes, batch) for w in widths)
    return nets + 8 * options.repeats * permuted_rows + 16 * channels * options.repeats * restarts


def check_memory(widths: list[int], permuted_rows: int, channels: int, n_rows: int,
                 n_classes: int, options: RankOptions, device: torch.device) -> None:
    """Refuse, before any training, a ranking whose networks and permutations
    (:func:`ranking_bytes`, on ``device``) or whose gamma estimate
    (:func:`~cmkd_doctor.gamma.gamma_bytes`, on the host, after them) cannot fit."""
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


@ESTIMATORS.register("sampled", "M random permutations per channel (Algorithm 1 as "
                     "written)")
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


@ESTIMATORS.register("exact", "the expectation over all permutations in closed form "
                     "(M = infinity); linear head (--hidden 0) with --dist mse only")
def _exact(net: Net, rows: RowSet, target: torch.Tensor, options: RankOptions,
           multilabel: bool, which: int, progress: Progress,
           units: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    expected, unpermuted = expected_increase(net, rows, target, which=which)
    return expected[:, None], unpermuted  # (d, 1): the expectation, M = infinity


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
    return Groups(correlated_groups(np.asarray(x[rows]), options.group_threshold),
                  "auto", threshold=options.group_threshold)


# The modality whose channels are ranked, and the rows permuted in steps 2-8.
SIDES: Registry[int] = Registry("permute")
SIDES.add("a", 0, "rank modality a's channels (the teacher's)")
SIDES.add("b", 1, "rank modality b's channels (paper note 3)")
PERMUTED_ROWS: Registry[str] = Registry("permute_on")
PERMUTED_ROWS.add("test", "test", "the held-out rows (networks that memorised their "
                  "training rows cannot fake agreement there)")
PERMUTED_ROWS.add("train", "train", "the training rows (the literal reading)")


def rank(data: PairedData, options: RankOptions | None = None,
         progress: Progress = no_progress) -> RankResult:
    """Run Algorithm 1 on paired data and return the salience of the permuted modality.

    Parameters
    ----------
    data
        Paired features and labels, e.g. from :func:`cmkd_doctor.inputs.load_paired`.
    options
        :class:`RankOptions`; defaults when ``None``.
    progress
        Called as ``progress(task, done, total)`` for ``align`` and ``permute``.
    """
    options = (options or RankOptions()).checked()
    device = resolve_device(options.device)
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
    stats = [fitting.stats(0), fitting.stats(1)]
    permuted_rows = "test" if options.permute_on == "test" and len(split.test) else "train"
    rows = test if permuted_rows == "test" else part(split.train)
    which = SIDES[options.permute]
    check_memory(fitting.widths[:2], len(rows), rows.widths[which], data.n,
                 labels.n_classes, options, device)
    if options.permutation == "per_channel" and options.estimator == "sampled":
        check_per_channel(len(rows), rows.widths[which], options.repeats, rows.resident)
    constant = np.flatnonzero(stats[which][2].cpu().numpy()).astype(np.int64)
    groups = channel_groups(data, which, fit_rows, options)
    units = None if groups is None else torch.as_tensor(groups.ids)

    def once(seed: int) -> _Ranking:
        """Steps 1-8 with the networks, minibatches and permutations of ``seed``."""
        opts = replace(options, seed=seed)
        t0 = time.perf_counter()
        net_a, net_b, fitted = align(fitting, labels.n_classes, labels.multilabel, opts,
                                     held_out=val if len(val) else None,
                                     progress=progress, stats=stats)
        train_s = time.perf_counter() - t0
        net = net_a if which == 0 else net_b
        target = predict(net_b if which == 0 else net_a, rows, which=1 - which)
        t0 = time.perf_counter()
        increase, unpermuted = ESTIMATORS[options.estimator](
            net, rows, target, opts, labels.multilabel, which, progress, units=units)
        permute_s = time.perf_counter() - t0
        return _Ranking(net_a, net_b, fitted, increase.cpu().numpy(), unpermuted,
                        alignment(predict(net, rows, which=which), target, permuted_rows),
                        train_s, permute_s)

    runs = [once(options.seed)]
    restarts = options.restarts
    cost = ranking_cost(runs[0], len(fitting), len(rows), options)
    if restarts is None:  # as many as the budget allows: 3, or 1 when one is costly
        restarts = 3 if cost <= AUTO_RESTART_FLOP else 1
    runs += [once(derive_seed(options.seed, "restart", k)) for k in range(1, restarts)]
    saliences = [normalize(r.increase.mean(axis=1), options.normalize) for r in runs]
    salience = (saliences[0] if len(runs) == 1 else
                normalize(np.mean(saliences, axis=0), options.normalize))
    increase = np.concatenate([r.increase for r in runs], axis=1)  # (d, restarts x M)
    unpermuted = float(np.mean([r.unpermuted for r in runs]))
    distances = np.concatenate([r.unpermuted + r.increase for r in runs], axis=1)
    scores = [r.alignment["score"] for r in runs]
    agreement = {**runs[0].alignment, "score": float(np.mean(scores)),
                 "per_restart": scores}
    agreement["reliable"] = agreement["score"] >= agreement["threshold"]
    stability = {**ranking_stability(saliences, constant, increase,
                                   options.restarts is None),
                 "flop_per_restart": cost}
    net_a, net_b, fitted = runs[0].net_a, runs[0].net_b, runs[0].fit
    train_s = sum(r.train_s for r in runs)
    permute_s = sum(r.permute_s for r in runs)
    standardization = {
        "enabled": options.standardize, "rows": "fit",
        **{side: {"mean": stats[w][0].cpu().tolist(), "std": stats[w][1].cpu().tolist(),
                  "constant": np.flatnonzero(stats[w][2].cpu().numpy()).tolist()}
           for side, w in (("a", 0), ("b", 1))}}

    metrics: dict = {"a": {}, "b": {}}
    for name, parts in (("train", [fitting, val]), ("test", [test])):
        for side, net_s, w in (("a", net_a, 0), ("b", net_b, 1)):
            found = evaluate_rows(net_s, parts, w, 2, labels.multilabel)
            metrics[side][name] = None if found is None else found[0]
            curves.metrics(f"aligned f_{side} {name}", metrics[side][name])

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
    # the checks' figures, as rank.json will hold them, read into findings once
    findings = check_ranking(
        {"options": options.to_dict(), "permuted_modality": options.permute,
         "permuted_rows": permuted_rows, "alignment": agreement, "stability": stability,
         "pairing": gamma.pairing.to_dict(), "chance": chance,
         "gamma_estimate": gamma.to_dict(), "constant_channels": constant.tolist(),
         "negative_salience": negative, "groups": groups_found}, salience)
    return RankResult(
        salience=salience, distances=distances, unpermuted=unpermuted,
        net_a=net_a, net_b=net_b, split=split, options=options, fit=fitted,
        permuted_rows=permuted_rows, device=str(device), metrics=metrics,
        timings={"train_s": round(train_s, 4), "permute_s": round(permute_s, 4),
                 "gamma_s": round(gamma_s, 4)},
        constant=constant, standardization=standardization, alignment=agreement,
        negative=negative, stability=stability, warnings=rank_warnings(findings),
        gamma=gamma.to_dict(), pairing=gamma.pairing.to_dict(), chance=chance,
        groups=groups_found,
        unpermuted_runs=[float(r.unpermuted) for r in runs])


def at_chance(side: str, label_level: dict[str, Any], metrics: dict[str, Any],
              labels: Any, rows: np.ndarray) -> dict[str, Any]:
    """Does modality ``side`` predict the labels at all? At chance when a linear read-out
    explains none of the label variance held out (the 95% interval of V reaches 0) and,
    for single-label tasks, the aligned network's accuracy on ``rows`` is within 2
    binomial standard errors of always guessing the commonest class there."""
    low = label_level["explained_low"][side]
    found: dict[str, Any] = {"at_chance": bool(low <= 0), "explained": label_level[
        "explained"][side], "explained_low": low}
    part = "test" if metrics.get("test") else "train"
    if not labels.multilabel and metrics.get(part):
        y = np.asarray(labels.y[rows])
        base = float(np.bincount(y, minlength=labels.n_classes).max() / len(y))
        accuracy = metrics[part]["accuracy"]
        se = math.sqrt(max(base * (1 - base), 1e-12) / len(y))
        found.update(metric="accuracy", value=accuracy, chance=base, rows=part)
        found["at_chance"] = found["at_chance"] and accuracy - base <= 2 * se
    return found


@dataclass
class _Ranking:
    """One restart of steps 1-8."""

    net_a: Net
    net_b: Net
    fit: FitResult
    increase: np.ndarray  # (d, M)
    unpermuted: float
    alignment: dict[str, Any]
    train_s: float
    permute_s: float



# rank --restarts auto (diagnose): 3 restarts when one ranking costs at most this many
# floating-point operations (about 30 s on a 2-core CPU, well under a second on a GPU).
AUTO_RESTART_FLOP = 3e12


def ranking_cost(run: _Ranking, fit_rows: int, permuted_rows: int,
                 options: RankOptions) -> float:
    """Floating-point operations of one ranking, counted from its sizes: training (6 per
    weight, row and epoch: forward and backward) and the permutation phase (the layers
    after the first, per channel, repeat and row)."""
    weights = sum(p.numel() for net in (run.net_a, run.net_b) for p in net.parameters())
    train = 6.0 * weights * fit_rows * run.fit.epochs_run
    net = run.net_a if options.permute == "a" else run.net_b
    first = net.first.weight.numel()
    after = sum(p.numel() for p in net.parameters()) - first - net.first.bias.numel()
    width = net.first.weight.shape[0]
    per = 2.0 * (after + width) if net.config.hidden else 4.0  # linear: two dot products
    repeats = 1 if options.estimator == "exact" else options.repeats
    return train + per * net.config.d_in * repeats * permuted_rows


# A ranking is unstable when restarts agree on fewer of the channels that matter than
# this (chosen from measurements, see README "Real data").
STABILITY_THRESHOLD = 0.6
# The channels that matter: salience significantly above zero (Benjamini-Hochberg at this
# false discovery rate over the informative channels) and not negligible (at least this
# share of the most salient channel's: a network that learned a tiny weight on a noise
# channel raises Dist by a tiny but consistent amount when it is permuted).
DECISIVE_FDR = 0.05
DECISIVE_MIN_SALIENCE = 0.05


def decisive_channels(increase: np.ndarray, salience: np.ndarray,
                      informative: np.ndarray) -> np.ndarray:
    """The informative channels whose permutation significantly and not negligibly raises
    Dist (sorted).

    ``increase`` is (d, n): the per-repeat increases of every restart together. A channel's
    one-sided p-value comes from ``z = mean / SE`` over its n values (normal
    approximation); the Benjamini-Hochberg step-up at :data:`DECISIVE_FDR` keeps the
    expected share of noise channels among those found at or below 5%. Of those, the
    channels whose ``salience`` (max 1) reaches :data:`DECISIVE_MIN_SALIENCE` matter.
    """
    values = np.asarray(increase, dtype=np.float64)[informative]
    if values.shape[1] < 2 or not len(values):
        return informative[:0]
    mean = values.mean(axis=1)
    se = values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, mean / se, np.where(mean > 0, np.inf, 0.0))
    p = 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))
    order = np.argsort(p, kind="stable")
    passed = np.flatnonzero(p[order] <= DECISIVE_FDR * np.arange(1, len(p) + 1) / len(p))
    found = np.sort(informative[order[: passed[-1] + 1]]) if len(passed) else informative[:0]
    return found[np.asarray(salience)[found] >= DECISIVE_MIN_SALIENCE]


def ranking_stability(saliences: list[np.ndarray], constant: np.ndarray,
                      increase: np.ndarray, auto: bool = False) -> dict[str, Any]:
    """How much the rankings of several restarts agree on the channels that matter.

    The channels that matter (``decisive``) are those whose salience is significantly
    and not negligibly above zero (:func:`decisive_channels`, on every restart's repeats
    together and their mean salience); with k
    of them, ``top_overlap`` is the mean pairwise share of their k most salient channels
    that two restarts have in common, and ``kendall_tau`` the mean pairwise Kendall tau-b
    of the decisive channels' salience. Channels the networks ignore are left out, so
    their arbitrary order does not count. Unstable when the overlap is below
    :data:`STABILITY_THRESHOLD`, or when no channel matters. ``all_channels`` keeps the
    same figures over every informative channel (the overlap of the half a general
    teacher keeps at r = 0.5).
    """
    found: dict[str, Any] = {"restarts": len(saliences), "auto": auto,
                             "threshold": STABILITY_THRESHOLD, "fdr": DECISIVE_FDR,
                             "min_salience": DECISIVE_MIN_SALIENCE,
                             "rule": "top-k overlap over the k channels whose salience is "
                                     "significantly above zero (Benjamini-Hochberg) and at "
                                     "least min_salience"}
    informative = np.setdiff1d(np.arange(len(saliences[0])), constant)
    if len(saliences) < 2 or len(informative) < 2:
        return {**found, "kendall_tau": None, "top_overlap": None, "stable": None,
                "decisive": None, "all_channels": None}
    mean = np.mean(saliences, axis=0)
    decisive = decisive_channels(increase, mean / max(float(np.abs(mean).max()), 1e-300),
                                 informative)
    pairs = [(i, j) for i in range(len(saliences)) for j in range(i + 1, len(saliences))]

    def agreement(channels: np.ndarray, keep: int) -> tuple[float | None, float | None]:
        if keep == 0:
            return None, None
        taus, overlaps = [], []
        for i, j in pairs:
            a, b = saliences[i][informative], saliences[j][informative]
            top_a = set(np.argsort(-a, kind="stable")[:keep].tolist())
            top_b = set(np.argsort(-b, kind="stable")[:keep].tolist())
            overlaps.append(len(top_a & top_b) / keep)
            if len(channels) >= 2:
                taus.append(kendall_tau(saliences[i][channels], saliences[j][channels]))
        return (float(np.mean(taus)) if taus else None), float(np.mean(overlaps))

    tau, overlap = agreement(decisive, len(decisive))
    all_tau, all_overlap = agreement(informative,
                                     len(informative) - n_nullified(0.5, len(informative)))
    return {**found, "kendall_tau": tau, "top_overlap": overlap,
            "stable": overlap is not None and overlap >= STABILITY_THRESHOLD,
            "decisive": len(decisive), "decisive_channels": decisive.tolist(),
            "all_channels": {"kendall_tau": all_tau, "top_overlap": all_overlap}}


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (ties counted as in tau-b; 0 when either is
    constant), by scipy's O(n log n) algorithm in O(n) memory."""
    from scipy.stats import kendalltau

    tau = kendalltau(np.asarray(a, np.float64), np.asarray(b, np.float64)).statistic
    return 0.0 if math.isnan(tau) else float(tau)


# Alignment below this is flagged: the salience then measures noise more than shared
# information (chosen from measurements, see README "Real data").
ALIGNMENT_THRESHOLD = 0.5


def alignment(f1: torch.Tensor, f2: torch.Tensor, rows: str) -> dict[str, Any]:
    """How much of f1's output variation f2 reproduces on the same rows (R^2).

    Both ``(n, K)`` logits are centred per row (softmax ignores a shift shared by a row's
    logits), then ``score = 1 - sum((f1 - f2)^2) / sum((f1 - mean_rows(f1))^2)``: 1 when
    f2 reproduces f1 exactly, 0 when it does no better than f1's average output, negative
    when worse. Algorithm 1 reads the networks' disagreement after permuting a channel as
    modality-general information only if they agree before it.
    """
    a = f1.double() - f1.double().mean(-1, keepdim=True)
    b = f2.double() - f2.double().mean(-1, keepdim=True)
    spread = float((a - a.mean(0)).square().sum())
    score = 1.0 - float((a - b).square().sum()) / spread if spread > 0 else 0.0
    return {"score": score, "reliable": score >= ALIGNMENT_THRESHOLD,
            "threshold": ALIGNMENT_THRESHOLD, "rows": rows}


def negative_channels(increase: np.ndarray) -> dict[str, Any]:
    """Channels whose permutation brings the networks significantly closer: the mean
    increase over repeats below -2 standard errors (over the repeats)."""
    repeats = increase.shape[1]
    if repeats < 2:
        return {"count": None, "channels": [], "rule": "needs M >= 2 repeats"}
    se = increase.std(axis=1, ddof=1) / np.sqrt(repeats)
    found = np.flatnonzero(increase.mean(axis=1) < -2 * se)
    return {"count": int(len(found)), "channels": found.tolist(),
            "rule": "mean increase over the repeats below -2 standard errors"}


def channel_order(salience: np.ndarray, constant: np.ndarray | list[int] = ()) -> np.ndarray:
    """Channels from the most to the least modality-general: by salience, ties by index,
    with the constant channels (which carry nothing) last."""
    order = np.argsort(-np.asarray(salience), kind="stable")
    last = np.isin(order, np.asarray(constant, dtype=np.int64))
    return np.concatenate([order[~last], order[last]])
