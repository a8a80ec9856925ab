"""The examples' published files: where each comes from, its SHA-256, and fetching it
into a data root over HTTP(S) (requests) or from a mirror.

One layout serves a data root, the cache and a mirror alike:

    mnist/t10k-images-idx3-ubyte.gz, ...            MNIST's test set, as published
    fsdd/recordings/{digit}_{speaker}_{index}.wav   the Free Spoken Digit Dataset
    sources/OWNER-REPOSITORY/PATH                   a file of a public GitHub repository
    multiview/NAME/view*.npy, labels.npy            converted here from sources/, not fetched

The data root is ``--data-dir``, else ``$CMKD_DOCTOR_DATA``, else the platform's cache
folder (platformdirs). A mirror (``--mirror``, ``$CMKD_DOCTOR_MIRROR``) is an http(s) URL
or a folder that holds the files under the same paths; a filled data root is one, so
``examples fetch`` on a machine online makes a mirror for machines that are not.

Every file is checked against the size and SHA-256 recorded in ``checksums.txt`` before
it lands: it is written to a temporary name beside its place and renamed only once it
checks (:func:`cmkd_doctor.io.outputs.write_atomic`). A wrong file, a cut transfer, a full
disk or an interrupt leaves nothing behind, and a rerun fetches only what is missing.

Every transfer is bounded by what is known of it: no byte beyond the published size, no
encoded body, no silence longer than ``--timeout`` and no stretch of ``--timeout`` seconds
slower than :data:`MIN_RATE`, and an interrupt ends a fetch of many files within a second.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmkd_doctor import distributed
from cmkd_doctor.errors import CmkdError, DownloadError, InputError, option_error, shown
from cmkd_doctor.io.files import regular_file
from cmkd_doctor.io.outputs import check_out_dir, write_atomic
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.registry import Registry

DATA_ENV = "CMKD_DOCTOR_DATA"
MIRROR_ENV = "CMKD_DOCTOR_MIRROR"
CHECKSUMS = Path(__file__).with_name("checksums.txt")
ATTEMPTS = 2  # per URL: a dropped connection or a busy server (429, 5xx) gets one retry
WORKERS = 8  # transfers at once when an example has many small files (FSDD: 3,000)
CHUNK = 1 << 16
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MIN_RATE = 1024  # bytes a second, over every --timeout seconds of one transfer
STOP_WITHIN = 1.0  # seconds an interrupted fetch of many files gives its transfers to end
# a temporary file this long untouched is a transfer whose process was killed (a live one
# writes at least every --timeout seconds); the next fetch of that file removes it
STALE_SECONDS = 3600


@dataclass(frozen=True)
class Source:
    """A group of published files and where their publisher serves them.

    ``upstream`` holds URL templates tried in order; ``{path}`` is a file's path below
    ``prefix`` (its folder in the layout).
    """

    name: str
    prefix: str
    upstream: tuple[str, ...]
    what: str


SOURCES: Registry[Source] = Registry("source")
for _source in (
    Source("mnist", "mnist/", ("https://ossci-datasets.s3.amazonaws.com/mnist/{path}",
                               "http://yann.lecun.com/exdb/mnist/{path}"),
           "MNIST's test set (LeCun, Cortes and Burges; CC BY-SA 3.0)"),
    Source("fsdd", "fsdd/recordings/",
           ("https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/HEAD/"
            "recordings/{path}",),
           "the Free Spoken Digit Dataset (Jakobovski et al.; CC BY-SA 4.0)"),
    Source("scene15", "sources/XLearning-SCU-2023-IJCAI-ProImp/",
           ("https://raw.githubusercontent.com/XLearning-SCU/2023-IJCAI-ProImp/HEAD/{path}",),
           "15-Scenes' three descriptors, as XLearning-SCU/2023-IJCAI-ProImp publishes them"),
    Source("leaves100", "sources/zhou572-Multi-view-Datasets/",
           ("https://raw.githubusercontent.com/zhou572/Multi-view-Datasets/HEAD/{path}",),
           "One-hundred plant species leaves (UCI; CC BY 4.0), as zhou572/Multi-view-"
           "Datasets publishes them"),
):
    SOURCES.add(_source.name, _source, _source.what)


@dataclass(frozen=True)
class Remote:
    """One published file: its place in the layout, size in bytes and SHA-256."""

    path: str
    size: int
    sha256: str
    source: Source

    def upstream(self) -> tuple[str, ...]:
        below = urllib.parse.quote(self.path.removeprefix(self.source.prefix))
        return tuple(t.format(path=below) for t in self.source.upstream)


@functools.cache
def _checksums() -> tuple[tuple[str, int, str], ...]:
    rows = []
    for line in CHECKSUMS.read_text().splitlines():
        if line and not line.startswith("#"):
            sha256, size, path = line.split(maxsplit=2)
            rows.append((path, int(size), sha256))
    return tuple(rows)


def files(source: str) -> list[Remote]:
    """The files of ``source`` (a name in :data:`SOURCES`), as ``checksums.txt`` lists
    them."""
    found = SOURCES[source]
    return [Remote(path, size, sha256, found) for path, size, sha256 in _checksums()
            if path.startswith(found.prefix)]


MAX_TIMEOUT = 86400.0  # --timeout's most seconds: one day


@dataclass(frozen=True)
class FetchOptions:
    """Where an example's files are and where they come from.

    Parameters
    ----------
    data_dir
        The data root [default: ``$CMKD_DOCTOR_DATA``, else the platform's cache folder].
    mirror
        An http(s) URL or a folder laid out like a data root, used instead of the
        publishers' servers [default: ``$CMKD_DOCTOR_MIRROR``, else none].
    download
        Fetch what the data root lacks (otherwise a missing file is an error that says
        which command fetches it).
    timeout
        Seconds a server may take to connect or to send the next bytes; over every such
        stretch a transfer must also average :data:`MIN_RATE` bytes a second.
    """

    data_dir: str | None = None
    mirror: str | None = None
    download: bool = False
    timeout: float = 30.0

    def checked(self) -> FetchOptions:
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise option_error("timeout", f"a number of seconds in (0, {MAX_TIMEOUT:g}] (a "
                               "server silent for a day is gone)", self.timeout)
        if self.mirror is not None and not self.mirror.strip():
            # '' is not "no mirror": the publishers' servers are what the user meant to avoid
            raise option_error("mirror", "an http(s):// URL or a folder", self.mirror)
        mirror = self.mirror_base()
        if mirror is not None:
            flag = "mirror" if self.mirror else f"${MIRROR_ENV}"
            if any(ord(c) < 32 or ord(c) == 127 for c in mirror):
                raise option_error(flag, "an http(s):// URL or a folder, without control "
                                   "characters", mirror)
            try:
                scheme = urllib.parse.urlsplit(mirror).scheme
                folder = _folder(mirror)
            except ValueError as exc:  # such as a bracket left open: "http://[::1"
                raise option_error(flag, f"an http(s):// URL or a folder ({exc})",
                                   mirror) from None
            if folder is None and scheme not in ("http", "https"):
                raise option_error(flag, "an http(s):// URL or a folder", mirror)
        return self

    def root(self) -> Path:
        """The data root: ``data_dir``, else ``$CMKD_DOCTOR_DATA``, else the cache."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        if os.environ.get(DATA_ENV):
            return Path(os.environ[DATA_ENV]).expanduser()
        import platformdirs

        return platformdirs.user_cache_path("cmkd-doctor") / "data"

    def root_option(self) -> str:
        """What set the data root, as an error message names it."""
        if self.data_dir:
            return "--data-dir"
        return f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the cache folder"

    def mirror_base(self) -> str | None:
        return self.mirror or os.environ.get(MIRROR_ENV) or None


def urls(remote: Remote, options: FetchOptions) -> tuple[str, ...]:
    """Where ``remote`` is requested from, in order: the mirror alone when one is set
    (an offline machine must never reach out), else its publisher's servers."""
    mirror = options.mirror_base()
    if mirror is None:
        return remote.upstream()
    folder = _folder(mirror)
    if folder is not None:
        return (str(folder / remote.path),)
    return (mirror.rstrip("/") + "/" + urllib.parse.quote(remote.path),)


def missing(sources: Iterable[str], root: Path) -> list[Remote]:
    """The files of ``sources`` that ``root`` lacks (or holds at another size). Cheap:
    sizes only; :func:`fetch` checks every byte."""
    return [r for s in sources for r in files(s) if not _has_size(root / r.path, r.size)]


def fetch(sources: Iterable[str], options: FetchOptions | None = None,
          progress: Progress = no_progress) -> list[Remote]:
    """Make the data root hold every file of ``sources``, each checked against its size
    and SHA-256; returns the files transferred (none when all were there and whole).

    Files already there are hashed and kept when they check; the others are fetched,
    several at once when there are many. The first failure stops every transfer and
    raises :class:`~cmkd_doctor.errors.DownloadError` naming the file and the cause.
    Under torchrun rank 0 fetches and the others wait for it.
    """
    options = (options or FetchOptions()).checked()
    sources = list(sources)
    for name in sources:
        SOURCES[name]  # an unknown name lists the valid ones
    error, todo = None, []
    if distributed.is_main():
        try:
            todo = _fetch(sources, options, progress)
        except CmkdError as exc:
            error = exc
    said = distributed.from_main(None if error is None else str(error))
    if error is not None:
        raise error
    if said is not None:
        raise DownloadError(said)
    return todo


def _fetch(sources: list[str], options: FetchOptions, progress: Progress) -> list[Remote]:
    root = options.root()
    todo = [r for s in sources for r in files(s) if not is_published(root / r.path, r)]
    if not todo:
        return []
    check_out_dir(root, options.root_option())
    _sweep(root, todo)
    meter = _Meter(sum(r.size for r in todo), progress)
    meter.add(0)
    if len(todo) == 1:  # in this thread: an interrupt stops it at once
        _fetch_one(todo[0], root, options, meter)
        return todo
    _fetch_many(todo, root, options, meter)
    return todo


def _fetch_many(todo: list[Remote], root: Path, options: FetchOptions, meter: _Meter) -> None:
    """Fetch ``todo`` on :data:`WORKERS` threads. The first failure, or an interrupt in
    this (the main) thread, cancels the rest: their transfers are shut and they get
    :data:`STOP_WITHIN` seconds to remove their temporary files. The threads are daemons,
    so one stuck in a connect cannot hold the process past that (a temporary file it
    leaves goes with the next fetch of its file, :func:`_sweep`)."""
    waiting = list(reversed(todo))
    failures: list[BaseException] = []

    def work() -> None:
        while not meter.cancelled.is_set():
            try:
                remote = waiting.pop()  # atomic under the GIL
            except IndexError:
                return
            try:
                _fetch_one(remote, root, options, meter)
            except _Cancelled:
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                failures.append(exc)
                meter.cancel()
                return

    threads = [threading.Thread(target=work, name=f"fetch-{i}", daemon=True)
               for i in range(min(WORKERS, len(todo)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.1)  # a signal's handler runs between these waits
    finally:
        meter.cancel()  # nothing to cancel once all have ended
        deadline = time.monotonic() + STOP_WITHIN
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    if failures:
        raise failures[0]


def _fetch_one(remote: Remote, root: Path, options: FetchOptions, meter: _Meter) -> None:
    dest = root / remote.path
    causes = []

    def write(tmp: Path) -> None:
        with open(tmp, "w+b") as fh:
            for url in urls(remote, options):
                cause = _fetch_from(url, remote, fh, options.timeout, meter,
                                    options.mirror_base() is not None)
                if cause is None:
                    return
                causes.append(f"from {url}: {cause}")
        raise DownloadError(f"{remote.path}: {'; '.join(causes)}; not kept")

    try:
        write_atomic(dest, write)
    except OSError as exc:  # its folder cannot be made (a file in the way, no permission)
        raise DownloadError(f"{exc.filename or dest}: cannot be written "
                            f"({exc.strerror or exc})") from None


def _fetch_from(url: str, remote: Remote, fh, timeout: float, meter: _Meter,
                mirror: bool = False) -> _Failed | None:
    """Transfer ``remote`` from ``url`` into ``fh`` and check it, retrying what a retry may
    mend; ``None`` when it arrived whole, else why it did not."""
    attempts = 0
    while True:
        fh.seek(0)
        fh.truncate()
        sink = _Sink(fh, meter, remote.size)
        try:
            _transfer(url, sink, timeout, mirror)
            _check(remote, sink)
            return None
        except _Failed as failed:
            meter.add(-sink.size)
            attempts += 1
            if not failed.retry or attempts == ATTEMPTS:
                return failed
            if meter.cancelled.wait(attempts):
                raise _Cancelled() from None


class _Failed(Exception):
    """One transfer did not give the published file; ``retry`` when trying the same URL
    again may help."""

    def __init__(self, cause: str, retry: bool):
        super().__init__(cause)
        self.retry = retry


class _Cancelled(Exception):
    """Another file failed or the user stopped the run: this transfer stops."""


class _Meter:
    """Bytes transferred across one fetch, reported to ``progress``, and the transfers
    under way, which :meth:`cancel` shuts; thread-safe."""

    def __init__(self, total: int, progress: Progress):
        self.total, self.done, self.progress = total, 0, progress
        self.lock = threading.Lock()
        self.cancelled = threading.Event()
        self.open: set[Any] = set()  # the HTTP responses being read

    def cancel(self) -> None:
        """Stop every transfer: each ends at its next chunk, and a read waiting on a
        silent server returns at once (its socket is shut for reading)."""
        self.cancelled.set()
        with self.lock:
            for response in self.open:
                try:
                    response.shutdown()
                except (OSError, RuntimeError, ValueError):  # already closed or released
                    pass

    @contextlib.contextmanager
    def reading(self, response: Any) -> Iterator[None]:
        with self.lock:
            self.open.add(response)
        try:
            if self.cancelled.is_set():
                raise _Cancelled()
            yield
        finally:
            with self.lock:
                self.open.discard(response)

    def add(self, count: int) -> None:
        if self.cancelled.is_set():
            raise _Cancelled()
        with self.lock:
            self.done += count
            self.progress("download", self.done, self.total)


class _Sink:
    """Where one transfer writes: the temporary file, with the size and SHA-256 of what
    arrived kept as it arrives. It takes no byte beyond the published size (``limit``):
    a server sending more (endless data, a wrong Content-Length, a compressed body that
    expands) sent another file, and the transfer stops there."""

    def __init__(self, fh, meter: _Meter, limit: int):
        self.fh, self.meter, self.limit = fh, meter, limit
        self.size, self.hash = 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        if self.size + len(data) > self.limit:
            raise _Failed(f"not the published file (more than its {self.limit:,} bytes "
                          "arrived; the transfer was stopped there)", False)
        self.fh.write(data)
        self.hash.update(data)
        self.size += len(data)
        self.meter.add(len(data))
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _guard(url: str, mirror: bool):
    """A requests response hook: a mirror's redirect leads only to its own origin
    (scheme, host, port), and no body comes encoded (compressed bodies expand beyond
    what the server declares)."""
    def check(response: Any, *args: Any, **kwargs: Any) -> None:
        if response.is_redirect:
            target = urllib.parse.urljoin(response.url, response.headers.get("Location", ""))
            if mirror and _origin(target) != _origin(url):
                raise _Failed(f"the mirror redirected to {shown(target)}, outside its own "
                              "origin: not followed", False)
            return
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _Failed(f"the server sent it encoded ({shown(encoding)}), which expands "
                          "beyond the size it declares: not read", False)
    return check


def _transfer(url: str, sink: _Sink, timeout: float, mirror: bool = False) -> None:
    folder = _folder(url)
    if folder is not None:  # a mirror folder: copy; errors reading it are the mirror's
        try:  # a FIFO or a device there would block or never end: regular files only
            regular_file(folder, "the mirror's copy")
        except InputError as exc:
            raise _Failed(str(exc).removeprefix("the mirror's copy: "), False) from None
        try:
            source = open(folder, "rb")  # noqa: SIM115 - closed below, errors told apart
        except OSError as exc:
            raise _Failed(f"the mirror cannot give it ({exc.strerror or exc})", False) from None
        def read(size: int) -> bytes:
            try:
                return source.read(size)
            except OSError as exc:
                raise _Failed(f"the mirror's copy cannot be read ({exc.strerror})",
                              False) from None

        with source:
            _pump(read, sink, timeout)
        return
    import requests
    import urllib3

    try:
        # the file as published, not a compressed body to expand (the sink stops one at
        # the published size if a server sends it anyway)
        with requests.get(url, stream=True, timeout=timeout,
                          headers={"Accept-Encoding": "identity"},
                          hooks={"response": _guard(url, mirror)}) as response:
            response.raise_for_status()
            with sink.meter.reading(response.raw):
                # read1: whatever has arrived, at once, so the rate is seen byte by byte
                _pump(lambda size: response.raw.read1(size, decode_content=False), sink,
                      timeout)
    except requests.HTTPError as exc:
        status = exc.response.status_code
        raise _Failed(f"HTTP {status} {exc.response.reason}", status in _RETRY_STATUS
                      ) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        if sink.meter.cancelled.is_set():  # its socket was shut by cancel()
            raise _Cancelled() from None
        # refused, unresolvable, cut short, silent; a read timeout while streaming comes
        # as a ConnectionError or urllib3's ReadTimeoutError that says so
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)) or \
                "timed out" in str(exc):
            raise _Failed(f"no answer within {timeout:g} s", True) from None
        raise _Failed(_reason(exc), True) from None
    if sink.meter.cancelled.is_set():
        raise _Cancelled()


def _pump(read: Callable[[int], bytes], sink: _Sink, timeout: float) -> None:
    """Move chunks from ``read`` into ``sink`` until it gives none; a stretch of
    ``timeout`` seconds that brings fewer than :data:`MIN_RATE` bytes a second stops the
    transfer (a server that drips a byte a second is never silent for long, and would
    take days)."""
    start, count = time.monotonic(), 0
    while chunk := read(CHUNK):
        sink.write(chunk)  # a full disk raises OSError here, for write_atomic
        count += len(chunk)
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            if count < MIN_RATE * elapsed:
                raise _Failed(f"slower than {MIN_RATE:,} bytes a second ({count:,} bytes "
                              f"in {elapsed:.0f} s)", True)
            start, count = time.monotonic(), 0


def _check(remote: Remote, sink: _Sink) -> None:
    """The file that arrived whole (a transfer cut short under its Content-Length fails
    before, in the transfer) is the published one: its size, then its SHA-256. A server
    that sends a shorter or longer file sent another file, not a cut one."""
    if sink.size != remote.size:
        raise _Failed(f"not the published file ({sink.size:,} bytes arrived whole where "
                      f"the published file has {remote.size:,})", False)
    digest = sink.hash.hexdigest()
    if sink.size != remote.size or digest != remote.sha256:
        raise _Failed(f"not the published file ({sink.size:,} bytes, SHA-256 "
                      f"{digest[:16]}...; expected {remote.size:,} bytes, "
                      f"{remote.sha256[:16]}...)", False)


def _reason(exc: Exception) -> str:
    """The root cause of a requests error in a few words: requests nests urllib3's
    errors, whose text carries the socket's ``[Errno N] reason``."""
    text = str(exc)
    if "IncompleteRead" in text or "Connection broken" in text or \
            type(exc).__name__ in ("ProtocolError", "IncompleteRead"):
        return "the transfer was cut short (the connection closed)"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    request = getattr(exc, "request", None)  # urllib3's errors, raised by read1, have none
    host = urllib.parse.urlsplit(request.url).netloc if request is not None else ""
    why = found.group(1).strip() if found else type(exc).__name__
    return f"cannot reach {host} ({why})" if host else why


def _folder(location: str) -> Path | None:
    """A mirror given as a folder (a path or a file:// URL), else None."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if not parts.scheme or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(location).expanduser()
    return None


def _sweep(root: Path, todo: list[Remote]) -> None:
    """Remove the temporary files of ``todo`` that a killed fetch left (``write_atomic``
    names them ``.NAME.XXXXXXXX.tmp``); a signal or an error removes its own."""
    now, wanted = time.time(), {root / r.path for r in todo}
    for folder in {p.parent for p in wanted}:
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            final = folder / tmp.name[1:].rsplit(".", 2)[0]
            try:
                if final in wanted and now - tmp.stat().st_mtime > STALE_SECONDS:
                    tmp.unlink()
            except OSError:  # another fetch removed it first
                pass


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def is_published(path: Path, remote: Remote) -> bool:
    """Whether ``path`` holds ``remote`` as published: its size, then its SHA-256."""
    if not _has_size(path, remote.size):
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == remote.sha256
