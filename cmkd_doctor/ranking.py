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

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.inputs import PairedData
from cmkd_doctor.losses import DISTANCES, Distance, get_distance, task_loss
from cmkd_doctor.metrics import evaluate
from cmkd_doctor.models import Net, NetConfig, parse_hidden
from cmkd_doctor.runtime import (
    Progress,
    derive_seed,
    generator,
    no_progress,
    resolve_device,
    rows_to,
)
from cmkd_doctor.splits import Split, fit_and_validation, read_split, stratified_split
from cmkd_doctor.training import FitResult, auto_epochs, fit, predict

NORMALIZATIONS = {
    "max": "p / max(p), the paper's step 9",
    "minmax": "(p - min(p)) / (max(p) - min(p)), the official code's",
}
# Seed paths: one child seed per stage, and per repeat for the permutations.
_SEED_SPLIT, _SEED_INIT_A, _SEED_INIT_B, _SEED_SHUFFLE, _SEED_PERMUTE = range(5)
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
    patience
        Stop step 1 once the Eq. 28 loss on a validation tenth of the training rows has
        not improved for this many epochs and keep the best epoch; 0 trains all epochs.
    """

    repeats: int = 10
    hidden: tuple[int, ...] = (256,)
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    dist: str = "mse"
    normalize: str = "max"
    permute: str = "a"
    test_split: float = 0.2
    permute_on: str = "test"
    patience: int = 10
    split: str | None = None
    estimator: str = "sampled"
    device: str = "auto"
    seed: int = 0

    def checked(self) -> RankOptions:
        """Validate every option; return a copy with ``hidden`` parsed."""
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise option_error("repeats", "a whole number >= 1", self.repeats)
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise option_error("epochs", "a whole number >= 1", self.epochs)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise option_error("batch_size", "a whole number >= 1", self.batch_size)
        if not self.lr > 0 or not np.isfinite(self.lr):
            raise option_error("lr", "a positive number", self.lr)
        if self.dist not in DISTANCES:
            raise option_error("dist", f"one of {', '.join(DISTANCES)}", self.dist)
        if self.normalize not in NORMALIZATIONS:
            raise option_error("normalize", f"one of {', '.join(NORMALIZATIONS)}",
                               self.normalize)
        if self.permute not in ("a", "b"):
            raise option_error("permute", "a or b", self.permute)
        if not 0 <= self.test_split < 1:
            raise option_error("test_split", "a fraction in [0, 1)", self.test_split)
        if self.permute_on not in ("test", "train"):
            raise option_error("permute_on", "test or train", self.permute_on)
        if not isinstance(self.patience, int) or self.patience < 0:
            raise option_error("patience", "a whole number >= 0", self.patience)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise option_error("seed", "a whole number >= 0", self.seed)
        if self.estimator not in ESTIMATORS:
            raise option_error("estimator", f"one of {', '.join(ESTIMATORS)}", self.estimator)
        if self.estimator == "exact" and (parse_hidden(self.hidden) or self.dist != "mse"):
            raise InputError("--estimator exact has a closed form only for a linear head "
                             "with MSE: use --hidden 0 --dist mse, or --estimator sampled "
                             "(no closed form exists through a ReLU or for l1/kl)")
        if self.split is not None and not Path(self.split).is_file():
            raise InputError(f"--split {self.split}: no such file")
        return replace(self, hidden=parse_hidden(self.hidden),
                       split=None if self.split is None else str(Path(self.split).resolve()))

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


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
        Dist between the aligned networks before any permutation.
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
    warnings: list[str] = field(default_factory=list)

    @property
    def importance(self) -> np.ndarray:
        """``(d,)``: mean increase of Dist over the unpermuted distance."""
        return self.distances.mean(axis=1) - self.unpermuted


def _new_net(config: NetConfig, x: torch.Tensor, seed: int, stage: int) -> Net:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, stage))
        net = Net(config)
    net = net.to(x.device)
    net.set_standardisation(x.mean(0), x.std(0))
    return net


def align(
    xa: torch.Tensor,
    xb: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    multilabel: bool,
    options: RankOptions,
    held_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    progress: Progress = no_progress,
) -> tuple[Net, Net, FitResult]:
    """Algorithm 1, step 1: jointly train f1 on X^a and f2 on X^b with Eq. 28.

    ``L = Dist(f1(Xa), f2(Xb)) + CE(Y, f1(Xa)) + CE(Y, f2(Xb))`` (BCE for multi-hot).
    ``held_out = (xa, xb, y)`` enables early stopping on the same loss.
    """
    distance = get_distance(options.dist)
    net_a = _new_net(NetConfig(xa.shape[1], options.hidden, n_classes, multilabel), xa,
                     options.seed, _SEED_INIT_A)
    net_b = _new_net(NetConfig(xb.shape[1], options.hidden, n_classes, multilabel), xb,
                     options.seed, _SEED_INIT_B)
    net_a.train()
    net_b.train()

    def eq28(xa_: torch.Tensor, xb_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        out_a, out_b = net_a(xa_), net_b(xb_)  # (batch, K) each
        return (distance(out_a, out_b, multilabel) + task_loss(out_a, y_, multilabel)
                + task_loss(out_b, y_, multilabel))

    val_loss = None
    if held_out is not None and len(held_out[0]):
        def val_loss() -> float:
            return float(eq28(*held_out))

    epochs = options.epochs or auto_epochs(len(xa), options.batch_size)
    result = fit([*net_a.parameters(), *net_b.parameters()],
                 lambda index: eq28(xa[index], xb[index], y[index]), len(xa),
                 epochs=epochs, batch_size=options.batch_size, lr=options.lr,
                 gen=generator(options.seed, _SEED_SHUFFLE), device=xa.device,
                 val_loss=val_loss, patience=options.patience, modules=[net_a, net_b],
                 progress=progress, task="align")
    net_a.eval()
    net_b.eval()
    return net_a, net_b, result


def permutations(n: int, repeats: int, seed: int) -> torch.Tensor:
    """Algorithm 1, step 5: the ``(M, n)`` row permutations, one per repeat.

    Repeat ``m`` permutes every channel's column with the same permutation, drawn from
    the child seed ``(seed, permute, m)``: each channel is still permuted alone (the
    others stay in place), and any device, batching or sharding sees the same rows.
    """
    return torch.stack([torch.randperm(n, generator=generator(seed, _SEED_PERMUTE, m))
                        for m in range(repeats)])


def _tail(net: Net, pre: torch.Tensor) -> torch.Tensor:
    """``net.tail`` on a fresh tensor, with in-place ReLUs to halve memory traffic."""
    for layer in list(net.layers)[1:]:
        pre = pre.relu_() if isinstance(layer, torch.nn.ReLU) else layer(pre)
    return pre


@torch.no_grad()
def permutation_distances(
    net: Net,
    x: torch.Tensor,
    target: torch.Tensor,
    distance: Distance,
    perms: torch.Tensor,
    *,
    multilabel: bool = False,
    tile_elements: int | None = None,
    progress: Progress = no_progress,
) -> tuple[torch.Tensor, float]:
    """Algorithm 1, steps 2-8: Dist(net(x permuted in channel i), target) for every i, m.

    Parameters
    ----------
    net
        The aligned network of the permuted modality.
    x
        ``(n, d)`` its inputs.
    target
        ``(n, K)`` the other network's logits on the paired rows.
    perms
        ``(M, n)`` row permutations, from :func:`permutations`.
    tile_elements
        Work-tile size; defaults to :data:`TILE_ELEMENTS` for the device.

    Returns
    -------
    increase, unpermuted
        ``(d, M)`` float64 increase of Dist over the unpermuted value (computed as a sum
        of per-row differences, so small increases do not cancel), and that value.
    """
    n, d = x.shape
    n_repeats, n_classes = len(perms), target.shape[1]
    device = x.device
    perms = perms.to(device)
    w, b = net.folded_first()  # (H, d), (H,): acts on raw x
    width = w.shape[0]
    closed_form = not net.config.hidden and distance.name == "mse"
    tile = tile_elements or TILE_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    rows = max(1, min(n, tile // max(width, d)))
    block = max(1, tile // (rows * width))
    w_sq = w.square().sum(0)  # (d,)
    buffer = torch.empty(0 if closed_form else block * rows * width, device=device)
    increase = torch.zeros(d, n_repeats, dtype=torch.float64, device=device)
    base = torch.zeros((), dtype=torch.float64, device=device)
    for r0 in range(0, n, rows):
        xc, tc = x[r0 : r0 + rows], target[r0 : r0 + rows]  # (c, d), (c, K)
        pre = torch.addmm(b, xc, w.T)  # (c, H)
        out = _tail(net, pre.clone())  # (c, K)
        base_terms = distance.row_terms(out, tc, multilabel)  # (c,)
        base += base_terms.sum()
        if closed_form:
            # Linear head, MSE: ||R + delta w_i||^2 - ||R||^2 = 2 delta R.w_i + delta^2 |w_i|^2
            rw = (out - tc) @ w  # (c, d)
        for m in range(n_repeats):
            delta = x[perms[m, r0 : r0 + rows]] - xc  # (c, d)
            if closed_form:
                inc = 2 * (delta * rw).sum(0) + w_sq * delta.square().sum(0)  # (d,)
                increase[:, m] += inc
                continue
            for j0 in range(0, d, block):
                dj, wj = delta[:, j0 : j0 + block].T, w[:, j0 : j0 + block].T  # (B, c), (B, H)
                # into a reused contiguous buffer, so the tail runs as 2-D GEMMs (faster
                # than batched 3-D ones on the CPU)
                moved = buffer[: len(dj) * len(xc) * width].view(len(dj), len(xc), width)
                torch.addcmul(pre, dj[:, :, None], wj[:, None, :], out=moved)  # (B, c, H)
                out = _tail(net, moved.view(-1, width)).view(len(dj), len(xc), n_classes)
                terms = distance.row_terms(out, tc, multilabel)  # (B, c)
                increase[j0 : j0 + block, m] += (terms - base_terms).sum(-1)
        progress("permute", min(n, r0 + rows), n)
    denom = distance.denominator(n, n_classes)
    return increase / denom, float(base) / denom


ESTIMATORS = {
    "sampled": "M random permutations per channel (Algorithm 1 as written)",
    "exact": "the expectation over all permutations in closed form (M = infinity); linear "
             "head (--hidden 0) with --dist mse only",
}


@torch.no_grad()
def expected_increase(net: Net, x: torch.Tensor, target: torch.Tensor,
                      rows: int = 65536) -> tuple[torch.Tensor, float]:
    """The exact expectation, over a uniformly random row permutation, of the increase in
    MSE when channel i is permuted: ``(d,)`` float64, and the unpermuted distance.

    Proof. With a linear head the logits are ``L = x W^T + b`` (``W (K, d)``, standardising
    folded in). Permuting column i by pi adds ``delta_n W[:, i]`` to row n, where
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
    w, b = net.folded_first()  # (K, d), (K,)
    n, n_classes = len(x), w.shape[0]
    sums = {k: torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            for k in ("x", "xx", "q", "xq")}
    base = torch.zeros((), dtype=torch.float64, device=x.device)
    for r0 in range(0, n, rows):
        xc = x[r0 : r0 + rows].double()
        residual = torch.addmm(b, x[r0 : r0 + rows], w.T).double() - target[r0 : r0 + rows]
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


def normalize(importance: np.ndarray, how: str) -> np.ndarray:
    """Algorithm 1, step 9, applied to the increase over the unpermuted distance.

    The paper divides the mean permuted distance by its maximum. Subtracting the
    unpermuted distance first keeps the order of the channels and makes a channel the
    networks ignore score 0 rather than an arbitrary floor. With ``max`` the most salient
    channel is exactly 1, and chance improvements can leave tiny negative values.
    Returns zeros when no channel moves the distance.
    """
    imp = np.asarray(importance, dtype=np.float64)
    if how == "minmax":
        span = imp.max() - imp.min()
        out = (imp - imp.min()) / span if span > 0 else np.zeros_like(imp)
    else:
        top = imp.max()
        out = imp / top if top > 0 else np.zeros_like(imp)
    return out.astype(np.float32)


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
                              derive_seed(options.seed, _SEED_SPLIT)))
    y_all = torch.as_tensor(labels.y).to(device)

    def part(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (rows_to(data.xa, rows, device), rows_to(data.xb, rows, device),
                y_all[torch.as_tensor(rows, device=device)])

    fit_rows, val_rows = fit_and_validation(split.train, labels.y, options.seed)
    train, test, val = part(split.train), part(split.test), part(val_rows)
    t0 = time.perf_counter()
    net_a, net_b, fitted = align(*part(fit_rows), labels.n_classes, labels.multilabel,
                                 options, held_out=val if len(val_rows) else None,
                                 progress=progress)
    train_s = time.perf_counter() - t0

    permuted_rows = "test" if options.permute_on == "test" and len(split.test) else "train"
    xa, xb, _ = test if permuted_rows == "test" else train
    if options.permute == "a":
        net, x, target = net_a, xa, predict(net_b, xb)
    else:
        net, x, target = net_b, xb, predict(net_a, xa)
    t0 = time.perf_counter()
    if options.estimator == "exact":
        expected, unpermuted = expected_increase(net, x, target)
        increase = expected[:, None]  # (d, 1): the expectation, M = infinity
    else:
        increase, unpermuted = permutation_distances(
            net, x, target, get_distance(options.dist),
            permutations(len(x), options.repeats, options.seed),
            multilabel=labels.multilabel, progress=progress)
    permute_s = time.perf_counter() - t0
    increase = increase.cpu().numpy()
    importance = increase.mean(axis=1)
    salience = normalize(importance, options.normalize)
    warnings = []
    if not np.any(salience):
        warnings.append(
            f"no channel of modality {options.permute} moves the aligned networks apart when "
            "permuted: the salience is all zeros (are the features informative?)")

    metrics: dict = {"a": {}, "b": {}}
    for name, (xa_, xb_, y_) in (("train", train), ("test", test)):
        for side, net_s, x_ in (("a", net_a, xa_), ("b", net_b, xb_)):
            metrics[side][name] = (evaluate(predict(net_s, x_), y_, labels.multilabel)
                                   if len(y_) else None)
    return RankResult(
        salience=salience, distances=unpermuted + increase, unpermuted=unpermuted,
        net_a=net_a, net_b=net_b, split=split, options=options, fit=fitted,
        permuted_rows=permuted_rows, device=str(device), metrics=metrics,
        timings={"train_s": round(train_s, 4), "permute_s": round(permute_s, 4)},
        warnings=warnings)
