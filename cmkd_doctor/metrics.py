"""Classification metrics: accuracy for class ids; micro/macro F1 and mAP for multi-hot."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))


def f1_scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Micro and macro F1 of multi-hot predictions (logit > 0)."""
    pred = (logits > 0).float()
    tp, fp, fn = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)
    return float(_f1(tp.sum(), fp.sum(), fn.sum())), float(_f1(tp, fp, fn).mean())


def mean_average_precision(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes with a positive of the average precision of their ranking."""
    order = logits.argsort(0, descending=True)
    hits = torch.gather(y, 0, order)  # (n, K), sorted by score per class
    ranks = torch.arange(1, len(y) + 1, dtype=y.dtype, device=y.device)[:, None]
    precision = hits.cumsum(0) / ranks
    positives = y.sum(0)
    ap = (precision * hits).sum(0) / positives.clamp(min=1)
    return float(ap[positives > 0].mean())


def evaluate(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """All metrics of a task; the first key is the headline metric."""
    if multilabel:
        micro, macro = f1_scores(logits, y)
        return {"micro_f1": micro, "macro_f1": macro, "map": mean_average_precision(logits, y)}
    return {"accuracy": accuracy(logits, y)}


def headline(multilabel: bool) -> str:
    """The name of a task's headline metric."""
    return "micro_f1" if multilabel else "accuracy"
