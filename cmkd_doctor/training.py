"""Minibatch training shared by the alignment of Algorithm 1 and by students."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from cmkd_doctor.runtime import Progress, no_progress

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
    params: Iterable[torch.nn.Parameter],
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_rows: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    gen: torch.Generator,
    device: torch.device,
    val_loss: Callable[[], float] | None = None,
    patience: int = 0,
    modules: list[torch.nn.Module] | None = None,
    progress: Progress = no_progress,
    task: str = "train",
) -> FitResult:
    """Adam over shuffled minibatches; ``batch_loss(index)`` gives the loss of rows ``index``.

    The shuffle order comes from ``gen`` (a CPU generator), so it is identical on every
    device. With ``val_loss`` and ``patience > 0`` it stops early once the held-out loss
    has not improved for ``patience`` epochs and restores ``modules`` to their best epoch.
    """
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    result = FitResult(epochs, 0, 0)
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        order = torch.randperm(n_rows, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n_rows, batch_size):
            index = order[start : start + batch_size]
            loss = batch_loss(index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(index)
        result.train_loss.append(float(total) / n_rows)
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
            if modules is not None and patience > 0:
                best_state = [copy.deepcopy(m.state_dict()) for m in modules]
        elif patience > 0 and epoch + 1 - result.best_epoch >= patience:
            progress(task, epochs, epochs)
            break
    if best_state is not None:
        for module, state in zip(modules, best_state, strict=True):
            module.load_state_dict(state)
    return result


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, batch_rows: int = 65536) -> torch.Tensor:
    """Logits of ``net`` over ``x`` in row chunks."""
    net.eval()
    return torch.cat([net(x[i : i + batch_rows]) for i in range(0, len(x), batch_rows)])
