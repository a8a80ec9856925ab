"""Groups of correlated channels, permuted as one unit in Algorithm 1's steps 2-8.

Permuting one of two near-copies of a feature understates both: the network still reads
the other copy (Hooker, Mentch and Zhou 2021, "Unrestricted permutation forces
extrapolation"). ``rank --groups auto`` clusters the ranked modality's channels whose
absolute Spearman correlation on the fit rows exceeds a threshold (the connected
components of that graph, so a chain of strongly correlated channels is one group) and
permutes each group with one row permutation; ``--groups FILE`` takes the user's group
ids (a ``.npy`` with one integer per channel). The salience is then a group's, given to
each of its channels, and derived teachers nullify whole groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.files import check_npy, fits_in_memory, regular_file
from cmkd_doctor.seeds import derive_seed

MAX_ROWS = 5000  # rows the correlations use at most (a seeded sample beyond)


@dataclass(frozen=True)
class Groups:
    """Channel ``j`` belongs to group ``ids[j]``; groups are numbered ``0..count-1`` in
    the order of their first channel."""

    ids: np.ndarray
    method: str  # auto or file
    threshold: float | None = None
    file: str | None = None

    @property
    def count(self) -> int:
        return int(self.ids.max()) + 1 if len(self.ids) else 0

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.ids, minlength=self.count)

    def to_dict(self, salience: np.ndarray | None = None) -> dict[str, Any]:
        first = np.unique(self.ids, return_index=True)[1]  # each group's first channel
        found = {"method": self.method, "threshold": self.threshold, "file": self.file,
                 "count": self.count, "ids": self.ids.tolist(),
                 "multi_channel": int((self.sizes > 1).sum())}
        if salience is not None:
            found["salience"] = np.asarray(salience)[first].tolist()
        return found


def renumbered(ids: np.ndarray) -> np.ndarray:
    """Group ids ``0..count-1`` in the order of each group's first channel."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int64)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise ranks with ties given their average rank (Spearman's convention)."""
    n, d = x.shape
    found = np.empty((n, d), dtype=np.float64)
    for j in range(d):
        column = x[:, j]
        order = np.argsort(column, kind="stable")
        values = column[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], n]
        mean_rank = (starts + ends - 1) / 2.0
        ranks = np.repeat(mean_rank, ends - starts)
        found[order, j] = ranks
    return found


def sampled_rows(rows: np.ndarray, seed: int) -> np.ndarray:
    """``rows``, or a seeded sample of :data:`MAX_ROWS` of them (sorted), for the
    correlations."""
    if len(rows) <= MAX_ROWS:
        return rows
    rng = np.random.default_rng(derive_seed(seed, "groups"))
    return np.sort(rng.choice(rows, MAX_ROWS, replace=False))


def correlated_groups(x: np.ndarray, threshold: float) -> np.ndarray:
    """Group ids of the columns of ``x``: the connected components of the graph joining
    two channels whose absolute Spearman correlation is above ``threshold`` (constant
    channels stay alone). Pass the rows to correlate (:func:`sampled_rows`)."""
    d = x.shape[1]
    ranks = average_ranks(np.asarray(x, dtype=np.float64))
    ranks -= ranks.mean(axis=0)
    norm = np.sqrt((ranks**2).sum(axis=0))
    varying = norm > 0
    ranks[:, varying] /= norm[varying]
    corr = np.abs(ranks.T @ ranks)
    corr[~varying, :] = 0
    corr[:, ~varying] = 0
    parent = np.arange(d)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(corr > threshold, k=1)), strict=True):
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return renumbered(np.array([root(i) for i in range(d)]))


def read_groups(path: str | Path, d: int) -> np.ndarray:
    """Group ids from a ``.npy`` file: one integer per channel of the ranked modality."""
    path = Path(path)
    label = f"--groups {path}"
    regular_file(path, label)
    if path.suffix.lower() != ".npy":
        raise InputError(f"{label}: expected a .npy file of one integer group id per channel; "
                         f"got '{path.suffix or '(no suffix)'}'")
    header = check_npy(path, label)  # sized before anything is read
    fits_in_memory(header.nbytes, label, "give one group id per channel")
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{label}: not a .npy array ({exc})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise InputError(f"--groups {path}: expected one integer group id per channel, a "
                         f"1-D integer array; got {ids.dtype} of shape {ids.shape}")
    if len(ids) != d:
        raise InputError(f"--groups {path}: {len(ids)} group ids for {d} channels of the "
                         "ranked modality")
    return renumbered(ids)


def unit_choice(order: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """The first units of ``order`` whose sizes add up to at least ``k`` channels (but
    not every unit)."""
    total = np.cumsum(sizes[order])
    taken = int(np.searchsorted(total, k)) + 1  # units until k channels are reached
    return order[: min(taken, len(order) - 1) or 1]
