"""Fetching the examples' published files (cmkd_doctor/examples/downloads.py), without the
internet: a local HTTP server on 127.0.0.1 serves copies of the originals in
../shared/data (mnist/, fsdd/recordings/, sources/) as a mirror, and is told to corrupt,
cut or stall a file. Every failure must be exit 2 with one line naming the file and the
cause, and leave no file behind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from cmkd_doctor.examples import downloads
from cmkd_doctor.examples.datasets import DATASETS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENE = "sources/XLearning-SCU-2023-IJCAI-ProImp/data/Scene-15.mat"
_here = pytest.mark.skipif(not (SHARED / SCENE).is_file(),
                           reason=f"the published files are not at {SHARED}")


def needs_sources(test):
    return pytest.mark.data(_here(test))


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder; records each request; ``server.rules`` make a file
    arrive ``corrupt`` (one byte flipped), ``cut`` (half of it, then the connection
    closes, under the full Content-Length) or ``stall`` (half, then silence)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path.lstrip("/"))
        self.server.requested.append(path)
        rule = self.server.rules.get(path, self.server.rules.get("*"))  # *: every file
        if rule in ("endless", "gzip", "redirect", "drip", "mute"):
            return self._hostile(rule, path)
        super().do_GET()

    def _hostile(self, rule: str, path: str) -> None:
        """``endless``: the file, then zeros, with no Content-Length; ``gzip``: the file
        with zeros after it, compressed (it expands beyond the published size);
        ``redirect``: to the same path on another port; ``drip``: one byte every 0.2 s,
        never silent for a second; ``mute``: the request read, nothing answered."""
        data = (self.server.folder / path).read_bytes()
        if rule == "mute":
            self.server.release.wait(60)
            return
        if rule == "drip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for byte in data[:300]:  # a minute at most, so a regression still ends
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if self.server.release.wait(0.2):
                        return
            except OSError:  # the client stopped reading: what this rule is for
                pass
            return
        if rule == "redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.elsewhere}/{path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if rule == "gzip":
            import gzip

            body = gzip.compress(data + bytes(8 << 20))
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(data)
            for _ in range(1024):  # 64 MiB of zeros at most, so a regression still ends
                self.wfile.write(bytes(1 << 16))
        except OSError:  # the client stopped reading: what this rule is for
            pass

    def copyfile(self, source, outputfile) -> None:
        path = urllib.parse.unquote(self.path.lstrip("/"))
        rule = self.server.rules.get(path, self.server.rules.get("*"))
        data = source.read()
        if rule == "corrupt":
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        elif rule in ("cut", "stall"):
            data = data[: len(data) // 2]
        outputfile.write(data)
        outputfile.flush()
        if rule == "stall":
            self.server.release.wait(60)


@pytest.fixture
def mirror(tmp_path):
    """An HTTP mirror of the published files on 127.0.0.1: (its URL, its server). It
    holds a copy of sources/ (a test deletes a file of it) and links to mnist/ and fsdd/
    (served as they are; the server's rules alter what it sends, never the files)."""
    folder = tmp_path / "mirror"
    shutil.copytree(SHARED / "sources", folder / "sources")
    for name in ("mnist", "fsdd"):
        if (SHARED / name).is_dir():
            (folder / name).symlink_to(SHARED / name)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    server.daemon_threads = True
    server.requested, server.rules, server.release = [], {}, threading.Event()
    server.elsewhere = 9  # a port a redirect may name (the discard port: nothing answers)
    server.folder = folder
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A machine with nothing fetched: no data root set, an empty cache folder."""
    monkeypatch.delenv("CMKD_DOCTOR_DATA", raising=False)
    monkeypatch.delenv("CMKD_DOCTOR_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = downloads.FetchOptions().root()
    assert root == tmp_path / "cache" / "cmkd-doctor" / "data"
    return root


def _files(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden (temporary) ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the published files are not at {SHARED}")
def test_the_recorded_checksums_are_those_of_the_published_files():
    for source in downloads.SOURCES:
        listed = downloads.files(source)
        assert listed, source
        for remote in listed:
            path = SHARED / remote.path
            assert path.stat().st_size == remote.size, remote.path
            assert _sha256(path) == remote.sha256, remote.path
    # every recording of FSDD, and the two published MATLAB files of its README
    recordings = {p.name for p in (SHARED / "fsdd" / "recordings").glob("*.wav")}
    assert {Path(r.path).name for r in downloads.files("fsdd")} == recordings
    readme = (SHARED / "README.md").read_text()
    for source in ("scene15", "leaves100"):
        (remote,) = downloads.files(source)
        assert f"`{remote.path.removeprefix('sources/')}` | `{remote.sha256}`" in readme


def test_urls_point_at_the_publishers_or_only_at_the_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv("CMKD_DOCTOR_MIRROR", raising=False)
    (scene,) = downloads.files("scene15")
    assert downloads.urls(scene, downloads.FetchOptions()) == (
        "https://raw.githubusercontent.com/XLearning-SCU/2023-IJCAI-ProImp/HEAD/data/"
        "Scene-15.mat",)
    images = downloads.files("mnist")[0]
    assert len(downloads.urls(images, downloads.FetchOptions())) == 2  # two servers
    assert downloads.urls(images, downloads.FetchOptions(mirror="https://m.org/x/")) == (
        "https://m.org/x/mnist/t10k-images-idx3-ubyte.gz",)
    monkeypatch.setenv("CMKD_DOCTOR_MIRROR", "file://" + str(tmp_path))
    assert downloads.urls(scene, downloads.FetchOptions()) == (str(tmp_path / SCENE),)


@pytest.mark.slow
@needs_sources
def test_a_fresh_cache_fills_from_a_mirror_and_diagnose_runs_from_it(fresh, mirror, cli,
                                                                     tmp_path):
    url, server = mirror
    listed = cli("examples", "fetch", "scene15", "--print-urls", "--mirror", url)
    assert listed.code == 0 and listed.out.split() == [url + SCENE]
    assert server.requested == []  # printed, not fetched
    args = ["diagnose", "--example", "scene15:1,2", "--download", "--mirror", url, "--json",
            "--seeds", "1", "--restarts", "1", "-M", "2", "--epochs", "5"]
    first = cli(*args, "-o", tmp_path / "run1")
    assert first.code == 0, first.err
    assert server.requested == [SCENE]
    assert _files(fresh) == sorted([SCENE, *(f"multiview/scene15/{f}" for f in (
        "labels.npy", "multiview.json", "view0.npy", "view1.npy", "view2.npy"))])
    # converted from the published file: the very arrays of ../shared/data/multiview
    for name in ("view0.npy", "view1.npy", "view2.npy", "labels.npy"):
        assert np.array_equal(np.load(fresh / "multiview" / "scene15" / name),
                              np.load(SHARED / "multiview" / "scene15" / name)), name
    info = json.loads((fresh / "multiview" / "scene15" / "multiview.json").read_text())
    assert info["views"] == [20, 59, 40] and info["n"] == 4485
    doc = json.loads(first.out)
    assert len(doc["salience"]) == 59  # view 1's channels, ranked
    second = cli(*args, "-o", tmp_path / "run2")
    assert second.code == 0, second.err
    assert server.requested == [SCENE]  # the second run downloaded nothing
    fetched = cli("examples", "fetch", "scene15", "--mirror", url)
    assert fetched.code == 0 and "already there and whole" in fetched.out
    assert server.requested == [SCENE]


def test_without_the_files_diagnose_names_the_command_that_fetches_them(fresh, cli, tmp_path):
    missing = cli("diagnose", "--example", "leaves100", "-o", tmp_path / "run")
    assert missing.code == 2
    assert "'cmkd-doctor examples fetch leaves100' downloads them" in missing.err
    assert "--download" in missing.err and len(missing.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and _files(fresh) == []


@needs_sources
def test_a_mirror_serving_a_shorter_file_whole_is_not_the_published_file(fresh, mirror, cli,
                                                                           tmp_path):
    """A shorter file sent whole (its own Content-Length) is another file, said so and
    not fetched again; a transfer cut short under the full Content-Length is below."""
    url, server = mirror
    served = tmp_path / "mirror" / SCENE
    served.write_bytes(served.read_bytes()[:1000])
    failed = cli("examples", "fetch", "scene15", "--mirror", url)
    assert failed.code == 2 and failed.err.count("\n") == 1
    assert (f"error: {SCENE}: from {url}{SCENE}: not the published file (1,000 bytes "
            "arrived whole where the published file has") in failed.err
    assert "cut short" not in failed.err and len(server.requested) == 1
    assert _files(fresh) == []


@pytest.mark.slow
@needs_sources
@pytest.mark.parametrize("rule,cause", [
    ("corrupt", "not the published file (3,384,483 bytes, SHA-256"),
    ("cut", "the transfer was cut short"),
    ("stall", "no answer within 1 s"),
])
def test_a_bad_transfer_is_exit_2_naming_the_file_and_leaves_nothing(fresh, mirror, cli,
                                                                       rule, cause):
    url, server = mirror
    server.rules[SCENE] = rule
    failed = cli("examples", "fetch", "scene15", "--mirror", url, "--timeout", "1")
    assert failed.code == 2
    assert failed.err.startswith(f"error: {SCENE}: from {url}{SCENE}: {cause}")
    assert failed.err.count("\n") == 1 and failed.err.strip().endswith("not kept")
    assert _files(fresh) == []  # not even a temporary file
    # a corrupt file is not tried again; a cut or silent transfer is, once
    assert len(server.requested) == (1 if rule == "corrupt" else 2)
    del server.rules[SCENE]  # the server mends: a rerun starts clean and succeeds
    again = cli("examples", "fetch", "scene15", "--mirror", url)
    assert again.code == 0, again.err
    assert _sha256(fresh / SCENE) == downloads.files("scene15")[0].sha256


@needs_sources
@pytest.mark.parametrize("rule,cause", [
    ("endless", "not the published file (more than its 3,384,483 bytes arrived; the "
                "transfer was stopped there)"),
    ("gzip", "the server sent it encoded ('gzip'), which expands beyond the size it "
             "declares: not read"),
    ("redirect", "the mirror redirected to 'http://127.0.0.1:9/"),
])
def test_a_transfer_never_takes_more_than_the_published_file_nor_leaves_the_mirror(
        fresh, mirror, cli, rule, cause):
    """Endless data, a compressed body that expands, a redirect off the mirror's origin:
    each is exit 2 naming the file, nothing kept (issue 38, items 2 and 7)."""
    url, server = mirror
    server.rules[SCENE] = rule
    failed = cli("examples", "fetch", "scene15", "--mirror", url, "--timeout", "5")
    assert failed.code == 2, failed.err
    assert failed.err.startswith(f"error: {SCENE}: from {url}{SCENE}: {cause}"), failed.err
    assert failed.err.count("\n") == 1 and _files(fresh) == []
    assert len(server.requested) == 1  # none of these is tried again


@needs_sources
def test_a_folder_mirror_copy_that_is_a_device_or_a_fifo_is_refused(fresh, cli, tmp_path):
    """/dev/zero behind a folder mirror's file would fill the disk, a FIFO would block
    forever: only regular files are copied (issue 38, items 2 and 4)."""
    for kind in ("device", "fifo"):
        folder = tmp_path / kind
        (folder / SCENE).parent.mkdir(parents=True)
        if kind == "device":
            (folder / SCENE).symlink_to("/dev/zero")
        else:
            os.mkfifo(folder / SCENE)
        failed = cli("examples", "fetch", "scene15", "--mirror", folder)
        said = "a character device" if kind == "device" else "a FIFO"
        assert failed.code == 2 and f"is not a regular file ({said}" in failed.err, \
            failed.err
        assert failed.err.count("\n") == 1 and _files(fresh) == []


@needs_sources
def test_an_unreachable_host_or_a_missing_file_is_one_error_line(fresh, mirror, cli):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = cli("examples", "fetch", "leaves100", "--mirror", f"http://127.0.0.1:{port}")
    assert refused.code == 2
    assert f"cannot reach 127.0.0.1:{port} (" in refused.err
    assert refused.err.count("\n") == 1 and "Traceback" not in refused.err
    url, server = mirror
    (server.folder / SCENE).unlink()
    absent = cli("examples", "fetch", "scene15", "--mirror", url)
    assert absent.code == 2 and f"{SCENE}: HTTP 404 File not found" in absent.err
    assert _files(fresh) == []
    bad = cli("examples", "fetch", "scene15", "--mirror", "ftp://example.org")
    assert bad.code == 2 and "--mirror must be an http(s):// URL or a folder" in bad.err


@pytest.mark.parametrize("args,env,said", [
    (["--mirror", ""], None, "--mirror must be an http(s):// URL or a folder; got ''"),
    (["--mirror", "http://[::1"], None, "(Invalid IPv6 URL); got 'http://[::1'"),
    ([], "http://[::1", "$CMKD_DOCTOR_MIRROR must be an http(s):// URL or a folder"),
    (["--mirror", "http://[::1", "--print-urls"], None, "(Invalid IPv6 URL)"),
    (["--mirror", "http://host/\nerror: forged"], None, "without control characters"),
    (["--timeout", "inf"], None, "--timeout must be a number of seconds in (0, 86400]"),
    (["--timeout", "1e308"], None, "got 1e+308"),
])
def test_a_mirror_or_timeout_that_cannot_be_meant_is_refused_before_any_request(
        args, env, said, fresh, cli, monkeypatch):
    """'' is not "no mirror" (the upstream is what the user meant to avoid); a bracket
    left open, a control character or an endless timeout is one error line (issue 38)."""
    if env is not None:
        monkeypatch.setenv("CMKD_DOCTOR_MIRROR", env)
    found = cli("examples", "fetch", "scene15", *args)
    assert found.code == 2 and found.err.count("\n") == 1 and said in found.err, found.err
    assert not fresh.exists() or _files(fresh) == []


@needs_sources
def test_a_folder_mirror_and_which_data_root_wins(fresh, cli, tmp_path, monkeypatch):
    env_root, dir_root = tmp_path / "env-root", tmp_path / "dir-root"
    monkeypatch.setenv("CMKD_DOCTOR_DATA", str(env_root))
    monkeypatch.setenv("CMKD_DOCTOR_MIRROR", str(SHARED))  # ../shared/data is laid out so
    into_env = cli("examples", "fetch", "leaves100")
    assert into_env.code == 0, into_env.err
    assert f"in {env_root}" in into_env.out and "sources/zhou572-Multi-view-Datasets/" \
        "100Leaves.mat" in _files(env_root)
    into_dir = cli("examples", "fetch", "leaves100", "--data-dir", dir_root)
    assert into_dir.code == 0 and f"in {dir_root}" in into_dir.out
    assert _files(dir_root) == _files(env_root) and _files(fresh) == []  # cache untouched
    for name in ("view0.npy", "labels.npy"):
        assert np.array_equal(np.load(dir_root / "multiview" / "leaves100" / name),
                              np.load(SHARED / "multiview" / "leaves100" / name))
    # a damaged file in the data root is fetched again, and checks
    published = dir_root / "sources" / "zhou572-Multi-view-Datasets" / "100Leaves.mat"
    published.write_bytes(published.read_bytes()[:1000])
    mended = cli("examples", "fetch", "leaves100", "--data-dir", dir_root)
    assert mended.code == 0 and "fetched 1 file (1.0 MB)" in mended.out
    assert _sha256(published) == downloads.files("leaves100")[0].sha256


def test_examples_that_are_not_fetched_say_where_to_get_them(cli):
    for name in ("ravdess", "vggsound", "nyu", "mmimdb"):
        said = cli("examples", "fetch", name)
        assert said.code == 2 and f"cmkd-doctor does not fetch {name}:" in said.err
        assert DATASETS[name].elsewhere in said.err
    assert "nothing to fetch" in cli("examples", "fetch", "gaussian").err
    assert "must be one of" in cli("examples", "fetch", "bogus", "--print-urls").err


def _fetch_process(root: Path, url: str, *args: str, source: str = "scene15",
                   **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cmkd_doctor", "examples", "fetch", source, "--mirror", url,
         "--data-dir", str(root), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, env=env, **popen)


@needs_sources
def test_a_full_disk_is_exit_2_naming_the_file_and_leaves_nothing(mirror, tmp_path):
    url, _ = mirror
    root = tmp_path / "root"

    def small_disk() -> None:  # files may not grow past 1 MB: writes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    process = _fetch_process(root, url, preexec_fn=small_disk)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert err.startswith(f"error: {root / SCENE}: cannot be written (File too large)")
    assert err.count("\n") == 1 and _files(root) == []


@needs_sources
def test_an_interrupted_transfer_leaves_nothing_behind(mirror, tmp_path):
    url, server = mirror
    server.rules[SCENE] = "stall"
    root = tmp_path / "root"
    process = _fetch_process(root, url, preexec_fn=lambda: signal.signal(
        signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not any(Path(f).name.startswith(".Scene-15.mat.") for f in _files(root)):
            assert time.monotonic() < deadline and process.poll() is None, "no transfer"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130 and err.strip() == "error: interrupted"
    assert _files(root) == []


@needs_sources
def test_a_server_that_drips_bytes_is_stopped_after_timeout_seconds(fresh, mirror, cli):
    """One byte every 0.2 s is never silent for --timeout, and would take days for one
    file: a stretch of --timeout seconds under MIN_RATE stops it (issue 38, item 4)."""
    url, server = mirror
    server.rules[SCENE] = "drip"
    failed = cli("examples", "fetch", "scene15", "--mirror", url, "--timeout", "2")
    assert failed.code == 2, failed.err
    said = [line for line in failed.err.splitlines() if not line.startswith("Downloading")]
    assert len(said) == 1 and said[0].startswith(
        f"error: {SCENE}: from {url}{SCENE}: slower than 1,024 bytes a second ("), failed.err
    assert _files(fresh) == []
    assert len(server.requested) == 2  # a slow link may mend: tried once more


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason=f"FSDD is not at {SHARED}")
@pytest.mark.parametrize("rule", ["stall", "mute"])
def test_an_interrupt_ends_a_stalled_fetch_of_many_files_at_once(mirror, tmp_path, rule):
    """AV-MNIST's 3,002 files on 8 threads, every transfer stalled (half sent, then
    silence; or no answer at all) under --timeout 120: SIGINT ends the fetch within
    seconds, not at the timeout, with 130 and no file kept (issue 38, item 4)."""
    url, server = mirror
    server.rules["*"] = rule
    root = tmp_path / "root"
    process = _fetch_process(root, url, "--timeout", "120", source="avmnist",
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while len(server.requested) < downloads.WORKERS:  # every thread's transfer started
            assert time.monotonic() < deadline and process.poll() is None, "no transfer"
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)  # where --timeout is 120 s
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130 and err.strip() == "error: interrupted", err
    assert len(server.requested) == downloads.WORKERS  # no transfer began after it
    assert [f for f in _files(root) if not Path(f).name.startswith(".")] == []
    if rule == "stall":  # a transfer under way removes its own temporary file
        assert _files(root) == []


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason=f"FSDD is not at {SHARED}")
def test_examples_make_avmnist_downloads_from_a_mirror_and_resumes(fresh, mirror, cli,
                                                                    monkeypatch, tmp_path,
                                                                    avmnist_dir):
    url, server = mirror
    everything = {r.path for s in ("mnist", "fsdd") for r in downloads.files(s)}
    bad = downloads.files("fsdd")[100].path
    server.rules[bad] = "corrupt"
    out = tmp_path / "avmnist"
    failed = cli("examples", "make", "avmnist", "--download", "--mirror", url, "-o", out)
    assert failed.code == 2 and failed.err.startswith(f"error: {bad}: from {url}{bad}: not "
                                                      "the published file")
    assert failed.err.count("\n") == 1 and not out.exists()
    kept = set(_files(fresh))
    # what landed is whole; the corrupt file and every temporary one are gone
    assert kept < everything and bad not in kept
    assert all(_sha256(fresh / p) == r.sha256 for s in ("mnist", "fsdd")
               for r in downloads.files(s) if (p := r.path) in kept)
    del server.rules[bad]
    server.requested.clear()
    monkeypatch.setenv("CMKD_DOCTOR_MIRROR", url)
    built = cli("examples", "make", "avmnist", "--download", "-o", out)
    assert built.code == 0, built.err
    assert sorted(server.requested) == sorted(everything - kept)  # resumed
    assert set(_files(fresh)) == everything
    for name in ("image.npy", "audio.npy", "labels.npy"):  # as from ../shared/data
        assert np.array_equal(np.load(out / name), np.load(avmnist_dir / name)), name
    server.requested.clear()
    again = cli("examples", "make", "avmnist", "-o", tmp_path / "again")
    assert again.code == 0 and server.requested == []  # read from the cache


def test_a_matlab_file_that_is_not_laid_out_as_published_is_refused(tmp_path):
    import scipy.io

    from cmkd_doctor.errors import InputError

    mat = tmp_path / downloads.files("leaves100")[0].path
    mat.parent.mkdir(parents=True)
    mat.write_bytes(b"not a MATLAB file")
    with pytest.raises(InputError, match="100Leaves.mat: cannot be read as a MATLAB file"):
        DATASETS["leaves100"].convert(tmp_path)
    cells = np.empty((1, 2), dtype=object)
    cells[0, :] = [np.ones((4, 2)), np.ones((4, 2))]
    scipy.io.savemat(mat, {"X": cells, "Y": np.ones((4, 1))})
    with pytest.raises(InputError, match="expected a cell X of 3 views and labels Y"):
        DATASETS["leaves100"].convert(tmp_path)
    cells = np.empty((1, 3), dtype=object)
    cells[0, :] = [np.ones((4, 2)), np.ones((3, 2)), np.ones((4, 2))]
    scipy.io.savemat(mat, {"X": cells, "Y": np.ones((4, 1))})
    with pytest.raises(InputError, match="its views and 4 labels do not pair up"):
        DATASETS["leaves100"].convert(tmp_path)
    assert not (tmp_path / "multiview").exists()


@needs_sources
def test_a_cached_matlab_file_damaged_inside_is_one_error_line_saying_how_to_mend(cli,
                                                                                tmp_path):
    """100Leaves.mat at its published size with bytes of its compressed body changed:
    scipy's zlib error becomes exit 2 naming the file, the SHA-256 that differs and the
    command that fetches it again (issue 38, item 6)."""
    (remote,) = downloads.files("leaves100")
    root = tmp_path / "root"
    mat = root / remote.path
    mat.parent.mkdir(parents=True)
    data = bytearray((SHARED / remote.path).read_bytes())
    data[200:264] = bytes(b ^ 0x5A for b in data[200:264])  # inside the first deflate stream
    mat.write_bytes(bytes(data))
    found = cli("diagnose", "--example", "leaves100", "--data-dir", root, "--out",
                tmp_path / "run")
    assert found.code == 2 and found.err.count("\n") == 1, found.err
    assert found.err.startswith(f"error: {mat}: cannot be read as a MATLAB file (Error -3 "
                                "while decompressing data")
    assert found.err.strip().endswith("it is not the published file (its SHA-256 differs): "
                                      "'cmkd-doctor examples fetch leaves100' fetches it "
                                      "again")
    assert not (tmp_path / "run").exists() and not (root / "multiview").exists()


@pytest.mark.slow
@needs_sources
def test_a_killed_fetchs_temporary_file_goes_and_a_config_file_sets_the_data(
        mirror, cli, tmp_path):
    url, _ = mirror
    root = tmp_path / "root"
    folder = (root / SCENE).parent
    folder.mkdir(parents=True)
    killed, live = folder / ".Scene-15.mat.k1ll3d00.tmp", folder / ".Scene-15.mat.l1ve0000.tmp"
    other = folder / ".notes.txt.abcdefgh.tmp"  # not a file of the layout: left alone
    for tmp in (killed, live, other):
        tmp.write_bytes(b"partial")
    old = time.time() - downloads.STALE_SECONDS - 60
    for tmp in (killed, other):
        os.utime(tmp, (old, old))
    config = tmp_path / "c.yaml"
    config.write_text(f"example: scene15:2,1\ndata: {{data_dir: root, mirror: '{url}', "
                      "download: true, timeout: 5}\n"
                      "rank: {repeats: 2, restarts: 1}\ndistill: {seeds: 1, epochs: 3}\n")
    ran = cli("diagnose", "--config", config, "-o", tmp_path / "run", "--json")
    assert ran.code == 0, ran.err
    assert (root / "multiview" / "scene15" / "labels.npy").is_file()  # data_dir: root
    assert not killed.exists() and live.exists() and other.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("example: scene15\ndata: {timeout: 0}\n")
    refused = cli("diagnose", "--config", bad, "-o", tmp_path / "run2")
    assert refused.code == 2 and "bad.yaml: data.timeout must be a number of seconds" \
        in refused.err  # named by the file's key


@needs_sources
def test_a_data_root_that_cannot_hold_the_files_is_one_error_line(cli, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    said = cli("examples", "fetch", "scene15", "--mirror", SHARED, "--data-dir", a_file)
    assert said.code == 2
    assert said.err.strip() == f"error: --data-dir {a_file}: exists and is not a folder; " \
                               "pick another path"
    root = tmp_path / "root"
    root.mkdir()
    (root / "sources").write_text("")  # a file where a folder of the layout goes
    blocked = cli("examples", "fetch", "scene15", "--mirror", SHARED, "--data-dir", root)
    assert blocked.code == 2 and blocked.err.startswith(
        f"error: {root / 'sources'}: is a file where a folder belongs")
    assert blocked.err.count("\n") == 1 and "internal error" not in blocked.err
