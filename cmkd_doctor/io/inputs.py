"""Reading the user's feature arrays and labels, and checking them before any work starts.

Every check that depends on the data lives here, where the data is read, and fails with
an :class:`~cmkd_doctor.errors.InputError` naming the file and what to do about it.
Arrays are never unpickled (``allow_pickle=False``) and ``.npy`` files are memory-mapped.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.files import (
    check_npy,
    first_line,
    fits_in_memory,
    npz_members,
    regular_file,
)
from cmkd_doctor.io.streaming import release

SUFFIXES = (".npy", ".npz", ".safetensors")
# Rows scanned at a time for NaN/Inf, so a memory-mapped array is never read whole.
_SCAN_ROWS = 1 << 16
_SCAN_VALUES = 1 << 24  # values checked at a time by check_finite (64 MiB of float32)


@dataclass(frozen=True)
class ArraySource:
    """Where an array came from: ``path`` and, for containers of several, ``key``."""

    path: Path
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.key}" if self.key is not None else str(self.path)


def parse_source(spec: str | Path) -> ArraySource:
    """Split ``file.npz:key`` into path and key; a path that exists as given has no key."""
    text = str(spec)
    path = Path(text)
    try:
        exists = path.exists()
    except OSError:  # a name too long to look up: regular_file says so
        exists = False
    if exists or ":" not in text:
        return ArraySource(path)
    head, _, key = text.rpartition(":")
    if Path(head).suffix.lower() in (".npz", ".safetensors") and key:
        return ArraySource(Path(head), key)
    return ArraySource(path)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _pick_key(source: ArraySource, keys: list[str]) -> str:
    if source.key is not None:
        if source.key not in keys:
            raise InputError(
                f"{source.path}: no array named '{source.key}'; it holds {_list(keys)}"
            )
        return source.key
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise InputError(f"{source.path}: the file holds no arrays")
    raise InputError(
        f"{source.path}: holds {len(keys)} arrays ({_list(keys)}); "
        f"pick one with {source.path}:KEY"
    )


def _list(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:8])
    return shown + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def read_array(spec: str | Path) -> tuple[np.ndarray, ArraySource]:
    """Read one array from ``.npy`` (memory-mapped), ``.npz`` or ``.safetensors``, after
    the checks of :func:`array_shape`.

    Parameters
    ----------
    spec
        ``path`` or ``path:key``; a file holding a single array needs no key.

    Returns
    -------
    array, source
        The array (possibly a read-only memory map) and where it came from.
    """
    _, source = array_shape(spec)
    path = source.path
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = _read_npy(path)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                array = archive[source.key]
        else:
            array = _read_safetensors(source)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{path}: cannot be read as {suffix} ({_reason(exc)})") from exc
    if array.dtype.hasobject or array.dtype.kind == "V":
        raise InputError(
            f"{source}: holds Python objects or records (dtype {array.dtype}); "
            "save a plain numeric array"
        )
    return array, source


def array_shape(spec: str | Path) -> tuple[tuple[int, ...], ArraySource]:
    """The shape of the array :func:`read_array` would read and where it is (with its
    key), from the file's header alone: nothing is loaded. It checks what needs no
    loading: a regular file of a known type (never a FIFO or a device, which would
    block), a key that exists, and a size the file and, for arrays read whole, the free
    memory hold."""
    source = parse_source(spec)
    path = regular_file(source.path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type '{path.suffix or '(none)'}'; "
            f"use {', '.join(SUFFIXES)}"
        )
    if suffix == ".npy":
        if source.key is not None:
            raise InputError(f"{source}: a .npy file holds one array and takes no key")
        return check_npy(path, str(path)).shape, source
    if suffix == ".npz":
        members = npz_members(path, str(path))
        key = _pick_key(source, list(members))
        return members[key].shape, ArraySource(path, key)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            key = _pick_key(source, list(fh.keys()))
            part = fh.get_slice(key)
            shape = tuple(part.get_shape())
    except SafetensorError as exc:
        raise InputError(f"{path}: cannot be read as .safetensors ({_reason(exc)})") from exc
    count = int(np.prod(shape, dtype=object))
    fits_in_memory(count * _SAFETENSORS_BYTES.get(part.get_dtype(), 8), f"{path}:{key}",
                   "a .safetensors tensor is read into memory whole: save it as .npy, "
                   "which is memory-mapped")
    return shape, ArraySource(path, key)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        text = str(exc)
        if any(k in text for k in ("pickled", "allow_pickle", "Object arrays", "Python objects")):
            raise InputError(
                f"{path}: holds pickled Python objects, which cmkd-doctor never loads; "
                "save a plain numeric array with np.save"
            ) from exc
        raise


def _read_safetensors(source: ArraySource) -> np.ndarray:
    """The tensor ``source.key`` of a ``.safetensors`` file (half floats as float32)."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(source.path), framework="pt") as fh:
            tensor = fh.get_tensor(source.key)
    except SafetensorError as exc:
        raise InputError(
            f"{source.path}: cannot be read as .safetensors ({_reason(exc)})"
        ) from exc
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()


def _reason(exc: BaseException) -> str:
    text = first_line(exc)
    if "mmap length is greater than file size" in text or "cannot reshape" in text:
        return "the file is truncated"
    return text


_SAFETENSORS_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4,
                      "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOAT32_MAX = float(np.finfo(np.float32).max)
_EXACT_FLOAT = 2.0**53  # beyond this, float64 cannot hold every integer


def check_finite(array: np.ndarray, source: ArraySource) -> None:
    """Fail on NaN or Inf, or a value beyond float32's range (every network computes in
    float32, where it would become Inf), saying how many and where the first one is."""
    if array.dtype.kind not in "fc":
        return
    wide = array.dtype.itemsize > (8 if array.dtype.kind == "c" else 4)
    count, first = 0, None
    flat = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    # blocks of at most _SCAN_VALUES values, however wide a row (an image of 3000 x 3000
    # is 9 million): what is read at once stays small whatever the file holds
    width = flat.shape[1]
    columns = max(1, min(width, _SCAN_VALUES))
    rows = max(1, _SCAN_VALUES // max(width, 1))
    for start, left in ((r, c) for r in range(0, len(flat), rows)
                        for c in range(0, width, columns)):
        block = np.asarray(flat[start : start + rows, left : left + columns])
        bad = ~np.isfinite(block)
        if wide:
            bad |= np.abs(np.where(bad, 0, block)) > FLOAT32_MAX
        release(array)  # a memory-mapped file never becomes resident as a whole
        n_bad = int(bad.sum())
        if n_bad and first is None:
            row, col = np.argwhere(bad)[0]
            first = (start + int(row), left + int(col), block[row, col])
        count += n_bad
    if count:
        row, col, value = first
        where = f"row {row}, column {col}" if array.ndim > 1 else f"row {row}"
        raise InputError(
            f"{source}: {count} non-finite value{'s' if count > 1 else ''} (NaN, Inf, or "
            f"beyond float32's ±{FLOAT32_MAX:.3g}); the first is {value} at {where}; "
            "impute, rescale or drop those rows"
        )


@dataclass(frozen=True)
class InputFile:
    """What a run records of an input: where, which key, its shape and checksum."""

    source: ArraySource
    shape: tuple[int, ...]
    dtype: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.source.path.resolve()), "key": self.source.key,
                "shape": list(self.shape), "dtype": self.dtype, "sha256": self.sha256}


def describe(array: np.ndarray, source: ArraySource) -> InputFile:
    """Record an input's shape, dtype and checksum."""
    return InputFile(source, tuple(int(v) for v in array.shape), str(array.dtype),
                     sha256_of(source.path))


def read_features(spec: str | Path) -> tuple[np.ndarray, InputFile]:
    """Read a 2-D ``(n, d)`` numeric feature array and check it."""
    array, source = read_array(spec)
    if _looks_like_labels(array):
        raise InputError(
            f"{source}: is 1-D with {len(np.unique(np.asarray(array[:_SCAN_ROWS])))} "
            "distinct values, like class labels, where features belong; the order is "
            "FEATS_A FEATS_B LABELS (a single feature channel is saved as x.reshape(-1, 1))")
    if array.dtype.kind not in "biuf":
        raise InputError(f"{source}: features must be numeric; got dtype {array.dtype}")
    if array.ndim == 1:
        raise InputError(
            f"{source}: features are 1-D with shape {array.shape}; they must be 2-D "
            "(n, d): for a single channel save x.reshape(-1, 1)"
        )
    if array.ndim >= 3:
        flat = int(np.prod(array.shape[1:]))
        raise InputError(
            f"{source}: features are {array.ndim}-D with shape {array.shape}; they must be "
            f"2-D (n, d): flatten with x.reshape(len(x), -1) (d = {flat}) or pool over "
            "the extra axes first"
        )
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise InputError(f"{source}: features have shape {array.shape}; need at least 2 rows "
                         "and 1 column")
    check_finite(array, source)
    return array, describe(array, source)


def _looks_like_labels(array: np.ndarray) -> bool:
    """A 1-D array of text, or of whole numbers taking few values: labels, given where
    features belong (the arguments in the wrong order)."""
    if array.ndim != 1:
        return False
    if array.dtype.kind in "US":
        return True
    head = np.asarray(array[:_SCAN_ROWS])
    if array.dtype.kind == "f" and not np.all(np.isfinite(head) & (head == np.round(head))):
        return False
    return array.dtype.kind in "biuf" and len(np.unique(head)) <= max(2, len(head) // 2)


@dataclass(frozen=True)
class Labels:
    """Class targets remapped to ``0..K-1`` (single-label) or a multi-hot matrix.

    Attributes
    ----------
    y
        ``(n,)`` int64 class ids, or ``(n, K)`` float32 multi-hot for multi-label tasks.
    classes
        The original label of each class id (single-label) or one name per column.
    multilabel
        True when ``y`` is multi-hot and the task uses BCE instead of CE.
    """

    y: np.ndarray
    classes: list[Any]
    multilabel: bool

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def read_labels(spec: str | Path) -> tuple[Labels, InputFile]:
    """Read labels: 1-D class ids (any integers or strings) or 2-D multi-hot ``(n, K)``.

    A ``(n, 1)`` column is read as 1-D class ids.
    """
    array, source = read_array(spec)
    info = describe(array, source)
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 1:
        return _single_label(array, source), info
    if array.ndim == 2:
        return _multi_label(array, source), info
    raise InputError(
        f"{source}: labels have shape {array.shape}; give 1-D class ids (n,) or 2-D "
        "multi-hot (n, K)"
    )


def _single_label(array: np.ndarray, source: ArraySource) -> Labels:
    kind = array.dtype.kind
    if kind == "f":
        check_finite(array, source)
        if not np.all(array == np.round(array)):
            raise InputError(
                f"{source}: labels are non-integer floats; cmkd-doctor classifies, so give "
                "class ids (integers or strings)"
            )
        big = np.abs(array) > _EXACT_FLOAT
        if big.any():  # floats there are not exact integers: ids could merge
            row = int(np.flatnonzero(big)[0])
            raise InputError(
                f"{source}: label {array[row]:g} at row {row} is beyond 2^53, where float "
                "class ids are not exact integers; save the labels as integers or strings")
        array = array.astype(np.int64)
    elif kind == "S":  # byte strings: text, if they decode
        try:
            array = np.char.decode(array, "utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{source}: labels are byte strings that are not UTF-8 text; "
                             "give integers or text") from None
    elif kind not in "biuU":
        raise InputError(f"{source}: labels must be integers or strings; got dtype "
                         f"{array.dtype}")
    classes, y = np.unique(array, return_inverse=True)
    if len(classes) < 2:
        only = _jsonable(classes[0]) if len(classes) else "none"
        raise InputError(
            f"{source}: only 1 class ({only}) found; classification needs at least 2"
        )
    counts = np.bincount(y, minlength=len(classes))
    single = np.flatnonzero(counts == 1)
    if len(single):
        cls = single[0]
        row = int(np.flatnonzero(y == cls)[0])
        more = f" (and {len(single) - 1} more)" if len(single) > 1 else ""
        raise InputError(
            f"{source}: class {_jsonable(classes[cls])!r} has a single sample (row {row})"
            f"{more}; each class needs at least 2: drop it or merge it with another class"
        )
    return Labels(y.astype(np.int64), [_jsonable(c) for c in classes], multilabel=False)


def _multi_label(array: np.ndarray, source: ArraySource) -> Labels:
    if array.dtype.kind not in "biuf":
        raise InputError(f"{source}: multi-hot labels must be numeric; got dtype {array.dtype}")
    check_finite(array, source)
    if not np.isin(array, (0, 1)).all():
        raise InputError(
            f"{source}: 2-D labels are read as multi-hot (n, K) and must hold only 0 and 1"
        )
    if array.shape[1] < 2:
        raise InputError(f"{source}: multi-hot labels have {array.shape[1]} column; give "
                         "1-D class ids for a binary task")
    positives = array.sum(axis=0)
    rare = np.flatnonzero(positives < 2)
    if len(rare):
        col = int(rare[0])
        raise InputError(
            f"{source}: class column {col} has {int(positives[col])} positive sample"
            f"{'s' if positives[col] != 1 else ''}; each class needs at least 2: drop "
            "the column"
        )
    return Labels(array.astype(np.float32), [f"class_{k}" for k in range(array.shape[1])],
                  multilabel=True)


@dataclass
class PairedData:
    """Paired features of modality a and b with their labels; rows are aligned.

    Attributes
    ----------
    xa, xb
        ``(n, d_a)`` and ``(n, d_b)`` arrays, possibly memory-mapped.
    labels
        The remapped labels.
    files
        One :class:`InputFile` per input under ``feats_a``, ``feats_b``, ``labels``.
    """

    xa: np.ndarray
    xb: np.ndarray
    labels: Labels
    files: dict[str, InputFile] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.xa)


def _check_rows(a: tuple[int, ArraySource], b: tuple[int, ArraySource],
                y: tuple[int, ArraySource]) -> None:
    """The three inputs pair one row to one row: (rows, source) of each."""
    if b[0] != a[0]:
        raise InputError(f"{b[1]}: has {b[0]} rows but {a[1]} has {a[0]}; the rows of both "
                         "modalities must be paired one to one")
    if y[0] != a[0]:
        raise InputError(f"{y[1]}: has {y[0]} rows but {a[1]} has {a[0]}; give one label "
                         "per paired row")


def load_paired(feats_a: str | Path, feats_b: str | Path, labels: str | Path) -> PairedData:
    """Read and check the three inputs of ``rank``: features a, features b, labels.

    Raises
    ------
    InputError
        For anything unusable, naming the file: unreadable or truncated files, pickled
        or object arrays, wrong dimensionality, NaN or Inf, row counts that differ,
        fewer than 2 classes, or a class with a single sample.
    """
    # the three headers first: files that cannot pair are refused before any is read
    (shape_a, source_a), (shape_b, source_b), (shape_y, source_y) = (
        array_shape(spec) for spec in (feats_a, feats_b, labels))
    if shape_a and shape_b and shape_y:
        _check_rows((shape_a[0], source_a), (shape_b[0], source_b), (shape_y[0], source_y))
    xa, info_a = read_features(feats_a)
    xb, info_b = read_features(feats_b)
    lab, info_y = read_labels(labels)
    _check_rows((len(xa), info_a.source), (len(xb), info_b.source),
                (len(lab.y), info_y.source))
    return PairedData(xa, xb, lab, {"feats_a": info_a, "feats_b": info_b, "labels": info_y})
