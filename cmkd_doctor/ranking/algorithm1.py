"""Algorithm 1 of the paper (Appendix B.4) as maths: its steps as functions on tensors.

Step 1 (:func:`align`) trains two unimodal networks to agree at the output level
(Eq. 28). Steps 2-8 (:func:`permutation_distances`, with the row permutations of
:func:`permutations`) permute one input channel at a time and measure how far that pushes
the two networks apart; :func:`expected_increase` gives their expectation in closed form
for a linear head. Step 9 normalises (:func:`normalize`). A channel whose permutation
moves the networks far apart carries modality-general decisive information.

The permutation phase never runs one forward pass per (channel, repeat). Permuting
column ``i`` changes the first layer's pre-activation by the rank-1 term
``delta (x) W1[:, i]`` (``delta = x[perm, i] - x[:, i]``), so only the layers after the
first are re-run, for a block of channels at once. With a linear head and MSE the change
in distance has a closed form that needs only two dot products per (channel, repeat).

Nothing here reads options, checks a result or writes a file: :mod:`.rank_options`,
:mod:`.rank_checks` and :mod:`.ranking` do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from cmkd_doctor.choices import NORMALIZATIONS
from cmkd_doctor.io.streaming import RowSet
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.ranking import kernels
from cmkd_doctor.seeds import derive_seed, generator
from cmkd_doctor.training.engine import (
    FitResult,
    Schedule,
    auto_epochs,
    fit,
)
from cmkd_doctor.training.losses import DISTANCES, Distance, task_loss_rows
from cmkd_doctor.training.mlp import Net, NetConfig, Stacked, new_net, standardisation

if TYPE_CHECKING:
    from cmkd_doctor.ranking.options import RankOptions


# Elements of one (channels, rows, hidden) tile in the permutation phase: small enough to
# stay in a CPU core's cache, large enough that per-call overhead does not dominate.
TILE_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}


class _Pair(torch.nn.Module):
    """f1 and f2 as one module, so one engine member (and one DDP wrapper) trains both."""

    def __init__(self, net_a: Net, net_b: Net):
        super().__init__()
        self.net_a, self.net_b = net_a, net_b

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net_a(xa), self.net_b(xb)

    def pairs(self) -> list[tuple[Net, Net]]:
        return [(self.net_a, self.net_b)]


class _StackedPairs(torch.nn.Module):
    """R aligned pairs as one engine model of R members (f1 stacked, f2 stacked): the
    restarts of a ranking train in one fit, each member with its own initialisation,
    minibatch order and early stopping, as R separate fits would, in batched matrix
    products instead of R small ones."""

    def __init__(self, pairs: Sequence[tuple[Net, Net]]):
        super().__init__()
        self.a = Stacked([a for a, _ in pairs])
        self.b = Stacked([b for _, b in pairs])

    @property
    def n_members(self) -> int:
        return self.a.n_members

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(xa), self.b(xb)

    def member_state(self, s: int) -> list[torch.Tensor]:
        return [*self.a.member_state(s), *self.b.member_state(s)]

    def set_members(self, states: Sequence[list[torch.Tensor]]) -> None:
        n = len(states[0]) // 2  # f1 and f2 have as many layers
        self.a.set_members([state[:n] for state in states])
        self.b.set_members([state[n:] for state in states])

    def pairs(self) -> list[tuple[Net, Net]]:
        return [(self.a.unstack(s), self.b.unstack(s)) for s in range(self.n_members)]


def align(
    train: RowSet,
    n_classes: int,
    multilabel: bool,
    options: RankOptions,
    held_out: RowSet | None = None,
    progress: Progress = no_progress,
    stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[tuple[Net, Net, FitResult]]:
    """Algorithm 1, step 1: jointly train f1 on X^a and f2 on X^b with Eq. 28.

    ``L = Dist(f1(Xa), f2(Xb)) + CE(Y, f1(Xa)) + CE(Y, f2(Xb))`` (BCE for multi-hot).
    ``train`` and ``held_out`` hold the arrays ``(xa, xb, y)``; ``held_out`` enables
    early stopping on the same loss. ``stats`` are each modality's fit-row
    :meth:`~cmkd_doctor.io.streaming.RowSet.stats` (computed when not given).

    One pair per seed of ``seeds`` (default: ``options.seed``), its networks and
    minibatch order drawn from that seed, all trained in one engine fit. Returns each
    pair's ``(f1, f2, its fit)``, in eval mode. One pair is one plain module; several
    are stacked (:class:`_StackedPairs`), which computes the same maths in batched
    matrix products, so its figures match separate fits up to float rounding.
    """
    distance = DISTANCES[options.dist]
    stats = stats or [train.stats(0), train.stats(1)]
    seeds = list(seeds or [options.seed])
    sides = [(NetConfig(train.widths[which], options.hidden, n_classes, multilabel), stage,
              [t.cpu() for t in standardisation(*stats[which], options.standardize)])
             for which, stage in ((0, "init_a"), (1, "init_b"))]
    pairs = []
    for seed in seeds:
        nets = []
        for config, stage, scaling in sides:
            net = new_net(config, derive_seed(seed, stage))
            net.set_standardisation(*scaling)
            nets.append(net)
        pairs.append(nets)
    model = (_Pair(*pairs[0]) if len(pairs) == 1 else _StackedPairs(pairs))
    model = model.to(train.device).train()
    per_row = distance.denominator(1, n_classes)  # Dist as a mean over rows

    def eq28_rows(model: torch.nn.Module, batch: list[torch.Tensor],
                  members: torch.Tensor) -> torch.Tensor:
        xa, xb, y = batch  # (pairs, rows, ...) each
        out_a, out_b = model(xa, xb)  # (pairs, rows, K) each
        return (distance.row_terms(out_a, out_b, multilabel) / per_row
                + task_loss_rows(out_a, y, multilabel) + task_loss_rows(out_b, y, multilabel))

    result = fit(model, eq28_rows, train,
                 Schedule(aligned_epochs(len(train), options), options.lr,
                          options.batch_size, options.patience, options.optimizer),
                 shuffle_seeds=[derive_seed(seed, "shuffle") for seed in seeds],
                 val=held_out, progress=progress, task="align")
    return [(net_a.eval(), net_b.eval(), member_fit(result, s))
            for s, (net_a, net_b) in enumerate(model.pairs())]


def aligned_epochs(fit_rows: int, options: RankOptions) -> int:
    """Step 1's most epochs: ``options.epochs``, else about
    :data:`~cmkd_doctor.training.engine.AUTO_STEPS` steps."""
    return options.epochs or auto_epochs(fit_rows, options.batch_size or fit_rows)


def member_fit(result: FitResult, s: int) -> FitResult:
    """Member ``s``'s part of a fit of several, as a fit of one."""
    epochs = len(result.train_loss[s])
    return FitResult(result.epochs_max, epochs, [result.best_epoch[s]], [result.train_loss[s]],
                     [result.val_loss[s]], [1] * epochs)


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
    """Everything after the first linear layer, pre-activation -> logits. ``pre`` must be
    a fresh tensor: :class:`Net`'s ReLUs run in place, which halves memory traffic."""
    return net.layers[1:](pre)


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
    fused: bool | None = None,
) -> tuple[torch.Tensor, float]:
    """Algorithm 1, steps 2-8: Dist(net(x permuted in channel i), target) for every i, m.

    With ``units`` (``(d,)`` group ids, :mod:`cmkd_doctor.ranking.groups`) the channels of a
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
    fused
        Use the fused Triton kernel (:mod:`cmkd_doctor.ranking.kernels`) for the layers after the
        first; ``None``: where :func:`cmkd_doctor.ranking.kernels.usable` says it runs (CUDA,
        one hidden layer).

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
    if fused is None:
        fused = not closed_form and kernels.usable(net.config.hidden, distance.name,
                                                   multilabel, device)
    tile = tile_elements or TILE_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    rows = max(1, min(n, tile // max(width, d)))
    block = max(1, tile // (rows * width))
    w_sq = w[:, lo:hi].square().sum(0)  # (channels,)
    buffer = torch.empty(0 if closed_form or fused else block * rows * width, device=device)
    w_share = w[:, lo:hi].T.contiguous() if fused else None  # (channels, H), the kernel's
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
            if fused:  # every channel of the share in one launch, nothing written back
                head = net.layers[-1]
                increase[lo:hi, m] += kernels.moved_increase(
                    pre, delta, w_share, head.weight, head.bias, tc, base_terms,
                    distance.name)
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


@NORMALIZATIONS.register("max")  # described in cmkd_doctor.choices
def _by_max(imp: np.ndarray) -> np.ndarray:
    top = imp.max()
    return imp / top if top > 0 else np.zeros_like(imp)


@NORMALIZATIONS.register("minmax")
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


def channel_order(salience: np.ndarray, constant: np.ndarray | list[int] = ()) -> np.ndarray:
    """Channels from the most to the least modality-general: by salience, ties by index,
    with the constant channels (which carry nothing) last."""
    order = np.argsort(-np.asarray(salience), kind="stable")
    last = np.isin(order, np.asarray(constant, dtype=np.int64))
    return np.concatenate([order[~last], order[last]])

