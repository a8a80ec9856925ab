"""Registries of the losses cmkd-doctor trains and ranks with.

A :class:`Distance` is the ``Dist`` of Algorithm 1 (Eq. 28): it compares the logits of
the two aligned networks. Each one is a sum of per-row terms, so it can be accumulated
over row chunks and over a leading batch of permuted copies, which the fast permutation
phase relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cmkd_doctor.errors import InputError


@dataclass(frozen=True)
class Distance:
    """A distance between two logit tensors ``(..., rows, K)``.

    ``row_terms(p, q, multilabel)`` returns ``(..., rows)``; the distance is their sum
    divided by ``denominator(rows, K)``, so chunked sums add up to the full value.
    """

    name: str
    description: str
    row_terms: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
    per_class: bool  # True: averaged over classes too, as torch's mean-reduced losses are

    def denominator(self, rows: int, n_classes: int) -> float:
        return float(rows * n_classes) if self.per_class else float(rows)

    def __call__(self, p: torch.Tensor, q: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
        rows, n_classes = p.shape[-2], p.shape[-1]
        return self.row_terms(p, q, multilabel).sum(-1) / self.denominator(rows, n_classes)


def _mse(p: torch.Tensor, q: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return (p - q).square().sum(-1)


def _l1(p: torch.Tensor, q: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return (p - q).abs().sum(-1)


def _kl(p: torch.Tensor, q: torch.Tensor, multilabel: bool) -> torch.Tensor:
    # KL(softmax(p) || softmax(q)): p is the permuted modality's network, q the other.
    if multilabel:  # one Bernoulli KL per class
        lp, lq = F.logsigmoid(p), F.logsigmoid(q)
        lp0, lq0 = F.logsigmoid(-p), F.logsigmoid(-q)
        return (lp.exp() * (lp - lq) + lp0.exp() * (lp0 - lq0)).sum(-1)
    lp, lq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


DISTANCES: dict[str, Distance] = {
    d.name: d
    for d in (
        Distance("mse", "mean squared error between logits (the official code's)", _mse, True),
        Distance("l1", "mean absolute error between logits", _l1, True),
        Distance("kl", "KL divergence between predicted distributions", _kl, False),
    )
}


def get_distance(name: str) -> Distance:
    """Look up a distance by name; the error lists the valid names."""
    try:
        return DISTANCES[name]
    except KeyError:
        raise InputError(
            f"--dist must be one of {', '.join(DISTANCES)}; got {name!r}"
        ) from None


def task_loss(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """CE for class ids, BCE for multi-hot targets (mean over the batch)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)


def task_loss_rows(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-row task loss ``(..., rows)``: CE for class ids, BCE (mean over classes)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(-1)
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                           reduction="none")
    return flat.view(y.shape)


def kd_loss_rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                 multilabel: bool) -> torch.Tensor:
    """Per-row ``T^2 KL(softmax(t/T) || softmax(s/T))`` of Eq. 1 (Hinton et al.).

    Multi-label: one Bernoulli KL per class on sigmoids, averaged over classes.
    """
    s, t = student / temperature, teacher / temperature
    if multilabel:
        lt, ls = F.logsigmoid(t), F.logsigmoid(s)
        lt0, ls0 = F.logsigmoid(-t), F.logsigmoid(-s)
        kl = (lt.exp() * (lt - ls) + lt0.exp() * (lt0 - ls0)).mean(-1)
    else:
        lt, ls = F.log_softmax(t, -1), F.log_softmax(s, -1)
        kl = (lt.exp() * (lt - ls)).sum(-1)
    return temperature**2 * kl
