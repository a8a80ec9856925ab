"""How long fetching an example's published files takes from a mirror, by transfers at
once (issue 25).

    python benchmarks/bench_fetch.py [--data ../shared/data] [--workers 1,4,8]
                                     [--latency 0.05]

Serves the published files under ``--data`` (mnist/, fsdd/recordings/, sources/) from a
local HTTP server on 127.0.0.1, then fetches avmnist (3,002 files, 22.8 MB) and scene15
(one 3.4 MB file) into an empty data root with ``cmkd_doctor.examples.downloads.fetch``, every
file checked against its SHA-256, and prints wall time and throughput. A loopback
server has no latency; over the internet each of FSDD's 3,000 requests costs round trips
(each file is one ``requests.get``, a connection of its own), which the transfers at once
overlap. ``--latency S`` makes the server wait S seconds before each answer, as a distant
one would.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import tempfile
import threading
import time
from pathlib import Path

from cmkd_doctor.examples import downloads


class _Quiet(http.server.SimpleHTTPRequestHandler):
    latency = 0.0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(self.latency)
        super().do_GET()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    _Quiet.latency = args.latency
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(args.data)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print("| example | files | MB | latency (s) | transfers at once | wall (s) | MB/s |")
    print("|---|---|---|---|---|---|---|")
    for example, sources in (("avmnist", ("mnist", "fsdd")), ("scene15", ("scene15",))):
        for workers in map(int, args.workers.split(",")):
            downloads.WORKERS = workers
            with tempfile.TemporaryDirectory() as root:
                options = downloads.FetchOptions(data_dir=root, mirror=url)
                t0 = time.perf_counter()
                fetched = downloads.fetch(sources, options)
                wall = time.perf_counter() - t0
            size = sum(r.size for r in fetched) / 1e6
            print(f"| {example} | {len(fetched)} | {size:.1f} | {args.latency:g} | {workers} | "
                  f"{wall:.1f} | {size / wall:.1f} |", flush=True)
            if len(fetched) == 1:
                break  # one file: one transfer, whatever the pool
    server.shutdown()


if __name__ == "__main__":
    main()
