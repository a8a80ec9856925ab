"""Atomic output: every file appears whole or not at all.

A file is written to a temporary name in its destination folder, flushed, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows), so an interrupted run
never leaves a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor import distributed
from cmkd_doctor.errors import InputError

# room a temporary name needs beyond the final one (".NAME.XXXXXXXX.stage", ".tmp")
_TEMP_OVERHEAD = 16


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Fail early, before any work, if ``path`` cannot be a folder written into: every
    existing part of it must be a folder, the nearest existing one must take a new file
    (tried, not guessed: ``/sys`` and read-only mounts pass ``os.access``), and every
    name must leave room for the temporary names writes go through."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder; pick another path")
    _check_names(path, option)
    parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".cmkd-doctor-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{option} {path}: {parent} is not writable "
                         f"({exc.strerror or exc})") from None
    return path


def check_out_file(path: str | Path, option: str) -> Path:
    """Fail early if ``path`` cannot be written as a file (see :func:`check_out_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    _check_names(path, option)
    check_out_dir(path.parent, option)
    return path


def _check_names(path: Path, option: str) -> None:
    limit = 255
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and hasattr(os, "pathconf"):
        try:
            limit = os.pathconf(existing, "PC_NAME_MAX")
        except (OSError, ValueError):
            pass
    for part in path.parts:
        if len(os.fsencode(part)) + _TEMP_OVERHEAD > limit:
            raise InputError(f"{option} {path}: the name {part[:40]}... is too long "
                             f"({len(os.fsencode(part))} bytes; at most "
                             f"{limit - _TEMP_OVERHEAD} here)")


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path``.

    In a torchrun job only rank 0 writes; the other processes skip every file.
    """
    path = Path(path)
    if not distributed.is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes files private (0600); give the result the user's usual mode
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as exc:  # a full disk, a quota, a file system gone read-only
        tmp_path.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_text(document: Any) -> str:
    """``document`` as indented JSON; NaN and Infinity are not JSON, so a document
    holding one is a bug (``ValueError``) rather than a file other tools cannot read."""
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, document: Any) -> Path:
    return write_text(path, json_text(document))


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
