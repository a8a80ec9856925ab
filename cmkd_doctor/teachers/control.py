"""The knowledge-free control: soft targets as soft as the regular teacher's that know
nothing of the other modality.

A teacher on modality a can help a student on b in two ways: by passing on what the
modalities share (the paper's modality-general decisive features), or only by softening
the targets, which regularises any student the way label smoothing does (Yuan et al.,
"Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020). The
control row tells the two apart: its students are trained with the same Eq. 1 (the same
``rho`` and temperature ``T``) against the *virtual teacher* of Yuan et al. (Tf-KD, their
Eq. 9), which puts probability ``a`` on the labelled class and ``(1 - a) / (K - 1)`` on
each other class. Here ``a`` is not a free parameter: it is chosen so that the virtual
teacher's entropy equals the mean entropy of the regular teacher's soft labels
``softmax(z / T)`` over the rows the students fit. The control is then exactly as soft
as the regular teacher, and carries only the labels: a gain it matches is
regularisation, not knowledge of the other modality.

Multi-label tasks (one sigmoid per class): each class's target is ``1 - e`` where the
label is on and ``e`` where it is off, with ``e`` in ``[0, 0.5]`` chosen so that the mean
binary entropy equals the regular teacher's over classes and rows.

The targets enter Eq. 1 as logits: ``T log p`` (so that ``softmax(logits / T) = p``
exactly), or ``T logit(q)`` per class for multi-label tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

RULE = ("Tf-KD virtual teacher (Yuan et al., CVPR 2020, Eq. 9) with its entropy matched to "
        "the regular teacher's mean soft-label entropy at the same temperature")
# the most a single-label target gives its class: log(1 - a) stays finite
TOP = 1.0 - 1e-6


def _entropy(top: float, classes: int) -> float:
    """Entropy (nats) of the virtual teacher with ``top`` on one of ``classes``."""
    rest = (1.0 - top) / (classes - 1)
    return -(top * math.log(top) + (classes - 1) * (rest * math.log(rest) if rest > 0
                                                    else 0.0))


def _binary_entropy(e: float) -> float:
    return 0.0 if e <= 0 else -(e * math.log(e) + (1 - e) * math.log(1 - e))


def _solve(entropy: Any, target: float, low: float, high: float) -> float:
    """The ``x`` in ``[low, high]`` with ``entropy(x) = target``, for an ``entropy``
    monotone on that interval (bisection to 1e-12)."""
    rising = entropy(high) > entropy(low)
    for _ in range(100):
        middle = (low + high) / 2
        if (entropy(middle) < target) == rising:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass(frozen=True)
class Control:
    """The control's targets for a task of ``classes`` classes: ``level`` is ``a`` (the
    labelled class's probability) for single-label tasks, ``e`` (an off class's) for
    multi-label ones; ``entropy`` is the regular teacher's mean soft-label entropy it
    matches (nats per row, or per class for multi-label tasks)."""

    classes: int
    multilabel: bool
    entropy: float
    level: float
    temperature: float

    @classmethod
    def matching(cls, entropy: float, classes: int, multilabel: bool, temperature: float
                 ) -> Control:
        """The control as soft as a teacher whose soft labels have mean ``entropy``."""
        if multilabel:
            target = min(max(entropy, 0.0), math.log(2))
            level = _solve(_binary_entropy, target, 0.0, 0.5)
        else:
            target = min(max(entropy, 0.0), math.log(classes))
            level = _solve(lambda a: _entropy(a, classes), target, 1.0 / classes, TOP)
        return cls(classes, multilabel, float(entropy), float(level), temperature)

    def logits(self, y: np.ndarray) -> np.ndarray:
        """``(n, K)`` float32 logits whose soft labels at the temperature are the targets
        of rows labelled ``y`` (class ids, or ``(n, K)`` multi-hot)."""
        t = self.temperature
        if self.multilabel:
            e = min(max(self.level, 1e-6), 0.5)
            on, off = t * math.log((1 - e) / e), t * math.log(e / (1 - e))
            return np.where(np.asarray(y) > 0.5, on, off).astype(np.float32)
        rest = (1.0 - self.level) / (self.classes - 1)
        out = np.full((len(y), self.classes), t * math.log(rest), dtype=np.float32)
        out[np.arange(len(y)), np.asarray(y, dtype=np.int64)] = t * math.log(self.level)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"rule": RULE, "matched_entropy": self.entropy,
                ("off_class_probability" if self.multilabel
                 else "labelled_class_probability"): self.level}


def entropy_sum(logits: torch.Tensor, temperature: float, multilabel: bool) -> torch.Tensor:
    """Sum over rows of the entropy of ``softmax(logits / T)``, or of the mean binary
    entropy over classes of ``sigmoid(logits / T)`` (divide by the rows for the mean)."""
    z = logits.double() / temperature
    if multilabel:
        p = torch.sigmoid(z)
        per = -(p * torch.nn.functional.logsigmoid(z)
                + (1 - p) * torch.nn.functional.logsigmoid(-z))
        return per.mean(-1).sum()
    log_p = torch.log_softmax(z, -1)
    return -(log_p.exp() * log_p).sum()
