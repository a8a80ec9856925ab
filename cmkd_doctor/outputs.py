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


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Fail early, before any work, if ``path`` cannot be a run directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder; pick another path")
    parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {path}: {parent} is not writable")
    return path


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
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
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
