"""Classification metrics: accuracy for class ids; micro/macro F1 and mAP for multi-hot."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))


# Rows per block when counting F1's hits, so memory stays bounded for a million rows.
BLOCK_ROWS = 1 << 16


def f1_scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Micro and macro F1 of multi-hot predictions (logit > 0), counted block by block."""
    tp, fp, fn = (torch.zeros(y.shape[1], dtype=torch.float64) for _ in range(3))
    for r0 in range(0, len(y), BLOCK_ROWS):
        pred = logits[r0 : r0 + BLOCK_ROWS] > 0
        truth = y[r0 : r0 + BLOCK_ROWS] > 0
        tp += (pred & truth).sum(0, dtype=torch.float64).cpu()
        fp += (pred & ~truth).sum(0, dtype=torch.float64).cpu()
        fn += (~pred & truth).sum(0, dtype=torch.float64).cpu()
    return float(_f1(tp.sum(), fp.sum(), fn.sum())), float(_f1(tp, fp, fn).mean())


def mean_average_precision(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes with a positive of the average precision of their ranking (one
    class at a time: a few columns of n values in memory, not several (n, K) copies)."""
    ranks = torch.arange(1, len(y) + 1, dtype=torch.float64, device=y.device)
    found = []
    for k in range(y.shape[1]):
        hits = y[:, k][logits[:, k].argsort(descending=True, stable=True)].double()
        positives = hits.sum()
        if positives > 0:
            found.append(float((hits.cumsum(0) / ranks * hits).sum() / positives))
    return float(sum(found) / len(found)) if found else float("nan")


def evaluate(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """All metrics of a task; the first key is the headline metric."""
    if multilabel:
        micro, macro = f1_scores(logits, y)
        return {"micro_f1": micro, "macro_f1": macro, "map": mean_average_precision(logits, y)}
    return {"accuracy": accuracy(logits, y)}


def headline(multilabel: bool) -> str:
    """The name of a task's headline metric."""
    return "micro_f1" if multilabel else "accuracy"
