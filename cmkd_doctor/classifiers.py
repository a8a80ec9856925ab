"""Training S classifiers at once: teachers, and students with the KD loss of Eq. 1.

The S networks of a batch are stacked along a leading axis and trained with batched
matrix products. Each has its own initialisation, shuffle order and early stopping,
drawn from its own child seed, and Adam updates each element from its own gradient. So
a batch of S seeds gives the same networks, to float rounding, as S runs one after
another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from cmkd_doctor import distributed
from cmkd_doctor.errors import option_error
from cmkd_doctor.losses import kd_loss_rows, task_loss_rows
from cmkd_doctor.models import Net, NetConfig, parse_hidden
from cmkd_doctor.runtime import Progress, derive_seed, generator, no_progress
from cmkd_doctor.training import auto_epochs

_SEED_INIT, _SEED_SHUFFLE = 0, 1


@dataclass(frozen=True)
class TrainOptions:
    """How teachers and students are trained.

    Attributes
    ----------
    hidden
        Hidden widths (``()``: linear model); ``None`` takes the rank run's.
    epochs
        Most epochs; ``None`` picks about 4000 optimiser steps.
    patience
        Early stopping on the validation rows; 0 trains all epochs.
    """

    hidden: tuple[int, ...] | None = None
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 10

    def checked(self) -> TrainOptions:
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise option_error("epochs", "a whole number >= 1", self.epochs)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise option_error("batch_size", "a whole number >= 1", self.batch_size)
        if not self.lr > 0:
            raise option_error("lr", "a positive number", self.lr)
        if not isinstance(self.patience, int) or self.patience < 0:
            raise option_error("patience", "a whole number >= 0", self.patience)
        hidden = None if self.hidden is None else parse_hidden(self.hidden)
        return TrainOptions(hidden, self.epochs, self.batch_size, self.lr, self.patience)

    def resolved(self, default_hidden: tuple[int, ...] | list[int]) -> TrainOptions:
        """These options with ``hidden`` filled in when it was left to the run."""
        options = self.checked()
        return options if options.hidden is not None else replace(
            options, hidden=parse_hidden(tuple(default_hidden)))

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": None if self.hidden is None else list(self.hidden)}


@dataclass(frozen=True)
class KD:
    """The distillation part of Eq. 1: ``rho * task + (1 - rho) * T^2 * KL``.

    ``train`` and ``val`` are the teacher's logits on the training and validation rows.
    """

    train: torch.Tensor
    val: torch.Tensor | None
    rho: float = 0.5
    temperature: float = 1.0


class Stacked(nn.Module):
    """S networks of one :class:`NetConfig`, weights stacked as ``(S, out, in)``."""

    def __init__(self, nets: Sequence[Net]):
        super().__init__()
        self.config = nets[0].config
        linears = [[m for m in net.layers if isinstance(m, nn.Linear)] for net in nets]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([layers[i].weight.detach() for layers in linears]))
            for i in range(len(linears[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([layers[i].bias.detach() for layers in linears]))
            for i in range(len(linears[0])))
        self.register_buffer("mean", nets[0].mean.clone())
        self.register_buffer("scale", nets[0].scale.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (S, b, d)`` -> logits ``(S, b, K)``."""
        h = (x - self.mean) / self.scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if i:
                h = h.relu()
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        return h

    def state_of(self, s: int) -> list[torch.Tensor]:
        return [p[s].detach().clone() for p in (*self.weights, *self.biases)]

    @torch.no_grad()
    def set_state(self, s: int, state: list[torch.Tensor]) -> None:
        for p, v in zip((*self.weights, *self.biases), state, strict=True):
            p[s].copy_(v)

    @torch.no_grad()
    def unstack(self, s: int) -> Net:
        net = Net(self.config).to(self.mean.device)
        linears = [m for m in net.layers if isinstance(m, nn.Linear)]
        for layer, w, b in zip(linears, self.weights, self.biases, strict=True):
            layer.weight.copy_(w[s])
            layer.bias.copy_(b[s])
        net.set_standardisation(self.mean, self.scale)
        return net.eval()


def train_classifiers(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    multilabel: bool,
    options: TrainOptions,
    seeds: Sequence[int],
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    kd: KD | None = None,
    progress: Progress = no_progress,
    task: str = "train",
) -> list[Net]:
    """Train one classifier per seed on ``x (n, d)``, all at once.

    Without ``kd`` the loss is the task loss (CE, or BCE for multi-hot ``y``); with it,
    Eq. 1. ``val = (x_val, y_val)`` enables per-seed early stopping on the same loss,
    each network kept at its best epoch and frozen once its patience runs out.

    Under torchrun every process draws the same minibatches and trains on its slice of
    each, under DistributedDataParallel (:mod:`cmkd_doctor.distributed`).

    Returns
    -------
    list of Net
        One trained network per seed, in eval mode, taking raw features.
    """
    options = options.checked()
    if options.hidden is None:
        raise ValueError("train_classifiers needs hidden widths; call TrainOptions.resolved")
    device = x.device
    config = NetConfig(x.shape[1], options.hidden, n_classes, multilabel)
    nets = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, _SEED_INIT))
            nets.append(Net(config))
    nets[0].set_standardisation(x.mean(0).cpu(), x.std(0).cpu())
    stacked = Stacked(nets).to(device)
    n_seeds, n = len(seeds), len(x)
    gens = [generator(seed, _SEED_SHUFFLE) for seed in seeds]
    opt = torch.optim.Adam(stacked.parameters(), lr=options.lr)
    trained = distributed.wrap(stacked)  # DistributedDataParallel under torchrun

    def loss_rows(xb: torch.Tensor, yb: torch.Tensor, soft: torch.Tensor | None,
                  model: nn.Module = stacked) -> torch.Tensor:
        logits = model(xb)  # (S, b, K)
        loss = task_loss_rows(logits, yb, multilabel)  # (S, b)
        if kd is None:
            return loss
        return kd.rho * loss + (1 - kd.rho) * kd_loss_rows(logits, soft, kd.temperature,
                                                           multilabel)

    use_val = val is not None and len(val[0]) > 0 and options.patience > 0
    if use_val:
        xv, yv = val
        xv_s, yv_s = xv.expand(n_seeds, *xv.shape), yv.expand(n_seeds, *yv.shape)
        soft_v = kd.val.expand(n_seeds, *kd.val.shape) if kd is not None else None
    best = torch.full((n_seeds,), float("inf"))
    best_epoch = [0] * n_seeds
    best_state = [stacked.state_of(s) for s in range(n_seeds)]
    stopped = [False] * n_seeds
    epochs = options.epochs or auto_epochs(n, options.batch_size)
    for epoch in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (S, n)
        for start in range(0, n, options.batch_size):
            index = orders[:, start : start + options.batch_size]  # (S, b)
            scale = distributed.loss_scale(index.shape[1])
            index = distributed.my_part(index, dim=1)  # this process's slice of each batch
            soft = kd.train[index] if kd is not None else None
            # the sum over seeds of each seed's mean loss over the global batch
            loss = loss_rows(x[index], y[index], soft, trained).sum() * scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        progress(task, epoch + 1, epochs)
        if not use_val:
            continue
        with torch.no_grad():
            current = loss_rows(xv_s, yv_s, soft_v).mean(-1).cpu()  # (S,)
        for s in range(n_seeds):
            if stopped[s]:
                continue
            if current[s] < best[s]:
                best[s], best_epoch[s] = current[s], epoch + 1
                best_state[s] = stacked.state_of(s)
            elif epoch + 1 - best_epoch[s] >= options.patience:
                stopped[s] = True
        if all(stopped):
            progress(task, epochs, epochs)
            break
    if use_val:
        for s in range(n_seeds):
            stacked.set_state(s, best_state[s])
    return [stacked.unstack(s) for s in range(n_seeds)]
