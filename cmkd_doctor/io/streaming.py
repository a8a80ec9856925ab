"""Rows of the user's arrays: on the device at once, or streamed from disk in chunks.

A :class:`RowSet` is a subset of rows (a split's training or test rows) of aligned
arrays, e.g. features a, features b and labels. When the rows fit the memory budget
they are copied to the device once (*resident*). Otherwise they stay in their
memory-mapped ``.npy`` files and each step reads only the rows it needs, one chunk set
at a time: the rows are gathered in file order, copied to the device, and the pages
just read are dropped from the process's memory again (``madvise(MADV_DONTNEED)``; the
kernel's page cache keeps them if it has room). Peak memory is then about one chunk set
plus the model, whatever the size of the files, including files larger than RAM.

Training reads each epoch as a sequence of chunks (:func:`epoch_order`). Resident rows
are shuffled as a whole; streamed rows are shuffled in blocks of consecutive rows, and
within each chunk, so that a chunk is a few large reads from all over the file rather
than one read per row.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from cmkd_doctor.choices import CHUNK_BYTES, RESIDENT_BYTES_CPU
from cmkd_doctor.validation import whole

# CHUNK_BYTES: one chunk set (the rows of every array of a RowSet) when streaming;
# RESIDENT_BYTES_CPU: rows stay resident up to this on the CPU (on CUDA, half the free
# memory). Both are declared in cmkd_doctor.choices, where --chunk-rows' help reads them.

# Blocks of consecutive rows per training chunk when streaming (epoch_order).
BLOCKS_PER_CHUNK = 64
# read_rows: rows closer than this are read in one run; no run crosses a window this big.
GAP_ROWS = 8
SPAN_BYTES = 8 << 20
# RowSet.stats: rows converted to float64 at a time for resident sets.
STATS_ROWS = 1 << 16


def release(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array from this process's resident memory.

    The data stays in the file (and in the page cache when there is room); the next read
    maps it again. A no-op for arrays in memory.
    """
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError, TypeError):
        return None


def release_heap() -> None:
    """Hand the pages the C heap holds free back to the system (glibc's ``malloc_trim``;
    a no-op where the C library has none).

    A chunk's arrays (tens of MiB each) are served from the heap once glibc has raised
    its mmap threshold, and small blocks allocated between them pin the freed space: a
    streamed pass over a million rows left 400-500 MiB free but resident in the heap
    (measured with ``mallinfo2``, BENCHMARKS.md). Streamed reads call this before each
    chunk, so what earlier chunks freed is returned before the next one is allocated; it
    costs well under a millisecond.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` (integer row indices, any order), without mapping the file into
    memory.

    Gathering rows through a memory map faults in whole 64 KiB windows around every row
    touched and keeps them in the process's resident memory: a sparse gather (every
    20th row, say) maps the whole file. For a ``.npy`` memory map this reads the rows
    with ``pread`` instead, one read per run of nearby rows (runs end at gaps over
    :data:`GAP_ROWS` rows and at :data:`SPAN_BYTES` windows), so only the result and one
    window are ever held. Other arrays are indexed directly.
    """
    filename = getattr(array, "filename", None)
    if filename is None or not array.flags.c_contiguous or array.ndim < 1:
        block = np.asarray(array[rows])
        release(array)
        return block
    shape, dtype = array.shape[1:], array.dtype
    row_nbytes = dtype.itemsize * int(np.prod(shape))
    wanted = np.asarray(rows, dtype=np.int64)
    ordered = bool(np.all(wanted[1:] >= wanted[:-1]))  # chunks of a split usually are
    order = None if ordered else np.argsort(wanted, kind="stable")
    rows = wanted if ordered else wanted[order]  # read in file order
    out = np.empty((len(rows), *shape), dtype=dtype)
    if not len(rows) or row_nbytes == 0:
        return out
    window = max(1, SPAN_BYTES // row_nbytes)
    new_run = np.empty(len(rows), dtype=bool)
    new_run[0] = True
    new_run[1:] = (np.diff(rows) > GAP_ROWS) | (np.diff(rows // window) != 0)
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], len(rows))
    with open(filename, "rb", buffering=0) as fh:
        fd = fh.fileno()
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            first, count = int(rows[a]), int(rows[b - 1] - rows[a]) + 1
            raw = os.pread(fd, count * row_nbytes, array.offset + first * row_nbytes)
            block = np.frombuffer(raw, dtype=dtype).reshape(count, *shape)
            out[a:b] = block[rows[a:b] - first]
    if ordered:
        return out
    result = np.empty_like(out)  # back to the order asked for
    result[order] = out
    return result


def row_bytes(arrays: Sequence[np.ndarray]) -> int:
    """Bytes of one row across ``arrays`` once on the device (float32 / int64)."""
    return sum(_dtype_of(a).itemsize * int(np.prod(a.shape[1:])) for a in arrays)


def plan_chunk_rows(n_rows: int, bytes_per_row: int, device: torch.device,
                    chunk_rows: int | None) -> int:
    """Rows per chunk; ``n_rows`` (or more) means resident.

    ``chunk_rows`` (``--chunk-rows``) wins. Automatically, rows stay resident when they
    fit :data:`RESIDENT_BYTES_CPU` on the CPU or half the free memory of a CUDA device,
    and are otherwise streamed in chunk sets of :data:`CHUNK_BYTES`.
    """
    if chunk_rows is not None:
        return chunk_rows
    total = n_rows * bytes_per_row
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 2
    else:
        budget = RESIDENT_BYTES_CPU
    if total <= budget:
        return max(n_rows, 1)
    return max(1, CHUNK_BYTES // max(bytes_per_row, 1))


def check_chunk_rows(chunk_rows: int | None) -> int | None:
    return whole("chunk_rows", chunk_rows, 1, optional=True)


_TORCH = {np.dtype(np.int64): torch.int64, np.dtype(np.float32): torch.float32}


def _dtype_of(array: np.ndarray) -> np.dtype:
    if array.ndim == 1 and array.dtype.kind in "iub":
        return np.dtype(np.int64)
    return np.dtype(np.float32)


class RowSet:
    """Rows ``index`` of aligned arrays, resident on ``device`` or streamed in chunks.

    Training reads rows for S *members* at once (the networks of a stacked fit, see
    :mod:`cmkd_doctor.training.engine`): every member visits the rows in its own order, and an
    array listed in ``grouped`` has a group axis, ``(n, G, ...)``, of which each member
    reads its own column (a student reads the soft labels of its own teacher).

    Parameters
    ----------
    arrays
        Arrays with the same number of rows (possibly memory-mapped). 1-D integer arrays
        become int64 tensors (class ids), everything else float32.
    index
        The rows of ``arrays`` this set holds, in the order positions refer to.
    chunk_rows
        Rows per chunk; ``None`` plans it (:func:`plan_chunk_rows`). At least
        ``len(index)`` keeps the rows resident.
    grouped
        Indices of the arrays with a group axis.
    """

    def __init__(self, arrays: Sequence[np.ndarray], index: np.ndarray, device: torch.device,
                 chunk_rows: int | None = None, grouped: Sequence[int] = ()):
        self.arrays = list(arrays)
        self.index = np.asarray(index, dtype=np.int64)
        self.device = device
        self.grouped = frozenset(grouped)
        self.transforms: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.dtypes = [_dtype_of(a) for a in self.arrays]
        self.chunk_rows = plan_chunk_rows(len(self.index), row_bytes(self.arrays), device,
                                          check_chunk_rows(chunk_rows))
        self.resident = self.chunk_rows >= len(self.index)
        self._tensors: list[torch.Tensor] | None = None
        if self.resident:
            self._tensors = self._load_all()

    @classmethod
    def of_tensors(cls, tensors: Sequence[torch.Tensor], grouped: Sequence[int] = ()
                   ) -> RowSet:
        """A resident set holding ``tensors`` as they are (already on their device)."""
        rows = cls.__new__(cls)
        rows.arrays, rows.index = [], np.arange(len(tensors[0]))
        rows.device, rows.dtypes = tensors[0].device, []
        rows.grouped, rows.transforms = frozenset(grouped), {}
        rows.chunk_rows, rows.resident = max(len(tensors[0]), 1), True
        rows._tensors = list(tensors)
        return rows

    def __len__(self) -> int:
        return len(self.index)

    @property
    def widths(self) -> list[int]:
        """Columns of each array (1 for a 1-D one)."""
        shapes = [a.shape for a in (self.arrays or self._tensors)]
        return [int(np.prod(shape[1:])) for shape in shapes]

    def _read(self, rows: np.ndarray, only: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Rows ``rows`` of every array (or those in ``only``) as tensors on the device."""
        release_heap()  # what the previous chunk freed, before this one is allocated
        found = []
        for i in (only if only is not None else range(len(self.arrays))):
            t = torch.from_numpy(read_rows(self.arrays[i], rows).astype(self.dtypes[i],
                                                                         copy=False))
            t = t.to(self.device)
            found.append(self.transforms[i](t) if i in self.transforms else t)
        return found

    def _load_all(self) -> list[torch.Tensor]:
        # filled chunk by chunk, so loading onto a GPU never holds a host copy of it all
        n = len(self.index)
        step = max(1, CHUNK_BYTES // max(row_bytes(self.arrays), 1))
        if n <= step:
            return self._read(self.index)
        tensors = [torch.empty((n, *a.shape[1:]), dtype=_TORCH[dt], device=self.device)
                   for a, dt in zip(self.arrays, self.dtypes, strict=True)]
        for start in range(0, n, step):
            for t, part in zip(tensors, self._read(self.index[start : start + step]),
                               strict=True):
                t[start : start + len(part)] = part
        return tensors

    def apply(self, which: int, transform: Callable[[torch.Tensor], torch.Tensor]) -> RowSet:
        """From now on, array ``which`` is read through ``transform`` (a resident set
        transforms its rows once, here): training standardises its features this way
        instead of at every step."""
        self.transforms[which] = transform
        if self._tensors is not None:
            self._tensors[which] = transform(self._tensors[which])
        return self

    def tensors(self) -> list[torch.Tensor]:
        """All rows as device tensors; resident sets only."""
        if self._tensors is None:
            raise RuntimeError("tensors() on a streamed RowSet: iterate over chunks()")
        return self._tensors

    def take(self, positions: torch.Tensor | np.ndarray,
             only: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Rows at ``positions`` (``0 .. len - 1``), in that order, on the device, of every
        array or of those in ``only``."""
        if self._tensors is not None:
            pos = torch.as_tensor(positions, device=self.device)
            picked = self._tensors if only is None else [self._tensors[i] for i in only]
            return [t[pos] for t in picked]
        pos = torch.as_tensor(positions).cpu().numpy()
        return self._read(self.index[pos], only)

    def chunks(self, rows: int | None = None,
               only: Sequence[int] | None = None) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """``(start, tensors)`` for consecutive chunks of positions, in order; a resident
        set gives all its rows as one chunk unless ``rows`` is given."""
        n = len(self)
        if self._tensors is not None:
            picked = self._tensors if only is None else [self._tensors[i] for i in only]
            step = rows or max(n, 1)
            for start in range(0, n, step):
                yield start, [t[start : start + step] for t in picked]
            return
        step = rows or self.chunk_rows
        for start in range(0, n, step):
            yield start, self._read(self.index[start : start + step], only)

    def moments(self, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Column mean and standard deviation (unbiased) of array ``which``."""
        mean, std, _ = self.stats(which)
        return mean, std

    def stats(self, which: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Column mean, standard deviation (unbiased) and which columns are constant
        (every row the same value), of array ``which``, in one pass over the rows.

        Computed in float64, chunk by chunk with Chan's pairwise update (two passes
        inside a chunk), so neither a large mean (values near 1e9) nor a tiny scale
        (values near 1e-21, which underflow float32 squares) loses the spread.
        """
        if not len(self):
            raise ValueError("statistics of no rows")
        count, mean, m2 = 0, None, None
        low = high = None
        for _, (x,) in self.chunks(rows=None if self._tensors is None else STATS_ROWS,
                                   only=[which]):
            low = x.amin(0) if low is None else torch.minimum(low, x.amin(0))
            high = x.amax(0) if high is None else torch.maximum(high, x.amax(0))
            x = x.to(torch.float64, copy=True)  # one float64 copy of the chunk, worked in place
            n_c, mean_c = len(x), x.mean(0)
            m2_c = x.sub_(mean_c).square_().sum(0)
            if mean is None:
                count, mean, m2 = n_c, mean_c, m2_c
                continue
            step = mean_c - mean
            total = count + n_c
            mean = mean + step * (n_c / total)
            m2 = m2 + m2_c + step.square() * (count * n_c / total)
            count = total
        std = (m2 / max(count - 1, 1)).sqrt()
        return mean.float(), std.float(), low == high

    def _gather(self, tensors: list[torch.Tensor], pos: torch.Tensor,
                groups: torch.Tensor | None) -> list[torch.Tensor]:
        """``(S, b, ...)`` per array: member s's rows ``pos[s]`` (its group's column of a
        grouped array). ``index_select`` on flat indices: several times faster on the CPU
        than advanced indexing."""
        found = []
        for i, t in enumerate(tensors):
            if i in self.grouped:  # row r, group g is row r * G + g of the flattened array
                flat, index = t.flatten(0, 1), pos * t.shape[1] + groups[:, None]
            else:
                flat, index = t, pos
            found.append(flat.index_select(0, index.reshape(-1)).view(*pos.shape,
                                                                      *flat.shape[1:]))
        return found

    def member_batches(self, orders: torch.Tensor, seed_of: torch.Tensor, batch_size: int,
                       groups: torch.Tensor | None = None, part=lambda index: index
                       ) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """One epoch of minibatches for S members: ``(global rows, tensors (S, b, ...))``.

        ``orders (U, n)`` are the epoch's orders (:func:`epoch_orders`), ``seed_of (S,)``
        says which order each member follows, ``groups (S,)`` which column of a grouped
        array it reads. ``part`` picks this process's slice of each global batch (DDP).
        Streamed sets read each chunk of the orders once, whatever the number of members:
        every order visits the same rows in a chunk.
        """
        n = orders.shape[1]
        if self._tensors is not None:
            orders, seed_of = orders.to(self.device), seed_of.to(self.device)
            groups = None if groups is None else groups.to(self.device)
            for start in range(0, n, batch_size):
                index = orders[:, start : start + batch_size]  # (U, b)
                yield index.shape[1], self._gather(self._tensors, part(index)[seed_of], groups)
            return
        per_chunk = max(1, self.chunk_rows // batch_size) * batch_size
        device_groups = None if groups is None else groups.to(self.device)
        for c0 in range(0, n, per_chunk):
            chunk = orders[:, c0 : c0 + per_chunk]  # (U, L)
            starts = range(0, chunk.shape[1], batch_size)
            mine = [part(chunk[:, s : s + batch_size]) for s in starts]  # (U, b_local) each
            wanted = torch.unique(torch.cat([m.reshape(-1) for m in mine]))  # sorted
            tensors = self._read(self.index[wanted.numpy()])  # only this process's rows
            for s, m in zip(starts, mine, strict=True):
                local = torch.searchsorted(wanted, m.contiguous())[seed_of].to(self.device)
                yield min(batch_size, chunk.shape[1] - s), self._gather(tensors, local,
                                                                        device_groups)

    def member_chunks(self, n_members: int, groups: torch.Tensor | None = None,
                      rows: int | None = None) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """Every row for S members, ``rows`` at a time (default: a chunk):
        ``(start, tensors (S, c, ...))``, shared arrays expanded without a copy."""
        groups = None if groups is None else groups.to(self.device)
        for start, tensors in self.chunks(rows):
            yield start, [t[:, groups].movedim(1, 0) if i in self.grouped
                          else t.expand(n_members, *t.shape)
                          for i, t in enumerate(tensors)]


def epoch_order(n: int, chunk_rows: int, gen: torch.Generator) -> torch.Tensor:
    """The order in which one epoch visits positions ``0 .. n - 1``.

    ``chunk_rows >= n``: a uniform shuffle. Otherwise the positions are cut into blocks
    of consecutive rows (:data:`BLOCKS_PER_CHUNK` per chunk), the blocks are shuffled,
    and the rows inside each chunk of ``chunk_rows`` are shuffled again. A chunk then
    mixes rows from all over the file (class-sorted files included) yet is read as a few
    contiguous runs. Depends only on ``n``, ``chunk_rows`` and ``gen``: every process of
    a distributed run draws the same order.
    """
    if chunk_rows >= n:
        return torch.randperm(n, generator=gen)
    block = max(1, chunk_rows // BLOCKS_PER_CHUNK)
    n_blocks = -(-n // block)
    starts = torch.randperm(n_blocks, generator=gen) * block
    order = (starts[:, None] + torch.arange(block)[None, :]).reshape(-1)
    order = order[order < n]
    for start in range(0, n, chunk_rows):
        segment = order[start : start + chunk_rows]
        order[start : start + chunk_rows] = segment[torch.randperm(len(segment),
                                                                   generator=gen)]
    return order


def epoch_orders(n: int, chunk_rows: int, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """``(U, n)``: one epoch's order per generator.

    Resident rows: an independent uniform shuffle each. Streamed rows: the first
    generator draws :func:`epoch_order`, which decides which rows each chunk holds, and
    every other generator reorders the rows inside each chunk; so all orders read the
    same chunks and one read serves them all.
    """
    first = epoch_order(n, chunk_rows, gens[0])
    if chunk_rows >= n:
        return torch.stack([first] + [torch.randperm(n, generator=g) for g in gens[1:]])
    orders = [first]
    for gen in gens[1:]:
        order = first.clone()
        for start in range(0, n, chunk_rows):
            segment = first[start : start + chunk_rows]
            order[start : start + chunk_rows] = segment[torch.randperm(len(segment),
                                                                       generator=gen)]
        orders.append(order)
    return torch.stack(orders)
