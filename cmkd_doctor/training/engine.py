"""The one training engine: every network cmkd-doctor trains is fitted by :func:`fit`.

Algorithm 1's aligned pair (step 1, Eq. 28), teachers, the students of Eq. 1 and the
paper's Gaussian reproductions all train here. A model holds S *members*: S networks
stacked along a leading axis (:class:`~cmkd_doctor.training.mlp.Stacked`, seeds x teachers),
or one module (the aligned pair). Every member has

- its own minibatch order, from its shuffle seed (members with the same seed share it);
- its own loss: ``loss_rows(module, batch, members)`` returns ``(S, rows)``, and the
  members' losses are summed, so each member's gradient is its own;
- its own early stopping on the held-out rows: a member whose validation loss has not
  improved for ``patience`` epochs is frozen at its best epoch. Frozen members are
  dropped from the stack, so they cost nothing more, and restored at the end.

Rows come from a :class:`~cmkd_doctor.io.streaming.RowSet`, resident on the device or
streamed from memory-mapped files chunk by chunk. Under torchrun each process trains on
its slice of every global minibatch under DistributedDataParallel
(:mod:`cmkd_doctor.distributed`), and the update is the single-process one.

This is the only module that steps an optimiser.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cmkd_doctor import distributed
from cmkd_doctor.choices import AUTO_EPOCHS, AUTO_STEPS, OPTIMIZERS
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.streaming import RowSet, epoch_orders
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.training import curves
from cmkd_doctor.training.metrics import evaluate

# Elements of the widest activation one evaluation step holds (64 MiB of float32), so
# predicting or validating S members over many rows never builds (S, n, hidden) at once.
EVAL_ELEMENTS = 1 << 24
# No --epochs: about AUTO_STEPS optimiser steps, within AUTO_EPOCHS (both declared in
# cmkd_doctor.choices, where --epochs' help reads them).

def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam, as torch's fused kernel where this torch has one for the device: one pass
    over each parameter instead of a dozen (the same update up to float rounding)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


# the names and descriptions are declared in cmkd_doctor.choices
OPTIMIZERS.add("adam", _adam)
OPTIMIZERS.add("sgd", lambda params, lr: torch.optim.SGD(params, lr=lr))
OPTIMIZERS.add("sgd_momentum", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9))

# loss_rows(module, batch, members) -> (len(members), rows): every tensor of ``batch``
# has a leading member axis; ``members`` are the original indices of the members still
# training, to pick per-member settings (a student's rho, its teacher).
LossRows = Callable[[nn.Module, list[torch.Tensor], torch.Tensor], torch.Tensor]


def auto_epochs(n_rows: int, batch_size: int) -> int:
    """Epochs giving about :data:`AUTO_STEPS` steps, within :data:`AUTO_EPOCHS`."""
    steps_per_epoch = -(-n_rows // batch_size)
    low, high = AUTO_EPOCHS
    return max(low, min(high, -(-AUTO_STEPS // steps_per_epoch)))


@dataclass(frozen=True)
class Schedule:
    """How a model is fitted.

    Attributes
    ----------
    epochs
        Most epochs.
    lr
        Learning rate.
    batch_size
        Rows per step; ``None`` is full-batch (every row at every step, in file order).
    patience
        Epochs without improvement of a member's validation loss before it is frozen at
        its best epoch; 0 trains every member for all epochs.
    optimizer
        A name in :data:`OPTIMIZERS`.
    """

    epochs: int
    lr: float
    batch_size: int | None = 256
    patience: int = 0
    optimizer: str = "adam"


@dataclass
class FitResult:
    """What :func:`fit` did, per member: the epoch kept and the loss curves."""

    epochs_max: int
    epochs_run: int = 0
    best_epoch: list[int] = field(default_factory=list)
    train_loss: list[list[float]] = field(default_factory=list)
    val_loss: list[list[float]] = field(default_factory=list)
    # members still training after each epoch (fewer as they stop early)
    active: list[int] = field(default_factory=list)


class _Members:
    """The member interface of a model: a :class:`Stacked` model has S, any other
    module is one."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.stacked = hasattr(model, "set_members")

    @property
    def n(self) -> int:
        return self.model.n_members if self.stacked else 1

    def state(self, i: int) -> list[torch.Tensor] | dict:
        return self.model.member_state(i) if self.stacked else copy.deepcopy(
            self.model.state_dict())

    def set(self, states: Sequence) -> None:
        if self.stacked:
            self.model.set_members(states)
        else:
            self.model.load_state_dict(states[0])


def fit(
    model: nn.Module,
    loss_rows: LossRows,
    rows: RowSet,
    schedule: Schedule,
    *,
    shuffle_seeds: Sequence[int],
    groups: torch.Tensor | None = None,
    val: RowSet | None = None,
    progress: Progress = no_progress,
    task: str = "train",
) -> FitResult:
    """Fit every member of ``model`` on ``rows``; the model ends at each member's best
    epoch (or its last, without ``val`` or ``patience``).

    Parameters
    ----------
    model
        A :class:`~cmkd_doctor.training.mlp.Stacked` model (S members) or any module (one).
    loss_rows
        Per-row losses of a minibatch, see :data:`LossRows`; the minibatch loss of a
        member is their mean over the global minibatch.
    rows
        The training rows; grouped arrays give each member its group's column.
    shuffle_seeds
        One per member: the seed of its minibatch order.
    groups
        ``(S,)`` the group (column of the grouped arrays) of each member.
    val
        Held-out rows: each member's mean loss on them is its early-stopping criterion.
    """
    members = _Members(model)
    n_members, n_rows = members.n, len(rows)
    if len(shuffle_seeds) != n_members:
        raise ValueError(f"{len(shuffle_seeds)} shuffle seeds for {n_members} members")
    unique = list(dict.fromkeys(shuffle_seeds))
    gens = [torch.Generator().manual_seed(int(s)) for s in unique]
    seed_of = torch.tensor([unique.index(s) for s in shuffle_seeds])
    alive = torch.arange(n_members)
    batch_size = schedule.batch_size or n_rows
    use_val = val is not None and len(val) > 0
    patience = schedule.patience if use_val else 0
    # dropping frozen members reshapes the parameters, which DDP's buckets cannot follow
    compact = members.stacked and not distributed.active()

    make_optimizer = OPTIMIZERS[schedule.optimizer]
    opt = make_optimizer(model.parameters(), schedule.lr)
    trained = distributed.wrap(model)
    result = FitResult(schedule.epochs, best_epoch=[0] * n_members,
                       train_loss=[[] for _ in range(n_members)],
                       val_loss=[[] for _ in range(n_members)])
    best = [math.inf] * n_members
    kept: list = [None] * n_members  # each member's state at its best epoch
    stopped = [False] * n_members
    device = rows.device
    for epoch in range(schedule.epochs):
        if schedule.batch_size is None:
            orders = torch.arange(n_rows)[None]
        else:
            orders = epoch_orders(n_rows, rows.chunk_rows, gens)  # (unique seeds, n)
        order_of = torch.zeros_like(seed_of) if schedule.batch_size is None else seed_of
        group = None if groups is None else groups[alive]
        total = torch.zeros(len(alive), dtype=torch.float64, device=device)
        for global_rows, batch in rows.member_batches(orders, order_of[alive], batch_size,
                                                      group, distributed.my_part):
            losses = loss_rows(trained, batch, alive)  # (members, rows of this process)
            loss = losses.sum() * distributed.loss_scale(global_rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += losses.detach().sum(-1)
        train_loss = (distributed.sum_all(total) / n_rows).tolist()
        diverged = [loss for loss in train_loss if not math.isfinite(loss)]
        if diverged:
            raise InputError(f"training ({task}) diverged at epoch {epoch + 1} (a loss of "
                             f"{diverged[0]}): lower --lr, or check the features' scale")
        for i, s in enumerate(alive.tolist()):
            result.train_loss[s].append(train_loss[i])
        result.epochs_run = epoch + 1
        result.active.append(len(alive))
        progress(task, epoch + 1, schedule.epochs)
        if not use_val:
            for s in alive.tolist():
                result.best_epoch[s] = epoch + 1
            continue
        with torch.no_grad():
            current = _val_loss(model, loss_rows, val, alive, group)
        for i, s in enumerate(alive.tolist()):
            result.val_loss[s].append(current[i])
            if stopped[s]:
                continue
            if current[i] < best[s]:
                best[s], result.best_epoch[s] = current[i], epoch + 1
                if patience > 0:
                    kept[s] = members.state(i)
            elif patience > 0 and epoch + 1 - result.best_epoch[s] >= patience:
                stopped[s] = True
        if all(stopped):
            progress(task, schedule.epochs, schedule.epochs)
            break
        keep = [i for i, s in enumerate(alive.tolist()) if not stopped[s]]
        if compact and len(keep) < len(alive):
            for i, s in enumerate(alive.tolist()):
                if stopped[s] and kept[s] is None:  # never improved: keep what it has
                    kept[s] = members.state(i)
            opt = _keep_members(members, opt, keep, make_optimizer, schedule.lr)
            alive = alive[keep]
    # every member back: its best epoch when it early-stopped, else its last
    final = kept if patience > 0 else [None] * n_members
    for i, s in enumerate(alive.tolist()):
        if final[s] is None:
            final[s] = members.state(i)
    if members.stacked or patience > 0:
        members.set(final)
    curves.fitted(task, result)
    return result


def rows_per_step(model: nn.Module) -> int:
    """Rows per evaluation step: :data:`EVAL_ELEMENTS` over members x widest layer (a
    model's ``widest_row``, the most activation elements one row makes in one layer,
    when it says; else its widest weight matrix)."""
    widest = getattr(model, "widest_row", None) or max(
        (max(p.shape[-2:]) for p in model.parameters() if p.dim() >= 2), default=256)
    return max(1, EVAL_ELEMENTS // (_Members(model).n * widest))


def _val_loss(model: nn.Module, loss_rows: LossRows, val: RowSet, alive: torch.Tensor,
              group: torch.Tensor | None) -> list[float]:
    """Each active member's mean loss over every held-out row."""
    total = torch.zeros(len(alive), dtype=torch.float64, device=val.device)
    for _, tensors in val.member_chunks(len(alive), group, rows_per_step(model)):
        total += loss_rows(model, tensors, alive).double().sum(-1)
    return (total / len(val)).tolist()


def _keep_members(members: _Members, opt: torch.optim.Optimizer, keep: list[int],
                  make_optimizer, lr: float) -> torch.optim.Optimizer:
    """Drop every member not in ``keep``; returns an optimiser over the remaining ones
    that carries on from the old one's state (Adam's moments of the kept members)."""
    old = list(members.model.parameters())
    members.set([members.state(i) for i in keep])
    new = list(members.model.parameters())
    fresh = make_optimizer(new, lr)
    for p_old, p_new in zip(old, new, strict=True):
        state = {}
        for key, value in opt.state.get(p_old, {}).items():
            if torch.is_tensor(value) and value.dim() > 0:
                value = value[torch.tensor(keep, device=value.device)]
            state[key] = value
        if state:
            fresh.state[p_new] = state
    return fresh


class _Rows:
    """Pieces ``(..., c, K)`` written at their rows of one ``(..., n, K)`` tensor,
    allocated at the first piece: a pass over many rows never holds a list of the pieces
    and their concatenated copy at once."""

    def __init__(self, n: int, device: torch.device | str | None = None):
        self.n, self.device, self.tensor = n, device, None

    def put(self, start: int, piece: torch.Tensor) -> None:
        if self.tensor is None:
            self.tensor = piece.new_empty((*piece.shape[:-2], self.n, piece.shape[-1]),
                                          device=self.device or piece.device)
        self.tensor[..., start : start + piece.shape[-2], :] = piece


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor | RowSet, which: int = 0,
            batch_rows: int | None = None) -> torch.Tensor:
    """Logits of ``model`` over ``x`` (or array ``which`` of a RowSet), row chunk by row
    chunk (:func:`rows_per_step`): ``(n, K)``, or ``(S, n, K)`` for a stacked model."""
    model.eval()
    batch_rows = batch_rows or rows_per_step(model)
    if isinstance(x, RowSet):
        pieces = ((start, predict(model, t, batch_rows=batch_rows))
                  for start, (t,) in x.chunks(only=[which]))
    else:
        pieces = ((i, model(x[i : i + batch_rows])) for i in range(0, len(x), batch_rows))
    out = _Rows(len(x))
    for start, piece in pieces:
        out.put(start, piece)
    if out.tensor is None:
        raise ValueError("predict over no rows")
    return out.tensor


@torch.no_grad()
def evaluate_rows(model: nn.Module, parts: Sequence[RowSet], which: int, labels: int,
                  multilabel: bool) -> list[dict[str, float]] | None:
    """Metrics of ``model`` (every member of a stacked one) over the rows of ``parts``:
    features from array ``which``, labels from array ``labels``. ``None`` without rows.

    Single-label tasks count correct predictions chunk by chunk, so memory stays at one
    chunk of logits whatever the number of rows and members; multi-label metrics (mAP)
    need every score and gather the logits (on the CPU, each chunk written in place).
    """
    model.eval()
    total = sum(len(p) for p in parts)
    if not total:
        return None
    correct, n_rows = 0, 0
    logits, ys = _Rows(total, "cpu"), _Rows(total, "cpu")  # filled for multi-label only
    for part in parts:
        for _, (x, y) in part.chunks(only=[which, labels]):
            out = predict(model, x)  # (c, K) or (S, c, K)
            if multilabel:  # the labels as bytes: a quarter of their float copy
                logits.put(n_rows, out)
                ys.put(n_rows, y > 0)
            else:
                correct = correct + (out.argmax(-1) == y).sum(-1).cpu()
            n_rows += len(y)
    if multilabel:
        out, y = logits.tensor, ys.tensor
        stacked = out.dim() == 3
        return [evaluate(o, y, True) for o in (out if stacked else [out])]
    counts = np.atleast_1d(np.asarray(correct))
    return [{"accuracy": float(c) / n_rows} for c in counts]
