"""Atomic output: every file appears whole or not at all, and a folder's files together.

A file is written to a temporary name in its destination folder, flushed, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows), so an interrupted run
never leaves a half-written file. Several files that belong together are built in a
staging folder and land in one step (:func:`staging`, :func:`together`).
"""

from __future__ import annotations

import contextvars
import ctypes
import io
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cmkd_doctor import distributed
from cmkd_doctor.errors import InputError

#: the run directory every command uses when none is given
DEFAULT_RUN = Path("cmkd-out")

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
    """Fail early if ``path`` cannot be written as a file (see :func:`check_out_dir`): a
    character device such as ``/dev/stdout`` is written in place, any other file that is
    not a regular one (a FIFO, a socket) is refused."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    try:
        if _special(path, "the output"):
            return path
    except InputError as exc:
        raise InputError(f"{option} {exc}") from None
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


# The folder being staged (:func:`staging`): while it is set, every write must land
# inside it, so a symbolic link in a run directory never leads a write elsewhere.
_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("root", default=None)


def check_inside(path: Path, root: Path | None = None) -> None:
    """Refuse a write to a path inside ``root`` (by default the folder being staged)
    that a symbolic link would lead outside it. Paths outside ``root`` (a file the user
    named, as ``--export-onnx``) are not its business."""
    root = _ROOT.get() if root is None else root
    if root is None:
        return
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root))
    if root not in path.parents:
        return
    real_root = Path(os.path.realpath(root))
    folder = Path(os.path.realpath(path.parent))
    if folder != real_root and real_root not in folder.parents:
        inner = next((p for p in (path.parent, *path.parent.parents)
                      if p.is_symlink() and root in p.parents), path.parent)
        raise InputError(f"{inner}: leads outside the folder it belongs to (a symbolic "
                         f"link to {os.path.realpath(inner)}); cmkd-doctor writes only "
                         "inside it: replace the link by a folder")


def make_folder(folder: Path) -> None:
    """``folder`` and the folders above it, or one error line naming the file that
    stands where one of them belongs (a run's ``teachers`` replaced by a file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents)
                        if p.exists() and not p.is_dir()), folder)
        raise InputError(f"{blocker}: is a file where a folder belongs; move it away or "
                         "remove it") from None


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path``.

    In a torchrun job only rank 0 writes; the other processes skip every file. A
    character device (``/dev/stdout``) is written in place, never replaced; anything
    else that is not a regular file is refused.
    """
    path = Path(path)
    if not distributed.is_main():
        return path
    if _special(path, "the file"):
        try:
            write(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
        return path
    check_inside(path)
    make_folder(path.parent)
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


def _special(path: Path, what: str) -> bool:
    """Whether ``path`` is a character device (written in place); refuse another kind
    of file that is not a regular one (a FIFO, a socket, a block device)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISCHR(mode):
        return True
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{path}: is not a regular file; {what} would replace it")
    return False


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


def write_npy(path: str | Path, array: Any) -> Path:
    import numpy as np  # here, not at import: commands that write no array start without it

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # serialised here and written by Python, so a full disk is an OSError like any other
    # file's (safetensors' own writer reports it as a SafetensorError)
    return write_bytes(path, save(tensors, metadata=metadata))


@contextmanager
def staging(target: Path, skip: Collection[str] = frozenset(),
            at_commit: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A folder to build ``target``'s next version in. Leaving without an error makes it
    current in one step; on an error (or a signal) it is removed and ``target`` is left
    byte-identical.

    The folder starts as a hard-linked copy of ``target`` without the top-level entries
    named in ``skip`` (a copy where the file system has no hard links), so the command
    reads the files it builds on from there. On leaving, with the parent folder locked
    against other commands, ``target`` *as it is now* (without ``skip``) is linked into
    a second folder; ``at_commit(folder)`` may refuse or add files to it; every file the
    command wrote is moved over it; and that folder and ``target`` are exchanged
    (:func:`replace_dir`). So commands running side by side on one run directory each
    add their files; none undoes another's.

    A folder that is the current one, or holds it, is never exchanged (the shell in it
    would be left in a deleted folder): there the new files are moved into ``target``
    one by one, each atomically.
    """
    # a folder inside one being staged (a run's example/) must not lead outside it
    check_inside(Path(target) / "entry")
    # a run directory that is a symlink (to a scratch disk, say) is replaced where it
    # really lives, and the link stays
    given, target = target, Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = _make_stage(target)
    final: Path | None = None
    try:
        try:
            linked = _link_tree(target, stage, skip)
        except OSError as exc:
            raise InputError(f"{target}: cannot be staged for the new run "
                             f"({exc.strerror or exc}); it is left as it was") from exc
        try:
            token = _ROOT.set(stage)
            try:
                yield stage
            finally:
                _ROOT.reset(token)
            here = Path.cwd().resolve()
            with _locked(target.parent):
                if here == target or target in here.parents:
                    if at_commit is not None:
                        at_commit(target)
                    _move_written(stage, target, linked)
                    return
                try:
                    final = _make_stage(target)
                    _link_tree(target, final, skip)
                    if at_commit is not None:
                        at_commit(final)
                    _move_written(stage, final, linked)
                    replace_dir(final, target)
                except OSError as exc:
                    raise InputError(f"{given}: cannot be replaced by the new run "
                                     f"({exc.strerror or exc}); it is left as it "
                                     "was") from exc
        except InputError as exc:  # name the file where it was to go, not a stage
            message = str(exc)
            for folder in (stage, final):
                if folder is not None:
                    message = message.replace(str(folder), str(given))
            raise InputError(message) from exc.__cause__
    finally:  # the old version, or the unfinished one
        shutil.rmtree(stage, ignore_errors=True)
        if final is not None:
            shutil.rmtree(final, ignore_errors=True)


def _move_written(stage: Path, dest: Path, linked: dict[Path, tuple]) -> None:
    """Move every file the command wrote in ``stage`` (not one linked in unchanged) to
    the same place under ``dest``."""
    written = [path for path in _files(stage) if linked.get(path) != _identity(stage / path)]
    for path in written:  # all checked before any moves
        check_inside(dest / path, dest)
    for path in written:
        make_folder((dest / path).parent)
        os.replace(stage / path, dest / path)


def _make_stage(target: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".stage",
                                 dir=target.parent))


def _link_tree(source: Path, dest: Path, skip: Collection[str]) -> dict[Path, tuple]:
    """Link (or copy) every entry of folder ``source`` but ``skip`` into the empty folder
    ``dest``; returns each file's identity, by its path relative to ``dest``."""
    if not source.is_dir():
        os.chmod(dest, 0o777 & ~current_umask())
        return {}
    shutil.copystat(source, dest)
    for entry in source.iterdir():
        if entry.name in skip:
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest / entry.name)
        elif entry.is_dir():
            shutil.copytree(entry, dest / entry.name, symlinks=True,
                            copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dest / entry.name)
    return {path: _identity(dest / path) for path in _files(dest)}


def _files(folder: Path) -> list[Path]:
    """Every file and symlink under ``folder``, relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.append(Path(root, name).relative_to(folder))
    return found


def _identity(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_dev, info.st_ino, info.st_mtime_ns


def _link_or_copy(source: str | Path, dest: str | Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (where the platform has ``flock``), so two
    commands never replace the same run directory at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the exchange alone
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def replace_dir(new: Path, target: Path) -> None:
    """Make folder ``new`` the folder ``target``; the old ``target`` ends up at ``new``.

    On Linux the two are exchanged atomically (``renameat2(RENAME_EXCHANGE)``). Elsewhere
    it takes two renames, with SIGINT and SIGTERM held back between them.
    """
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        return
    aside = new.with_name(new.name + ".old")
    held = {signal.SIGINT, signal.SIGTERM}
    blocking = hasattr(signal, "pthread_sigmask")
    if blocking:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        os.rename(target, aside)
        try:
            os.rename(new, target)
        except OSError:
            os.rename(aside, target)  # put the old one back
            raise
        os.rename(aside, new)
    finally:
        if blocking:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _exchange(a: Path, b: Path) -> bool:
    """``renameat2(a, b, RENAME_EXCHANGE)`` where the C library and file system have it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                     rename_exchange) == 0


@contextmanager
def together(folder: str | Path) -> Iterator[Path]:
    """Where a writer of several files into ``folder`` (a data set's arrays, say) builds
    them so they land in one step (:func:`staging`): an interrupted write leaves the old
    files as they were, never some old and some new.

    The current folder, or one holding it, cannot be exchanged: there (and under
    torchrun outside rank 0, which writes nothing) the files are written into ``folder``
    one by one, each atomically.
    """
    folder = Path(folder)
    here, target = Path.cwd().resolve(), folder.resolve()
    if not distributed.is_main() or here == target or target in here.parents:
        yield folder
        return
    with staging(folder) as stage:
        yield stage


def landed(paths: list[Path], stage: Path, folder: str | Path) -> list[Path]:
    """``paths`` written under ``stage`` (from :func:`together`), where they are in
    ``folder``."""
    return [Path(folder) / Path(p).relative_to(stage) for p in paths]
