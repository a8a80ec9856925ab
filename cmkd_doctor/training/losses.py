"""The losses cmkd-doctor trains and ranks with: Eq. 28's distances (a registry), the
task loss and Eq. 1's KD term.

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

from cmkd_doctor.choices import DISTANCES


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


def kl_rows(p: torch.Tensor, q: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-row ``KL(P || Q)`` between the distributions logits ``p`` and ``q`` predict,
    summed over classes: softmax distributions, or one Bernoulli per class (sigmoids)
    for multi-label tasks."""
    if multilabel:
        lp, lq = F.logsigmoid(p), F.logsigmoid(q)
        lp0, lq0 = F.logsigmoid(-p), F.logsigmoid(-q)
        return (lp.exp() * (lp - lq) + lp0.exp() * (lp0 - lq0)).sum(-1)
    lp, lq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


for _d in (  # the names and descriptions are declared in cmkd_doctor.choices
    Distance("mse", "mean squared error between logits (the official code's)", _mse, True),
    Distance("l1", "mean absolute error between logits", _l1, True),
    # KL(softmax(f1) || softmax(f2)): f1 is the permuted modality's network
    Distance("kl", "KL divergence between predicted distributions", kl_rows, False),
):
    DISTANCES.add(_d.name, _d)


def task_loss_rows(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-row task loss ``(..., rows)``: CE for class ids, BCE (mean over classes)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(-1)
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                           reduction="none")
    return flat.view(y.shape)


def kd_loss_rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float | torch.Tensor,
                 multilabel: bool) -> torch.Tensor:
    """Per-row ``T^2 KL(softmax(t/T) || softmax(s/T))`` of Eq. 1 (Hinton et al.).

    Multi-label: one Bernoulli KL per class on sigmoids, averaged over classes.
    ``temperature`` may be a tensor broadcasting against the rows, ``(S, 1)`` for a
    stack of students.
    """
    per_logit = temperature[..., None] if torch.is_tensor(temperature) else temperature
    kl = kl_rows(teacher / per_logit, student / per_logit, multilabel)
    if multilabel:
        kl = kl / student.shape[-1]
    return temperature**2 * kl
