"""Opening the user's files: one guard in front of every reader.

Every file a user names (features, labels, a split, groups, a config, an ONNX model)
passes :func:`regular_file` before it is opened, so a FIFO, a device or a socket is
refused instead of blocking or streaming forever, and a folder or an over-long name is
named as such. Arrays that are read whole (``.npz`` members, ``--groups``, ``--split``) are
sized from their headers first (:func:`npy_header`, :func:`npz_members`): a header that
declares more than the file holds, or more than the machine's free memory, is refused
before anything is allocated. Configs are read by :func:`read_yaml`, which refuses YAML
anchors and aliases, size, depth and repeated keys. Every refusal is an
:class:`~cmkd_doctor.errors.InputError` of the form ``LABEL: what is wrong``.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from cmkd_doctor.errors import InputError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path: str | Path, label: str | None = None) -> Path:
    """``path`` when it names a regular file (symlinks followed), else an
    :class:`InputError` ``"LABEL: no such file"`` (``is a folder``, ``is not a regular file
    (a FIFO ...)``, ``the name is too long``); ``label`` defaults to the path."""
    path = Path(path)
    label = str(path) if label is None else label
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InputError(f"{label}: the name is too long for the file system") from None
        if exc.errno == errno.ENOTDIR:
            raise InputError(f"{label}: no such file (a part of the path is a file)") from None
        if exc.errno == errno.ELOOP:
            raise InputError(f"{label}: a loop of symbolic links") from None
        raise InputError(f"{label}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{label}: is a folder; give a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise InputError(f"{label}: is not a regular file ({kind}); give a file")
    return path


if TYPE_CHECKING:
    import numpy as np


class Header(NamedTuple):
    """What a ``.npy`` header declares: shape, dtype and how many data bytes follow."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def npy_header(fh: IO[bytes], label: str, size: int) -> Header:
    """Read the header of a ``.npy`` stream of ``size`` bytes (left at the first data
    byte), and refuse one that declares more data than the stream holds."""
    import numpy as np  # imported where used: the CLI's help reads this module

    first = fh.peek(1)[:1] if hasattr(fh, "peek") else b""
    if first == b"\x80":  # pickle's first byte: a pickle saved under a .npy name
        raise InputError(f"{label}: holds pickled Python objects, which cmkd-doctor never "
                         "loads; save a plain numeric array with np.save")
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"{label}: cannot be read as .npy ({first_line(exc)})") from None
    if dtype.hasobject:
        raise InputError(f"{label}: holds pickled Python objects, which cmkd-doctor never "
                         "loads; save a plain numeric array with np.save")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = size - fh.tell()
    if nbytes > held:
        raise InputError(f"{label}: its header declares shape {tuple(shape)} of {dtype} "
                         f"({human_size(nbytes)}) but the file holds {human_size(held)}: "
                         "it is truncated or corrupt")
    return Header(tuple(int(v) for v in shape), dtype, nbytes)


def check_npy(path: Path, label: str) -> Header:
    """The header of a ``.npy`` file, checked against the file's size."""
    with open(regular_file(path, label), "rb") as fh:
        return npy_header(fh, label, os.fstat(fh.fileno()).st_size)


def npz_members(path: Path, label: str) -> dict[str, Header]:
    """The arrays of a ``.npz`` file with their headers, each checked against its size
    in the archive, and all together against the machine's free memory (a ``.npz`` is
    read into memory whole)."""
    members: dict[str, Header] = {}
    try:
        with zipfile.ZipFile(regular_file(path, label)) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as fh:
                    members[name] = npy_header(fh, f"{label}:{name}", info.file_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise InputError(f"{label}: cannot be read as .npz ({first_line(exc)})") from None
    fits_in_memory(sum(h.nbytes for h in members.values()), label,
                   "a .npz file is read into memory whole: save its arrays as .npy, which "
                   "is memory-mapped")
    return members


def host_memory_free() -> int:
    """Bytes of physical memory available to this process: Linux's ``MemAvailable``
    (free memory and the page cache it can drop: right after a large file is read,
    "free" alone is a fraction of what can be had), within the cgroup's limit where one
    is set (a container); elsewhere the free pages, or a very large number where the
    system does not say."""
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # no sysconf: nothing to go by
            available = 1 << 62
    return min(available, _cgroup_room())


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room(own: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
                 ) -> int:
    """What this process's cgroup may still take: its limit less its working set (what
    it uses less the page cache it can drop), under cgroup v2 (``memory.max``) or v1
    (``memory.limit_in_bytes``); a very large number without a limit. ``own`` lists the
    process's cgroups, ``root`` is where they are mounted."""
    unlimited = 1 << 62
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return unlimited
    for line in lines:
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if number == "0" and not controllers:  # v2
            files = (root / path.lstrip("/"), "memory.max",
                     "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            files = (root / "memory" / path.lstrip("/"),
                     "memory.limit_in_bytes", "memory.usage_in_bytes",
                     "total_inactive_file")
        else:
            continue
        group, limit_file, usage_file, inactive = files
        try:
            limit = (group / limit_file).read_text().strip()
            if limit == "max" or int(limit) >= unlimited:
                continue
            used = int((group / usage_file).read_text())
            stat = dict(line.split() for line in (group / "memory.stat").read_text()
                        .splitlines() if len(line.split()) == 2)
            return max(0, int(limit) - used + int(stat.get(inactive, 0)))
        except (OSError, ValueError):
            continue
    return unlimited


def fits_in_memory(nbytes: int, label: str, hint: str) -> None:
    """Refuse, before reading, an array larger than the machine's free memory."""
    free = host_memory_free()
    if nbytes > free:
        raise InputError(f"{label}: holds {human_size(nbytes)}, more than the "
                         f"{human_size(free)} of memory free; {hint}")


def human_size(n: float) -> str:
    """``1.5 GiB``: bytes in the largest binary unit below them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


MAX_TEXT_BYTES = 1 << 20  # a config larger than this is not a config
MAX_YAML_DEPTH = 32  # nesting a config needs: a few levels


def read_yaml(path: str | Path, label: str | None = None) -> object:
    """A small YAML file read safely: a regular file of at most :data:`MAX_TEXT_BYTES`,
    UTF-8 text, ``yaml.safe_load`` without anchors or aliases (which a config has no use
    for, and which can expand a few bytes into gigabytes), nested at most
    :data:`MAX_YAML_DEPTH` deep, and no key given twice in one mapping."""
    import yaml

    path = regular_file(path, label)
    label = str(path) if label is None else label
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise InputError(f"{label}: {human_size(size)} is too large for a config file "
                         f"(at most {human_size(MAX_TEXT_BYTES)})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: not a text file (byte {exc.start} is not UTF-8)") from None

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise _Refused("anchors and aliases (& and *) are not allowed",
                               event.start_mark)
            self.depth += 1
            if self.depth > MAX_YAML_DEPTH:
                raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep",
                               event.start_mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise _Refused(f"the key '{key}' is given twice", key_node.start_mark)
                seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader: no code from YAML tags
    except _Refused as exc:
        raise InputError(f"{label}: {exc.args[0]} (line {exc.mark.line + 1})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"{label}: not valid YAML{at}") from None


class _Refused(Exception):
    """A YAML construct :func:`read_yaml` does not accept, with where it is."""

    def __init__(self, what: str, mark: object):
        super().__init__(what)
        self.mark = mark
