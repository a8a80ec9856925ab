"""Minibatch training shared by the alignment of Algorithm 1 and by students."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cmkd_doctor import distributed
from cmkd_doctor.runtime import Progress, no_progress
from cmkd_doctor.streaming import RowSet, epoch_order

# Aim for about this many optimiser steps when the user gives no --epochs.
AUTO_STEPS = 4000
AUTO_EPOCHS = (20, 300)


def auto_epochs(n_rows: int, batch_size: int) -> int:
    """Epochs giving about :data:`AUTO_STEPS` steps, within :data:`AUTO_EPOCHS`."""
    steps_per_epoch = -(-n_rows // batch_size)
    low, high = AUTO_EPOCHS
    return max(low, min(high, -(-AUTO_STEPS // steps_per_epoch)))


@dataclass
class FitResult:
    """What :func:`fit` did: epochs run, the epoch kept, and the loss curves."""

    epochs_max: int
    epochs_run: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


def fit(
    model: torch.nn.Module,
    row_losses: Callable[[torch.nn.Module, list[torch.Tensor]], torch.Tensor],
    rows: RowSet,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    gen: torch.Generator,
    val_loss: Callable[[], float] | None = None,
    patience: int = 0,
    progress: Progress = no_progress,
    task: str = "train",
) -> FitResult:
    """Adam over shuffled minibatches of ``rows``, data-parallel under torchrun.

    ``row_losses(module, tensors)`` gives the per-row losses of a minibatch (the
    minibatch loss is their mean); it must call ``module``, which is ``model`` wrapped
    in DistributedDataParallel when several processes train. Every process draws the
    same order from ``gen`` (a CPU generator, identical on every device) and trains on
    its slice of each global minibatch (:mod:`cmkd_doctor.distributed`). With
    ``val_loss`` and ``patience > 0`` it stops once the held-out loss has not improved
    for ``patience`` epochs, and restores ``model`` to its best epoch.
    """
    trained = distributed.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = FitResult(epochs, 0, 0)
    best, best_state = float("inf"), None
    n_rows = len(rows)
    device = rows.device
    for epoch in range(epochs):
        order = epoch_order(n_rows, rows.chunk_rows, gen)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for global_rows, batch in rows.batches(order, batch_size, distributed.my_part):
            losses = row_losses(trained, batch)  # (rows of this process,)
            loss = losses.sum() * distributed.loss_scale(global_rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += losses.detach().sum()
        result.train_loss.append(float(distributed.sum_all(total)) / n_rows)
        result.epochs_run = epoch + 1
        progress(task, epoch + 1, epochs)
        if val_loss is None:
            result.best_epoch = epoch + 1
            continue
        with torch.no_grad():
            current = val_loss()
        result.val_loss.append(current)
        if current < best:
            best, result.best_epoch = current, epoch + 1
            if patience > 0:
                best_state = copy.deepcopy(model.state_dict())
        elif patience > 0 and epoch + 1 - result.best_epoch >= patience:
            progress(task, epochs, epochs)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor | RowSet, batch_rows: int = 65536,
            which: int = 0) -> torch.Tensor:
    """Logits of ``net`` over ``x`` (or array ``which`` of a RowSet) in row chunks."""
    net.eval()
    if isinstance(x, RowSet):
        return torch.cat([predict(net, t, batch_rows) for _, (t,) in x.chunks(only=[which])])
    return torch.cat([net(x[i : i + batch_rows]) for i in range(0, len(x), batch_rows)])
