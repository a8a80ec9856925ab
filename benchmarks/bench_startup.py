"""How fast the commands that train nothing start, and whether they import torch.

    python benchmarks/bench_startup.py [--runs 9]

Runs each command ``--runs`` times as a new process (the installed ``cmkd-doctor``
script, as a CI script calls it) and prints the median and fastest wall time, the
largest peak memory of those runs (``os.wait4``'s resource usage of each) and whether
``python -X importtime`` shows torch among its imports.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = ["--version", "--help", "schema", "schema rank", "examples list",
            *(f"{name} --help" for name in ("diagnose", "rank", "derive-teacher", "distill",
                                            "extract", "report", "examples make gaussian",
                                            "examples reproduce", "examples fetch"))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    script = shutil.which("cmkd-doctor")
    print("| command | median (s) | fastest (s) | peak RSS (MiB) | imports torch |")
    print("|---|---|---|---|---|")
    for command in COMMANDS:
        times, peak = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            child = subprocess.Popen([script, *command.split()], stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            times.append(time.perf_counter() - t0)
            child.returncode = os.waitstatus_to_exitcode(status)
            assert child.returncode == 0, command
            peak = max(peak, usage.ru_maxrss)  # KiB on Linux
        imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "cmkd_doctor",
                                  *command.split()], capture_output=True, text=True).stderr
        torch = re.search(r"\|\s+torch$", imports, re.MULTILINE) is not None
        print(f"| cmkd-doctor {command} | {statistics.median(times):.2f} | {min(times):.2f} | "
              f"{peak / 1024:.0f} | {'yes' if torch else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
