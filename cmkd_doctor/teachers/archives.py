"""A ``.pt2`` file read as data: nothing in it is unpickled or run.

``torch.export.load`` unpickles some archive members with ``torch.load(weights_only=
False)`` or ``pickle.loads`` (weights and constants marked ``use_pickle``, legacy
``.pt`` weight files, opaque and custom-object constants, sample inputs that the
restricted loader refuses) and loads AOTInductor's compiled libraries: a hostile file
runs its own code there. Before torch reads a program, :func:`check_program_archive`
looks at the archive with :mod:`zipfile` and refuses every such member by name; while
torch reads it, :func:`tensors_only` makes every ``torch.load`` the restricted one
(``weights_only=True``: tensors and plain containers only), so a member the check did
not foresee fails instead of running. What a program of plain tensors needs, which is
every program ``torch.export.save`` writes from an ordinary module, loads as before.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX

from cmkd_doctor.errors import InputError

# the most bytes a config or sample-inputs member is read into memory with
MAX_MEMBER_BYTES = 64 << 20
WHY = ("cmkd-doctor reads a .pt2 as data and runs no code from it; export the network "
       "again with torch.export.save from a module whose weights are plain tensors")


def _refuse(option: str, path: Path, member: str, what: str) -> InputError:
    return InputError(f"{option} {path}: {member} {what}: {WHY}")


def _member(archive: zipfile.ZipFile, name: str, option: str, path: Path) -> bytes:
    size = archive.getinfo(name).file_size
    if size > MAX_MEMBER_BYTES:
        raise _refuse(option, path, name, f"declares {size} bytes, more than a program's "
                      f"{MAX_MEMBER_BYTES >> 20} MiB for it")
    return archive.read(name)


def _config(archive: zipfile.ZipFile, name: str, option: str, path: Path) -> dict[str, Any]:
    try:
        found = json.loads(_member(archive, name, option, path))
    except (ValueError, RecursionError):
        raise InputError(f"{option} {path}: {name} is not JSON: cannot be read as a "
                         "torch.export program") from None
    config = found.get("config") if isinstance(found, dict) else None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise InputError(f"{option} {path}: {name} is not a payload config: cannot be read "
                         "as a torch.export program")
    return config


def check_program_archive(path: Path, option: str) -> None:
    """Refuse (:class:`InputError`, naming the member) a ``.pt2`` that torch would read
    by unpickling or by loading compiled code: see the module docstring."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError(f"{option} {path}: cannot be read as a torch.export program (not "
                         "a zip archive)") from None
    with archive:
        for name in archive.namelist():
            inner = name.split("/", 1)[-1]  # below the archive's own folder
            if inner.startswith("data/aotinductor/"):
                raise _refuse(option, path, name, "is AOTInductor compiled code")
            folder = next((f for f in ("data/weights/", "data/constants/")
                           if inner.startswith(f)), None)
            if folder and inner.endswith(".pt"):
                raise _refuse(option, path, name, "is a pickled weights file (the legacy "
                              "format)")
            if folder and inner.endswith("_config.json"):
                for key, meta in _config(archive, name, option, path).items():
                    if meta.get("use_pickle") is not False:
                        raise _refuse(option, path, f"{name} ({key})", "is stored as a "
                                      "pickle")
                    kind = str(meta.get("path_name", ""))
                    if folder == "data/constants/" and not kind.startswith(
                            TENSOR_CONSTANT_FILENAME_PREFIX):
                        raise _refuse(option, path, f"{name} ({key})", "is a pickled "
                                      "object, not a tensor")
            if inner.startswith("data/sample_inputs/"):
                try:
                    with warnings.catch_warnings():  # its pickle-protocol notes
                        warnings.simplefilter("ignore")
                        torch.load(io.BytesIO(_member(archive, name, option, path)),
                                   weights_only=True)
                except Exception:  # noqa: BLE001 - anything the restricted loader refuses
                    raise _refuse(option, path, name, "holds more than tensors") from None


@contextmanager
def tensors_only() -> Iterator[None]:
    """Within: every ``torch.load`` is the restricted one (``weights_only=True``),
    whatever its caller asks."""
    real = torch.load

    def restricted(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real(*args, **kwargs)

    torch.load = restricted
    try:
        yield
    finally:
        torch.load = real
