"""The seeded train/test split that ``rank`` saves and later commands reuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.files import npz_members
from cmkd_doctor.seeds import derive_seed, generator


@dataclass(frozen=True)
class Split:
    """Row indices (sorted, int64) of the training and test parts."""

    train: np.ndarray
    test: np.ndarray


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> Split:
    """Hold out ``fraction`` of the rows, class by class for class ids.

    Each class keeps at least one row on each side when ``fraction > 0``. Multi-hot
    labels ``(n, K)`` have no single class per row and are split uniformly at random.
    """
    n = len(y)
    if fraction <= 0:
        return Split(np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64))
    gen = generator(seed)
    if y.ndim == 2:
        order = torch.randperm(n, generator=gen).numpy()
        n_test = min(n - 1, max(1, round(fraction * n)))
        test = order[:n_test]
    else:
        parts = []
        for cls in np.unique(y):
            rows = np.flatnonzero(y == cls)
            rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
            k = min(len(rows) - 1, max(1, round(fraction * len(rows))))
            parts.append(rows[:k])
        test = np.concatenate(parts)
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return Split(np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64))


VAL_FRACTION = 0.1


def fit_and_validation(train: np.ndarray, y: np.ndarray, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The rows every command trains on and early-stops on: a seeded, stratified tenth of
    the run's training rows is held back for validation. Same seed, same rows, so rank,
    derive-teacher and distill agree."""
    return carve_validation(train, y, VAL_FRACTION, derive_seed(seed, "validation"))


def carve_validation(rows: np.ndarray, y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Split training ``rows`` into (fit, validation) for early stopping.

    Stratified like :func:`stratified_split`; the test rows are never touched, so metrics
    reported on them stay unbiased by model selection.
    """
    if fraction <= 0 or len(rows) < 4:
        return rows, np.empty(0, dtype=np.int64)
    inner = stratified_split(y[rows], fraction, seed)
    return rows[inner.train], rows[inner.test]


def read_split(path: str | Path, n: int) -> Split:
    """A user's split: ``.npz`` with ``train`` and ``test`` row-index arrays."""
    path = Path(path)
    members = npz_members(path, f"--split {path}")  # sized before anything is read
    missing = {"train", "test"} - set(members)
    if missing:
        raise InputError(f"--split {path}: needs arrays 'train' and 'test' (row "
                         f"indices); missing {', '.join(sorted(missing))}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            train, test = archive["train"], archive["test"]
    except (OSError, ValueError) as exc:
        raise InputError(f"--split {path}: cannot be read as .npz ({exc})") from exc
    for name, rows in (("train", train), ("test", test)):
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise InputError(f"--split {path}: '{name}' must be 1-D integer row indices")
        if len(rows) and rows.min() < 0:
            raise InputError(f"--split {path}: '{name}' has row {int(rows.min())}; row "
                             "indices count from 0")
        if len(rows) and rows.max() >= n:
            raise InputError(f"--split {path}: '{name}' has row {int(rows.max())} but the "
                             f"inputs have {n} rows")
        values, counts = np.unique(rows, return_counts=True)
        if len(values) < len(rows):
            row = int(values[np.argmax(counts)])
            raise InputError(f"--split {path}: '{name}' lists row {row} {int(counts.max())} "
                             "times; give each row once")
    if len(np.intersect1d(train, test)):
        raise InputError(f"--split {path}: {len(np.intersect1d(train, test))} rows are in "
                         "both train and test")
    if len(train) < 2:
        raise InputError(f"--split {path}: needs at least 2 training rows")
    return Split(np.sort(train).astype(np.int64), np.sort(test).astype(np.int64))
